"""Convert the released VisionLLaMA checkpoints into vllama_mm's layout (DESIGN.md §2.7).

Three official layouts are recognised:

* ``'mae'``: the MAE pre-training weights (VisionLLaMA-Base-MAE 800/1600 ep,
  Large-MAE 800 ep), an mmengine checkpoint ``{'state_dict': {'backbone.*', 'neck.*',
  'head.*'}}``. Backbone names already match :class:`VisionLLaMA`; only the dead
  ``pos_embed`` is dropped. ``neck.*``/``head.*`` are mmpretrain's stock MAE decoder
  and head and pass through unchanged.
* ``'pyramid'``: the ImageNet-1k weights of Pyramid-VisionLLaMA-S/B/L (DeiT/Twins
  training code, ``{'model': {'patch_embeds.*', 'blocks.*', 'norm.*', 'head.*'}}``).
* ``'deit3'``: the DeiT3-style plain layout (``patch_embed.proj``, ``blocks.i``,
  ``norm``, ``head``; possibly under ``model``/``state_dict``/``module.``).

The result is an mmengine checkpoint ``{'state_dict': {...}, 'meta': {...}}`` with
``backbone.``-prefixed keys plus ``head.fc.*`` (mmpretrain ``LinearClsHead``) or
``neck.*``/``head.*`` (MAE). The backbone arch (a preset name when the shapes match one,
else a custom arch dict) and the options needed to reproduce the official computation
go into ``meta['vllama_mm']['backbone']`` as a ready-to-use backbone config.

Every converted backbone is checked against the model it is meant for, built on the
``meta`` device: the converted keys must equal the model's keys exactly, with equal
shapes, or the conversion fails naming the difference.

No task library is imported here (only torch and mmengine through ``vllama_mm.models``).
"""
import argparse
import copy
import os.path as osp
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .checkpoint import mmengine_checkpoint_globals, verify_checkpoint

StateDict = Dict[str, Tensor]

FORMATS = ('mae', 'deit3', 'pyramid')
PLAIN_HEAD_DIM = 64  # S 384/6, B 768/12, L 1024/16 and the MAE models
PYRAMID_HEAD_DIM = 32  # every stage of Pyramid-VisionLLaMA (DESIGN.md §2.4)
_MAX_LISTED = 8


class ConversionError(ValueError):
    """The file is not a checkpoint this converter understands (message says why)."""


@dataclass
class Converted:
    """A converted checkpoint.

    Attributes:
        fmt: the detected official layout (``'mae'``, ``'deit3'`` or ``'pyramid'``).
        state_dict: ``backbone.*`` plus ``head.fc.*`` or ``neck.*``/``head.*``.
        backbone: backbone config (``type``, ``arch`` and the compatibility options).
        head: classifier head facts (``num_classes``, ``in_channels``) or ``None``.
        notes: human-readable notes (dropped keys, assumptions).
    """
    fmt: str
    state_dict: StateDict
    backbone: Dict[str, Any]
    head: Optional[Dict[str, int]] = None
    notes: List[str] = field(default_factory=list)

    def meta(self, source: str = '') -> Dict[str, Any]:
        """The ``meta['vllama_mm']`` record (plain Python types only)."""
        return dict(format=self.fmt, source=source, backbone=copy.deepcopy(self.backbone),
                    head=copy.deepcopy(self.head), notes=list(self.notes))


# ----------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------
def _safe_globals() -> List:
    """Non-tensor objects the released files legitimately pickle.

    DeiT/Twins training checkpoints store ``args`` (an ``argparse.Namespace``); mmengine
    checkpoints store message-hub buffers (numpy arrays, ``HistoryBuffer`` and references
    to its statistics methods through ``getattr``, resolved by a restricted stand-in).
    """
    return [argparse.Namespace] + mmengine_checkpoint_globals()


def load_official(path: str, unsafe: bool = False) -> Dict[str, Any]:
    """``torch.load`` a released checkpoint on CPU with safe (weights-only) unpickling.

    Only ``argparse.Namespace`` and mmengine's own checkpoint classes are allowed besides
    tensors. A file that needs anything else fails with a message naming it; pass
    ``unsafe=True`` (``--unsafe``) only for a file from a source you trust.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.getsize(path) == 0:
        raise ConversionError(f'{path}: the file is empty (interrupted download?)')
    verify_checkpoint(path, ConversionError)  # zip CRC: truncated / flipped bytes, named
    try:
        if unsafe:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        else:
            # only what is not allowed already: the context removes its entries on exit
            allowed = torch.serialization.get_safe_globals()
            extra = [g for g in _safe_globals() if g not in allowed]
            with torch.serialization.safe_globals(extra):
                ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if 'Weights only load failed' in msg or 'Unsupported global' in msg:
            found = re.findall(r'Unsupported global: GLOBAL ([\w.]+)', msg) + re.findall(
                r'(refusing getattr\([^)]*\)|unsupported GLOBAL [\w.]+ whose module \w+ '
                r'is blocked)', msg)
            what = f' ({"; ".join(sorted(set(found)))})' if found else ''
            raise ConversionError(
                f'{path}: the file pickles non-tensor objects{what} that safe loading '
                '(torch.load(weights_only=True)) refuses. If you trust where it comes '
                'from, re-run with --unsafe (loads it with weights_only=False).') from e
        raise ConversionError(f'{path}: cannot unpickle the file (corrupt or not a PyTorch '
                              f'checkpoint): {_short(msg)}') from e
    except Exception as e:  # noqa: BLE001  any other failure means an unreadable file
        raise ConversionError(f'{path}: cannot read the file as a PyTorch checkpoint '
                              f'(truncated or corrupt?): {_short(str(e))}') from e
    return ckpt


def _short(msg: str, limit: int = 300) -> str:
    msg = ' '.join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + ' ...'


# ----------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------
def _listing(keys, n: int = _MAX_LISTED) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(repr(k) for k in keys[:n]) + more


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


def _strip_module(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Drop a DDP ``module.`` prefix carried by every key."""
    if sd and all(k.startswith('module.') for k in sd):
        return {k[len('module.'):]: v for k, v in sd.items()}
    return dict(sd)


