"""The model check: converted weights must fit the backbone they are meant for exactly."""
from typing import Any, Mapping

import torch

from .common import ConversionError, Converted, listing


def build_backbone(cfg: Mapping[str, Any], device: str = 'meta') -> torch.nn.Module:
    """Instantiate the vllama_mm backbone described by ``cfg`` (default: no memory)."""
    from ... import models
    cfg = dict(cfg)
    kind = cfg.pop('type')
    cfg.pop('init_cfg', None)
    cls = getattr(models, kind, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise ConversionError(f'unknown backbone type {kind!r} (not a vllama_mm.models class)')
    if kind == 'VisionLLaMA':
        cfg.setdefault('out_type', 'raw')
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
            f'(arch={conv.backbone.get("arch")!r}): missing {listing(missing)}; '
            f'unexpected {listing(extra)}; shape mismatch '
            f'{listing(f"{k} {have[k]} vs {want[k]}" for k in bad)}')
