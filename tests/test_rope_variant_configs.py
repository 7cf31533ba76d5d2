"""The RoPE-variant configs (issue 26: mixed, dinov3, yarn on plain B, pyramid S and
DiT-LLaMA-B/4) change only the RoPE of the row they inherit, and that change trains and
evaluates through the real Runner when applied to a tiny classifier / the tiny DiT config."""
import argparse
import copy
import math
import os.path as osp
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
import torch
from _tool_loader import load_tool  # noqa: E402  (tests/)
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / 'configs/mmpretrain/vision_llama'
PYRAMID = ROOT / 'configs/mmpretrain/pyramid_vision_llama'
PLAIN_BASE = PLAIN / 'vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py'
PYRAMID_BASE = PYRAMID / 'pyramid-vision-llama-s_8xb128_in1k.py'
TINY_CLS = PLAIN / 'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py'
TINY_DIT = ROOT / 'configs/generation/dit_llama/dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py'
DIT_BASE = ROOT / 'configs/generation/dit_llama/dit-llama-b-p4_8xb32-amp-400k_in1k-256px.py'
DIT_MIXED = ROOT / ('configs/generation/dit_llama/'
                    'dit-llama-b-p4-mixed-rope_8xb32-amp-400k_in1k-256px.py')

# config -> (its base row, the test size it evaluates at; None = the base's)
VARIANTS: Dict[str, Tuple[Path, Optional[int]]] = {
    'vision-llama-b-p16-mixed-rope_8xb256-lamb-800e_in1k-192px.py': (PLAIN_BASE, None),
    'vision-llama-b-p16-dinov3-rope_8xb256-lamb-800e_in1k-192px.py': (PLAIN_BASE, None),
    'vision-llama-b-p16-yarn-rope_8xb256-lamb-800e_in1k-192px-test-384px.py': (PLAIN_BASE, 384),
    'pyramid-vision-llama-s-mixed-rope_8xb128_in1k.py': (PYRAMID_BASE, None),
    'pyramid-vision-llama-s-dinov3-rope_8xb128_in1k.py': (PYRAMID_BASE, None),
    'pyramid-vision-llama-s-yarn-rope_8xb128_in1k-test-448px.py': (PYRAMID_BASE, 448),
}
ROPE_KEYS = {'rope_type', 'rope_theta', 'rope_cfg'}
tool = load_tool('tools/analysis/resolution_robustness.py', 'resolution_robustness')


def _path(name: str) -> Path:
    return (PLAIN if name.startswith('vision-llama') else PYRAMID) / 'rope_variants' / name


def _delta(new: dict, old: dict) -> dict:
    """Keys of ``new`` whose value differs from ``old`` (recursively for dicts)."""
    out = {}
    for k in set(new) | set(old):
        a, b = new.get(k), old.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            d = _delta(a, b)
            if d:
                out[k] = d
        elif a != b:
            out[k] = a
    return out


def test_every_rope_variant_config_is_checked():
    """Every file in the rope_variants/ folders is a row of VARIANTS (test_mmpretrain_configs
    leaves these folders to this file)."""
    found = {p.name for d in (PLAIN, PYRAMID) for p in (d / 'rope_variants').glob('*.py')}
    assert found == set(VARIANTS)


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_variant_config_changes_only_the_rope(name):
    base_path, test_size = VARIANTS[name]
    cfg, base = Config.fromfile(str(_path(name))), Config.fromfile(str(base_path))
    rope = cfg.model.backbone.rope_type
    assert f'-{rope}-rope' in name  # the name says the variant
    model_delta = _delta(cfg.model.to_dict(), base.model.to_dict())
    assert set(model_delta) == {'backbone'} and set(model_delta['backbone']) <= ROPE_KEYS
    delta = _delta(cfg.to_dict(), base.to_dict())
    allowed = {'model', 'test_size'} | ({'optim_wrapper'} if rope == 'mixed' else set()) | \
        ({'test_dataloader', 'test_pipeline'} if test_size else set())
    assert set(delta) <= allowed, set(delta) - allowed
    if rope == 'mixed':  # rope-vit: theta 10, no weight decay on the frequencies
        assert cfg.model.backbone.rope_theta == 10.0
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        base_keys = base.optim_wrapper.paramwise_cfg.get('custom_keys', {})
        assert {k: v for k, v in keys.items() if k not in base_keys} == \
            {'.freqs': dict(decay_mult=0.0)}
        assert all(keys[k] == v for k, v in base_keys.items())  # merged, not replaced
    if rope == 'dinov3':  # DINOv3's released models: base 100, 'separate', rescale 2
        assert cfg.model.backbone.rope_theta == 100.0
        assert cfg.model.backbone.rope_cfg == dict(normalize_coords='separate',
                                                   rescale_coords=2.0)
    base_size = tool.base_test_size(base)
    assert tool.base_test_size(cfg) == (test_size or base_size)
    assert tool.pipeline_size(cfg.val_dataloader.dataset.pipeline) == base_size  # val: train size
    if test_size:  # yarn extrapolates: the test grid is twice the anchor per axis
        assert test_size == 2 * base_size and rope == 'yarn'