def detect_format(ckpt: Any) -> Tuple[str, StateDict]:
    """Find the model weights in ``ckpt`` and name their layout.

    Returns ``(fmt, state_dict)``; raises :class:`ConversionError` naming what was found
    when nothing matches.
    """
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    meta = ckpt.get('meta')
    if isinstance(meta, Mapping) and 'vllama_mm' in meta:
        raise ConversionError('this checkpoint was already converted by vllama_mm '
                              f"(meta['vllama_mm']['format']={meta['vllama_mm'].get('format')!r}); "
                              'load it directly with init_cfg=Pretrained')
    candidates: List[Tuple[str, Any]] = []
    for name in ('state_dict', 'model', 'module', 'model_ema'):
        if name in ckpt:
            candidates.append((name, ckpt[name]))
    candidates.append(('<top level>', ckpt))
    seen = []
    for where, sd in candidates:
        if not _is_tensor_dict(sd):
            continue
        sd = _strip_module(sd)
        seen.append((where, sd))
        keys = sd.keys()
        if any(k.startswith('backbone.layers.') for k in keys) and \
                'backbone.patch_embed.projection.weight' in sd:
            return 'mae', sd
        if any(k.startswith('patch_embeds.') for k in keys) and \
                any(k.startswith('blocks.') for k in keys):
            return 'pyramid', sd
        if 'patch_embed.proj.weight' in sd and any(k.startswith('blocks.0.') for k in keys):
            return 'deit3', sd
    if not seen:
        raise ConversionError(
            'unrecognised checkpoint: no dict of tensors found under state_dict/model/'
            f'module or at the top level; top-level keys: {_listing(ckpt.keys())}')
    where, sd = seen[0]
    raise ConversionError(
        f'unrecognised checkpoint layout (weights under {where}: {_listing(sd.keys())}); '
        'expected the VisionLLaMA MAE layout (backbone.patch_embed.projection, '
        'backbone.layers.i...), the Pyramid-VisionLLaMA layout (patch_embeds.s, '
        'blocks.s.j...) or the DeiT3-style plain layout (patch_embed.proj, blocks.i...)')


# ----------------------------------------------------------------------------------
# Helpers shared by the converters
# ----------------------------------------------------------------------------------
class _Source:
    """Key/shape-checked access to an official state dict; tracks what was consumed."""

    def __init__(self, sd: Mapping[str, Tensor], fmt: str):
        self.sd = dict(sd)
        self.fmt = fmt
        self.used: set = set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def take(self, key: str, shape: Optional[Sequence[Optional[int]]] = None) -> Tensor:
        if key not in self.sd:
            raise ConversionError(f'{self.fmt} checkpoint: missing expected key {key!r}')
        t = self.sd[key]
        if shape is not None:
            ok = t.dim() == len(shape) and all(s is None or s == d for s, d in
                                                zip(shape, t.shape))
            if not ok:
                want = tuple('*' if s is None else s for s in shape)
                raise ConversionError(f'{self.fmt} checkpoint: {key!r} has shape '
                                      f'{tuple(t.shape)}, expected {want}')
        self.used.add(key)
        return t

    def take_opt(self, key: str, shape=None) -> Optional[Tensor]:
        return self.take(key, shape) if key in self.sd else None

    def drop(self, key: str) -> bool:
        if key in self.sd:
            self.used.add(key)
            return True
        return False

    def indices(self, pattern: str) -> List[int]:
        """Sorted integer ids captured by ``pattern`` (one group); must be 0..n-1."""
        rx = re.compile(pattern)
        ids = sorted({int(m.group(1)) for k in self.sd for m in [rx.match(k)] if m})
        if ids != list(range(len(ids))):
            raise ConversionError(f'{self.fmt} checkpoint: indices matched by {pattern!r} '
                                  f'are not contiguous from 0: {ids}')
        return ids

    def check_all_used(self, ignore_prefixes: Sequence[str] = ()) -> None:
        left = [k for k in self.sd if k not in self.used and not k.startswith(
            tuple(ignore_prefixes))]
        if left:
            raise ConversionError(f'{self.fmt} checkpoint: unrecognised keys {_listing(left)} '
                                  '(not part of the official layout this converter knows)')


