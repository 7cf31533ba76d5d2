"""Training-side helpers: safe and verified checkpoint loading, atomic checkpoint saving,
strict pretrained loading, layer-wise lr decay, runner setup.

Importing this package (every ``vllama_mm.<library>`` plugin module does) registers
``AtomicCheckpointHook``, replaces mmengine's ``Pretrained`` initializer by
``StrictPretrainedInit`` (strict for the vllama_mm backbones) and makes mmengine verify
local checkpoint files (zip CRC) before it loads them.
"""
from .checkpoint import (CheckpointError, allow_mmengine_checkpoints,
                         install_checkpoint_checks, verify_checkpoint)
from .checkpoint_hook import AtomicCheckpointHook, find_resumable_checkpoint
from .weights import StrictPretrainedInit, WeightsError, check_checkpoint_fits

install_checkpoint_checks()

__all__ = ['allow_mmengine_checkpoints', 'CheckpointError', 'verify_checkpoint',
           'install_checkpoint_checks', 'AtomicCheckpointHook', 'find_resumable_checkpoint',
           'StrictPretrainedInit', 'WeightsError', 'check_checkpoint_fits']
