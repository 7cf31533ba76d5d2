"""Converter for the released VisionLLaMA checkpoints (tools/model_converters/official2vllama.py).

Random weights are written in each official layout for tiny custom archs, converted,
loaded into our models and compared with an independent re-implementation of the
official computation written here in plain tensor math (float64): explicit key names,
RoPE as complex multiplication with the ``x y x y`` pair layout (real dims ``x x y y``),
official GSA key positions (row length W, offset 1 - 1/sr), unmasked zero-padded LSA
windows and the double final norm ``norm(mean(norm(x)))``. Nothing of the reference
comes from vllama_mm (no RoPE2D, RoPEAttention or VisionLLaMABlock).
"""
import logging
import math
import re
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vllama_mm.engine.checkpoint import load_official
from vllama_mm.models import convert as C
from vllama_mm.models import VisionLLaMA
from vllama_mm.models.pyramid_vision_llama import PyramidVisionLLaMA
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
TOOL = osp.join(ROOT, 'tools', 'model_converters', 'official2vllama.py')


def _tool():
    return load_tool(osp.relpath(TOOL, ROOT), 'official2vllama')


# ==================================================================================
# Official layouts with random (or meta) tensors
# ==================================================================================
class Maker:
    """Tensor factory: random values of sensible scale, or shape-only meta tensors."""

    def __init__(self, seed: int = 0, meta: bool = False):
        self.g = torch.Generator().manual_seed(seed)
        self.meta = meta

    def _r(self, *shape):
        if self.meta:
            return torch.empty(*shape, device='meta')
        return torch.randn(*shape, generator=self.g)

    def linear(self, out_f, in_f):
        return self._r(out_f, in_f) / math.sqrt(in_f)

    def conv(self, out_c, in_c, k):
        return self._r(out_c, in_c, k, k) / math.sqrt(in_c * k * k)

    def bias(self, n):
        return 0.1 * self._r(n)

    def norm_w(self, n):
        return 1 + 0.1 * self._r(n)

    def gamma(self, n):  # large enough that every branch matters in the comparison
        return 0.5 + 0.2 * self._r(n)

    def tok(self, *shape):
        return 0.5 * self._r(*shape)


def official_plain_sd(mk: Maker, fmt: str, d=64, depth=2, hidden=256, patch=16, grid=4,
                      num_classes=10, in_ch=3):
    """The MAE mmengine ``state_dict`` (fmt='mae') or the DeiT3 ``model`` (fmt='deit3')."""
    sd = {}
    if fmt == 'mae':
        P = 'backbone.'
        sd[P + 'cls_token'] = mk.tok(1, 1, d)
        sd[P + 'pos_embed'] = mk.tok(1, grid * grid + 1, d)
        sd[P + 'patch_embed.projection.weight'] = mk.conv(d, in_ch, patch)
        sd[P + 'patch_embed.projection.bias'] = mk.bias(d)
        for i in range(depth):
            b = f'{P}layers.{i}.'
            for n in ('ln1', 'ln2'):
                sd[b + n + '.weight'], sd[b + n + '.bias'] = mk.norm_w(d), mk.bias(d)
            sd[b + 'attn.qkv.weight'], sd[b + 'attn.qkv.bias'] = mk.linear(3 * d, d), mk.bias(3 * d)
            sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'] = mk.linear(d, d), mk.bias(d)
            sd[b + 'ffn.w12.weight'] = mk.linear(2 * hidden, d)
            sd[b + 'ffn.w12.bias'] = mk.bias(2 * hidden)
            sd[b + 'ffn.w3.weight'], sd[b + 'ffn.w3.bias'] = mk.linear(d, hidden), mk.bias(d)
        sd[P + 'ln1.weight'], sd[P + 'ln1.bias'] = mk.norm_w(d), mk.bias(d)
        # stock MAEPretrainDecoder / head parameters pass through untouched
        sd['neck.mask_token'] = mk.tok(1, 1, 32)
        sd['neck.decoder_embed.weight'] = mk.linear(32, d)
        sd['neck.decoder_embed.bias'] = mk.bias(32)
        return sd
    sd['cls_token'] = mk.tok(1, 1, d)
    sd['patch_embed.proj.weight'] = mk.conv(d, in_ch, patch)
    sd['patch_embed.proj.bias'] = mk.bias(d)
    for i in range(depth):
        b = f'blocks.{i}.'
        for n in ('norm1', 'norm2'):
            sd[b + n + '.weight'], sd[b + n + '.bias'] = mk.norm_w(d), mk.bias(d)
        sd[b + 'attn.qkv.weight'], sd[b + 'attn.qkv.bias'] = mk.linear(3 * d, d), mk.bias(3 * d)
        sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'] = mk.linear(d, d), mk.bias(d)
        sd[b + 'mlp.c_fc1.weight'] = mk.linear(hidden, d)
        sd[b + 'mlp.c_fc2.weight'] = mk.linear(hidden, d)
        sd[b + 'mlp.c_proj.weight'] = mk.linear(d, hidden)
        sd[b + 'gamma_1'], sd[b + 'gamma_2'] = mk.gamma(d), mk.gamma(d)
    sd['norm.weight'], sd['norm.bias'] = mk.norm_w(d), mk.bias(d)
    sd['head.weight'], sd['head.bias'] = mk.linear(num_classes, d), mk.bias(num_classes)
    return sd


