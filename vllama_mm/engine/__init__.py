"""Training-side helpers: safe checkpoint loading, layer-wise lr decay, runner setup."""
from .checkpoint import allow_mmengine_checkpoints

__all__ = ['allow_mmengine_checkpoints']