def _heads(dim: int, head_dim: int, where: str) -> int:
    if head_dim <= 0 or dim % head_dim:
        raise ConversionError(f'{where}: width {dim} is not divisible by the head dim '
                              f'{head_dim}; pass the right --head-dim')
    if head_dim % 4:
        raise ConversionError(f'{where}: head dim {head_dim} is not divisible by 4, which '
                              '2D RoPE needs')
    return dim // head_dim


def _square_side(n: int) -> Optional[int]:
    s = int(round(n ** 0.5))
    return s if s * s == n else None


def _cat(*ts: Optional[Tensor]) -> Optional[Tensor]:
    if all(t is None for t in ts):
        return None
    if any(t is None for t in ts):
        raise ConversionError('some of the fused parts have a bias and others do not')
    return torch.cat(ts, dim=0)


# ----------------------------------------------------------------------------------
# Plain backbone (MAE and DeiT3 layouts) -> VisionLLaMA
# ----------------------------------------------------------------------------------
def _plain_arch(embed_dims: int, num_layers: int, num_heads: int, hidden: int,
                layer_scale: bool, ffn_bias: bool):
    """Preset name of :class:`VisionLLaMA` matching these sizes, else a custom dict."""
    from ..models.vision_llama import VisionLLaMA
    want = dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                feedforward_channels=hidden, ffn_bias=ffn_bias)
    for name in ('s', 'b', 'l', 'mae-b', 'mae-l'):
        preset = VisionLLaMA.arch_zoo[name]
        if all(preset[k] == v for k, v in want.items()) and \
                (preset['layer_scale_init'] > 0) == layer_scale:
            return name
    return dict(want, layer_scale_init=1e-4 if layer_scale else 0.0)


def _convert_plain_layers(src: _Source, names: Dict[str, str], d: int, num_layers: int,
                          out: StateDict) -> Tuple[int, bool, bool, bool]:
    """Map per-layer weights; returns (ffn hidden, layer scale?, ffn bias?, qkv bias?)."""
    hidden = None
    flags = None
    for i in range(num_layers):
        s = names['block'].format(i=i)
        t = f'backbone.layers.{i}.'
        for a, b in (('ln1', names['ln1']), ('ln2', names['ln2'])):
            out[t + a + '.weight'] = src.take(s + b + '.weight', (d,))
            out[t + a + '.bias'] = src.take(s + b + '.bias', (d,))
        out[t + 'attn.qkv.weight'] = src.take(s + 'attn.qkv.weight', (3 * d, d))
        qkv_b = src.take_opt(s + 'attn.qkv.bias', (3 * d,))
        if qkv_b is not None:
            out[t + 'attn.qkv.bias'] = qkv_b
        out[t + 'attn.proj.weight'] = src.take(s + 'attn.proj.weight', (d, d))
        out[t + 'attn.proj.bias'] = src.take(s + 'attn.proj.bias', (d,))
        if names['ffn'] == 'fused':  # MAE: w12 (gate|up), w3
            w12 = src.take(s + 'ffn.w12.weight', (None, d))
            h = w12.shape[0] // 2
            out[t + 'ffn.w12.weight'] = w12
            out[t + 'ffn.w3.weight'] = src.take(s + 'ffn.w3.weight', (d, h))
            b12 = src.take_opt(s + 'ffn.w12.bias', (2 * h,))
            b3 = src.take_opt(s + 'ffn.w3.bias', (d,))
        else:  # DeiT3: c_fc1 (gate), c_fc2 (up), c_proj (down)
            g = src.take(s + 'mlp.c_fc1.weight', (None, d))
            h = g.shape[0]
            out[t + 'ffn.w12.weight'] = torch.cat([g, src.take(s + 'mlp.c_fc2.weight', (h, d))])
            out[t + 'ffn.w3.weight'] = src.take(s + 'mlp.c_proj.weight', (d, h))
            b12 = _cat(src.take_opt(s + 'mlp.c_fc1.bias', (h,)),
                       src.take_opt(s + 'mlp.c_fc2.bias', (h,)))
            b3 = src.take_opt(s + 'mlp.c_proj.bias', (d,))
        if (b12 is None) != (b3 is None):
            raise ConversionError(f'{src.fmt} checkpoint: layer {i} has a bias on only one '
                                  'of the SwiGLU projections')
        if b12 is not None:
            out[t + 'ffn.w12.bias'], out[t + 'ffn.w3.bias'] = b12, b3
        g1 = src.take_opt(s + names['ls1'], (d,))
        g2 = src.take_opt(s + names['ls2'], (d,))
        if (g1 is None) != (g2 is None):
            raise ConversionError(f'{src.fmt} checkpoint: layer {i} has only one of the two '
                                  'layer-scale vectors')
        if g1 is not None:
            out[t + 'ls1.weight'], out[t + 'ls2.weight'] = g1, g2
        layer_flags = (g1 is not None, b12 is not None, qkv_b is not None)
        if hidden is None:
            hidden, flags = h, layer_flags
        elif h != hidden or layer_flags != flags:
            raise ConversionError(
                f'{src.fmt} checkpoint: layer {i} differs from layer 0 (SwiGLU hidden '
                f'{h} vs {hidden}; layer scale/ffn bias/qkv bias {layer_flags} vs {flags})')
    return (hidden,) + flags


