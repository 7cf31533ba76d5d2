"""Register vllama_mm into MMDetection. Imports mmdet only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmdet'], allow_failed_imports=False)``.
"""
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.fsdp import register_fsdp2
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .model_zoo import lazy_inferencer
from .models import LN2d, PyramidVisionLLaMA, SimpleFPN, VisionLLaMA
from .registry_utils import register_modules

# LN2d in MODELS: mmcv's build_norm_layer resolves norm_cfg=dict(type='LN2d') in the
# caller's scope, so mmdet heads and necks can use it
register_modules(MODELS, [VisionLLaMA, PyramidVisionLLaMA, SimpleFPN, LN2d])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
register_fsdp2()  # FSDP2ModelWrapper, FSDP2ExponentialMovingAverage (mmengine root)
allow_mmengine_checkpoints()


# ``DetInferencer``: mmdet's inferencer that also accepts our model names (mmdet has
# no API to register a model index; see vllama_mm.model_zoo), built on first use
__getattr__ = lazy_inferencer(__name__, 'DetInferencer', 'mmdet.apis')