def test_dit_mixed_config_changes_only_the_rope():
    cfg, base = Config.fromfile(str(DIT_MIXED)), Config.fromfile(str(DIT_BASE))
    delta = _delta(cfg.to_dict(), base.to_dict())
    assert delta == {'model': {'denoiser': {'rope_type': 'mixed', 'theta': 10.0}}}
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.0  # no decay rule needed


# ---------------------------------------------------------------------------- Runner
def _tiny_cls(name: str, data: str, work_dir: str) -> Config:
    """The tiny classifier config with the variant config's RoPE (and optimizer keys), on
    a pyramid backbone for the pyramid configs; yarn tests at twice the training size."""
    base_path, test_size = VARIANTS[name]
    variant = Config.fromfile(str(_path(name)))
    cfg = Config.fromfile(str(TINY_CLS))
    if 'pyramid' in name:
        cfg.model.backbone = dict(type='PyramidVisionLLaMA', arch=dict(
            embed_dims=[32, 64, 96, 128], depths=[1, 1, 2, 1]), img_size=64,
            out_type='avg_featmap', drop_path_rate=0.0)
        cfg.model.head.in_channels = 128
    for key in ROPE_KEYS & set(variant.model.backbone):
        cfg.model.backbone[key] = copy.deepcopy(variant.model.backbone[key])
    extra = variant.optim_wrapper.paramwise_cfg.get('custom_keys', {})
    cfg.optim_wrapper.paramwise_cfg.custom_keys.update(
        {k: v for k, v in extra.items() if 'freqs' in k})
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data
        cfg[loader].num_workers = 0
    if test_size:
        tiny = tool.base_test_size(cfg)
        cfg.test_dataloader = tool.dataloader_at_size(cfg.test_dataloader, 2 * tiny)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = cfg.param_scheduler[:1]
    cfg.default_hooks.checkpoint.interval = 1
    cfg.work_dir, cfg.launcher, cfg.log_level = work_dir, 'none', 'WARNING'
    return cfg


@pytest.fixture(scope='module')
def cls_data(tmp_path_factory):
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = str(tmp_path_factory.mktemp('data'))
    generate(root, num_train=4, num_val=2, img_size=64)  # 40 + 20 images
    return root


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_tiny_version_trains_and_evaluates(name, cls_data, tmp_path):
    from vllama_mm.engine.runner_utils import build_runner, import_plugin
    cfg = _tiny_cls(name, cls_data, str(tmp_path / 'work'))
    rope = cfg.model.backbone.rope_type
    import_plugin(cfg)
    runner = build_runner(cfg)
    backbone = runner.model.backbone
    assert {m.rope_type for m in tool.rope_modules(backbone)} == {rope}
    learned = {n: p.detach().clone() for n, p in runner.model.named_parameters()
               if 'freqs' in n}
    assert bool(learned) == (rope == 'mixed')
    runner.train()  # 40 images, batch 32: 2 iterations
    assert runner.iter == 2 and osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
    if rope == 'mixed':  # the frequencies learn, without weight decay
        params = dict(runner.model.named_parameters())
        for n, before in learned.items():
            assert not torch.equal(params[n].detach(), before), n
        groups = runner.optim_wrapper.optimizer.param_groups
        for n in learned:
            group = next(g for g in groups if any(p is params[n] for p in g['params']))
            assert group['weight_decay'] == 0.0, n
    metrics = runner.test()
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0 and math.isfinite(metrics['accuracy/top1'])
    if rope == 'dinov3':  # the coordinate augmentation is off in eval: same result twice
        assert runner.test()['accuracy/top1'] == metrics['accuracy/top1']
    if rope == 'mixed' and 'pyramid' not in name:
        _resolution_tool_on_mixed_checkpoint(cfg, tmp_path, metrics['accuracy/top1'])