def official_pyramid_sd(mk: Maker, dims=(32, 64, 96, 128), depths=(2, 2, 2, 2),
                        srs=(8, 4, 2, 1), hidden=(96, 128, 160, 192), num_classes=10):
    """The ``model`` dict of the official Pyramid-VisionLLaMA (Twins/DeiT training code)."""
    sd = {}
    prev = 3
    for s, d in enumerate(dims):
        k = 4 if s == 0 else 2
        pe = f'patch_embeds.{s}.'
        sd[pe + 'proj.weight'], sd[pe + 'proj.bias'] = mk.conv(d, prev, k), mk.bias(d)
        sd[pe + 'norm.weight'], sd[pe + 'norm.bias'] = mk.norm_w(d), mk.bias(d)
        h = hidden[s]
        for j in range(depths[s]):
            b = f'blocks.{s}.{j}.'
            for n in ('norm1', 'norm2'):
                sd[b + n + '.weight'], sd[b + n + '.bias'] = mk.norm_w(d), mk.bias(d)
            if j % 2 == 0:
                sd[b + 'attn.qkv.weight'] = mk.linear(3 * d, d)
                sd[b + 'attn.qkv.bias'] = mk.bias(3 * d)
            else:
                sd[b + 'attn.q.weight'], sd[b + 'attn.q.bias'] = mk.linear(d, d), mk.bias(d)
                sd[b + 'attn.kv.weight'] = mk.linear(2 * d, d)
                sd[b + 'attn.kv.bias'] = mk.bias(2 * d)
                if srs[s] > 1:
                    sd[b + 'attn.sr.weight'] = mk.conv(d, d, srs[s])
                    sd[b + 'attn.sr.bias'] = mk.bias(d)
                    sd[b + 'attn.norm.weight'] = mk.norm_w(d)
                    sd[b + 'attn.norm.bias'] = mk.bias(d)
            sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'] = mk.linear(d, d), mk.bias(d)
            sd[b + 'mlp.c_fc1.weight'] = mk.linear(h, d)
            sd[b + 'mlp.c_fc2.weight'] = mk.linear(h, d)
            sd[b + 'mlp.c_proj.weight'] = mk.linear(d, h)
            sd[b + 'gamma_1'], sd[b + 'gamma_2'] = mk.gamma(d), mk.gamma(d)
        prev = d
    sd['norm.weight'], sd['norm.bias'] = mk.norm_w(prev), mk.bias(prev)
    sd['head.weight'], sd['head.bias'] = mk.linear(num_classes, prev), mk.bias(num_classes)
    return sd


# ==================================================================================
# Independent reference of the official computation (float64, plain tensor math)
# ==================================================================================
def ref_ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_rope(x, px, py, theta=10000.0):
    """Rotate x [..., N, Hc]: complex pair j of token n by angle ``pos_j(n) * f_{j//2}``,
    pos = x for even j, y for odd j, ``f_i = theta ** (-4i / Hc)`` (official layout)."""
    hc = x.shape[-1]
    px = torch.as_tensor(px, dtype=torch.float64)
    py = torch.as_tensor(py, dtype=torch.float64)
    freqs = 1.0 / theta ** (torch.arange(0, hc, 4, dtype=torch.float64) / hc)  # [Hc/4]
    ang = torch.stack([torch.outer(px, freqs), torch.outer(py, freqs)], dim=-1)  # [N, Hc/4, 2]
    rot = torch.polar(torch.ones_like(ang), ang).reshape(len(px), hc // 2)  # x0 y0 x1 y1 ...
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], hc // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).reshape(x.shape)


def ref_attention(q, k, v):
    """q [B, h, N, Hc], k/v [B, h, M, Hc] -> [B, h, N, Hc]; softmax(q k^T / sqrt(Hc)) v."""
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


def lin(x, sd, name, bias=True):
    y = x @ sd[name + '.weight'].T
    return y + sd[name + '.bias'] if bias and name + '.bias' in sd else y


