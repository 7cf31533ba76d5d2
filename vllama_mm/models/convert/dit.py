"""The released DiT-LLaMA / SiT-LLaMA training dumps -> :class:`~vllama_mm.models.DiTLLaMA`.

A released file is a full training dump ``{'model', 'ema', 'opt', 'args'}`` with
``args`` an ``argparse.Namespace``. ``model`` and ``ema`` share one layout, which is ours
but for the MLP: ``c_fc1`` (gate) and ``c_fc2`` (up) stack into ``mlp.w12`` [2h, D] (rows
gate|up) and ``c_proj`` is ``mlp.w3``; the unused ``pos_embed`` is dropped (it gives the
training grid). One ``(official, ours)`` key table serves both directions, as for the
backbones (:mod:`.table`).

Result: ``{'state_dict': {'denoiser.<key>': ...}, 'meta': {'vllama_mm': {'format':
'dit-llama' | 'sit-llama', 'denoiser': <config dict with type>, ...}}}``.
"""
import argparse
import math
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..dit_llama import DIT_ARCHS, DiTLLaMA
from ..weights import compare
from .table import (ConversionError, StateDict, apply_table, back, fuse, strip_module,
                    unfuse)

FORMATS = ('dit-llama', 'sit-llama')
_MARKERS = ('x_embedder.proj.weight', 't_embedder.mlp.0.weight',
            'y_embedder.embedding_table.weight', 'final_layer.linear.weight')

TABLE = (  # (official, ours)
    ('x_embedder.proj.{w}', 'x_embedder.proj.{w}'),
    ('t_embedder.mlp.0.{w}', 't_embedder.mlp.0.{w}'),
    ('t_embedder.mlp.2.{w}', 't_embedder.mlp.2.{w}'),
    ('y_embedder.embedding_table.weight', 'y_embedder.embedding_table.weight'),
    ('blocks.{i}.adaLN_modulation.1.{w}', 'blocks.{i}.adaLN_modulation.1.{w}'),
    ('blocks.{i}.attn.{a}.{w}', 'blocks.{i}.attn.{a}.{w}'),
    ('blocks.{i}.mlp.w12.weight', 'blocks.{i}.mlp.w12.weight'),  # fused c_fc1 | c_fc2
    ('blocks.{i}.mlp.c_proj.weight', 'blocks.{i}.mlp.w3.weight'),
    ('final_layer.adaLN_modulation.1.{w}', 'final_layer.adaLN_modulation.1.{w}'),
    ('final_layer.linear.{w}', 'final_layer.linear.{w}'),
)
SWIGLU = ('.mlp.c_fc1.', '.mlp.c_fc2.', '.mlp.w12.')  # rows gate | up


def is_dit_state_dict(sd: Any) -> bool:
    """True when ``sd`` is a tensor dict in the released DiT/SiT-LLaMA layout."""
    return isinstance(sd, Mapping) and all(
        k in sd or f'module.{k}' in sd for k in _MARKERS)


def is_dit_dump(ckpt: Any) -> bool:
    """True when ``ckpt`` holds a released-layout state dict under ``ema`` or ``model``."""
    return isinstance(ckpt, Mapping) and any(
        is_dit_state_dict(ckpt.get(name)) for name in ('ema', 'model')) or \
        is_dit_state_dict(ckpt)


def convert_state_dict(sd: Mapping[str, Tensor]) -> StateDict:
    """Released names -> :class:`DiTLLaMA` names (no prefix); drops ``pos_embed``."""
    ours, _ = apply_table(fuse(sd, *SWIGLU), TABLE, 'DiT/SiT-LLaMA',
                          {'pos_embed': 'unused (positions come from RoPE)'})
    return ours


