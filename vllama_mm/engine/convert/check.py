"""The model check: converted weights must fit the backbone they are meant for exactly."""
from typing import Any, Mapping

import torch

from ...models.weights import compare
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
    have = {k[len('backbone.'):]: v for k, v in conv.state_dict.items()
            if k.startswith('backbone.')}
    missing, bad, extra = compare(model.state_dict(), have)
    if missing or extra or bad:
        raise ConversionError(
            f'converted {conv.fmt} weights do not fit {conv.backbone["type"]}'
            f'(arch={conv.backbone.get("arch")!r}): missing {listing(sorted(missing))}; '
            f'unexpected {listing(sorted(extra))}; shape mismatch {listing(sorted(bad))}')