def _patch_embed(src: _Source, w_key: str, b_key: str, out: StateDict) -> Tuple[int, int, int]:
    w = src.take(w_key)
    if w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise ConversionError(f'{src.fmt} checkpoint: {w_key!r} has shape {tuple(w.shape)}, '
                              'expected [dim, in_channels, p, p]')
    d = w.shape[0]
    out['backbone.patch_embed.projection.weight'] = w
    out['backbone.patch_embed.projection.bias'] = src.take(b_key, (d,))
    return d, w.shape[1], w.shape[2]


def _classifier(src: _Source, w_key: str, b_key: str, d: int,
                out: StateDict) -> Optional[Dict[str, int]]:
    if not src.has(w_key):
        return None
    w = src.take(w_key, (None, d))
    out['head.fc.weight'] = w
    out['head.fc.bias'] = src.take(b_key, (w.shape[0],))
    return dict(num_classes=int(w.shape[0]), in_channels=d)


def convert_mae(sd: Mapping[str, Tensor], head_dim: int = PLAIN_HEAD_DIM) -> Converted:
    """Released MAE weights (mmengine ``state_dict``) -> vllama_mm layout."""
    src = _Source(sd, 'mae')
    out: StateDict = OrderedDict()
    notes = []
    d, in_ch, patch = _patch_embed(src, 'backbone.patch_embed.projection.weight',
                                   'backbone.patch_embed.projection.bias', out)
    num_layers = len(src.indices(r'backbone\.layers\.(\d+)\.'))
    if num_layers == 0:
        raise ConversionError('mae checkpoint: no backbone.layers.i.* weights')
    heads = _heads(d, head_dim, 'mae checkpoint')
    cls = src.take_opt('backbone.cls_token', (1, 1, d))
    if cls is not None:
        out['backbone.cls_token'] = cls
    img_size = 224
    pos = src.take_opt('backbone.pos_embed', (1, None, d))
    if pos is not None:
        side = _square_side(pos.shape[1] - int(cls is not None))
        if side is not None:
            img_size = side * patch
        notes.append(f'dropped backbone.pos_embed {tuple(pos.shape)}: positions come from '
                     'RoPE, the absolute embedding is unused')
    else:
        notes.append('no pos_embed found: assumed pre-training size 224')
    names = dict(block='backbone.layers.{i}.', ln1='ln1', ln2='ln2', ffn='fused',
                 ls1='attn.gamma1.weight', ls2='ffn.gamma2.weight')
    hidden, ls, ffn_bias, qkv_bias = _convert_plain_layers(src, names, d, num_layers, out)
    out['backbone.ln1.weight'] = src.take('backbone.ln1.weight', (d,))
    out['backbone.ln1.bias'] = src.take('backbone.ln1.bias', (d,))
    for k in sd:
        if k.startswith(('neck.', 'head.')):
            out[k] = src.take(k)
    skipped = [k for k in sd if k.startswith('data_preprocessor.')]
    if skipped:
        notes.append(f'dropped data-preprocessor buffers {_listing(skipped)}')
    src.check_all_used(ignore_prefixes=('data_preprocessor.',))
    arch = _plain_arch(d, num_layers, heads, hidden, ls, ffn_bias)
    backbone = dict(type='VisionLLaMA', arch=arch, img_size=img_size, patch_size=patch,
                    with_cls_token=cls is not None, cls_token_rope='none',
                    qkv_bias=qkv_bias, norm_eps=1e-6)
    if in_ch != 3:
        backbone['in_channels'] = in_ch
    notes.append('paper fine-tuning (84.0/84.3 top-1) uses this backbone with '
                 "with_cls_token=False, final_norm=False, out_type='avg_featmap'")
    return Converted('mae', out, backbone, None, notes)


