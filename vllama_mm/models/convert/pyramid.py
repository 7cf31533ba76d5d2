"""Pyramid-VisionLLaMA ImageNet weights (the authors' Twins-based code) -> PyramidVisionLLaMA.

LSA blocks (even j) keep their fused ``qkv``; GSA blocks (odd j) keep ``q``/``kv``
(+ ``sr``/``norm``) when sr > 1 and become one fused ``qkv = cat([q, kv])`` when sr = 1
(plain global attention); SwiGLU ``w12 = cat([c_fc1, c_fc2])`` as in the plain layout.
"""
import re
from typing import Any, Dict, List, Mapping, Union

from torch import Tensor

from ..blocks import swiglu_hidden
from ..pyramid_vision_llama import PyramidVisionLLaMA
from .plain import SWIGLU
from .table import (ConversionError, Converted, Layout, StateDict, apply_table, back, fuse,
                    heads, indices, options_none, unfuse)

OFFICIAL_SR = [8, 4, 2, 1]
NUM_STAGES = 4

TABLE = (  # (official, ours)
    ('patch_embeds.{s}.proj.{w}', 'backbone.patch_embeds.{s}.projection.{w}'),
    ('patch_embeds.{s}.norm.{w}', 'backbone.patch_embeds.{s}.norm.{w}'),
    ('blocks.{s}.{j}.norm{n}.{w}', 'backbone.stages.{s}.{j}.ln{n}.{w}'),
    ('blocks.{s}.{j}.attn.{a}.{w}', 'backbone.stages.{s}.{j}.attn.{a}.{w}'),
    ('blocks.{s}.{j}.mlp.w12.{w}', 'backbone.stages.{s}.{j}.ffn.w12.{w}'),  # c_fc1 | c_fc2
    ('blocks.{s}.{j}.mlp.c_proj.{w}', 'backbone.stages.{s}.{j}.ffn.w3.{w}'),
    ('blocks.{s}.{j}.gamma_{n}', 'backbone.stages.{s}.{j}.ls{n}.weight'),
    ('norm.{w}', 'backbone.norm.{w}'),
    ('head.{w}', 'head.fc.{w}'),
)
GSA_GLOBAL = ('.attn.q.', '.attn.kv.', '.attn.qkv.')  # sr = 1: rows q | k | v


def _gsa(key: str) -> bool:
    """A GSA (odd) block of the official or our layout."""
    m = re.search(r'(?:blocks|stages)\.\d+\.(\d+)\.', key)
    return m is not None and int(m.group(1)) % 2 == 1


def _arch(dims: List[int], depths: List[int], nh: List[int], srs: List[int],
          hidden: List[int], layer_scale: bool, ffn_bias: bool) -> Union[str, Dict]:
    """Preset name of :class:`PyramidVisionLLaMA` matching these sizes, else a dict."""
    if srs == OFFICIAL_SR and layer_scale and not ffn_bias and \
            hidden == [swiglu_hidden(d) for d in dims]:
        for name in ('s', 'b', 'l'):
            p = PyramidVisionLLaMA.arch_zoo[name]
            if p['embed_dims'] == dims and p['depths'] == depths and p['num_heads'] == nh:
                return name
    return dict(embed_dims=dims, depths=depths, num_heads=nh, sr_ratios=srs,
                feedforward_channels=hidden, layer_scale_init=1e-4 if layer_scale else 0.0,
                ffn_bias=ffn_bias)


def _stage_sr(sd: Mapping[str, Tensor], s: int, notes: List[str]) -> int:
    """The GSA sub-sampling ratio of stage ``s`` (one for all its GSA blocks)."""
    srs = {}
    for k, v in sd.items():
        m = re.fullmatch(rf'blocks\.{s}\.(\d+)\.attn\.sr\.weight', k)
        if m:
            srs.setdefault(int(v.shape[-1]), k)
        elif re.fullmatch(rf'blocks\.{s}\.\d*[13579]\.attn\.q\.weight', k) and \
                k.replace('.q.weight', '.sr.weight') not in sd:
            srs.setdefault(1, k)
    if len(srs) > 1:
        (a, _), (b, key) = sorted(srs.items(), key=lambda kv: kv[1])[:2]
        raise ConversionError(f'pyramid checkpoint: stage {s} mixes GSA sub-sampling '
                              f'ratios {a} and {b} (at {key!r})')
    if not srs:
        notes.append(f'stage {s} has no GSA block: assumed sr={OFFICIAL_SR[s]}')
        return OFFICIAL_SR[s]
    return next(iter(srs))


