"""The registries of vllama_mm's own scope (``default_scope = 'vllama_mm'``).

mmengine imports ``<scope>.registry`` when it builds under a scope; this module makes
that import succeed (and register the generation models) instead of logging a warning.
"""
from .generation.registry import *  # noqa: F401,F403
from .generation.registry import SCOPE  # noqa: F401