def convert_deit3(sd: Mapping[str, Tensor], head_dim: int = PLAIN_HEAD_DIM) -> Converted:
    """DeiT3-style plain layout (``patch_embed.proj``, ``blocks.i``) -> vllama_mm layout."""
    src = _Source(sd, 'deit3')
    out: StateDict = OrderedDict()
    notes = []
    d, in_ch, patch = _patch_embed(src, 'patch_embed.proj.weight', 'patch_embed.proj.bias',
                                   out)
    num_layers = len(src.indices(r'blocks\.(\d+)\.'))
    heads = _heads(d, head_dim, 'deit3 checkpoint')
    cls = src.take_opt('cls_token', (1, 1, d))
    if cls is not None:
        out['backbone.cls_token'] = cls
    if src.has('pos_embed'):
        notes.append(f"dropped pos_embed {tuple(src.take('pos_embed').shape)}: unused")
    names = dict(block='blocks.{i}.', ln1='norm1', ln2='norm2', ffn='split',
                 ls1='gamma_1', ls2='gamma_2')
    hidden, ls, ffn_bias, qkv_bias = _convert_plain_layers(src, names, d, num_layers, out)
    # class-token model: norm(x)[:, 0] -> final norm ln1 then out_type='cls_token';
    # GAP model: norm(mean(x)) -> final_norm=False, ln2 after the mean ('avg_featmap')
    norm = 'ln1' if cls is not None else 'ln2'
    out[f'backbone.{norm}.weight'] = src.take('norm.weight', (d,))
    out[f'backbone.{norm}.bias'] = src.take('norm.bias', (d,))
    head = _classifier(src, 'head.weight', 'head.bias', d, out)
    src.check_all_used()
    arch = _plain_arch(d, num_layers, heads, hidden, ls, ffn_bias)
    backbone = dict(type='VisionLLaMA', arch=arch, img_size=224, patch_size=patch,
                    with_cls_token=cls is not None,
                    cls_token_rope='official' if cls is not None else 'none',
                    rope_type='2d', qkv_bias=qkv_bias, norm_eps=1e-6)
    if cls is not None:
        backbone['out_type'] = 'cls_token'
    else:
        backbone.update(out_type='avg_featmap', final_norm=False)
    if in_ch != 3:
        backbone['in_channels'] = in_ch
    notes.append("rope_type='2d' reproduces the official unscaled RoPE at every input "
                 "size; for the official *_as_* (auto-scaled) models use rope_type='as2d' "
                 'with img_size=224')
    return Converted('deit3', out, backbone, head, notes)


# ----------------------------------------------------------------------------------
# Pyramid -> PyramidVisionLLaMA
# ----------------------------------------------------------------------------------
_OFFICIAL_SR = [8, 4, 2, 1]


def _pyramid_arch(dims: List[int], depths: List[int], heads: List[int], srs: List[int],
                  hidden: List[int], layer_scale: bool, ffn_bias: bool):
    """Preset name of :class:`PyramidVisionLLaMA` matching these sizes, else a dict."""
    from ..models.blocks import swiglu_hidden
    from ..models.pyramid_vision_llama import PyramidVisionLLaMA
    defaults = srs == _OFFICIAL_SR and layer_scale and not ffn_bias and \
        hidden == [swiglu_hidden(d) for d in dims]
    if defaults:
        for name in ('s', 'b', 'l'):
            p = PyramidVisionLLaMA.arch_zoo[name]
            if p['embed_dims'] == dims and p['depths'] == depths and p['num_heads'] == heads:
                return name
    return dict(embed_dims=dims, depths=depths, num_heads=heads, sr_ratios=srs,
                feedforward_channels=hidden, layer_scale_init=1e-4 if layer_scale else 0.0,
                ffn_bias=ffn_bias)