def _resolution_tool_on_mixed_checkpoint(cfg: Config, tmp_path, top1: float) -> None:
    """The resolution tool on the trained mixed checkpoint: 'mixed' evaluated (the Runner's
    own number at the training size), fixed-frequency variants n/a with the reason."""
    full = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu', weights_only=False)
    ckpt = tmp_path / 'weights.pth'  # meta + weights, as released checkpoints
    torch.save(dict(meta=full['meta'], state_dict=full['state_dict']), ckpt)
    assert 'backbone.rope.freqs' in full['state_dict']
    cfg_path = tmp_path / 'mixed_tiny.py'
    cfg.dump(str(cfg_path))
    summary = tool.main([str(cfg_path), str(ckpt), '--sizes', '32', '64',
                         '--rope', 'none', 'as2d', 'yarn', 'mixed',
                         '--out-dir', str(tmp_path / 'res')])
    assert summary['trained_rope_type'] == 'mixed'
    assert summary['top1']['mixed']['64'] == pytest.approx(top1, abs=1e-6)
    assert summary['top1']['none']['32'] is not None
    assert summary['top1']['as2d'] == {'32': None, '64': None}
    assert 'learned' in summary['skipped']['as2d'] and 'learned' in summary['skipped']['yarn']
    md = (tmp_path / 'res' / 'resolution_robustness.md').read_text()
    assert "n/a for as2d: the checkpoint's RoPE frequencies are learned" in md


def test_tiny_dit_with_mixed_rope_trains_through_the_runner(tmp_path):
    from vllama_mm.engine.runner_utils import build_runner, prepare_cfg
    mixed = Config.fromfile(str(DIT_MIXED)).model.denoiser
    args = argparse.Namespace(
        launcher='none', work_dir=str(tmp_path), amp=False, auto_scale_lr=False, resume=None,
        no_validate=False, config=str(TINY_DIT),
        # adaLN-Zero: attention (and its RoPE) gets gradients from the 3rd step on
        cfg_options={'train_cfg.max_iters': 3, 'default_hooks.checkpoint.interval': 3,
                     'train_dataloader.batch_size': 4,
                     'train_dataloader.dataset.num_per_class': 1,
                     'model.denoiser.rope_type': mixed.rope_type,
                     'model.denoiser.theta': mixed.theta})
    cfg = prepare_cfg(Config.fromfile(str(TINY_DIT)), args, mode='train')
    runner = build_runner(cfg)
    freqs = {n: p.detach().clone() for n, p in runner.model.named_parameters()
             if 'freqs' in n}
    assert freqs, 'mixed RoPE has learnable frequencies'
    runner.train()
    params = dict(runner.model.named_parameters())
    assert all(not torch.equal(params[n].detach(), v) for n, v in freqs.items())
    ckpt = torch.load(tmp_path / 'iter_3.pth', map_location='cpu', weights_only=False)
    assert any(k.endswith('freqs') for k in ckpt['state_dict'])  # saved with the model
    imgs = runner.model.sample(torch.tensor([0, 1]), num_steps=2,
                               generator=torch.Generator().manual_seed(0))
    assert imgs.shape[-2:] == (32, 32) and torch.isfinite(imgs).all()
