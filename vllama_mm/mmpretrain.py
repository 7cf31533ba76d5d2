"""Register vllama_mm into MMPretrain. Imports mmpretrain only.

In a config: ``custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)``.
Also registers our model index with mmpretrain's ``ModelHub`` (models by config name).
"""
import os.path as osp

from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .engine import allow_mmengine_checkpoints
from .engine.fsdp import register_fsdp2
from .engine.layer_decay import LayerDecayOptimWrapperConstructor
from .model_zoo import MODEL_INDEX, VerifiedPretrainedMixin, lazy_inferencer
from .models import VisionLLaMA, VisionLLaMAMAE, PyramidVisionLLaMA
from .registry_utils import register_modules

register_modules(MODELS, [VisionLLaMA, VisionLLaMAMAE, PyramidVisionLLaMA])
register_modules(OPTIM_WRAPPER_CONSTRUCTORS, [LayerDecayOptimWrapperConstructor])
register_fsdp2()  # FSDP2ModelWrapper, FSDP2ExponentialMovingAverage (mmengine root)
allow_mmengine_checkpoints()

#: ``ImageClassificationInferencer`` / ``FeatureExtractor``: mmpretrain's, with a local
#: ``pretrained`` file CRC-checked and refused when a tensor is NaN / inf (built on first use)
__getattr__ = lazy_inferencer(__name__, ('ImageClassificationInferencer', 'FeatureExtractor'),
                              'mmpretrain.apis', VerifiedPretrainedMixin)


def register_model_index() -> None:
    """Register our mmpretrain models (configs/mmpretrain/**/metafile.yml) with mmpretrain's
    ``ModelHub``: ``get_model``, ``list_models`` and the inferencers then accept their names.
    Config paths resolve against the source tree; idempotent."""
    from mmpretrain.apis import ModelHub

    from .model_zoo import REPO, metafiles
    for path in metafiles('mmpretrain'):
        if path in _REGISTERED:
            continue
        ModelHub.register_model_index(path, config_prefix=REPO)
        _REGISTERED.add(path)


_REGISTERED: set = set()
if osp.isfile(MODEL_INDEX):  # an editable install / source tree; see vllama_mm.model_zoo
    register_model_index()