def convert_pyramid(sd: Mapping[str, Tensor], head_dim: int = PYRAMID_HEAD_DIM) -> Converted:
    """Released Pyramid-VisionLLaMA ImageNet weights (``model``) -> vllama_mm layout.

    LSA blocks (even j) keep their fused ``qkv``; GSA blocks (odd j) keep ``q``/``kv``
    (+ ``sr``/``norm``) when sr > 1 and become one fused ``qkv = cat([q, kv])`` when
    sr = 1 (plain global attention); SwiGLU ``w12 = cat([c_fc1, c_fc2])``.
    """
    src = _Source(sd, 'pyramid')
    out: StateDict = OrderedDict()
    notes = []
    stage_ids = src.indices(r'patch_embeds\.(\d+)\.')
    block_stage_ids = src.indices(r'blocks\.(\d+)\.')
    if len(stage_ids) != 4 or block_stage_ids != stage_ids:
        raise ConversionError(f'pyramid checkpoint: expected 4 stages of patch_embeds and '
                              f'blocks, found patch_embeds {stage_ids} and blocks '
                              f'{block_stage_ids}')
    dims, depths, heads, srs, hidden = [], [], [], [], []
    flags = None  # (layer scale, ffn bias, qkv bias), equal in every block
    prev = None
    for s in range(4):
        pe, po = f'patch_embeds.{s}.', f'backbone.patch_embeds.{s}.'
        w = src.take(pe + 'proj.weight')
        k = 4 if s == 0 else 2
        if w.dim() != 4 or tuple(w.shape[2:]) != (k, k) or \
                (prev is not None and w.shape[1] != prev):
            raise ConversionError(
                f'pyramid checkpoint: {pe}proj.weight has shape {tuple(w.shape)}, expected '
                f'[dim, {prev if prev is not None else "in_channels"}, {k}, {k}]')
        d = w.shape[0]
        if s == 0:
            in_ch = w.shape[1]
        out[po + 'projection.weight'] = w
        out[po + 'projection.bias'] = src.take(pe + 'proj.bias', (d,))
        out[po + 'norm.weight'] = src.take(pe + 'norm.weight', (d,))
        out[po + 'norm.bias'] = src.take(pe + 'norm.bias', (d,))
        nh = _heads(d, head_dim, f'pyramid checkpoint stage {s}')
        depth = len(src.indices(rf'blocks\.{s}\.(\d+)\.'))
        if depth == 0:
            raise ConversionError(f'pyramid checkpoint: stage {s} has no blocks')
        sr_stage = None
        h_stage = None
        for j in range(depth):
            b, t = f'blocks.{s}.{j}.', f'backbone.stages.{s}.{j}.'
            for a, o in (('norm1', 'ln1'), ('norm2', 'ln2')):
                out[t + o + '.weight'] = src.take(b + a + '.weight', (d,))
                out[t + o + '.bias'] = src.take(b + a + '.bias', (d,))
            if j % 2 == 0:  # LSA
                out[t + 'attn.qkv.weight'] = src.take(b + 'attn.qkv.weight', (3 * d, d))
                qkv_b = src.take_opt(b + 'attn.qkv.bias', (3 * d,))
                if qkv_b is not None:
                    out[t + 'attn.qkv.bias'] = qkv_b
            else:  # GSA
                q_w = src.take(b + 'attn.q.weight', (d, d))
                kv_w = src.take(b + 'attn.kv.weight', (2 * d, d))
                q_b = src.take_opt(b + 'attn.q.bias', (d,))
                kv_b = src.take_opt(b + 'attn.kv.bias', (2 * d,))
                qkv_b = _cat(q_b, kv_b)
                if src.has(b + 'attn.sr.weight'):
                    sr_w = src.take(b + 'attn.sr.weight', (d, d, None, None))
                    sr = sr_w.shape[2]
                    if sr_w.shape[3] != sr or sr < 2:
                        raise ConversionError(f'pyramid checkpoint: {b}attn.sr.weight has '
                                              f'shape {tuple(sr_w.shape)}, expected '
                                              '[d, d, sr, sr] with sr >= 2')
                    out[t + 'attn.q.weight'], out[t + 'attn.kv.weight'] = q_w, kv_w
                    if qkv_b is not None:
                        out[t + 'attn.q.bias'], out[t + 'attn.kv.bias'] = q_b, kv_b
                    out[t + 'attn.sr.weight'] = sr_w
                    out[t + 'attn.sr.bias'] = src.take(b + 'attn.sr.bias', (d,))
                    out[t + 'attn.norm.weight'] = src.take(b + 'attn.norm.weight', (d,))
                    out[t + 'attn.norm.bias'] = src.take(b + 'attn.norm.bias', (d,))
                else:  # sr = 1: global attention, rows q | k | v
                    sr = 1
                    out[t + 'attn.qkv.weight'] = torch.cat([q_w, kv_w])
                    if qkv_b is not None:
                        out[t + 'attn.qkv.bias'] = qkv_b
                if sr_stage is not None and sr != sr_stage:
                    raise ConversionError(f'pyramid checkpoint: stage {s} mixes GSA '
                                          f'sub-sampling ratios {sr_stage} and {sr}')
                sr_stage = sr
            out[t + 'attn.proj.weight'] = src.take(b + 'attn.proj.weight', (d, d))
            out[t + 'attn.proj.bias'] = src.take(b + 'attn.proj.bias', (d,))
            g = src.take(b + 'mlp.c_fc1.weight', (None, d))
            h = g.shape[0]
            out[t + 'ffn.w12.weight'] = torch.cat([g, src.take(b + 'mlp.c_fc2.weight', (h, d))])
            out[t + 'ffn.w3.weight'] = src.take(b + 'mlp.c_proj.weight', (d, h))
            b12 = _cat(src.take_opt(b + 'mlp.c_fc1.bias', (h,)),
                       src.take_opt(b + 'mlp.c_fc2.bias', (h,)))
            b3 = src.take_opt(b + 'mlp.c_proj.bias', (d,))
            if (b12 is None) != (b3 is None):
                raise ConversionError(f'pyramid checkpoint: {b}mlp has a bias on only some '
                                      'of its projections')
            if b12 is not None:
                out[t + 'ffn.w12.bias'], out[t + 'ffn.w3.bias'] = b12, b3
            g1 = src.take_opt(b + 'gamma_1', (d,))
            g2 = src.take_opt(b + 'gamma_2', (d,))
            if (g1 is None) != (g2 is None):
                raise ConversionError(f'pyramid checkpoint: {b} has only one of gamma_1, '
                                      'gamma_2')
            if g1 is not None:
                out[t + 'ls1.weight'], out[t + 'ls2.weight'] = g1, g2
            block_flags = (g1 is not None, b12 is not None, qkv_b is not None)
            if flags is None:
                flags = block_flags
            elif block_flags != flags:
                raise ConversionError(
                    f'pyramid checkpoint: block {s}.{j} differs from block 0.0 in layer '
                    f'scale/ffn bias/qkv bias: {block_flags} vs {flags}')
            if h_stage is not None and h != h_stage:
                raise ConversionError(f'pyramid checkpoint: stage {s} mixes SwiGLU hidden '
                                      f'sizes {h_stage} and {h}')
            h_stage = h
        if sr_stage is None:
            sr_stage = _OFFICIAL_SR[s]
            notes.append(f'stage {s} has no GSA block: assumed sr={sr_stage}')
        dims.append(d)
        depths.append(depth)
        heads.append(nh)
        srs.append(sr_stage)
        hidden.append(h_stage)
        prev = d
    d = dims[-1]
    out['backbone.norm.weight'] = src.take('norm.weight', (d,))
    out['backbone.norm.bias'] = src.take('norm.bias', (d,))
    head = _classifier(src, 'head.weight', 'head.bias', d, out)
    for dead in ('pos_embed', 'cls_token'):
        if src.drop(dead):
            notes.append(f'dropped {dead}: unused by the official pyramid model')
    src.check_all_used()
    layer_scale, ffn_bias, qkv_bias = flags
    arch = _pyramid_arch(dims, depths, heads, srs, hidden, layer_scale, ffn_bias)
    backbone = dict(type='PyramidVisionLLaMA', arch=arch, img_size=224,
                    out_type='avg_featmap', double_final_norm=True, window_size=7,
                    window_pad_mask=False, gsa_pool='floor', rope_compat='official',
                    rope_scale=1.0, qkv_bias=qkv_bias, norm_eps=1e-5)
    if in_ch != 3:
        backbone['in_channels'] = in_ch
    notes.append("reproduces the official classifier; for segmentation/detection use "
                 "out_type='featmap' and rope_scale='official' (the official seg/det GSA "
                 'scaling 14 / H_stage), keeping the other compatibility options')
    return Converted('pyramid', out, backbone, head, notes)


