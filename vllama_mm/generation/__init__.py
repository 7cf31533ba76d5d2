"""Register the image-generation models (DiT-LLaMA, SiT-LLaMA) into vllama_mm's own scope.

In a config: ``default_scope = 'vllama_mm'`` and
``custom_imports = dict(imports=['vllama_mm.generation'], allow_failed_imports=False)``
(tools/train.py imports it from the scope). Plain torch + mmengine; diffusers (the SD VAE)
and torchdiffeq (dopri5) are imported only when used.
"""
from ..engine import allow_mmengine_checkpoints
from ..engine.fsdp import register_fsdp2
from ..models.dit_llama import DiTLLaMA
from ..registry_utils import register_modules
from .datasets import CachedLatents, ClassImageFolder, SyntheticClassImages
from .generators import DiTGenerator, SiTGenerator
from .registry import DATASETS, MODELS

register_modules(MODELS, [DiTLLaMA, DiTGenerator, SiTGenerator])
register_modules(DATASETS, [ClassImageFolder, CachedLatents, SyntheticClassImages])
register_fsdp2()  # FSDP2ModelWrapper, FSDP2ExponentialMovingAverage (mmengine root)
allow_mmengine_checkpoints()

__all__ = ['DiTLLaMA', 'DiTGenerator', 'SiTGenerator', 'ClassImageFolder', 'CachedLatents',
           'SyntheticClassImages']
