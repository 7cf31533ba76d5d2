"""Register vllama_mm into MMSegmentation. Imports mmseg only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmseg'], allow_failed_imports=False)``.
"""
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.fsdp import register_fsdp2
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .model_zoo import lazy_inferencer
from .models import VisionLLaMA, PyramidVisionLLaMA
from .registry_utils import register_modules

register_modules(MODELS, [VisionLLaMA, PyramidVisionLLaMA])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
register_fsdp2()  # FSDP2ModelWrapper, FSDP2ExponentialMovingAverage (mmengine root)
allow_mmengine_checkpoints()


# ``MMSegInferencer``: mmseg's inferencer that also accepts our model names (mmseg has
# no API to register a model index; see vllama_mm.model_zoo), built on first use
__getattr__ = lazy_inferencer(__name__, 'MMSegInferencer', 'mmseg.apis')
