"""Helpers of tools/generation: load a trained or converted generator, save grids and
ADM-format sample files, FID from Inception features."""
import os.path as osp
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..models.weights import compare

WEIGHTS = ('ema', 'raw')


def build_generator(config: str, cfg_options: Optional[Dict] = None):
    """Build the config's generator (``vllama_mm`` scope) on CPU; returns (model, cfg)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from .. import generation  # noqa: F401  (registers everything)
    from .registry import MODELS as GEN_MODELS
    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('default_scope') != 'vllama_mm':
        raise ValueError(f'{config} is not a generation config (default_scope '
                         f"{cfg.get('default_scope')!r}, expected 'vllama_mm')")
    with DefaultScope.overwrite_default_scope('vllama_mm'):
        model = GEN_MODELS.build(cfg.model)
    return model, cfg


def generator_weights(ckpt_path: str, weights: str = 'ema') -> Tuple[Dict[str, Tensor], Dict]:
    """``denoiser.*`` weights of a training checkpoint (``ema``: its ``state_dict``, where
    mmengine's EMAHook stores the averaged weights; ``raw``: the trained ones from
    ``ema_state_dict``) or of a converted released file; also returns the vllama_mm meta."""
    from ..engine.checkpoint import (allow_mmengine_checkpoints, check_finite_weights,
                                     verify_checkpoint)
    if weights not in WEIGHTS:
        raise ValueError(f'weights must be one of {WEIGHTS}, got {weights!r}')
    if not osp.isfile(ckpt_path):
        raise FileNotFoundError(f'checkpoint not found: {ckpt_path}')
    verify_checkpoint(ckpt_path)  # zip CRC: a flipped byte would sample garbage
    allow_mmengine_checkpoints()
    try:
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True, mmap=True)
    except RuntimeError as e:
        if 'mmap' not in str(e):
            raise
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)  # legacy file
    if not isinstance(ckpt, dict):
        raise ValueError(f'{ckpt_path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    meta = (ckpt.get('meta') or {}).get('vllama_mm', {}) if isinstance(ckpt, dict) else {}
    if weights == 'raw':
        if 'ema_state_dict' not in ckpt:
            raise ValueError(f'{ckpt_path} has no ema_state_dict (no EMAHook): use --weights ema')
        sd = {k[len('module.'):]: v for k, v in ckpt['ema_state_dict'].items()
              if k.startswith('module.')}
    else:
        sd = ckpt.get('state_dict', ckpt)
    check_finite_weights(sd, f'checkpoint {ckpt_path!r}')  # a diverged run's weights
    return sd, meta


def load_generator(config: str, checkpoint: str, weights: str = 'ema',
                   device: str = 'cpu', cfg_options: Optional[Dict] = None):
    """Generator of ``config`` with ``checkpoint`` loaded strictly, in eval mode."""
    model, cfg = build_generator(config, cfg_options)
    sd, meta = generator_weights(checkpoint, weights)
    fmt = meta.get('format')
    want = {'dit-llama': 'DiTGenerator', 'sit-llama': 'SiTGenerator'}.get(fmt)
    if want is not None and want != type(model).__name__:
        raise ValueError(f'{checkpoint} holds {fmt} weights but {config} builds '
                         f'{type(model).__name__}: use a {want} config')
    missing, bad, unexpected = compare(model.state_dict(), sd)
    if missing or bad or unexpected:
        raise ValueError(f'{checkpoint} does not fit {config}: missing {missing[:4]}, '
                         f'unexpected {unexpected[:4]}, shape mismatch {bad[:4]} (another '
                         'arch or family?)')
    model.load_state_dict(sd)
    return model.to(device).eval(), cfg


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] [B, 3, H, W] -> uint8 [B, H, W, 3] (ADM rounding: (x+1)*127.5 clamped)."""
    x = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_grid(images: Tensor, path: str, nrow: int) -> None:
    """PNG grid of [-1, 1] images [B, 3, H, W], ``nrow`` images per row, 2 px padding."""
    from PIL import Image
    arr = to_uint8(images)
    b, h, w, _ = arr.shape
    rows = (b + nrow - 1) // nrow
    pad = 2
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + c * (w + pad):pad + c * (w + pad) + w] = arr[i]
    parent = osp.dirname(osp.abspath(path))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'output directory does not exist: {parent}')
    Image.fromarray(grid).save(path)


# ---------------------------------------------------------------------------------- FID
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, with the trace of the square
    root computed as ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`` (symmetric, float64: no
    complex round-off as with a general sqrtm)."""
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1 = torch.as_tensor(sigma1, dtype=torch.float64)
    s2 = torch.as_tensor(sigma2, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    m = root1 @ s2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    fid = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return float(fid)


def feature_stats(feats: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float64)
    return feats.mean(0), np.cov(feats, rowvar=False)