def _pyramid_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    out: StateDict = OrderedDict()
    rx = re.compile(r'backbone\.stages\.(\d+)\.(\d+)\.(.+)')
    for k, v in sd.items():
        m = rx.match(k)
        if k.startswith('head.fc.'):
            out['head.' + k[len('head.fc.'):]] = v
        elif k.startswith('backbone.patch_embeds.'):
            out[k[len('backbone.'):].replace('.projection.', '.proj.')] = v
        elif k.startswith('backbone.norm.'):
            out[k[len('backbone.'):]] = v
        elif m:
            s, j, rest = m.groups()
            b = f'blocks.{s}.{j}.'
            if rest.startswith('attn.qkv.') and int(j) % 2 == 1:  # GSA with sr = 1
                kind, d = rest.rsplit('.', 1)[1], v.shape[0] // 3
                out[b + 'attn.q.' + kind], out[b + 'attn.kv.' + kind] = v[:d], v[d:]
            elif not _block_to_official(b, rest, v, out):
                raise ConversionError(f'no official pyramid name for {k!r}')
        else:
            raise ConversionError(f'no official pyramid name for {k!r}')
    return out


# ----------------------------------------------------------------------------------
# Inverse: vllama_mm layout -> official layout (round trips, exporting)
# ----------------------------------------------------------------------------------
def _split_rows(t: Tensor, parts: int) -> List[Tensor]:
    if t.shape[0] % parts:
        raise ConversionError(f'cannot split {tuple(t.shape)} into {parts} row blocks')
    return list(t.chunk(parts, dim=0))


def _block_to_official(b: str, rest: str, v: Tensor, out: StateDict) -> bool:
    """One block parameter (our name ``rest``, e.g. ``ffn.w12.weight``) -> its official
    name(s) under the block prefix ``b``; the DeiT3-style plain and the pyramid blocks
    share them. Returns False for a name it does not know."""
    kind = rest.rsplit('.', 1)[1]
    if rest.startswith(('ln1.', 'ln2.')):
        out[b + 'norm' + rest[2] + '.' + kind] = v
    elif rest.startswith('attn.'):
        out[b + rest] = v
    elif rest.startswith('ffn.w12.'):  # rows gate | up
        out[b + 'mlp.c_fc1.' + kind], out[b + 'mlp.c_fc2.' + kind] = _split_rows(v, 2)
    elif rest.startswith('ffn.w3.'):
        out[b + 'mlp.c_proj.' + kind] = v
    elif rest in ('ls1.weight', 'ls2.weight'):
        out[b + 'gamma_' + rest[2]] = v
    else:
        return False
    return True


def _plain_to_official(sd: Mapping[str, Tensor], fmt: str) -> StateDict:
    out: StateDict = OrderedDict()
    layer_rx = re.compile(r'backbone\.layers\.(\d+)\.(.+)')
    for k, v in sd.items():
        if fmt == 'mae':
            if not k.startswith('backbone.'):
                out[k] = v
                continue
            m = layer_rx.match(k)
            if m and m.group(2) in ('ls1.weight', 'ls2.weight'):
                name = 'attn.gamma1.weight' if m.group(2) == 'ls1.weight' \
                    else 'ffn.gamma2.weight'
                out[f'backbone.layers.{m.group(1)}.{name}'] = v
            else:
                out[k] = v
            continue
        # deit3
        if k.startswith('head.fc.'):
            out['head.' + k[len('head.fc.'):]] = v
        elif k.startswith('backbone.patch_embed.projection.'):
            out['patch_embed.proj.' + k.rsplit('.', 1)[1]] = v
        elif k == 'backbone.cls_token':
            out['cls_token'] = v
        elif k.startswith(('backbone.ln1.', 'backbone.ln2.')):
            out['norm.' + k.rsplit('.', 1)[1]] = v
        elif layer_rx.match(k):
            i, rest = layer_rx.match(k).groups()
            if not _block_to_official(f'blocks.{i}.', rest, v, out):
                raise ConversionError(f'no official name for {k!r}')
        else:
            raise ConversionError(f'no official {fmt} name for {k!r}')
    return out


