"""Plain VisionLLaMA layouts: the released MAE weights and the DeiT3-style supervised code.

Both map onto :class:`~vllama_mm.models.VisionLLaMA` (``backbone.layers.{i}``). The
per-block table of the authors' supervised code (``norm1``, ``mlp.c_fc1``, ``gamma_1``,
...) is shared with the pyramid layout (:data:`BLOCK`).
"""
from typing import Any, List, Mapping

from torch import Tensor

from .common import ConversionError, Converted, heads
from .keymap import Group, Mapped, Variant, prefixed, rule
from .layout import Layout

ROPE_CHOICES = ('2d', 'as2d')

# one block of the authors' DeiT/Twins training code (ours <- theirs), prefix-free
BLOCK = (
    rule('ln1.weight', 'norm1.weight', ('d', )),
    rule('ln1.bias', 'norm1.bias', ('d', )),
    rule('ln2.weight', 'norm2.weight', ('d', )),
    rule('ln2.bias', 'norm2.bias', ('d', )),
    rule('attn.proj.weight', 'attn.proj.weight', ('d', 'd')),
    rule('attn.proj.bias', 'attn.proj.bias', ('d', )),
    rule('ffn.w12.weight', ('mlp.c_fc1.weight', 'mlp.c_fc2.weight'), ('h', 'd'), ('h', 'd')),
    rule('ffn.w12.bias', ('mlp.c_fc1.bias', 'mlp.c_fc2.bias'), ('h', ), ('h', ),
         flag='ffn_bias'),
    rule('ffn.w3.weight', 'mlp.c_proj.weight', ('d', 'h')),
    rule('ffn.w3.bias', 'mlp.c_proj.bias', ('d', ), flag='ffn_bias'),
    rule('ls1.weight', 'gamma_1', ('d', ), flag='layer_scale'),
    rule('ls2.weight', 'gamma_2', ('d', ), flag='layer_scale'),
)
FUSED_QKV = (
    rule('attn.qkv.weight', 'attn.qkv.weight', ('3d', 'd')),
    rule('attn.qkv.bias', 'attn.qkv.bias', ('3d', ), flag='qkv_bias'),
)

# the released MAE encoder: our names, except layer scale (absent in the release)
_MAE_BLOCK = tuple(rule(n, n, *s, flag=f) for n, s, f in (
    ('ln1.weight', [('d', )], None), ('ln1.bias', [('d', )], None),
    ('ln2.weight', [('d', )], None), ('ln2.bias', [('d', )], None),
    ('attn.proj.weight', [('d', 'd')], None), ('attn.proj.bias', [('d', )], None),
    ('ffn.w12.weight', [('2h', 'd')], None), ('ffn.w12.bias', [('2h', )], 'ffn_bias'),
    ('ffn.w3.weight', [('d', 'h')], None), ('ffn.w3.bias', [('d', )], 'ffn_bias'),
)) + FUSED_QKV + (
    rule('ls1.weight', 'attn.gamma1.weight', ('d', ), flag='layer_scale'),
    rule('ls2.weight', 'ffn.gamma2.weight', ('d', ), flag='layer_scale'),
)

MAE_GROUPS = (
    Group('stem', rules=(
        rule('backbone.patch_embed.projection.weight', 'backbone.patch_embed.projection.weight',
             ('d', 'in', 'p', 'p')),
        rule('backbone.patch_embed.projection.bias', 'backbone.patch_embed.projection.bias',
             ('d', )),
        rule('backbone.cls_token', 'backbone.cls_token', (1, 1, 'd'), flag='cls_token'),
        rule('backbone.ln1.weight', 'backbone.ln1.weight', ('d', )),
        rule('backbone.ln1.bias', 'backbone.ln1.bias', ('d', )),
    )),
    Group('layer', r'backbone\.layers\.(\d+)\.', r'backbone\.layers\.(\d+)\.', ('i', ),
          rules=prefixed(_MAE_BLOCK, 'backbone.layers.{i}.', 'backbone.layers.{i}.')),
)

DEIT3_GROUPS = (
    Group('stem', rules=(
        rule('backbone.patch_embed.projection.weight', 'patch_embed.proj.weight',
             ('d', 'in', 'p', 'p')),
        rule('backbone.patch_embed.projection.bias', 'patch_embed.proj.bias', ('d', )),
        rule('head.fc.weight', 'head.weight', ('nc', 'd'), flag='head'),
        rule('head.fc.bias', 'head.bias', ('nc', ), flag='head'),
    ), variants=(
        # class-token model: norm(x)[:, 0] -> our final norm ln1, out_type='cls_token'
        Variant((rule('backbone.cls_token', 'cls_token', (1, 1, 'd')),
                 rule('backbone.ln1.weight', 'norm.weight', ('d', )),
                 rule('backbone.ln1.bias', 'norm.bias', ('d', ))), marked=True),
        # GAP model: norm(mean(x)) -> final_norm=False and ln2 after the mean
        Variant((rule('backbone.ln2.weight', 'norm.weight', ('d', )),
                 rule('backbone.ln2.bias', 'norm.bias', ('d', )))),
    )),
    Group('layer', r'blocks\.(\d+)\.', r'backbone\.layers\.(\d+)\.', ('i', ),
          rules=prefixed(BLOCK + FUSED_QKV, 'backbone.layers.{i}.', 'blocks.{i}.')),
)


