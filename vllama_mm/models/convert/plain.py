"""Plain VisionLLaMA layouts: the released MAE weights and the DeiT3-style supervised code.

Both map onto :class:`~vllama_mm.models.VisionLLaMA` (``backbone.layers.{i}``). Each is
one key table of ``(official, ours)`` rows read in both directions; the SwiGLU gate and up
projections ``c_fc1``/``c_fc2`` of the authors' supervised code are one ``w12`` here.
"""
from typing import Any, Dict, Mapping, Union

from torch import Tensor

from ..vision_llama import VisionLLaMA
from .table import (ConversionError, Converted, Layout, StateDict, apply_table, back, fuse,
                    heads, indices, options_none, unfuse)

ROPE_CHOICES = ('2d', 'as2d')

# --- DeiT3-style supervised code (``model`` dict): (official, ours) -----------------
# ``norm`` is our final ``ln1`` for a class-token model (norm(x)[:, 0]) and ``ln2`` for a
# pooled one (norm(mean(x))); converting picks the row that fits the file.
DEIT3_TABLE = (
    ('patch_embed.proj.{w}', 'backbone.patch_embed.projection.{w}'),
    ('cls_token', 'backbone.cls_token'),
    ('blocks.{i}.norm{n}.{w}', 'backbone.layers.{i}.ln{n}.{w}'),
    ('blocks.{i}.attn.qkv.{w}', 'backbone.layers.{i}.attn.qkv.{w}'),
    ('blocks.{i}.attn.proj.{w}', 'backbone.layers.{i}.attn.proj.{w}'),
    ('blocks.{i}.mlp.w12.{w}', 'backbone.layers.{i}.ffn.w12.{w}'),  # fused c_fc1 | c_fc2
    ('blocks.{i}.mlp.c_proj.{w}', 'backbone.layers.{i}.ffn.w3.{w}'),
    ('blocks.{i}.gamma_{n}', 'backbone.layers.{i}.ls{n}.weight'),
    ('norm.{w}', 'backbone.ln1.{w}'),
    ('norm.{w}', 'backbone.ln2.{w}'),
    ('head.{w}', 'head.fc.{w}'),
)
SWIGLU = ('.mlp.c_fc1.', '.mlp.c_fc2.', '.mlp.w12.')  # rows gate | up

# --- the MAE release (``state_dict``): our names, but for layer scale -----------------
MAE_TABLE = (
    ('backbone.layers.{i}.attn.gamma1.weight', 'backbone.layers.{i}.ls1.weight'),
    ('backbone.layers.{i}.ffn.gamma2.weight', 'backbone.layers.{i}.ls2.weight'),
    ('backbone.layers.{i}.{m}.{w}', 'backbone.layers.{i}.{m}.{w}'),
    ('backbone.patch_embed.projection.{w}', 'backbone.patch_embed.projection.{w}'),
    ('backbone.cls_token', 'backbone.cls_token'),
    ('backbone.ln1.{w}', 'backbone.ln1.{w}'),
)
MAE_PASSTHROUGH = ('neck.', 'head.')


def plain_arch(sd: Mapping[str, Tensor], head_dim: int, fmt: str) -> Union[str, Dict]:
    """Preset name of :class:`VisionLLaMA` matching our converted weights, else a dict."""
    d = sd['backbone.patch_embed.projection.weight'].shape[0]
    layers = indices(sd, r'backbone\.layers\.(\d+)\.', fmt)
    if not layers:
        raise ConversionError(f'{fmt} checkpoint: no transformer layers found')
    w12 = sd.get('backbone.layers.0.ffn.w12.weight')
    want = dict(embed_dims=d, num_layers=len(layers),
                num_heads=heads(d, head_dim, f'{fmt} checkpoint'),
                feedforward_channels=None if w12 is None else w12.shape[0] // 2,
                ffn_bias='backbone.layers.0.ffn.w12.bias' in sd)
    ls = 'backbone.layers.0.ls1.weight' in sd
    for name in ('s', 'b', 'l', 'mae-b', 'mae-l'):
        preset = VisionLLaMA.arch_zoo[name]
        if all(preset[k] == v for k, v in want.items()) and \
                (preset['layer_scale_init'] > 0) == ls:
            return name
    return dict(want, layer_scale_init=1e-4 if ls else 0.0)


def _common(sd: StateDict) -> Dict[str, Any]:
    w = sd['backbone.patch_embed.projection.weight']  # [d, in, p, p]
    cfg = dict(patch_size=int(w.shape[2]), qkv_bias='backbone.layers.0.attn.qkv.bias' in sd,
               norm_eps=1e-6)
    if w.shape[1] != 3:
        cfg['in_channels'] = int(w.shape[1])
    return cfg


