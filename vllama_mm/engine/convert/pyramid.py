"""Pyramid-VisionLLaMA ImageNet weights (the authors' Twins-based code) -> PyramidVisionLLaMA.

LSA blocks (even j) keep their fused ``qkv``; GSA blocks (odd j) keep ``q``/``kv``
(+ ``sr``/``norm``) when sr > 1 and become one fused ``qkv = cat([q, kv])`` when sr = 1
(plain global attention); SwiGLU ``w12 = cat([c_fc1, c_fc2])`` as in the plain layout.
"""
from typing import Any, List, Mapping

from torch import Tensor

from .common import ConversionError, Converted, heads
from .keymap import Group, Mapped, Variant, prefixed, rule
from .layout import Layout
from .plain import BLOCK, FUSED_QKV, _no_options

OFFICIAL_SR = [8, 4, 2, 1]
NUM_STAGES = 4

_GSA_POOLED = (  # first rule marks the variant: a sub-sampling conv exists
    rule('attn.sr.weight', 'attn.sr.weight', ('d', 'd', 'sr', 'sr')),
    rule('attn.sr.bias', 'attn.sr.bias', ('d', )),
    rule('attn.norm.weight', 'attn.norm.weight', ('d', )),
    rule('attn.norm.bias', 'attn.norm.bias', ('d', )),
    rule('attn.q.weight', 'attn.q.weight', ('d', 'd')),
    rule('attn.q.bias', 'attn.q.bias', ('d', ), flag='qkv_bias'),
    rule('attn.kv.weight', 'attn.kv.weight', ('2d', 'd')),
    rule('attn.kv.bias', 'attn.kv.bias', ('2d', ), flag='qkv_bias'),
)
_GSA_GLOBAL = (  # sr = 1: our plain global attention, rows q | k | v
    rule('attn.qkv.weight', ('attn.q.weight', 'attn.kv.weight'), ('d', 'd'), ('2d', 'd')),
    rule('attn.qkv.bias', ('attn.q.bias', 'attn.kv.bias'), ('d', ), ('2d', ),
         flag='qkv_bias'),
)


def _block(rules):
    return prefixed(rules, 'backbone.stages.{s}.{j}.', 'blocks.{s}.{j}.')


GROUPS = (
    Group('patch_embed', r'patch_embeds\.(\d+)\.', r'backbone\.patch_embeds\.(\d+)\.', ('s', ),
          scope='stage {s}', rules=prefixed((
              rule('projection.weight', 'proj.weight', ('d', 'cin', 'k', 'k')),
              rule('projection.bias', 'proj.bias', ('d', )),
              rule('norm.weight', 'norm.weight', ('d', )),
              rule('norm.bias', 'norm.bias', ('d', )),
          ), 'backbone.patch_embeds.{s}.', 'patch_embeds.{s}.')),
    Group('block', r'blocks\.(\d+)\.(\d+)\.', r'backbone\.stages\.(\d+)\.(\d+)\.', ('s', 'j'),
          scope='stage {s}', rules=_block(BLOCK), variants=(
              Variant(_block(FUSED_QKV), parity=0),  # LSA
              Variant(_block(_GSA_POOLED), parity=1, marked=True),
              Variant(_block(_GSA_GLOBAL), parity=1, binds=(('sr', 1), )),
          )),
    Group('top', rules=(
        rule('backbone.norm.weight', 'norm.weight', ('*', )),
        rule('backbone.norm.bias', 'norm.bias', ('*', )),
        rule('head.fc.weight', 'head.weight', ('nc', '*'), flag='head'),
        rule('head.fc.bias', 'head.bias', ('nc', ), flag='head'),
    )),
)