def convert(sd: Mapping[str, Tensor], head_dim: int = 32, **options: Any) -> Converted:
    """Official pyramid weights -> PyramidVisionLLaMA config with ``compat='official'``."""
    options_none('pyramid', options)
    stages = sorted({i[0] for i in indices(sd, r'patch_embeds\.(\d+)\.', 'pyramid')})
    blocks = indices(sd, r'blocks\.(\d+)\.(\d+)\.', 'pyramid')
    block_stages = sorted({i[0] for i in blocks})
    if stages != list(range(NUM_STAGES)) or block_stages != stages:
        raise ConversionError(f'pyramid checkpoint: expected {NUM_STAGES} stages of '
                              f'patch_embeds and blocks, found patch_embeds {stages} and '
                              f'blocks {block_stages}')
    notes: List[str] = []
    dims, depths, nh, srs, hidden = [], [], [], [], []
    for s in stages:
        w = sd[f'patch_embeds.{s}.proj.weight']  # [d, cin, k, k]
        k = 4 if s == 0 else 2
        if w.dim() != 4 or w.shape[2] != k or (s > 0 and w.shape[1] != dims[-1]):
            raise ConversionError(
                f'pyramid checkpoint: patch_embeds.{s}.proj.weight has shape '
                f'{tuple(w.shape)}, expected [dim, {dims[-1] if s else "in_channels"}, '
                f'{k}, ...]')
        dims.append(int(w.shape[0]))
        depths.append(sum(1 for i in blocks if i[0] == s))
        nh.append(heads(dims[-1], head_dim, f'pyramid checkpoint stage {s}'))
        srs.append(_stage_sr(sd, s, notes))
        hidden.append(int(sd[f'blocks.{s}.0.mlp.c_fc1.weight'].shape[0]))
    drops = {'pos_embed': 'unused by the official pyramid model',
             'cls_token': 'unused by the official pyramid model'}
    fused = fuse(fuse(sd, *SWIGLU), *GSA_GLOBAL, when=lambda k: _gsa(k) and k.replace(
        '.q.', '.sr.').replace('.kv.', '.sr.') not in sd)
    ours, more = apply_table(fused, TABLE, 'pyramid', drops)
    arch = _arch(dims, depths, nh, srs, hidden, 'blocks.0.0.gamma_1' in sd,
                 'blocks.0.0.mlp.c_fc1.bias' in sd)
    backbone = dict(type='PyramidVisionLLaMA', arch=arch, img_size=224,
                    out_type='avg_featmap', compat='official', window_size=7,
                    qkv_bias='blocks.0.0.attn.qkv.bias' in sd, norm_eps=1e-5)
    if sd['patch_embeds.0.proj.weight'].shape[1] != 3:
        backbone['in_channels'] = int(sd['patch_embeds.0.proj.weight'].shape[1])
    notes += more
    notes.append("compat='official': the authors' geometry these weights were trained with "
                 '(GSA key positions, unmasked padded LSA windows, flooring GSA pooling; '
                 'classifier norm(mean(norm(x))), unscaled GSA positions). With '
                 "out_type='featmap' the same preset gives the authors' seg/det backbone "
                 '(GSA positions x 14/H_stage, a LayerNorm after every stage)')
    head = None
    if 'head.fc.weight' in ours:
        head = dict(num_classes=int(ours['head.fc.weight'].shape[0]), in_channels=dims[-1])
    return Converted('pyramid', ours, backbone, head, notes)


def to_official(sd: Mapping[str, Tensor]) -> StateDict:
    out = back(sd, TABLE, 'pyramid')
    out = unfuse(out, GSA_GLOBAL[2], GSA_GLOBAL[0], GSA_GLOBAL[1], lambda t: t.shape[0] // 3,
                 when=_gsa)
    return unfuse(out, SWIGLU[2], SWIGLU[0], SWIGLU[1], lambda t: t.shape[0] // 2)


PYRAMID = Layout(
    name='pyramid',
    description='Pyramid-VisionLLaMA ImageNet weights (the authors\' Twins-based code)',
    detect=lambda sd: any(k.startswith('patch_embeds.') for k in sd)
    and any(k.startswith('blocks.') and '.mlp.c_fc1.' in k for k in sd),
    convert=convert, to_official=to_official, head_dim=32,
)
