"""Stochastic-depth options against an independent reference (fixed RNG).

The reference reads the two residual branches of a training-mode block off forward
hooks (``h - x`` for attention, ``y - h`` for the MLP), re-partitions them into
windows with its own code, and checks, sample by sample and window by window, that
each branch is either exactly zero (dropped) or ``branch / keep`` (kept), with the
keep/drop pattern equal to Bernoulli draws made from the same seed in the order the
authors' code draws them (attention first, per window in ViTDet window blocks; then
the MLP, unless it has no drop path).
"""
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vllama_mm.models.blocks import VisionLLaMABlock, drop_path_rates
from vllama_mm.models.pyramid_vision_llama import PyramidVisionLLaMA
from vllama_mm.models.vision_llama import VisionLLaMA

P = 0.5
KEEP = 1.0 - P


def _windows(t: torch.Tensor, hw: Tuple[int, int], ws: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, nW, ws*ws, C], zero padded at the bottom/right (reference)."""
    B, _, C = t.shape
    H, W = hw
    g = t.reshape(B, H, W, C)
    g = F.pad(g, (0, 0, 0, (-W) % ws, 0, (-H) % ws))
    Hp, Wp = g.shape[1], g.shape[2]
    g = g.reshape(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return g.reshape(B, (Hp // ws) * (Wp // ws), ws * ws, C)


def _valid(hw: Tuple[int, int], ws: int) -> torch.Tensor:
    """[nW, ws*ws] bool: which window slots hold a real (not padded) token."""
    return _windows(torch.ones(1, hw[0] * hw[1], 1), hw, ws)[0, ..., 0].bool()


def _run(block: VisionLLaMABlock, x: torch.Tensor, hw, seed: int) -> Dict[str, torch.Tensor]:
    """Training-mode forward; returns x, h (attention residual added), y and the raw
    attention / MLP outputs captured by hooks."""
    got: Dict[str, torch.Tensor] = {}
    hooks = [block.attn.register_forward_hook(lambda m, i, o: got.__setitem__('attn', o)),
             block.ffn.register_forward_hook(lambda m, i, o: got.__setitem__('ffn', o)),
             block.ln2.register_forward_pre_hook(lambda m, i: got.__setitem__('h', i[0]))]
    block.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        got['y'] = block(x, hw)
    for h in hooks:
        h.remove()
    got['x'] = x
    return got


def _draws(seed: int, sizes: List[int]) -> List[torch.Tensor]:
    """Bernoulli(keep) draws in order, from the same seed (the reference masks)."""
    torch.manual_seed(seed)
    return [torch.empty(n, 1, 1).bernoulli_(KEEP).flatten() for n in sizes]


def _mask_of(residual: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """Per leading index: 0 if the residual is exactly zero, 1 if it is branch / keep;
    fails if it is neither."""
    out = []
    for r, b in zip(residual, branch):
        if torch.count_nonzero(r) == 0:
            out.append(0.0)
        else:
            torch.testing.assert_close(r, b / KEEP, rtol=1e-5, atol=1e-6)
            out.append(1.0)
    return torch.tensor(out)


def _block(branches='both', per_window=False, window=0):
    torch.manual_seed(0)
    return VisionLLaMABlock(16, 2, 32, drop_path=P, window_size=window,
                            drop_path_branches=branches, drop_path_per_window=per_window)


@pytest.mark.parametrize('branches', ['both', 'attn'])
def test_branches_per_sample(branches):
    """Global block: one draw per sample for attention; the MLP draws only with 'both'."""
    B, hw, seed = 16, (3, 3), 5
    got = _run(_block(branches), torch.randn(B, 9, 16), hw, seed)
    attn_mask = _mask_of(got['h'] - got['x'], got['attn'])
    sizes = [B, B] if branches == 'both' else [B]
    ref = _draws(seed, sizes)
    assert torch.equal(attn_mask, ref[0])
    assert 0 < attn_mask.sum() < B  # the seed drops some samples and keeps others
    ffn_res = got['y'] - got['h']
    if branches == 'both':
        ffn_mask = _mask_of(ffn_res, got['ffn'])
        assert torch.equal(ffn_mask, ref[1])
        assert not torch.equal(ffn_mask, attn_mask)  # independent draws
    else:  # never dropped, never rescaled
        torch.testing.assert_close(ffn_res, got['ffn'], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('per_window', [True, False])
def test_window_block_per_window_or_per_image(per_window):
    """Window block on a 5x7 grid with 3x3 windows (padded to 6x9, 6 windows/image)."""
    B, hw, ws, seed = 4, (5, 7), 3, 11
    blk = _block('attn', per_window=per_window, window=ws)
    got = _run(blk, torch.randn(B, 35, 16), hw, seed)
    n_win = _valid(hw, ws).shape[0]
    assert got['attn'].shape[0] == B * n_win  # attention ran on the windowed tensor
    res_w = _windows(got['h'] - got['x'], hw, ws)  # [B, nW, ws*ws, C]
    attn_w = got['attn'].reshape(B, n_win, ws * ws, -1)
    valid = _valid(hw, ws)
    masks = torch.stack([
        _mask_of(res_w[:, w][:, valid[w]], attn_w[:, w][:, valid[w]]) for w in range(n_win)
    ], dim=1)  # [B, nW]
    if per_window:
        ref = _draws(seed, [B * n_win])[0].reshape(B, n_win)
        assert torch.equal(masks, ref)
        mixed = [(0 < m.sum() < n_win) for m in masks]
        assert any(mixed)  # windows of one image are dropped independently
    else:
        ref = _draws(seed, [B])[0]
        assert torch.equal(masks, ref[:, None].expand(B, n_win))
    # 'attn' branches: the MLP residual is the MLP output, untouched
    torch.testing.assert_close(got['y'] - got['h'], got['ffn'], rtol=1e-6, atol=1e-6)


def test_schedules_match_reference():
    assert drop_path_rates(0.45, 24, 'uniform') == [0.45] * 24
    np.testing.assert_allclose(drop_path_rates(0.1, 12, 'linear'), np.linspace(0, 0.1, 12))
    with pytest.raises(ValueError, match='drop_path_schedule'):
        drop_path_rates(0.1, 12, 'cosine')


def test_backbone_options_reach_every_block():
    arch = dict(embed_dims=32, num_layers=4, num_heads=2)
    m = VisionLLaMA(arch=arch, img_size=32, drop_path_rate=0.3, drop_path_schedule='uniform')
    assert [b.drop_path.p for b in m.layers] == [0.3] * 4
    assert [b.drop_path_ffn.p for b in m.layers] == [0.3] * 4
    m = VisionLLaMA(arch=arch, img_size=32, drop_path_rate=0.3)  # defaults: linear, both
    np.testing.assert_allclose([b.drop_path.p for b in m.layers], np.linspace(0, 0.3, 4))
    np.testing.assert_allclose([b.drop_path_ffn.p for b in m.layers], np.linspace(0, 0.3, 4))
    m = VisionLLaMA(arch=arch, img_size=32, drop_path_rate=0.3, with_cls_token=False,
                    out_type='featmap', window_size=2, global_attn_indexes=(1, 3),
                    drop_path_branches='attn', drop_path_per_window=True)
    assert [b.drop_path_ffn.p for b in m.layers] == [0.0] * 4
    assert [b.drop_path_per_window for b in m.layers] == [True, False, True, False]
    p = PyramidVisionLLaMA(arch='s', drop_path_rate=0.2, drop_path_branches='attn',
                           drop_path_schedule='uniform')
    blocks = [b for stage in p.stages for b in stage]
    assert {b.drop_path.p for b in blocks} == {0.2}
    assert {b.drop_path_ffn.p for b in blocks} == {0.0}
    with pytest.raises(ValueError, match='drop_path_branches'):
        VisionLLaMA(arch=arch, img_size=32, drop_path_branches='ffn')
    with pytest.raises(ValueError, match='needs window attention'):
        VisionLLaMA(arch=arch, img_size=32, drop_path_per_window=True)