def to_official(sd: Mapping[str, Tensor], fmt: str) -> StateDict:
    """Inverse of the converters: a vllama_mm state dict (``backbone.*`` plus
    ``head.fc.*`` or ``neck.*``/``head.*``) in the official ``fmt`` layout.

    For ``'mae'`` the result is the content of the official ``state_dict``; for
    ``'deit3'`` and ``'pyramid'`` the content of ``model``. The unused ``pos_embed`` is
    not recreated.
    """
    if fmt in ('mae', 'deit3'):
        return _plain_to_official(sd, fmt)
    if fmt == 'pyramid':
        return _pyramid_to_official(sd)
    raise ValueError(f'fmt must be one of {FORMATS}, got {fmt!r}')


# ----------------------------------------------------------------------------------
# Checking against the target model
# ----------------------------------------------------------------------------------
def build_backbone(cfg: Mapping[str, Any], device: str = 'meta') -> torch.nn.Module:
    """Instantiate the vllama_mm backbone described by ``cfg`` (default: no memory)."""
    cfg = dict(cfg)
    kind = cfg.pop('type')
    cfg.pop('init_cfg', None)
    if kind == 'VisionLLaMA':
        from ..models.vision_llama import VisionLLaMA as cls
        cfg.setdefault('out_type', 'raw')
    elif kind == 'PyramidVisionLLaMA':
        from ..models.pyramid_vision_llama import PyramidVisionLLaMA as cls
    else:
        raise ConversionError(f'unknown backbone type {kind!r}')
    with torch.device(device):
        return cls(**cfg)


def check_against_model(conv: Converted) -> None:
    """The converted backbone keys must equal the target model's, shapes included."""
    try:
        model = build_backbone(conv.backbone)
    except (ValueError, TypeError) as e:
        raise ConversionError(f'the {conv.fmt} weights imply a backbone that cannot be '
                              f'built ({conv.backbone}): {e}') from e
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k[len('backbone.'):]: tuple(v.shape) for k, v in conv.state_dict.items()
            if k.startswith('backbone.')}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    bad = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or bad:
        raise ConversionError(
            f'converted {conv.fmt} weights do not fit {conv.backbone["type"]}'
            f'(arch={conv.backbone.get("arch")!r}): missing {_listing(missing)}; '
            f'unexpected {_listing(extra)}; shape mismatch '
            f'{_listing(f"{k} {have[k]} vs {want[k]}" for k in bad)}')


# ----------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------
_CONVERTERS: Dict[str, Callable[..., Converted]] = {
    'mae': convert_mae,
    'deit3': convert_deit3,
    'pyramid': convert_pyramid,
}


def convert_checkpoint(ckpt: Any, head_dim: Optional[int] = None,
                       check: bool = True) -> Converted:
    """Detect the layout of a loaded official checkpoint and convert it.

    Args:
        ckpt: what :func:`load_official` returned.
        head_dim: per-head channels (not stored in the weights); default 64 for the
            plain models, 32 for the pyramid.
        check: verify the result against the target model built on the meta device.
    """
    fmt, sd = detect_format(ckpt)
    conv_fn = _CONVERTERS.get(fmt)
    if conv_fn is None:
        raise ConversionError(f'{fmt} checkpoints are recognised but this vllama_mm has no '
                              'converter for them')
    default = PYRAMID_HEAD_DIM if fmt == 'pyramid' else PLAIN_HEAD_DIM
    conv = conv_fn(sd, head_dim=head_dim or default)
    if check:
        check_against_model(conv)
    return conv


def save_converted(conv: Converted, dst: str, source: str = '') -> Dict[str, Any]:
    """Write ``{'state_dict': ..., 'meta': {'vllama_mm': ...}}`` to ``dst``."""
    out = dict(state_dict=OrderedDict((k, v.contiguous()) for k, v in conv.state_dict.items()),
               meta=dict(vllama_mm=conv.meta(source)))
    parent = osp.dirname(osp.abspath(dst))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'output directory does not exist: {parent}')
    torch.save(out, dst)
    return out


def format_backbone_cfg(cfg: Mapping[str, Any], checkpoint: Optional[str] = None) -> str:
    """The backbone config as ready-to-paste Python source."""
    cfg = dict(cfg)
    if checkpoint is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    return 'backbone=' + _py(cfg, 1)


def _py(v: Any, indent: int) -> str:
    if isinstance(v, dict):
        pad = '    ' * indent
        items = [f'{k}={_py(x, indent + 1)}' for k, x in v.items()]
        one = 'dict(' + ', '.join(items) + ')'
        if len(one) + 4 * indent <= 88:
            return one
        return 'dict(\n' + ',\n'.join(pad + i for i in items) + ')'
    if isinstance(v, (list, tuple)):
        inner = ', '.join(_py(x, indent) for x in v)
        return f'[{inner}]' if isinstance(v, list) else f'({inner}{"," if len(v) == 1 else ""})'
    return repr(v)
