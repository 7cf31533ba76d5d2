"""Register vllama_mm into MMSegmentation. Imports mmseg only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmseg'], allow_failed_imports=False)``.
"""
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .models import VisionLLaMA, PyramidVisionLLaMA
from .registry_utils import register_modules

register_modules(MODELS, [VisionLLaMA, PyramidVisionLLaMA])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
allow_mmengine_checkpoints()


def __getattr__(name: str):
    """``MMSegInferencer``: mmseg's inferencer that also accepts our model names (mmseg has no
    API to register a model index; see vllama_mm.model_zoo). Built on first use, so training
    runs that import this module do not import mmseg.apis."""
    if name == 'MMSegInferencer':
        from mmseg.apis import MMSegInferencer as Stock

        from .model_zoo import inferencer_class

        cls = inferencer_class(Stock, __name__)
        globals()[name] = cls
        return cls
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
