"""Register vllama_mm into MMDetection. Imports mmdet only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmdet'], allow_failed_imports=False)``.
"""
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .models import VisionLLaMA
from .registry_utils import register_modules

register_modules(MODELS, [VisionLLaMA])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
allow_mmengine_checkpoints()
