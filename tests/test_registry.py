"""Registration: each library builds VisionLLaMA from a config dict; modules stay isolated."""
import importlib
import subprocess
import sys

import pytest
import torch

TINY = dict(embed_dims=32, num_layers=2, num_heads=1)


@pytest.mark.parametrize('lib', ['mmpretrain', 'mmseg', 'mmdet'])
def test_build_through_registry(lib):
    importlib.import_module(f'vllama_mm.{lib}')
    registry = importlib.import_module(f'{lib}.registry')
    model = registry.MODELS.build(
        dict(type='VisionLLaMA', arch=TINY, img_size=64, out_type='featmap',
             out_indices=(0, 1)))
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape for o in outs] == [(1, 32, 4, 6)] * 2
    ctor = registry.OPTIM_WRAPPER_CONSTRUCTORS.get('LayerDecayOptimWrapperConstructor')
    assert ctor is not None


@pytest.mark.parametrize('lib,others', [
    ('mmpretrain', ('mmseg', 'mmdet')),
    ('mmseg', ('mmpretrain', 'mmdet')),
    ('mmdet', ('mmpretrain', 'mmseg')),
])
def test_registration_module_imports_only_its_library(lib, others):
    code = (f'import sys, vllama_mm.{lib}; '
            f'bad = [m for m in {others!r} if m in sys.modules]; '
            'assert not bad, bad; print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_model_code_imports_no_task_library():
    code = ('import sys, vllama_mm.models, vllama_mm.engine.layer_decay; '
            'bad = [m for m in ("mmpretrain", "mmseg", "mmdet", "mmcv") if m in sys.modules]; '
            'assert not bad, bad')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_registering_a_different_class_under_a_taken_name_fails():
    from mmengine.registry import Registry

    from vllama_mm.models import VisionLLaMA
    from vllama_mm.registry_utils import register_modules
    reg = Registry('test')
    register_modules(reg, [VisionLLaMA])
    register_modules(reg, [VisionLLaMA])  # idempotent
    impostor = type('VisionLLaMA', (), {})
    with pytest.raises(KeyError, match='already registered'):
        register_modules(reg, [impostor])


def test_models_is_a_leaf():
    """vllama_mm.models (converters included) imports torch, mmengine, the standard
    library and its own files only: read off every import statement, and checked in a
    fresh process that no other vllama_mm package gets imported."""
    import ast
    import os.path as osp
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / 'vllama_mm' / 'models'
    bad = []
    for path in sorted(root.rglob('*.py')):
        package = path.parent.relative_to(root.parent).parts  # ('models', ...)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = package[:len(package) - node.level + 1]
                names = [node.module or ''] if node.module else [a.name for a in node.names]
                if not target or target[0] != 'models':
                    bad += [f'{path.name}: from {"." * node.level}{n}' for n in names]
                continue
            tops = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in tops:
                top = name.split('.')[0]
                if top not in ('torch', 'mmengine') and top not in sys.stdlib_module_names:
                    bad.append(f'{osp.relpath(path, root)}: import {name}')
    assert not bad, bad
    code = ('import sys, pkgutil, importlib, vllama_mm.models as m; '
            '[importlib.import_module(i.name) for i in pkgutil.walk_packages(m.__path__, '
            '"vllama_mm.models.")]; '
            'bad = sorted(k for k in sys.modules if k.startswith("vllama_mm.") and not '
            'k.startswith("vllama_mm.models") and k != "vllama_mm.version") + [k for k in ("mmpretrain", "mmseg", '
            '"mmdet", "mmcv") if k in sys.modules]; assert not bad, bad')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
