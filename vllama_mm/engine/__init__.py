"""Training-side helpers: safe and verified checkpoint loading, atomic checkpoint saving,
auto-resume, the work-dir lock, the ``load_from`` check, layer-wise lr decay, runner setup.

Importing this package registers ``AtomicCheckpointHook`` (a new name in mmengine's
``HOOKS``) and nothing else: mmengine's ``Pretrained`` initializer and checkpoint
loaders stay stock. Our backbones load their ``Pretrained`` weights strictly themselves
(:mod:`vllama_mm.models.weights`); files are verified (zip CRC) by our tools and hook.
"""
from .checkpoint import CheckpointError, allow_mmengine_checkpoints, verify_checkpoint
from .checkpoint_hook import AtomicCheckpointHook
from .resume import find_resumable_checkpoint
from .weights import WeightsError, check_checkpoint_fits

__all__ = ['allow_mmengine_checkpoints', 'CheckpointError', 'verify_checkpoint',
           'AtomicCheckpointHook', 'find_resumable_checkpoint', 'WeightsError',
           'check_checkpoint_fits']