def mae_convert(sd: Mapping[str, Tensor], head_dim: int = 64, **options: Any) -> Converted:
    """MAE release -> VisionLLaMA config (pre-training size from ``pos_embed``)."""
    options_none('mae', options)
    drops = {'backbone.pos_embed': 'positions come from RoPE, the absolute embedding is '
             'unused'}
    ours, notes = apply_table(sd, MAE_TABLE, 'mae', drops, keep=MAE_PASSTHROUGH,
                              ignore=('data_preprocessor.', ))
    has_cls = 'backbone.cls_token' in ours
    patch = _common(ours)['patch_size']
    img_size, pos = 224, sd.get('backbone.pos_embed')
    if pos is not None:
        n = pos.shape[1] - int(has_cls)
        side = int(round(n ** 0.5))
        if side * side == n:
            img_size = side * patch
    else:
        notes.append('no pos_embed found: assumed pre-training size 224')
    backbone = dict(type='VisionLLaMA', arch=plain_arch(ours, head_dim, 'mae'),
                    img_size=img_size, with_cls_token=has_cls, cls_token_rope='none',
                    **_common(ours))
    notes.append("paper fine-tuning (84.0/84.3 top-1) uses this backbone with "
                 "with_cls_token=False, final_norm=False, out_type='avg_featmap'; the "
                 "authors' ADE20K/ViTDet runs use rope_type='2d' at the fine-tuning grid")
    return Converted('mae', ours, backbone, None, notes)


def deit3_convert(sd: Mapping[str, Tensor], head_dim: int = 64, rope: str = '2d',
                  **options: Any) -> Converted:
    """DeiT3-style weights -> VisionLLaMA config; ``rope`` picks the authors' variant."""
    options_none('deit3', options)
    if rope not in ROPE_CHOICES:
        raise ConversionError(f'--rope must be one of {ROPE_CHOICES}, got {rope!r}')
    indices(sd, r'blocks\.(\d+)\.', 'deit3')
    has_cls = 'cls_token' in sd
    unused = 'backbone.ln2.{w}' if has_cls else 'backbone.ln1.{w}'
    table = [row for row in DEIT3_TABLE if row[1] != unused]
    ours, notes = apply_table(fuse(sd, *SWIGLU), table, 'deit3',
                              {'pos_embed': 'unused (positions come from RoPE)'})
    backbone = dict(type='VisionLLaMA', arch=plain_arch(ours, head_dim, 'deit3'), img_size=224,
                    with_cls_token=has_cls, cls_token_rope='official' if has_cls else 'none',
                    rope_type=rope, **_common(ours))
    if has_cls:
        backbone['out_type'] = 'cls_token'
    else:
        backbone.update(out_type='avg_featmap', final_norm=False)
    if rope == '2d':
        notes.append("rope_type='2d': the authors' plain code without auto_scale (positions "
                     'unscaled at every input size, class token at x = G-1, y = -1); use '
                     "--rope as2d for weights trained with auto_scale=True")
    else:
        notes.append("rope_type='as2d': the authors' auto_scale variant (positions x 14/G, "
                     'AS2DRoPE anchored at 14x14, class token at x = (G-1)s, y = -s)')
    head = None
    if 'head.fc.weight' in ours:
        w = ours['head.fc.weight']
        head = dict(num_classes=int(w.shape[0]), in_channels=int(w.shape[1]))
    return Converted('deit3', ours, backbone, head, notes, dict(rope=rope))


def deit3_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    return unfuse(back(sd, DEIT3_TABLE, 'deit3'), SWIGLU[2], SWIGLU[0], SWIGLU[1],
                  lambda t: t.shape[0] // 2)


def _has(sd: Mapping[str, Tensor], *keys: str) -> bool:
    return all(k in sd for k in keys)


MAE = Layout(
    name='mae', container='state_dict',
    description='VisionLLaMA MAE pre-training weights (released Base/Large-MAE, or a '
                'vllama_mm MAE pre-training run)',
    detect=lambda sd: _has(sd, 'backbone.patch_embed.projection.weight',
                           'backbone.layers.0.ffn.w12.weight')
    and any(k.startswith('neck.') for k in sd)
    and not any(k.endswith('.ls1.weight') for k in sd),
    convert=mae_convert,
    to_official=lambda sd: back(sd, MAE_TABLE, 'mae', keep=MAE_PASSTHROUGH),
)

DEIT3 = Layout(
    name='deit3',
    description="the authors' DeiT3-style supervised plain VisionLLaMA",
    detect=lambda sd: _has(sd, 'patch_embed.proj.weight', 'blocks.0.mlp.c_fc1.weight'),
    convert=deit3_convert,
    to_official=deit3_to_official,
)