def split_heads(t, heads):  # [B, N, C] -> [B, heads, N, C/heads]
    B, N, C = t.shape
    return t.reshape(B, N, heads, C // heads).transpose(1, 2)


def merge_heads(t):  # [B, heads, N, Hc] -> [B, N, heads*Hc]
    B, h, N, hc = t.shape
    return t.transpose(1, 2).reshape(B, N, h * hc)


def ref_mha(x, sd, pre, heads, px, py):
    """Official plain attention: qkv rows q|k|v head-major, RoPE on q and k."""
    B, N, C = x.shape
    qkv = lin(x, sd, pre + 'qkv').reshape(B, N, 3, heads, C // heads)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, heads, N, Hc]
    o = ref_attention(ref_rope(q, px, py), ref_rope(k, px, py), v)
    return lin(merge_heads(o), sd, pre + 'proj')


def ref_swiglu_split(x, sd, pre):  # DeiT3 / pyramid: c_fc1 gate, c_fc2 up, c_proj down
    g, u = lin(x, sd, pre + 'c_fc1'), lin(x, sd, pre + 'c_fc2')
    return lin(g * torch.sigmoid(g) * u, sd, pre + 'c_proj')


def ref_swiglu_fused(x, sd, pre):  # MAE: w12 rows gate | up, w3 down
    h = sd[pre + 'w12.weight'].shape[0] // 2
    y = lin(x, sd, pre + 'w12')
    g, u = y[..., :h], y[..., h:]
    return lin(g * torch.sigmoid(g) * u, sd, pre + 'w3')


def ref_patches(img, w, b):
    x = F.conv2d(img, w, b, stride=w.shape[-1])  # [B, C, h, w]
    B, C, h, wd = x.shape
    return x.flatten(2).transpose(1, 2), h, wd  # row-major tokens


def ref_mae_featmap(sd, img, heads, eps=1e-6, window=0, global_blocks=(), final_norm=True):
    """Official MAE backbone fine-tuning path (no class token): ln1 output as [B, C, h, w].

    Plain 2D RoPE over the input grid (the authors build their seg/det backbones at the
    fine-tuning size). ``window > 0``: the authors' ViTDet backbone, window attention
    (zero-padded, unmasked, window-local RoPE) in every block but ``global_blocks``."""
    sd = {k: v.double() for k, v in sd.items()}
    x, gh, gw = ref_patches(img.double(), sd['backbone.patch_embed.projection.weight'],
                            sd['backbone.patch_embed.projection.bias'])
    t = range(gh * gw)
    px, py = [i % gw for i in t], [i // gw for i in t]
    i = 0
    while f'backbone.layers.{i}.ln1.weight' in sd:
        p = f'backbone.layers.{i}.'
        h = ref_ln(x, sd[p + 'ln1.weight'], sd[p + 'ln1.bias'], eps)
        if window and i not in global_blocks:
            x = x + ref_lsa(h, sd, p + 'attn.', heads, gh, gw, ws=window)
        else:
            x = x + ref_mha(h, sd, p + 'attn.', heads, px, py)
        x = x + ref_swiglu_fused(ref_ln(x, sd[p + 'ln2.weight'], sd[p + 'ln2.bias'], eps),
                                 sd, p + 'ffn.')
        i += 1
    if final_norm:
        x = ref_ln(x, sd['backbone.ln1.weight'], sd['backbone.ln1.bias'], eps)
    return x.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


def ref_deit3_logits(sd, img, heads, eps=1e-6, auto_scale=False):
    """Official DeiT3-style plain model: class token rotated at t = -1 (x = G-1, y = -1);
    ``auto_scale``: every position times ``14 / G`` (the authors' ``*_as_*`` variant)."""
    sd = {k: v.double() for k, v in sd.items()}
    x, gh, gw = ref_patches(img.double(), sd['patch_embed.proj.weight'],
                            sd['patch_embed.proj.bias'])
    x = torch.cat([sd['cls_token'].expand(x.shape[0], -1, -1), x], dim=1)
    g = int(math.isqrt(gh * gw))  # official: row length int(sqrt(N))
    t = range(-1, gh * gw)
    px, py = [i % g for i in t], [i // g for i in t]  # Python floor: -1 -> (g-1, -1)
    if auto_scale:
        px, py = [14 / g * p for p in px], [14 / g * p for p in py]
    i = 0
    while f'blocks.{i}.norm1.weight' in sd:
        p = f'blocks.{i}.'
        x = x + sd[p + 'gamma_1'] * ref_mha(
            ref_ln(x, sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], eps), sd, p + 'attn.',
            heads, px, py)
        x = x + sd[p + 'gamma_2'] * ref_swiglu_split(
            ref_ln(x, sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], eps), sd, p + 'mlp.')
        i += 1
    x = ref_ln(x, sd['norm.weight'], sd['norm.bias'], eps)[:, 0]
    return lin(x, sd, 'head')


def ref_lsa(x, sd, pre, heads, H, W, ws=7):
    """Official LSA: zero-pad the normed map to multiples of ws (padded tokens get the
    qkv bias, unmasked), attention inside each ws x ws window, window-local RoPE."""
    B, N, C = x.shape
    m = x.reshape(B, H, W, C)
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    m = torch.cat([m, m.new_zeros(B, H, Wp - W, C)], dim=2)
    m = torch.cat([m, m.new_zeros(B, Hp - H, Wp, C)], dim=1)
    qkv = lin(m, sd, pre + 'qkv')  # [B, Hp, Wp, 3C]
    t = range(ws * ws)
    px, py = [i % ws for i in t], [i // ws for i in t]
    out = m.new_zeros(B, Hp, Wp, C)
    for wi in range(Hp // ws):
        for wj in range(Wp // ws):
            rows, cols = slice(wi * ws, wi * ws + ws), slice(wj * ws, wj * ws + ws)
            blk = qkv[:, rows, cols].reshape(B, ws * ws, 3, heads, C // heads)
            q, k, v = (blk[:, :, i].transpose(1, 2) for i in range(3))
            o = ref_attention(ref_rope(q, px, py), ref_rope(k, px, py), v)
            out[:, rows, cols] = merge_heads(o).reshape(B, ws, ws, C)
    return lin(out[:, :H, :W].reshape(B, N, C), sd, pre + 'proj')


def ref_gsa(x, sd, pre, heads, H, W, sr, eps=1e-5, scale=1.0):
    """Official GSA: keys/values from Conv(k=s=sr)+LN; query t at (t mod W, t div W);
    key m at (o + sr*(m mod W), o + sr*(m div W)), o = 1 - 1/sr (row length W); all
    positions times ``scale`` (the seg/det code's ``14 / H``)."""
    B, N, C = x.shape
    q = split_heads(lin(x, sd, pre + 'q'), heads)
    if sr > 1:
        r = F.conv2d(x.transpose(1, 2).reshape(B, C, H, W), sd[pre + 'sr.weight'],
                     sd[pre + 'sr.bias'], stride=sr)
        r = ref_ln(r.flatten(2).transpose(1, 2), sd[pre + 'norm.weight'],
                   sd[pre + 'norm.bias'], eps)
    else:
        r = x
    kv = lin(r, sd, pre + 'kv')
    k, v = split_heads(kv[..., :C], heads), split_heads(kv[..., C:], heads)
    M = (H * W) // sr // sr
    assert k.shape[2] == M
    o = 1.0 - 1.0 / sr
    qx, qy = [t % W for t in range(N)], [t // W for t in range(N)]
    kx, ky = [o + sr * (m % W) for m in range(M)], [o + sr * (m // W) for m in range(M)]
    qx, qy, kx, ky = ([scale * p for p in ps] for ps in (qx, qy, kx, ky))
    out = ref_attention(ref_rope(q, qx, qy), ref_rope(k, kx, ky), v)
    return lin(merge_heads(out), sd, pre + 'proj')


def ref_pyramid_stages(sd, img, stage_norms=None, auto_scale=False, srs=(8, 4, 2, 1),
                       eps=1e-5, head_dim=32):
    """The authors' pyramid trunk: per stage the patch embed (Conv + LN), then LSA (even j)
    and GSA (odd j) blocks. Classifier (default): no norm between stages, GSA unscaled.
    Seg/det backbone: ``auto_scale`` scales GSA positions (queries and keys) by
    ``14 / H_s`` (LSA stays window-local), and ``stage_norms`` [(weight, bias)] per stage is
    its ``norm_list``: ``x = norm_list[s](x)`` is both the stage's output and the next patch
    embedding's input. Returns the per-stage tokens [B, N_s, C_s] and grids."""
    sd = {k: v.double() for k, v in sd.items()}
    x, outs = img.double(), []
    for s in range(4):
        tok, H, W = ref_patches(x, sd[f'patch_embeds.{s}.proj.weight'],
                                sd[f'patch_embeds.{s}.proj.bias'])
        tok = ref_ln(tok, sd[f'patch_embeds.{s}.norm.weight'],
                     sd[f'patch_embeds.{s}.norm.bias'], eps)
        C = tok.shape[-1]
        heads = C // head_dim
        j = 0
        while f'blocks.{s}.{j}.norm1.weight' in sd:
            p = f'blocks.{s}.{j}.'
            h = ref_ln(tok, sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], eps)
            if j % 2 == 0:
                a = ref_lsa(h, sd, p + 'attn.', heads, H, W)
            else:
                a = ref_gsa(h, sd, p + 'attn.', heads, H, W, srs[s], eps,
                            scale=14 / H if auto_scale else 1.0)
            tok = tok + sd[p + 'gamma_1'] * a
            tok = tok + sd[p + 'gamma_2'] * ref_swiglu_split(
                ref_ln(tok, sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], eps), sd, p + 'mlp.')
            j += 1
        if stage_norms is not None:
            tok = ref_ln(tok, stage_norms[s][0].double(), stage_norms[s][1].double(), eps)
        x = tok.transpose(1, 2).reshape(tok.shape[0], C, H, W)
        outs.append((tok, H, W))
    return outs, sd


def ref_pyramid_logits(sd, img, eps=1e-5):
    """Official Pyramid-VisionLLaMA classifier: head(norm(mean(norm(x))))."""
    stages, sd = ref_pyramid_stages(sd, img, eps=eps)
    tok = ref_ln(stages[-1][0], sd['norm.weight'], sd['norm.bias'], eps)
    feat = ref_ln(tok.mean(dim=1), sd['norm.weight'], sd['norm.bias'], eps)
    return lin(feat, sd, 'head')


def ref_pyramid_dense(sd, norms, img):
    """The authors' seg/det pyramid backbone (``auto_scale=True``, ``norm_after_stage``):
    the per-stage maps [B, C_s, H_s, W_s]."""
    stages, _ = ref_pyramid_stages(sd, img, stage_norms=norms, auto_scale=True)
    return [t.transpose(1, 2).reshape(t.shape[0], -1, H, W) for t, H, W in stages]


# ==================================================================================
# Helpers
# ==================================================================================
def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def _convert_file(tmp_path, ckpt, name='official.pth', extra_args=()):
    src = _save(ckpt, tmp_path / name)
    dst = str(tmp_path / 'converted.pth')
    assert _tool().main([src, dst, *extra_args]) == 0
    return dst


class _Collect(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _load_pretrained(cls, cfg, dst):
    """Build the backbone from the converter's config and load DST through mmengine's
    ``Pretrained`` init; returns the model and mmengine's log messages."""
    from mmengine.logging import MMLogger
    cfg = dict(cfg)
    cfg.pop('type')
    model = cls(**cfg, init_cfg=dict(type='Pretrained', checkpoint=dst, prefix='backbone.'))
    logger = MMLogger.get_current_instance()
    handler = _Collect()
    logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    return model.eval(), handler.messages


def _assert_loaded_exactly(model, converted_sd, messages):
    msd = model.state_dict()
    backbone = {k[len('backbone.'):]: v for k, v in converted_sd.items()
                if k.startswith('backbone.')}
    assert set(msd) == set(backbone)
    for k, v in msd.items():
        assert torch.equal(v, backbone[k]), k
    assert not any('missing keys' in m or 'unexpected key' in m for m in messages), messages


def _printed_cfg(out: str):
    """exec the ``backbone=dict(...)`` block the tool printed."""
    text = out[out.index('backbone='):]
    scope = {}
    exec(text, {}, scope)
    return scope['backbone']


# ==================================================================================
# Tests: conversion + loading + equality with the official computation
# ==================================================================================
def test_mae_layout_matches_official_computation(tmp_path, capsys):
    sd = official_plain_sd(Maker(1), 'mae')
    ckpt = dict(meta=dict(epoch=800), state_dict=sd)
    dst = _convert_file(tmp_path, ckpt)
    out = capsys.readouterr().out
    assert 'detected layout: mae' in out

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    meta = saved['meta']['vllama_mm']
    cfg = meta['backbone']
    assert meta['format'] == 'mae'
    assert cfg['arch'] == dict(embed_dims=64, num_layers=2, num_heads=1,
                               feedforward_channels=256, ffn_bias=True, layer_scale_init=0.0)
    assert cfg['img_size'] == 64 and cfg['patch_size'] == 16  # from pos_embed [1, 17, d]
    assert cfg['norm_eps'] == 1e-6 and cfg['qkv_bias'] is True
    assert 'backbone.pos_embed' not in saved['state_dict']
    for k in ('neck.mask_token', 'neck.decoder_embed.weight', 'neck.decoder_embed.bias'):
        assert torch.equal(saved['state_dict'][k], sd[k])
    printed = _printed_cfg(out)
    assert printed == dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=dst,
                                              prefix='backbone.'))

    model, messages = _load_pretrained(VisionLLaMA, cfg, dst)
    _assert_loaded_exactly(model, saved['state_dict'], messages)

    # official fine-tuning path: no class token, 2D RoPE on the patch grid
    img = torch.randn(2, 3, 64, 64)
    cfg2 = dict(cfg, with_cls_token=False, out_type='featmap')
    cfg2.pop('type')
    fine = VisionLLaMA(**cfg2)
    fine.load_state_dict({k[9:]: v for k, v in saved['state_dict'].items()
                          if k.startswith('backbone.') and k != 'backbone.cls_token'})
    with torch.no_grad():
        ours = fine.eval()(img)[0]
    ref = ref_mae_featmap(sd, img, heads=1)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    # the comparison is sensitive: the same weights with 1D RoPE give other features
    with torch.no_grad():
        ours_1d = VisionLLaMA(**dict(cfg2, rope_type='1d')).eval()
        ours_1d.load_state_dict(fine.state_dict())
        assert (ours_1d(img)[0].double() - ref).abs().max() > 1e-3


def test_deit3_layout_matches_official_computation(tmp_path, capsys):
    heads = 2  # head dim 32 (--head-dim 32)
    sd = official_plain_sd(Maker(2), 'deit3')
    dst = _convert_file(tmp_path, dict(model=sd, epoch=799), extra_args=['--head-dim', '32'])
    out = capsys.readouterr().out
    assert 'detected layout: deit3' in out
    assert "head=dict(type='LinearClsHead', num_classes=10, in_channels=64)" in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    cfg = saved['meta']['vllama_mm']['backbone']
    assert cfg['arch'] == dict(embed_dims=64, num_layers=2, num_heads=heads,
                               feedforward_channels=256, ffn_bias=False,
                               layer_scale_init=1e-4)
    assert cfg['cls_token_rope'] == 'official' and cfg['rope_type'] == '2d'
    assert _printed_cfg(out)['arch'] == cfg['arch']

    model, messages = _load_pretrained(VisionLLaMA, cfg, dst)
    _assert_loaded_exactly(model, saved['state_dict'], messages)
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat = model(img)[0]  # out_type='cls_token'
    logits = feat @ saved['state_dict']['head.fc.weight'].T + saved['state_dict']['head.fc.bias']
    ref = ref_deit3_logits(sd, img, heads)
    torch.testing.assert_close(logits.double(), ref, rtol=1e-5, atol=1e-5)
    # sensitivity: the unrotated class token of the MAE setting gives other logits
    cfg_none = dict(cfg, cls_token_rope='none')
    cfg_none.pop('type')
    other = VisionLLaMA(**cfg_none).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        l2 = other(img)[0] @ saved['state_dict']['head.fc.weight'].T
    assert (l2.double() + saved['state_dict']['head.fc.bias'].double() - ref).abs().max() > 1e-4


@pytest.mark.parametrize('hw', [(64, 64), (64, 96)])
def test_pyramid_layout_matches_official_computation(tmp_path, capsys, hw):
    sd = official_pyramid_sd(Maker(3))
    dst = _convert_file(tmp_path, dict(model=sd, epoch=299, args=None))
    out = capsys.readouterr().out
    assert 'detected layout: pyramid' in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    cfg = saved['meta']['vllama_mm']['backbone']
    assert cfg['arch'] == dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2],
                               num_heads=[1, 2, 3, 4], sr_ratios=[8, 4, 2, 1],
                               feedforward_channels=[96, 128, 160, 192],
                               layer_scale_init=1e-4, ffn_bias=False)
    for k, v in dict(compat='official', out_type='avg_featmap', norm_eps=1e-5).items():
        assert cfg[k] == v, k
    assert 'compat preset: ' + repr('official') in out
    # GSA with sr = 1 becomes plain global attention with fused qkv = cat(q, kv)
    fused = saved['state_dict']['backbone.stages.3.1.attn.qkv.weight']
    assert torch.equal(fused, torch.cat([sd['blocks.3.1.attn.q.weight'],
                                         sd['blocks.3.1.attn.kv.weight']]))

    model, messages = _load_pretrained(PyramidVisionLLaMA, cfg, dst)
    _assert_loaded_exactly(model, saved['state_dict'], messages)
    img = torch.randn(2, 3, *hw)
    with torch.no_grad():
        feat = model(img)[0]
    logits = feat @ saved['state_dict']['head.fc.weight'].T + saved['state_dict']['head.fc.bias']
    ref = ref_pyramid_logits(sd, img)
    torch.testing.assert_close(logits.double(), ref, rtol=1e-5, atol=1e-5)

    # every switch of the preset matters: flipping any one of them changes the logits
    # (the whole preset, then one of its switches at a time on the official model)
    switches = dict(compat='correct', rope_compat='correct', window_pad_mask=True,
                    double_final_norm=False, rope_scale=None)
    for k, v in switches.items():
        c = {**cfg, 'compat': 'official', k: v}
        c.pop('type')
        other = PyramidVisionLLaMA(**c).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            lo = other(img)[0].double() @ saved['state_dict']['head.fc.weight'].double().T
        diff = (lo + saved['state_dict']['head.fc.bias'].double() - ref).abs().max()
        assert diff > 1e-4, (k, diff)


@pytest.mark.parametrize('row', ['upernet', 'vitdet'])
def test_mae_weights_in_the_authors_dense_backbones(row):
    """The MAE UperNet / ViTDet paper-row backbones (``rope_type='2d'`` at the fine-tuning
    size; ViTDet windows zero-padded and unmasked) equal the authors' computation."""
    sd = official_plain_sd(Maker(16), 'mae', depth=3)  # d 64, 1 head of 64, 4x4 pre-training
    conv = C.convert_checkpoint(dict(state_dict=sd))
    cfg = dict(conv.backbone, img_size=96, rope_type='2d', with_cls_token=False,
               out_type='featmap', final_norm=False, out_indices=-1)
    window = dict(window=4, global_blocks=(1, )) if row == 'vitdet' else {}
    if window:
        cfg.update(window_size=4, global_attn_indexes=(1, ), window_pad_mask=False)
    cfg.pop('type')
    weights = {k[len('backbone.'):]: v for k, v in conv.state_dict.items()
               if k.startswith('backbone.')}
    model = VisionLLaMA(**cfg).eval()
    model.load_state_dict(weights)  # the class token and final norm are dropped by the hook
    img = torch.randn(1, 3, 96, 96)  # a 6x6 grid: windows of 4 are padded to 8
    with torch.no_grad():
        ours = model(img)[0]
    ref = ref_mae_featmap(sd, img, heads=1, final_norm=False, **window)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    # sensitivity: AS2DRoPE anchored at the 4x4 pre-training grid is another network
    as2d = VisionLLaMA(**dict(cfg, img_size=64, rope_type='as2d')).eval()
    as2d.load_state_dict(weights)
    with torch.no_grad():
        assert (as2d(img)[0].double() - ref).abs().max() > 1e-3


@pytest.mark.parametrize('hw', [(320, 320), (256, 384)])
def test_pyramid_dense_mode_matches_official_seg_det_backbone(tmp_path, capsys, hw):
    """Converted ImageNet weights in ``out_type='featmap'`` with the official preset equal
    the authors' seg/det backbone (inter-stage LNs in the main path, GSA x 14/H_s) within
    1e-5 relative in fp32; 320 and 256x384 need padded LSA windows in every stage."""
    sd = official_pyramid_sd(Maker(13))
    dst = _convert_file(tmp_path, dict(model=sd))
    capsys.readouterr()
    cfg = dict(torch.load(dst, map_location='cpu', weights_only=True)['meta']['vllama_mm']
               ['backbone'], out_type='featmap', out_indices=(0, 1, 2, 3))
    model, messages = _load_pretrained(PyramidVisionLLaMA, cfg, dst)
    # exactly the four stage norms are new, at weight 1 / bias 0, and the log says why
    missing = [m for m in messages if 'missing keys' in m]
    assert len(missing) == 1
    named = set(re.findall(r'norms\.\d\.\w+', missing[0]))
    assert named == {f'norms.{s}.{p}' for s in range(4) for p in ('weight', 'bias')}
    assert 'unexpected key' not in ' '.join(messages)
    assert any('inter-stage norm' in m and 'weight 1, bias 0' in m for m in messages)
    for s in range(4):
        assert torch.equal(model.norms[s].weight, torch.ones_like(model.norms[s].weight))
        assert torch.equal(model.norms[s].bias, torch.zeros_like(model.norms[s].bias))
    g = torch.Generator().manual_seed(14)  # fine-tuned norms, so that they matter below
    with torch.no_grad():
        for n in model.norms:
            n.weight.copy_(1 + 0.3 * torch.randn(n.weight.shape, generator=g))
            n.bias.copy_(0.3 * torch.randn(n.bias.shape, generator=g))
    norms = [(n.weight.detach(), n.bias.detach()) for n in model.norms]
    img = torch.randn(1, 3, *hw, generator=g)
    with torch.no_grad():
        ours = model(img)
    ref = ref_pyramid_dense(sd, norms, img)
    for s, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, s
        rel = ((a.double() - b).norm() / b.norm()).item()
        assert rel < 1e-5, (s, rel)
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    # sensitivity: the correct geometry, or norms only on the returned maps, differ
    other = PyramidVisionLLaMA(**dict({k: v for k, v in cfg.items() if k != 'type'},
                                      compat='correct')).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (other(img)[2].double() - ref[2]).abs().max() > 1e-3
        x, side = img, []
        for st in range(4):  # the previous dense mode: LN on the side output only
            x, shape = model.patch_embeds[st](x)
            lsa, gq, gk = model.rope_tables(st, shape, x.device)
            for j, blk in enumerate(model.stages[st]):
                x = blk(x, shape, lsa, None) if j % 2 == 0 else blk(x, shape, gq, gk)
            side.append(model.norms[st](x))
            x = x.transpose(1, 2).reshape(1, -1, *shape)
    assert (side[3].transpose(1, 2).reshape(ref[3].shape).double() - ref[3]).abs().max() > 1e-3


def test_deit3_rope_choice_as2d_matches_auto_scale_variant(tmp_path, capsys):
    heads = 2
    sd = official_plain_sd(Maker(15), 'deit3')
    dst = _convert_file(tmp_path, dict(model=sd),
                        extra_args=['--head-dim', '32', '--rope', 'as2d'])
    out = capsys.readouterr().out
    assert 'rope: as2d' in out and 'auto_scale' in out
    meta = torch.load(dst, map_location='cpu', weights_only=True)['meta']['vllama_mm']
    assert meta['options'] == dict(rope='as2d')
    cfg = meta['backbone']
    assert cfg['rope_type'] == 'as2d' and cfg['img_size'] == 224
    model, _ = _load_pretrained(VisionLLaMA, cfg, dst)
    saved = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    img = torch.randn(2, 3, 64, 64)  # 4x4 grid: positions x 14/4
    with torch.no_grad():
        logits = model(img)[0] @ saved['head.fc.weight'].T + saved['head.fc.bias']
    ref = ref_deit3_logits(sd, img, heads, auto_scale=True)
    torch.testing.assert_close(logits.double(), ref, rtol=1e-5, atol=1e-5)
    assert (ref - ref_deit3_logits(sd, img, heads)).abs().max() > 1e-3  # the choice matters
    # the default is the unscaled variant, and the choice is refused where it means nothing
    assert C.convert_checkpoint(dict(model=sd), head_dim=32).options == dict(rope='2d')
    with pytest.raises(C.ConversionError, match='pyramid checkpoints take no --rope'):
        C.convert_checkpoint(dict(model=official_pyramid_sd(Maker(meta=True))), rope='2d')


def _meta_sd(names_shapes):
    return {k: torch.empty(*s, device='meta') for k, s in names_shapes}


def test_checkpoints_that_are_not_to_convert_are_named():
    """Tried as a new user would: one of our own training runs, or another model's
    mmengine checkpoint, must be named, not fail with an unrelated key error."""
    with torch.device('meta'):
        plain = VisionLLaMA(dict(embed_dims=64, num_layers=2, num_heads=1,
                                 layer_scale_init=1e-4))
        pyr = PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2]))
    run = {'backbone.' + k: v for k, v in plain.state_dict().items()}
    run.update(_meta_sd([('head.fc.weight', (10, 64)), ('head.fc.bias', (10, ))]))
    with pytest.raises(C.ConversionError, match="vllama_mm VisionLLaMA checkpoint.*already in "
                                                "this plugin's layout"):
        C.convert_checkpoint(dict(meta=dict(epoch=3), state_dict=run, optimizer={}))
    run = {'backbone.' + k: v for k, v in pyr.state_dict().items()}
    with pytest.raises(C.ConversionError, match='vllama_mm PyramidVisionLLaMA checkpoint'):
        C.convert_checkpoint(dict(state_dict=run))
    # mmpretrain's ViT-B (vit-base-p16 / MAE-ViT fine-tuned) key names
    vit = [('backbone.cls_token', (1, 1, 768)), ('backbone.pos_embed', (1, 197, 768)),
           ('backbone.patch_embed.projection.weight', (768, 3, 16, 16))]
    for i in range(12):
        p = f'backbone.layers.{i}.'
        vit += [(p + 'ln1.weight', (768, )), (p + 'attn.qkv.weight', (2304, 768)),
                (p + 'ffn.layers.0.0.weight', (3072, 768)), (p + 'ffn.layers.1.weight',
                                                             (768, 3072))]
    vit += [('backbone.ln1.weight', (768, )), ('head.layers.head.weight', (1000, 768))]
    with pytest.raises(C.ConversionError, match='mmpretrain VisionTransformer'):
        C.convert_checkpoint(dict(state_dict=_meta_sd(vit), meta=dict(epoch=100)))
    twins = _meta_sd([('patch_embeds.0.proj.weight', (64, 3, 4, 4)),
                      ('pos_block.0.proj.0.weight', (64, 1, 3, 3)),
                      ('blocks.0.0.mlp.fc1.weight', (256, 64))])
    with pytest.raises(C.ConversionError, match='Twins'):
        C.convert_checkpoint(dict(model=twins))
    # a vllama_mm MAE pre-training run is the released MAE layout: it converts
    mae = official_plain_sd(Maker(meta=True), 'mae')
    assert C.convert_checkpoint(dict(state_dict=mae)).fmt == 'mae'


# ==================================================================================
# Presets of the released sizes (shape-only meta tensors: no memory, no time)
# ==================================================================================
@pytest.mark.parametrize('fmt,kw,preset', [
    ('mae', dict(d=768, depth=12, hidden=8192, grid=14), 'mae-b'),
    ('mae', dict(d=1024, depth=24, hidden=11008, grid=14), 'mae-l'),
    ('deit3', dict(d=384, depth=12, hidden=1024, num_classes=1000), 's'),
    ('deit3', dict(d=768, depth=12, hidden=2048, num_classes=1000), 'b'),
    ('deit3', dict(d=1024, depth=24, hidden=2816, num_classes=1000), 'l'),
])
def test_released_plain_sizes_map_to_presets(fmt, kw, preset):
    sd = official_plain_sd(Maker(meta=True), fmt, **kw)
    ckpt = dict(state_dict=sd) if fmt == 'mae' else dict(model=sd)
    conv = C.convert_checkpoint(ckpt)  # includes the exact key/shape check on the model
    assert conv.backbone['arch'] == preset
    if fmt == 'mae':
        assert conv.backbone['img_size'] == 224


@pytest.mark.parametrize('dims,depths,preset', [
    ((64, 128, 256, 512), (2, 2, 10, 4), 's'),
    ((96, 192, 384, 768), (2, 2, 18, 2), 'b'),
    ((128, 256, 512, 1024), (2, 2, 18, 2), 'l'),
])
def test_released_pyramid_sizes_map_to_presets(dims, depths, preset):
    from vllama_mm.models.blocks import swiglu_hidden
    sd = official_pyramid_sd(Maker(meta=True), dims, depths,
                             hidden=[swiglu_hidden(d) for d in dims], num_classes=1000)
    conv = C.convert_checkpoint(dict(model=sd))
    assert conv.backbone['arch'] == preset
    assert conv.head == dict(num_classes=1000, in_channels=dims[-1])
    n = sum(v.numel() for v in sd.values())
    expected = {'s': 25.9e6, 'b': 56.0e6, 'l': 104.7e6}[preset]  # docs/design.md, Pyramid
    assert abs(n - expected) / expected < 5e-3


# ==================================================================================
# Round trips: our model -> official layout -> convert -> identical tensors
# ==================================================================================
def _randomise(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize('fmt', ['mae', 'deit3', 'deit3-gap', 'pyramid'])
def test_round_trip_is_identity(fmt):
    if fmt == 'pyramid':
        model = PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2]),
                                   out_type='avg_featmap')
    elif fmt == 'mae':
        model = VisionLLaMA(dict(embed_dims=64, num_layers=2, num_heads=1,
                                 feedforward_channels=256, ffn_bias=True), out_type='raw')
    elif fmt == 'deit3':
        model = VisionLLaMA(dict(embed_dims=64, num_layers=3, num_heads=1,
                                 layer_scale_init=1e-4), cls_token_rope='official')
    else:
        model = VisionLLaMA(dict(embed_dims=64, num_layers=2, num_heads=1,
                                 layer_scale_init=1e-4), with_cls_token=False,
                            final_norm=False, out_type='avg_featmap')
    ours = {'backbone.' + k: v for k, v in _randomise(model).state_dict().items()}
    if fmt == 'mae':  # stock MAE decoder parameters ride along
        ours['neck.mask_token'] = torch.randn(1, 1, 32)
    else:  # mmpretrain LinearClsHead on the final width
        width = model.embed_dims[-1] if fmt == 'pyramid' else model.embed_dims
        ours['head.fc.weight'], ours['head.fc.bias'] = torch.randn(7, width), torch.randn(7)
    off_fmt = 'deit3' if fmt == 'deit3-gap' else fmt
    official = C.to_official(ours, off_fmt)
    ckpt = dict(state_dict=official) if fmt == 'mae' else dict(model=official)
    conv = C.convert_checkpoint(ckpt)
    assert conv.fmt == off_fmt
    assert set(conv.state_dict) == set(ours)
    for k, v in ours.items():
        assert torch.equal(conv.state_dict[k], v), k
    # the converted keys cover every model key exactly once, and nothing else
    model_keys = {'backbone.' + k for k in model.state_dict()}
    assert {k for k in conv.state_dict if k.startswith('backbone.')} == model_keys


