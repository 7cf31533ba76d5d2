"""Importing vllama_mm changes nothing for models that are not ours (issue 23 item 1).

A stock model with ``init_cfg=dict(type='Pretrained', ...)`` on a file with missing keys
is built and initialised in two fresh processes, one without the plugin and one after
importing every plugin module; the log lines, warnings, registry entries and loaded
tensors must be identical. Models: an mmengine ``BaseModule`` (always) and, when the
library is installed, mmpretrain's ViT, mmseg's ViT (which loads the file itself through
mmengine's ``CheckpointLoader``) and mmdet's Swin (the same).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import contextlib, hashlib, importlib, io, json, logging, sys, warnings
import torch
from torch import nn

lib, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if lib != 'mmengine':
    importlib.import_module(lib + '.registry')
if mode == 'plugin':
    mods = ['vllama_mm', 'vllama_mm.models', 'vllama_mm.models.convert', 'vllama_mm.engine',
            'vllama_mm.datasets.data_check', 'vllama_mm.generation']
    mods += [f'vllama_mm.{m}' for m in ('mmpretrain', 'mmseg', 'mmdet')
             if importlib.util.find_spec(m) is not None]
    for m in mods:
        importlib.import_module(m)
    assert all(m in sys.modules for m in mods)

from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local


class Toy(BaseModule):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.fc = nn.Linear(4, 4)
        self.extra = nn.Linear(4, 2)


def build(init_cfg):
    if lib == 'mmengine':
        return Toy(init_cfg)
    MODELS = importlib.import_module(lib + '.registry').MODELS
    cfg = {
        'mmpretrain': dict(type='VisionTransformer', img_size=32, patch_size=16,
                           arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                     feedforward_channels=64)),
        'mmseg': dict(type='VisionTransformer', img_size=(32, 32), patch_size=16,
                      embed_dims=32, num_layers=1, num_heads=2, mlp_ratio=2),
        'mmdet': dict(type='SwinTransformer', embed_dims=32, depths=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1), window_size=2, pretrain_img_size=32),
    }[lib]
    return MODELS.build(dict(cfg, init_cfg=init_cfg))


torch.manual_seed(0)
sd = build(None).state_dict()
drop = [k for k in sd if k.endswith('.weight')][-2:]  # the file lacks two tensors
prefix = 'backbone.' if lib == 'mmdet' else ''  # mmdet's Swin keeps only backbone.* keys
torch.save({'state_dict': {prefix + k: v for k, v in sd.items() if k not in drop}}, path)

lines = []
handler = logging.Handler()
handler.emit = lambda r: lines.append(f'{r.levelname}: {r.getMessage()}')
MMLogger.get_current_instance().addHandler(handler)
torch.manual_seed(1)
printed = io.StringIO()  # mmseg / mmdet load with logger=None: mmengine prints
with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
    warnings.simplefilter('always')
    model = build(ConfigDict(type='Pretrained', checkpoint=path))  # as a config gives it
    model.init_weights()
digest = {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest()
          for k, v in model.state_dict().items()}
registries = [WEIGHT_INITIALIZERS.get('Pretrained') is PretrainedInit,
              CheckpointLoader._schemes[''] is load_from_local]
if lib != 'mmengine':
    registries.append(importlib.import_module(lib + '.registry').WEIGHT_INITIALIZERS.get(
        'Pretrained') is PretrainedInit)
print(json.dumps(dict(log=lines, printed=printed.getvalue().splitlines(), warnings=sorted(str(w.message) for w in caught),
                      tensors=digest, dropped=drop, stock_registries=registries)))
'''


def _run(tmp_path, lib: str, mode: str) -> dict:
    script = tmp_path / 'stock_model.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]),
        OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(script), lib, str(tmp_path / f'{lib}.pth'),
                           mode], capture_output=True, text=True, env=env, timeout=300,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('lib', ['mmengine', 'mmpretrain', 'mmseg', 'mmdet'])
def test_stock_pretrained_init_is_unchanged_by_the_plugin(tmp_path, lib):
    if lib != 'mmengine' and importlib.util.find_spec(lib) is None:
        pytest.skip(f'{lib} is not installed')
    stock = _run(tmp_path, lib, 'stock')
    plugin = _run(tmp_path, lib, 'plugin')
    assert stock['stock_registries'] == plugin['stock_registries'] == \
        [True] * len(stock['stock_registries'])
    assert stock['dropped']  # the file really lacks tensors
    if lib in ('mmengine', 'mmpretrain'):  # mmengine's Pretrained init logs what is missing
        assert any(d in line for d in stock['dropped'] for line in stock['log'])
    assert plugin['log'] == stock['log']
    assert plugin['printed'] == stock['printed']
    assert plugin['warnings'] == stock['warnings']
    assert plugin['tensors'] == stock['tensors']


def test_importing_models_imports_no_engine_and_no_task_library():
    code = ('import sys, vllama_mm.models; '
            'bad = [m for m in sys.modules if m.startswith(("vllama_mm.engine", "mmpretrain", '
            '"mmseg", "mmdet", "mmcv"))]; print(json.dumps(bad))')
    proc = subprocess.run([sys.executable, '-c', 'import json; ' + code], capture_output=True,
                          text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []
