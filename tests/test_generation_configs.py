"""Generation configs: every paper row builds (on meta) with its recipe and parameter
count; the tiny config of each family trains a few iterations through the real Runner
(tools/train.py's code path), saves EMA weights, and samples from the checkpoint."""
import argparse
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / 'configs' / 'generation'
CONFIGS = sorted(p for p in GEN.rglob('*.py') if '_base_' not in p.parts)

# trainable parameters (M) of the paper rows (1000 classes, 32x32x4 latents)
PAPER = {
    'dit-llama-b-p4_8xb32-amp-400k_in1k-256px.py': ('DiTGenerator', 130.38, 400000),
    'dit-llama-l-p4_8xb32-amp-400k_in1k-256px.py': ('DiTGenerator', 464.16, 400000),
    'dit-llama-xl-p4_8xb32-amp-400k_in1k-256px.py': ('DiTGenerator', 674.84, 400000),
    'dit-llama-xl-p2_8xb32-amp-2400k_in1k-256px.py': ('DiTGenerator', 674.67, 2400000),
    'dit-llama-xl-p2_8xb32-amp-2400k_in1k-latents-256px.py': ('DiTGenerator', 674.67, 2400000),
    'sit-llama-s-p2_8xb32-amp-400k_in1k-256px.py': ('SiTGenerator', 32.84, 400000),
    'sit-llama-b-p2_8xb32-amp-400k_in1k-256px.py': ('SiTGenerator', 130.27, 400000),
    'sit-llama-l-p2_8xb32-amp-400k_in1k-256px.py': ('SiTGenerator', 464.01, 400000),
    'sit-llama-xl-p2_8xb32-amp-400k_in1k-256px.py': ('SiTGenerator', 674.67, 400000),
    'sit-llama-xl-p2_8xb32-amp-400k_in1k-latents-256px.py': ('SiTGenerator', 674.67, 400000),
}
TINY = sorted(p for p in CONFIGS if 'tiny' in p.name)


def test_every_paper_row_has_a_config():
    assert set(PAPER) <= {p.name for p in CONFIGS}
    assert len(TINY) == 2


@pytest.mark.parametrize('name', sorted(PAPER))
def test_paper_config_recipe_and_size(name):
    from mmengine.registry import DefaultScope
    import vllama_mm.generation  # noqa: F401
    from vllama_mm.generation.registry import MODELS
    path = next(p for p in CONFIGS if p.name == name)
    cfg = Config.fromfile(str(path))
    kind, millions, iters = PAPER[name]
    assert cfg.default_scope == 'vllama_mm'
    assert cfg.model.type == kind and cfg.train_cfg.max_iters == iters
    assert cfg.train_dataloader.batch_size * 8 == 256
    opt = cfg.optim_wrapper
    assert opt.type == 'AmpOptimWrapper' and opt.dtype == 'float16'
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == \
        ('AdamW', 1e-4, 0.0)
    ema = [h for h in cfg.custom_hooks if h.type == 'EMAHook']
    assert len(ema) == 1 and ema[0].momentum == 1e-4  # decay 0.9999
    assert cfg.model.vae == dict(kind='sd', path='stabilityai/sd-vae-ft-ema')
    # DiT/SiT seed each rank differently (global_seed * world_size + rank)
    assert cfg.randomness.seed == 0 and cfg.randomness.diff_rank_seed is True
    sampler = cfg.model.sampler
    assert (sampler.type, sampler.num_steps) == (('ddpm', 250) if kind == 'DiTGenerator'
                                                  else ('sde', 250))
    with DefaultScope.overwrite_default_scope('vllama_mm'), torch.device('meta'):
        model = MODELS.build(cfg.model)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert round(n / 1e6, 2) == millions


@pytest.mark.parametrize('path', TINY, ids=[p.name for p in TINY])
def test_tiny_config_trains_through_the_runner_and_samples(path, tmp_path):
    from vllama_mm.engine.runner_utils import build_runner, prepare_cfg
    cfg = Config.fromfile(str(path))
    args = argparse.Namespace(launcher='none', work_dir=str(tmp_path), amp=False,
                              auto_scale_lr=False, resume=None, no_validate=False,
                              cfg_options={'train_cfg.max_iters': 3,
                                           'default_hooks.checkpoint.interval': 3,
                                           'train_dataloader.batch_size': 4,
                                           'train_dataloader.dataset.num_per_class': 2},
                              config=str(path))
    cfg = prepare_cfg(cfg, args, mode='train')
    runner = build_runner(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    ckpt = torch.load(tmp_path / 'iter_3.pth', map_location='cpu', weights_only=False)
    sd, ema = ckpt['state_dict'], ckpt['ema_state_dict']
    assert all(k.startswith('denoiser.') for k in sd)  # the VAE is never saved
    trained = runner.model.state_dict()
    changed = [k for k in trained if not torch.equal(trained[k], before[k])]
    assert changed, 'three AdamW steps changed nothing'
    # checkpoint state_dict = the EMA weights (EMAHook swaps them in); ema_state_dict = raw
    k = changed[0]
    assert torch.equal(ema[f'module.{k}'], trained[k]) and not torch.equal(sd[k], trained[k])
    # sampling from the checkpoint gives images of the training size
    model = runner.model
    model.load_state_dict(sd, strict=True)
    imgs = model.sample(torch.tensor([0, 3]), num_steps=4,
                        generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 3, 32, 32) and imgs.abs().max() <= 1