def _arch(dims: List[int], depths: List[int], nh: List[int], srs: List[int],
          hidden: List[int], layer_scale: bool, ffn_bias: bool):
    """Preset name of :class:`PyramidVisionLLaMA` matching these sizes, else a dict."""
    from ...models.blocks import swiglu_hidden
    from ...models.pyramid_vision_llama import PyramidVisionLLaMA
    if srs == OFFICIAL_SR and layer_scale and not ffn_bias and \
            hidden == [swiglu_hidden(d) for d in dims]:
        for name in ('s', 'b', 'l'):
            p = PyramidVisionLLaMA.arch_zoo[name]
            if p['embed_dims'] == dims and p['depths'] == depths and p['num_heads'] == nh:
                return name
    return dict(embed_dims=dims, depths=depths, num_heads=nh, sr_ratios=srs,
                feedforward_channels=hidden, layer_scale_init=1e-4 if layer_scale else 0.0,
                ffn_bias=ffn_bias)


def finish(m: Mapped, sd: Mapping[str, Tensor], notes: List[str], head_dim: int,
           **options: Any) -> Converted:
    """Pyramid symbols -> PyramidVisionLLaMA config with ``compat='official'``."""
    _no_options('pyramid', options)
    stages = sorted({i[0] for i in m.indices['patch_embed']})
    block_stages = sorted({i[0] for i in m.indices['block']})
    if stages != list(range(NUM_STAGES)) or block_stages != stages:
        raise ConversionError(f'pyramid checkpoint: expected {NUM_STAGES} stages of '
                              f'patch_embeds and blocks, found patch_embeds {stages} and '
                              f'blocks {block_stages}')
    dims, depths, nh, srs, hidden = [], [], [], [], []
    for s in stages:
        scope = f'stage {s}'
        d, k, cin = m.sym('d', scope), m.sym('k', scope), m.sym('cin', scope)
        if k != (4 if s == 0 else 2) or (s > 0 and cin != dims[-1]):
            raise ConversionError(
                f'pyramid checkpoint: patch_embeds.{s}.proj.weight has shape '
                f'{tuple(sd[f"patch_embeds.{s}.proj.weight"].shape)}, expected '
                f'[dim, {dims[-1] if s else "in_channels"}, {4 if s == 0 else 2}, ...]')
        sr = m.sym('sr', scope)
        if sr is None:
            sr = OFFICIAL_SR[s]
            notes.append(f'stage {s} has no GSA block: assumed sr={sr}')
        dims.append(d)
        depths.append(sum(1 for i in m.indices['block'] if i[0] == s))
        nh.append(heads(d, head_dim, f'pyramid checkpoint stage {s}'))
        srs.append(sr)
        hidden.append(m.sym('h', scope))
    arch = _arch(dims, depths, nh, srs, hidden, m.flags.get('layer_scale', False),
                 m.flags.get('ffn_bias', False))
    backbone = dict(type='PyramidVisionLLaMA', arch=arch, img_size=224,
                    out_type='avg_featmap', compat='official', window_size=7,
                    qkv_bias=m.flags.get('qkv_bias', False), norm_eps=1e-5)
    if m.sym('cin', 'stage 0') != 3:
        backbone['in_channels'] = m.sym('cin', 'stage 0')
    notes.append("compat='official': the authors' geometry these weights were trained with "
                 '(GSA key positions, unmasked padded LSA windows, flooring GSA pooling; '
                 'classifier norm(mean(norm(x))), unscaled GSA positions). With '
                 "out_type='featmap' the same preset gives the authors' seg/det backbone "
                 '(GSA positions x 14/H_stage, a LayerNorm after every stage)')
    head = None
    if 'head.fc.weight' in m.state_dict:
        head = dict(num_classes=m.sym('nc'), in_channels=dims[-1])
    return Converted('pyramid', m.state_dict, backbone, head, notes)


PYRAMID = Layout(
    name='pyramid',
    description='Pyramid-VisionLLaMA ImageNet weights (the authors\' Twins-based code)',
    groups=GROUPS,
    detect=lambda sd: any(k.startswith('patch_embeds.') for k in sd)
    and any(k.startswith('blocks.') and '.mlp.c_fc1.' in k for k in sd),
    finish=finish,
    head_dim=32,
    drops=(('pos_embed', 'unused by the official pyramid model'),
           ('cls_token', 'unused by the official pyramid model')),
)
