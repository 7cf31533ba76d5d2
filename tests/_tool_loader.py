"""Load a script of ``tools/`` as a module, in-process (no interpreter start-up per case).

Each call executes the file afresh under a name of its own (registered in
``sys.modules``, which dataclasses and pickling need)."""
import importlib.util
import os.path as osp
import sys
from types import ModuleType
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(rel: str, name: Optional[str] = None) -> ModuleType:
    """``rel``: the path below the repository root, e.g. ``'tools/benchmark.py'``."""
    name = name or '_tool_' + rel[:-3].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, rel))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
