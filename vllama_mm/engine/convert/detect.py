"""Which layout is this checkpoint? Known layouts first, then known non-layouts.

``LAYOUTS`` is tried in order; other modules add theirs with :func:`register_layout`.
``RECOGNISERS`` name checkpoints that are not convertible (already in vllama_mm's layout,
or another model's weights) so the user reads what the file is instead of a key error;
add more with :func:`register_recogniser`.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from .common import ConversionError, listing
from .layout import Layout
from .plain import DEIT3, MAE
from .pyramid import PYRAMID

LAYOUTS: List[Layout] = [MAE, PYRAMID, DEIT3]

# (predicate over a state dict, what it is and what to do instead)
Recogniser = Tuple[Callable[[Mapping[str, Tensor]], bool], str]

_LOAD_DIRECTLY = ('load it directly, e.g. backbone init_cfg=dict(type=\'Pretrained\', '
                  'checkpoint=..., prefix=\'backbone.\') or load_from=...')


def _any(sd: Mapping[str, Tensor], *parts: str) -> bool:
    return any(all(p in k for p in parts) for k in sd)


RECOGNISERS: List[Recogniser] = [
    (lambda sd: _any(sd, 'backbone.stages.', '.ffn.w12.') and _any(sd, 'backbone.patch_embeds.'),
     'a vllama_mm PyramidVisionLLaMA checkpoint (already in this plugin\'s layout): '
     'nothing to convert; ' + _LOAD_DIRECTLY),
    (lambda sd: _any(sd, 'backbone.layers.', '.ffn.w12.'),
     'a vllama_mm VisionLLaMA checkpoint (already in this plugin\'s layout, e.g. one of '
     'your training runs): nothing to convert; ' + _LOAD_DIRECTLY),
    (lambda sd: _any(sd, 'backbone.layers.', '.ffn.layers.0.0.'),
     'an mmpretrain VisionTransformer (ViT/DeiT/MAE-ViT) checkpoint: another model '
     '(GELU MLP, absolute position embedding), not VisionLLaMA weights; use it with '
     "mmpretrain's VisionTransformer"),
    (lambda sd: _any(sd, 'blocks.', '.mlp.fc1.') and _any(sd, 'pos_block.'),
     'a Twins (PCPVT/SVT) checkpoint: another model (GELU MLP, PEG position encoding), '
     'not Pyramid-VisionLLaMA weights'),
    (lambda sd: _any(sd, 'blocks.', '.mlp.fc1.') and _any(sd, 'patch_embed.proj.'),
     'a timm/DeiT VisionTransformer checkpoint: another model (GELU MLP), not '
     'VisionLLaMA weights'),
    (lambda sd: _any(sd, 'relative_position_bias_table'),
     'a Swin-style checkpoint (relative position bias tables): another model, not '
     'VisionLLaMA weights'),
]


def register_layout(layout: Layout, first: bool = False) -> None:
    """Add a layout to detection (``first``: before the built-in ones)."""
    if any(x.name == layout.name for x in LAYOUTS):
        raise ValueError(f'a layout named {layout.name!r} is already registered')
    LAYOUTS.insert(0, layout) if first else LAYOUTS.append(layout)


def register_recogniser(predicate: Callable[[Mapping[str, Tensor]], bool], what: str) -> None:
    """Name another kind of checkpoint that cannot be converted."""
    RECOGNISERS.append((predicate, what))


def layout(name: str) -> Layout:
    """The registered layout called ``name``."""
    for x in LAYOUTS:
        if x.name == name:
            return x
    raise ValueError(f'fmt must be one of {[x.name for x in LAYOUTS]}, got {name!r}')


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


def _strip_module(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Drop a DDP ``module.`` prefix carried by every key."""
    if sd and all(k.startswith('module.') for k in sd):
        return {k[len('module.'):]: v for k, v in sd.items()}
    return dict(sd)


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
        sd = _strip_module(sd)
        seen.append((where or '<top level>', sd))
        for lay in LAYOUTS:
            if lay.detect(sd):
                return lay.name, sd
    if not seen:
        raise ConversionError(
            'unrecognised checkpoint: no dict of tensors found under state_dict/model/'
            f'module or at the top level; top-level keys: {listing(ckpt.keys())}')
    for where, sd in seen:
        what = recognise(sd)
        if what:
            raise ConversionError(f'not a checkpoint to convert: the weights under {where} '
                                  f'are {what}')
    where, sd = seen[0]
    known = '; '.join(f'{x.name} ({x.description})' for x in LAYOUTS)
    raise ConversionError(f'unrecognised checkpoint layout (weights under {where}: '
                          f'{listing(sd.keys())}); known layouts: {known}')


def recognise(sd: Mapping[str, Tensor]) -> Optional[str]:
    """What a non-convertible state dict is, or None."""
    for predicate, what in RECOGNISERS:
        if predicate(sd):
            return what
    return None
