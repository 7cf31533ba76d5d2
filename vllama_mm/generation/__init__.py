"""Register the image-generation models (DiT-LLaMA, SiT-LLaMA) into vllama_mm's own scope.

In a config: ``default_scope = 'vllama_mm'`` and
``custom_imports = dict(imports=['vllama_mm.generation'], allow_failed_imports=False)``
(tools/train.py imports it from the scope). Plain torch + mmengine + (for the SD VAE and
some samplers) diffusers / torchdiffeq, imported lazily.
"""
from ..models.dit_llama import DiTLLaMA
from ..registry_utils import register_modules
from .registry import MODELS

register_modules(MODELS, [DiTLLaMA])
