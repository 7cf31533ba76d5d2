"""Plumbing shared by every VisionLLaMA backbone (plain, pyramid, MAE encoder): the arch
preset lookup, the default init, the "is it pretrained" test and the checkpointed block
call (the shared base class is :mod:`.base`)."""
import copy
import functools
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

#: ``with_cp`` values: no checkpointing, whole blocks recomputed, or selective
CP_MODES = ('none', 'full', 'selective')


def resolve_arch(arch: Union[str, Dict], zoo: Dict[str, Dict], essential: Sequence[str],
                 defaults: Dict, owner: str) -> Dict:
    """Arch preset name or custom dict -> full arch dict, with errors that name the problem."""
    if isinstance(arch, str):
        key = arch.lower()
        if key not in zoo:
            raise ValueError(f'{owner}: unknown arch {arch!r}; choose one of '
                             f'{sorted(zoo)} or pass a dict with keys {sorted(essential)}')
        return copy.deepcopy(zoo[key])
    if not isinstance(arch, dict):
        raise TypeError(f'{owner}: arch must be a str or dict, got {type(arch).__name__}')
    missing = set(essential) - set(arch)
    if missing:
        raise ValueError(f'{owner}: custom arch is missing keys {sorted(missing)} '
                         f'(needs {sorted(essential)})')
    unknown = set(arch) - set(essential) - set(defaults)
    if unknown:
        raise ValueError(f'{owner}: custom arch has unknown keys {sorted(unknown)}; '
                         f'allowed: {sorted(set(essential) | set(defaults))}')
    full = copy.deepcopy(defaults)
    full.update(arch)
    return full


def check_no_pretrained(owner: str, pretrained) -> None:
    """Accept mmseg / mmdet's ``pretrained=None`` (EncoderDecoder and the detectors pass
    ``model.pretrained`` on to the backbone); weights come only through ``init_cfg``."""
    if pretrained is not None:
        raise ValueError(
            f'{owner}: pretrained={pretrained!r} is not supported (the model-level '
            "`pretrained` key is passed on to the backbone): set model.pretrained=None and "
            f"load the file with backbone init_cfg=dict(type='Pretrained', "
            f'checkpoint={pretrained!r})')


def is_pretrained(init_cfg) -> bool:
    """True when ``init_cfg`` loads a checkpoint (then the random init is skipped)."""
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def init_module(m: nn.Module) -> None:
    """Default init: trunc-normal(0.02) linears, zero biases, conv like a linear layer."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        w = m.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def cp_mode(with_cp: Union[bool, str]) -> str:
    """``with_cp`` -> one of :data:`CP_MODES` (``False`` is ``'none'``, ``True`` ``'full'``)."""
    if isinstance(with_cp, bool):
        return 'full' if with_cp else 'none'
    if isinstance(with_cp, str) and with_cp in CP_MODES:
        return with_cp
    raise ValueError(f'with_cp must be True, False or one of {CP_MODES}, got {with_cp!r}')


def stage_cp_modes(with_cp: Union[bool, str, Sequence[Union[bool, str]]],
                   num_stages: int) -> Tuple[str, ...]:
    """``with_cp`` of a staged backbone -> one :data:`CP_MODES` value per stage: one value
    for every stage, or a sequence with one value per stage."""
    if isinstance(with_cp, (list, tuple)):
        if len(with_cp) != num_stages:
            raise ValueError(f'with_cp per stage needs {num_stages} values (one per stage), '
                             f'got {len(with_cp)}: {with_cp!r}')
        return tuple(cp_mode(m) for m in with_cp)
    return (cp_mode(with_cp),) * num_stages


def _aten_ops(*names: str) -> frozenset:
    """The aten overload packets of ``names`` that this torch build has."""
    return frozenset(getattr(torch.ops.aten, n) for n in names if hasattr(torch.ops.aten, n))


#: ops whose outputs selective checkpointing keeps: the matmuls (linear layers, the
#: pooled-key / patch convolutions) and attention; everything else in a block (norms,
#: RoPE, SiLU and the gate, residual adds, layer scale) is element-wise and recomputed
SAVED_OPS = _aten_ops(
    'mm', 'addmm', 'bmm', 'baddbmm', 'convolution',
    '_scaled_dot_product_flash_attention', '_scaled_dot_product_flash_attention_for_cpu',
    '_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention')


def _save_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective-checkpointing policy: keep :data:`SAVED_OPS` outputs, recompute the rest."""
    packet = getattr(op, 'overloadpacket', op)
    return CheckpointPolicy.MUST_SAVE if packet in SAVED_OPS else \
        CheckpointPolicy.PREFER_RECOMPUTE


def run_block(block: nn.Module, x: Tensor, *args, with_cp: Union[bool, str] = False) -> Tensor:
    """``block(x, *args)``, under activation checkpointing when ``with_cp`` and a
    gradient is needed.

    ``'full'`` / ``True``: only the block input is kept, the whole block is recomputed in
    the backward pass. ``'selective'``: matmul, convolution and attention outputs are kept
    (:data:`SAVED_OPS`), the element-wise work between them is recomputed (torch's
    selective activation checkpointing): most of the memory of the element-wise
    intermediates goes, at the cost of re-running only cheap ops.
    """
    mode = cp_mode(with_cp)
    if mode == 'none' or not x.requires_grad:
        return block(x, *args)
    if mode == 'full':
        return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(
        block, x, *args, use_reentrant=False,
        context_fn=functools.partial(create_selective_checkpoint_contexts, _save_matmuls))