def _plain_arch(m: Mapped, head_dim: int, fmt: str):
    """Preset name of :class:`VisionLLaMA` matching the weights, else a custom dict."""
    from ...models.vision_llama import VisionLLaMA
    d = m.sym('d')
    want = dict(embed_dims=d, num_layers=len(m.indices['layer']),
                num_heads=heads(d, head_dim, f'{fmt} checkpoint'),
                feedforward_channels=m.sym('h'), ffn_bias=m.flags.get('ffn_bias', False))
    if want['num_layers'] == 0:
        raise ConversionError(f'{fmt} checkpoint: no transformer layers found')
    ls = m.flags.get('layer_scale', False)
    for name in ('s', 'b', 'l', 'mae-b', 'mae-l'):
        preset = VisionLLaMA.arch_zoo[name]
        if all(preset[k] == v for k, v in want.items()) and \
                (preset['layer_scale_init'] > 0) == ls:
            return name
    return dict(want, layer_scale_init=1e-4 if ls else 0.0)


def finish_mae(m: Mapped, sd: Mapping[str, Tensor], notes: List[str], head_dim: int,
               **options: Any) -> Converted:
    """MAE release -> VisionLLaMA config (pre-training size from ``pos_embed``)."""
    _no_options('mae', options)
    has_cls = m.flags.get('cls_token', False)
    patch = m.sym('p')
    img_size = 224
    pos = sd.get('backbone.pos_embed')
    if pos is not None:
        n = pos.shape[1] - int(has_cls)
        side = int(round(n ** 0.5))
        if side * side == n:
            img_size = side * patch
    else:
        notes.append('no pos_embed found: assumed pre-training size 224')
    backbone = dict(type='VisionLLaMA', arch=_plain_arch(m, head_dim, 'mae'), img_size=img_size, patch_size=patch,
                    with_cls_token=has_cls, cls_token_rope='none',
                    qkv_bias=m.flags.get('qkv_bias', False), norm_eps=1e-6)
    if m.sym('in') != 3:
        backbone['in_channels'] = m.sym('in')
    notes.append("paper fine-tuning (84.0/84.3 top-1) uses this backbone with "
                 "with_cls_token=False, final_norm=False, out_type='avg_featmap'; the "
                 "authors' ADE20K/ViTDet runs use rope_type='2d' at the fine-tuning grid")
    return Converted('mae', m.state_dict, backbone, None, notes)


def finish_deit3(m: Mapped, sd: Mapping[str, Tensor], notes: List[str], head_dim: int,
                 rope: str = '2d', **options: Any) -> Converted:
    """DeiT3-style weights -> VisionLLaMA config; ``rope`` picks the authors' variant."""
    _no_options('deit3', options)
    if rope not in ROPE_CHOICES:
        raise ConversionError(f'--rope must be one of {ROPE_CHOICES}, got {rope!r}')
    has_cls = 'backbone.cls_token' in m.state_dict
    backbone = dict(type='VisionLLaMA', arch=_plain_arch(m, head_dim, 'deit3'), img_size=224, patch_size=m.sym('p'),
                    with_cls_token=has_cls, cls_token_rope='official' if has_cls else 'none',
                    rope_type=rope, qkv_bias=m.flags.get('qkv_bias', False), norm_eps=1e-6)
    if has_cls:
        backbone['out_type'] = 'cls_token'
    else:
        backbone.update(out_type='avg_featmap', final_norm=False)
    if m.sym('in') != 3:
        backbone['in_channels'] = m.sym('in')
    if rope == '2d':
        notes.append("rope_type='2d': the authors' plain code without auto_scale (positions "
                     'unscaled at every input size, class token at x = G-1, y = -1); use '
                     "--rope as2d for weights trained with auto_scale=True")
    else:
        notes.append("rope_type='as2d': the authors' auto_scale variant (positions x 14/G, "
                     'AS2DRoPE anchored at 14x14, class token at x = (G-1)s, y = -s)')
    head = None
    if 'head.fc.weight' in m.state_dict:
        head = dict(num_classes=m.sym('nc'), in_channels=m.sym('d'))
    return Converted('deit3', m.state_dict, backbone, head, notes, dict(rope=rope))


def _no_options(fmt: str, options: Mapping[str, Any]) -> None:
    """Layouts without options refuse them (e.g. ``--rope`` on a pyramid file)."""
    if options:
        raise ConversionError(f'{fmt} checkpoints take no {", ".join("--" + k for k in options)}'
                              ' option')


def _has(sd: Mapping[str, Tensor], *keys: str) -> bool:
    return all(k in sd for k in keys)


MAE = Layout(
    name='mae', container='state_dict',
    description='VisionLLaMA MAE pre-training weights (released Base/Large-MAE, or a '
                'vllama_mm MAE pre-training run)',
    groups=MAE_GROUPS,
    detect=lambda sd: _has(sd, 'backbone.patch_embed.projection.weight',
                           'backbone.layers.0.ffn.w12.weight')
    and any(k.startswith('neck.') for k in sd)
    and not any(k.endswith('.ls1.weight') for k in sd),
    finish=finish_mae,
    drops=(('backbone.pos_embed', 'positions come from RoPE, the absolute embedding is '
            'unused'), ),
    passthrough=('neck.', 'head.'),
    ignore=('data_preprocessor.', ),
)

DEIT3 = Layout(
    name='deit3',
    description="the authors' DeiT3-style supervised plain VisionLLaMA",
    groups=DEIT3_GROUPS,
    detect=lambda sd: _has(sd, 'patch_embed.proj.weight', 'blocks.0.mlp.c_fc1.weight'),
    finish=finish_deit3,
    drops=(('pos_embed', 'unused (positions come from RoPE)'), ),
)
