"""The model check: converted weights must fit the backbone they are meant for exactly."""
from typing import Any, Mapping

import torch

from ..mae import VisionLLaMAMAE
from ..pyramid_vision_llama import PyramidVisionLLaMA
from ..vision_llama import VisionLLaMA
from ..weights import compare
from .detect import layout
from .table import ConversionError, Converted, listing

BACKBONES = {c.__name__: c for c in (VisionLLaMA, PyramidVisionLLaMA, VisionLLaMAMAE)}


def build_backbone(cfg: Mapping[str, Any], device: str = 'meta') -> torch.nn.Module:
    """Instantiate the vllama_mm backbone described by ``cfg`` (default: no memory)."""
    cfg = dict(cfg)
    kind = cfg.pop('type')
    cfg.pop('init_cfg', None)
    cls = BACKBONES.get(kind)
    if cls is None:
        raise ConversionError(f'unknown backbone type {kind!r} (not a vllama_mm.models class)')
    if kind == 'VisionLLaMA':
        cfg.setdefault('out_type', 'raw')
    with torch.device(device):
        return cls(**cfg)


def check_against_model(conv: Converted) -> None:
    """The converted backbone keys must equal the target model's, shapes included; errors
    name the official key the tensor came from."""
    try:
        model = build_backbone(conv.backbone)
    except (ValueError, TypeError) as e:
        raise ConversionError(f'the {conv.fmt} weights imply a backbone that cannot be '
                              f'built ({conv.backbone}): {e}') from e
    have = {k[len('backbone.'):]: v for k, v in conv.state_dict.items()
            if k.startswith('backbone.')}
    own = model.state_dict()
    missing, bad, extra = compare(own, have)
    back = layout(conv.fmt).to_official

    def name(k: str) -> str:
        """The official key a tensor of ours comes from: the table read backwards (the
        first part of a fused tensor, e.g. ``c_fc1`` for ``w12``)."""
        try:
            return repr(next(iter(back({'backbone.' + k: have.get(k, own.get(k))}))))
        except ConversionError:
            return repr('backbone.' + k)
    if missing:
        raise ConversionError(f'{conv.fmt} checkpoint: missing expected key '
                              f'{name(missing[0])}' + (f' (and {len(missing) - 1} more: '
                                                       f'{listing(missing[1:])})'
                                                       if len(missing) > 1 else ''))
    if bad:
        k = bad[0].split(' ', 1)[0]
        raise ConversionError(f'{conv.fmt} checkpoint: {name(k)} has shape '
                              f'{tuple(have[k].shape)}, expected {tuple(own[k].shape)}')
    if extra:
        raise ConversionError(f'{conv.fmt} checkpoint: unrecognised keys '
                              f'{listing([name(k) for k in extra])} for '
                              f'{conv.backbone["type"]}(arch={conv.backbone.get("arch")!r}) '
                              '(optional weights must be in every layer or in none)')