# ==================================================================================
# Bad input: clear errors
# ==================================================================================
def test_truncated_file_gives_clear_error(tmp_path):
    path = _save(dict(model=official_plain_sd(Maker(4), 'deit3')), tmp_path / 'full.pth')
    data = open(path, 'rb').read()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(C.ConversionError, match='truncated or corrupt'):
        load_official(str(cut))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(C.ConversionError, match='empty'):
        load_official(str(empty))
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'this is not a checkpoint' * 10)
    with pytest.raises(C.ConversionError, match='cannot'):
        load_official(str(garbage))
    with pytest.raises(FileNotFoundError, match='not found'):
        load_official(str(tmp_path / 'missing.pth'))


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    src = tmp_path / 'cut.pth'
    src.write_bytes(b'PK\x03\x04 truncated')
    assert _tool().main([str(src), str(tmp_path / 'out.pth')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'cut.pth' in err
    assert not (tmp_path / 'out.pth').exists()


def test_foreign_checkpoints_are_rejected_naming_what_was_found():
    with pytest.raises(C.ConversionError, match=r"unrecognised checkpoint.*'foo'"):
        C.convert_checkpoint({'foo': 1, 'bar': 'x'})
    resnet = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.zeros(64),
              'layer1.0.conv1.weight': torch.zeros(64, 64, 3, 3), 'fc.weight': torch.zeros(10, 512)}
    try:  # the real thing when torchvision imports
        import torchvision
        resnet = torchvision.models.resnet18(weights=None).state_dict()
    except Exception:  # noqa: BLE001  torchvision is optional for this test
        pass
    with pytest.raises(C.ConversionError, match=r"unrecognised checkpoint layout.*'conv1\.weight'"):
        C.convert_checkpoint(resnet)
    with pytest.raises(C.ConversionError, match='expected a checkpoint dict, got list'):
        C.convert_checkpoint([1, 2])


def test_missing_unknown_and_misshapen_keys_are_named():
    sd = official_plain_sd(Maker(meta=True), 'deit3')
    bad = {k: v for k, v in sd.items() if k != 'blocks.1.attn.proj.weight'}
    with pytest.raises(C.ConversionError, match=r"missing expected key 'blocks\.1\.attn\.proj\.weight'"):
        C.convert_checkpoint(dict(model=bad))
    bad = dict(sd, **{'blocks.0.attn.qkv.weight': torch.empty(100, 64, device='meta')})
    with pytest.raises(C.ConversionError, match=r"'blocks\.0\.attn\.qkv\.weight' has shape \(100, 64\)"):
        C.convert_checkpoint(dict(model=bad))
    bad = dict(sd, **{'blocks.0.attn.rel_pos': torch.empty(3, device='meta')})
    with pytest.raises(C.ConversionError, match=r"unrecognised keys 'blocks\.0\.attn\.rel_pos'"):
        C.convert_checkpoint(dict(model=bad))
    bad = {k.replace('blocks.1.', 'blocks.2.'): v for k, v in sd.items()}
    with pytest.raises(C.ConversionError, match='not contiguous'):
        C.convert_checkpoint(dict(model=bad))
    pyr = official_pyramid_sd(Maker(meta=True), depths=(2, 4, 2, 2))
    pyr['blocks.1.3.attn.sr.weight'] = torch.empty(64, 64, 3, 3, device='meta')
    with pytest.raises(C.ConversionError, match='stage 1 mixes GSA sub-sampling ratios 4 and 3'):
        C.convert_checkpoint(dict(model=pyr))


def test_head_dim_must_divide_width_and_be_divisible_by_4():
    sd = official_plain_sd(Maker(meta=True), 'deit3')  # d = 64
    with pytest.raises(C.ConversionError, match='head dim 2 is not divisible by 4'):
        C.convert_checkpoint(dict(model=sd), head_dim=2)
    with pytest.raises(C.ConversionError, match='width 64 is not divisible by the head dim 48'):
        C.convert_checkpoint(dict(model=sd), head_dim=48)
    pyr = official_pyramid_sd(Maker(meta=True), dims=(32, 64, 96, 120))
    with pytest.raises(C.ConversionError, match='stage 3: width 120 is not divisible'):
        C.convert_checkpoint(dict(model=pyr))


def test_non_tensor_globals_need_explicit_unsafe(tmp_path):
    import datetime
    sd = official_plain_sd(Maker(6), 'deit3')
    path = _save(dict(model=sd, saved_on=datetime.date(2024, 3, 1)), tmp_path / 'odd.pth')
    with pytest.raises(C.ConversionError, match=r'datetime\.date.*--unsafe'):
        load_official(path)
    ckpt = load_official(path, unsafe=True)
    assert C.convert_checkpoint(ckpt).fmt == 'deit3'
    # what the released files do carry loads safely: DeiT's argparse args, mmengine meta
    import argparse
    path = _save(dict(model=sd, args=argparse.Namespace(lr=1e-3, model='pllama')),
                 tmp_path / 'deit.pth')
    assert load_official(path)['args'].lr == 1e-3


def test_converted_file_is_not_converted_twice(tmp_path):
    dst = _convert_file(tmp_path, dict(model=official_plain_sd(Maker(7), 'deit3')))
    with pytest.raises(C.ConversionError, match='already converted'):
        C.convert_checkpoint(load_official(dst))


def test_module_prefix_and_state_dict_container_are_accepted():
    sd = official_plain_sd(Maker(meta=True), 'deit3')
    conv = C.convert_checkpoint(dict(state_dict={'module.' + k: v for k, v in sd.items()}))
    assert conv.fmt == 'deit3'
    assert C.convert_checkpoint(sd).fmt == 'deit3'  # bare state dict


def test_script_runs_standalone(tmp_path):
    src = _save(dict(model=official_pyramid_sd(Maker(8))), tmp_path / 'best_checkpoint.pth')
    dst = str(tmp_path / 'pvllama.pth')
    res = subprocess.run([sys.executable, TOOL, src, dst], capture_output=True, text=True,
                         cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr
    assert "type='PyramidVisionLLaMA'" in res.stdout and "compat='official'" in res.stdout
    assert osp.isfile(dst)


# ==================================================================================
# The converted files in the libraries' own models (skipped without mmpretrain)
# ==================================================================================
def _mmpretrain_models():
    pytest.importorskip('mmpretrain')
    import vllama_mm.mmpretrain  # noqa: F401  registration
    from mmpretrain.registry import MODELS
    return MODELS


def test_mmpretrain_classifier_loads_converted_pyramid_strictly(tmp_path, capsys):
    MODELS = _mmpretrain_models()
    from mmengine.runner import load_checkpoint
    sd = official_pyramid_sd(Maker(9))
    dst = _convert_file(tmp_path, dict(model=sd))
    meta = torch.load(dst, map_location='cpu', weights_only=True)['meta']['vllama_mm']
    model = MODELS.build(dict(type='ImageClassifier', backbone=meta['backbone'], neck=None,
                              head=dict(type='LinearClsHead', **meta['head']))).eval()
    load_checkpoint(model, dst, map_location='cpu', strict=True)
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(img, mode='tensor')
    torch.testing.assert_close(logits.double(), ref_pyramid_logits(sd, img), rtol=1e-5,
                               atol=1e-5)


def test_mmpretrain_mae_algorithm_loads_converted_mae_strictly(tmp_path, capsys):
    MODELS = _mmpretrain_models()
    from mmengine.runner import load_checkpoint
    neck_cfg = dict(type='MAEPretrainDecoder', num_patches=16, patch_size=16, in_chans=3,
                    embed_dim=64, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    decoder = MODELS.build(neck_cfg)  # the stock decoder: its keys are the official ones
    sd = {k: v for k, v in official_plain_sd(Maker(10), 'mae').items()
          if not k.startswith('neck.')}
    sd.update({'neck.' + k: torch.randn(v.shape) for k, v in decoder.state_dict().items()})
    dst = _convert_file(tmp_path, dict(state_dict=sd, meta=dict(epoch=800)))
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    backbone = dict(saved['meta']['vllama_mm']['backbone'], type='VisionLLaMAMAE')
    model = MODELS.build(dict(
        type='MAE', backbone=backbone, neck=neck_cfg,
        head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=16,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    load_checkpoint(model, dst, map_location='cpu', strict=True)
    msd = model.state_dict()
    assert set(msd) == set(saved['state_dict'])
    for k, v in saved['state_dict'].items():
        assert torch.equal(msd[k], v), k


def test_mmengine_training_meta_loads_safely(tmp_path):
    """The released MAE files are mmengine training checkpoints: their message hub
    (HistoryBuffer, numpy arrays and scalars) must load without --unsafe."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(np.float64(0.5))
    buf.update(0.25)
    meta = dict(epoch=800, iter=250200, message_hub=dict(
        log_scalars={'train/loss': buf}, runtime_info={'epoch': np.int64(800)}))
    path = _save(dict(state_dict=official_plain_sd(Maker(11), 'mae'), meta=meta),
                 tmp_path / 'epoch_800.pth')
    ckpt = load_official(path)
    assert ckpt['meta']['message_hub']['log_scalars']['train/loss'].mean() == 0.375
    assert C.convert_checkpoint(ckpt).fmt == 'mae'


class _Sneaky:
    """Pickles as a call the restricted loader must refuse."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return self.target


def test_safe_loading_refuses_code_paths(tmp_path):
    import argparse
    import os
    sd = official_plain_sd(Maker(12), 'deit3')
    # getattr on an allow-listed class is still refused unless it is a HistoryBuffer method
    path = _save(dict(model=sd, x=_Sneaky((getattr, (argparse.Namespace, '__init__')))),
                 tmp_path / 'getattr.pth')
    with pytest.raises(C.ConversionError, match=r"refusing getattr\(Namespace, '__init__'\)"):
        load_official(path)
    path = _save(dict(model=sd, x=_Sneaky((os.system, ('true',)))), tmp_path / 'system.pth')
    with pytest.raises(C.ConversionError, match=r'(posix|nt)\.system.*--unsafe'):
        load_official(path)


def test_pyramid_head_dim_other_than_32_is_refused():
    pyr = official_pyramid_sd(Maker(meta=True), dims=(64, 128, 192, 256))
    with pytest.raises(C.ConversionError, match='head dim must be 32'):
        C.convert_checkpoint(dict(model=pyr), head_dim=64)