def to_official(sd: Mapping[str, Tensor]) -> StateDict:
    """Inverse of :func:`convert_state_dict` (``denoiser.`` prefix removed first); the
    unused ``pos_embed`` is not recreated."""
    sd = OrderedDict((k[len('denoiser.'):] if k.startswith('denoiser.') else k, v)
                     for k, v in sd.items())
    return unfuse(back(sd, TABLE, 'DiT/SiT-LLaMA'), SWIGLU[2], SWIGLU[0], SWIGLU[1],
                  lambda t: t.shape[0] // 2)


def family_of(ckpt: Mapping, family: Optional[str] = None) -> str:
    """'dit-llama' or 'sit-llama' from ``--family``, else from the dump's ``args``
    (SiT's training script has ``path_type``/``prediction``; ``args.model`` names the
    network). The weights alone cannot tell: both families share one layout."""
    if family is not None:
        fam = {'dit': 'dit-llama', 'sit': 'sit-llama'}.get(family, family)
        if fam not in FORMATS:
            raise ConversionError(f'--family must be dit or sit, got {family!r}')
        return fam
    args = ckpt.get('args') if isinstance(ckpt, Mapping) else None
    a = vars(args) if isinstance(args, argparse.Namespace) else (
        args if isinstance(args, Mapping) else {})
    name = str(a.get('model', '')).lower()
    if 'path_type' in a or 'prediction' in a or name.startswith('sit'):
        return 'sit-llama'
    if name.startswith('dit'):
        return 'dit-llama'
    raise ConversionError('cannot tell DiT-LLaMA from SiT-LLaMA: the file has no '
                             "'args' naming the model; pass --family dit or --family sit")


def _arch_of(sd: Mapping[str, Tensor], num_heads: Optional[int]) -> Tuple[Any, int]:
    """(arch preset name or dict, depth) from the tensor shapes."""
    dim = sd['x_embedder.proj.weight'].shape[0]
    ids = {int(m.group(1)) for k in sd for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    depth = max(ids) + 1 if ids else 0
    if sorted(ids) != list(range(depth)):
        raise ConversionError(f'block indices are not contiguous: {sorted(ids)}')
    hidden = sd['blocks.0.mlp.c_fc1.weight'].shape[0] if depth else 0
    for name, (d, n, h) in DIT_ARCHS.items():
        if d == dim and n == depth and (num_heads is None or num_heads == h):
            return name.upper(), depth
    if num_heads is None:
        raise ConversionError(f'embed dims {dim} x depth {depth} is not a released size; '
                                 'pass --num-heads (not stored in the weights)')
    return dict(embed_dims=dim, num_layers=depth, num_heads=num_heads,
                mlp_hidden=hidden), depth


def denoiser_config(sd: Mapping[str, Tensor], fmt: str, num_heads: Optional[int] = None,
                    args: Optional[Mapping] = None) -> Dict[str, Any]:
    """The ``DiTLLaMA`` config (with ``type``) that loads ``sd`` strictly."""
    w = sd['x_embedder.proj.weight']  # [D, C, p, p]
    dim, in_ch, patch = w.shape[0], w.shape[1], w.shape[2]
    arch, _ = _arch_of(sd, num_heads)
    out_ch = sd['final_layer.linear.weight'].shape[0] // (patch * patch)
    if out_ch not in (in_ch, 2 * in_ch):
        raise ConversionError(f'final layer gives {out_ch} channels for {in_ch} inputs')
    rows = sd['y_embedder.embedding_table.weight'].shape[0]
    size = None
    if 'pos_embed' in sd:  # [1, N, D] over the training grid (square in their code)
        g = math.isqrt(sd['pos_embed'].shape[1])
        size = g * patch
    elif args and args.get('image_size'):
        size = int(args['image_size']) // 8
    cfg = dict(type='DiTLLaMA', arch=arch, patch_size=int(patch), in_channels=int(in_ch),
               input_size=int(size or 32), num_classes=int(rows - 1),
               class_dropout_prob=0.1, learn_sigma=out_ch == 2 * in_ch,
               return_sigma=fmt == 'dit-llama', rope_type='2d')
    return cfg


def convert_dump(ckpt: Any, weights: str = 'ema', family: Optional[str] = None,
                 num_heads: Optional[int] = None) -> Dict[str, Any]:
    """Loaded dump -> ``{'state_dict': {'denoiser.*'}, 'meta': {'vllama_mm': ...}}``."""
    if weights not in ('ema', 'model'):
        raise ConversionError(f'--weights must be ema or model, got {weights!r}')
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    if is_dit_state_dict(ckpt):
        sd, where = ckpt, '<top level>'
    else:
        sd, where = ckpt.get(weights), weights
        if not is_dit_state_dict(sd):
            have = sorted(k for k in ckpt if is_dit_state_dict(ckpt[k]))
            raise ConversionError(f"the dump has no '{weights}' weights in the DiT/SiT-LLaMA "
                                     f'layout (found: {have or sorted(ckpt)[:8]})')
    sd = strip_module(sd)
    fmt = family_of(ckpt, family)
    args = ckpt.get('args')
    args = vars(args) if isinstance(args, argparse.Namespace) else None
    cfg = denoiser_config(sd, fmt, num_heads, args)
    state = OrderedDict((f'denoiser.{k}', v.contiguous())
                        for k, v in convert_state_dict(sd).items())
    meta = dict(format=fmt, denoiser=cfg, weights=where)
    return dict(state_dict=state, meta=dict(vllama_mm=meta))


def check_loads(out: Mapping[str, Any]) -> None:
    """Build the stored denoiser config on the meta device and load the weights strictly
    (shapes and names), so a converted file is known to load before it is written."""
    cfg = dict(out['meta']['vllama_mm']['denoiser'])
    cfg.pop('type')
    with torch.device('meta'):
        model = DiTLLaMA(**cfg)
    sd = {k[len('denoiser.'):]: v for k, v in out['state_dict'].items()}
    missing, bad, unexpected = compare(model.state_dict(), sd)
    if missing or unexpected or bad:
        raise ConversionError(f'converted weights do not fit DiTLLaMA({cfg}): missing '
                              f'{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, '
                              f'shape mismatch {sorted(bad)[:5]}')
