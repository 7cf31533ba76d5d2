"""Which layout is this checkpoint? Known layouts first, then known non-layouts.

``LAYOUTS`` is tried in order; other modules add theirs with :func:`register_layout`.
Checkpoints that are not convertible (already in vllama_mm's layout, or another model's
weights) are named by the package's one file recogniser
(:func:`vllama_mm.models.weights.recognise`), so the user reads what the file is
instead of a key error.
"""
from typing import Any, Dict, List, Mapping, Tuple

from torch import Tensor

from ..weights import LOAD_DIRECTLY, recognise
from .plain import DEIT3, MAE
from .pyramid import PYRAMID
from .table import ConversionError, Layout, listing, strip_module

LAYOUTS: List[Layout] = [MAE, PYRAMID, DEIT3]

def register_layout(layout: Layout, first: bool = False) -> None:
    """Add a layout to detection (``first``: before the built-in ones)."""
    if any(x.name == layout.name for x in LAYOUTS):
        raise ValueError(f'a layout named {layout.name!r} is already registered')
    LAYOUTS.insert(0, layout) if first else LAYOUTS.append(layout)


def layout(name: str) -> Layout:
    """The registered layout called ``name``."""
    for x in LAYOUTS:
        if x.name == name:
            return x
    raise ValueError(f'fmt must be one of {[x.name for x in LAYOUTS]}, got {name!r}')


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


def detect_format(ckpt: Any) -> Tuple[str, Dict[str, Tensor]]:
    """Find the model weights in ``ckpt`` and name their layout.

    Returns ``(fmt, state_dict)``; raises :class:`ConversionError` saying what the file
    is (already converted, another model, ...) or listing its keys.
    """
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    meta = ckpt.get('meta')
    if isinstance(meta, Mapping) and 'vllama_mm' in meta:
        fmt = meta['vllama_mm'].get('format') if isinstance(meta['vllama_mm'], Mapping) \
            else None
        raise ConversionError('this checkpoint was already converted by vllama_mm '
                              f"(meta['vllama_mm']['format']={fmt!r}); load it directly "
                              'with init_cfg=Pretrained')
    seen = []
    for where in ('state_dict', 'model', 'module', 'model_ema', None):
        sd = ckpt if where is None else ckpt.get(where)
        if not _is_tensor_dict(sd):
            continue
        sd = strip_module(sd)
        seen.append((where or '<top level>', sd))
        for lay in LAYOUTS:
            if lay.detect(sd):
                return lay.name, sd
    if not seen:
        raise ConversionError(
            'unrecognised checkpoint: no dict of tensors found under state_dict/model/'
            f'module or at the top level; top-level keys: {listing(ckpt.keys())}')
    for where, sd in seen:
        kind = recognise(sd)
        if kind is not None and not kind[0].startswith('official-'):
            advice = {'vllama_mm-pyramid': 'nothing to convert; ' + LOAD_DIRECTLY,
                      'vllama_mm-plain': 'nothing to convert; ' + LOAD_DIRECTLY,
                      'mmpretrain-vit': "use it with mmpretrain's VisionTransformer"}
            raise ConversionError(f'not a checkpoint to convert: the weights under {where} '
                                  f'are {kind[1]}' + (f'; {advice[kind[0]]}'
                                                      if kind[0] in advice else ''))
    where, sd = seen[0]
    known = '; '.join(f'{x.name} ({x.description})' for x in LAYOUTS)
    raise ConversionError(f'unrecognised checkpoint layout (weights under {where}: '
                          f'{listing(sd.keys())}); known layouts: {known}')
