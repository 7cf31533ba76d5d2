"""Register vllama_mm into MMPretrain. Imports mmpretrain only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)``.
"""
from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .models import VisionLLaMA, VisionLLaMAMAE, PyramidVisionLLaMA
from .registry_utils import register_modules

register_modules(MODELS, [VisionLLaMA, VisionLLaMAMAE, PyramidVisionLLaMA])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
allow_mmengine_checkpoints()
