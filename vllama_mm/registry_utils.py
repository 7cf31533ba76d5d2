"""Helper for the thin per-library registration modules (no task-library import here)."""
from typing import Iterable


def register_modules(registry, modules: Iterable[type]) -> None:
    """Register each class under its own name; re-registering the same class is a no-op,
    a different class already holding the name is an error (never silently shadowed)."""
    for module in modules:
        existing = registry.module_dict.get(module.__name__)
        if existing is module:
            continue
        if existing is not None:
            raise KeyError(f'{module.__name__} is already registered in {registry.scope}::'
                           f'{registry.name} by {existing.__module__}')
        registry.register_module(module=module)
