"""The ``load_from`` check of ``tools/test.py``: the file must fill every tensor of the model.

The strict ``Pretrained`` load of our backbones, the checkpoint comparison and the file
recogniser live in :mod:`vllama_mm.models.weights` (re-exported here).
"""
import torch
from mmengine.logging import print_log

from ..models.weights import (WeightsError, check_fit, checkpoint_state_dict, compare,
                              describe, tensors)

__all__ = ['WeightsError', 'check_fit', 'checkpoint_state_dict', 'compare', 'describe',
           'check_checkpoint_fits']


def check_checkpoint_fits(model: torch.nn.Module, path: str, strict: bool = True) -> str:
    """``load_from`` check (tools/test.py): the file must fill every tensor of ``model``.

    Reads ``path`` through mmengine's loader (``build_runner`` has verified it already)
    and compares its weights with ``model.state_dict()``; see :func:`check_fit`.
    Returns the report line.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    checkpoint = _load_checkpoint(path, map_location='cpu')
    given = tensors(checkpoint_state_dict(checkpoint))
    own = model.state_dict()
    report = check_fit(own, given, 'model', f'checkpoint {path!r}', checkpoint,
                       strict=strict, opt_out='--allow-partial-weights')
    n_bb = sum(k.startswith('backbone.') for k in own)
    if n_bb:
        got = sum(k.startswith('backbone.') and k in given for k in own)
        print_log(f'{path}: {got} of {n_bb} backbone tensors in the file', logger='current')
    return report
