"""The base of every VisionLLaMA backbone (plain, pyramid, MAE encoder), as mmpretrain's
``ViTEVA02`` builds on ``VisionTransformer``: output types, freezing and ``train()``,
layer ids for lr decay, the strict ``Pretrained`` load and the checkpoint preparation;
plus the argument checks the constructors call where they read a value.

A subclass says what differs: which modules the first ``frozen_stages`` cover
(:meth:`frozen_parts`), the lr-decay layer of a parameter (:meth:`layer_id`), which
checkpoint entries it drops (:meth:`drop_unused`) and its extra random init.
"""
import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import Tensor, nn

from .backbone_utils import init_module, is_pretrained
from .rope import RoPE2D
from .weights import check_shapes, load_pretrained


# ---------------------------------------------------------------------------- arguments
def _fail(owner: str, name: str, value: Any, must: str) -> None:
    raise ValueError(f'{owner}: {name} must be {must}, got {value!r} ({type(value).__name__})')


def need_int(owner: str, name: str, value: Any, low: Optional[int] = None) -> int:
    """``value`` as an int (no silent truncation of 2.5), at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or \
            (low is not None and value < low):
        _fail(owner, name, value, {None: 'an int', 0: 'an int >= 0',
                                   1: 'a positive int'}.get(low, f'an int >= {low}'))
    return value


def need_real(owner: str, name: str, value: Any, positive: bool = False) -> float:
    """A finite number, > 0 (``positive``) or >= 0 (a string or NaN fails here, not deep
    inside a later comparison)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and \
        math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        _fail(owner, name, value, f'a finite number {">" if positive else ">="} 0')
    return float(value)


def need_bool(owner: str, name: str, value: Any) -> bool:
    """True or False (``'no'`` would otherwise mean True)."""
    if not isinstance(value, bool):
        _fail(owner, name, value, 'True or False')
    return value


def need_size(owner: str, name: str, value: Any) -> Tuple[int, int]:
    """A positive int or a pair ``(h, w)`` of them -> ``(h, w)``."""
    pair = tuple(value) if isinstance(value, (list, tuple)) and len(value) == 2 else (value, )
    if not all(not isinstance(v, bool) and isinstance(v, int) and v > 0 for v in pair):
        _fail(owner, name, value, 'a positive int or a pair (h, w) of them')
    return (pair * 2)[:2]


def need_rate(name: str, value: Any) -> float:
    """A dropout / drop-path probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.0 <= value < 1.0:
        raise ValueError(f'{name} must be in [0, 1), got {value!r}')
    return float(value)


def resolve_out_indices(owner: str, out_indices: Union[int, Sequence[int]], num: int,
                        unit: str) -> List[int]:
    """``out_indices`` (int or list, negatives count from the end) -> increasing
    non-negative list, checked against ``num`` layers/stages (``unit`` names them):
    the outputs come in block order, one per block."""
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = [out_indices]
    if isinstance(out_indices, str) or not isinstance(out_indices, Sequence) or \
            not out_indices or not all(isinstance(i, int) and not isinstance(i, bool)
                                       for i in out_indices):
        raise TypeError(f'out_indices must be a non-empty list of ints, got {out_indices!r}')
    result = []
    for i in out_indices:
        j = i + num if i < 0 else i
        if not 0 <= j < num:
            raise ValueError(f'out_indices {i} is out of range for {num} {unit}')
        result.append(j)
    if any(b <= a for a, b in zip(result, result[1:])):
        raise ValueError(f'{owner}: out_indices must be increasing without duplicates '
                         f'(one output per block, in block order), got {tuple(out_indices)}'
                         + (f' = {tuple(result)}' if result != list(out_indices) else ''))
    return result


def guard_traced_size(x: Tensor, owner: str) -> Tensor:
    """Under ``torch.jit.trace``: make the traced module refuse other input sizes.

    The RoPE tables and token-grid reshapes are fixed when tracing, so a module traced
    at 64x32 and run at 32x64 would return a transposed map. This adds a zero
    ``[1, 1, H, W]`` constant expanded to the input's (dynamic) shape: any other H x W
    fails inside the traced module with an expand size error; a warning at trace time
    says so. Eager calls return ``x`` unchanged.
    """
    if not torch.jit.is_tracing():
        return x
    import warnings
    h, w = int(x.shape[-2]), int(x.shape[-1])
    warnings.warn(f'{owner} traced at input size {h}x{w}: the traced module only runs at '
                  f'this size (RoPE tables and token grids are fixed by tracing); other '
                  f'sizes fail with an expand size error', torch.jit.TracerWarning)
    return x + x.new_zeros(1, 1, h, w).expand_as(x)


# ---------------------------------------------------------------------------- the base
class VisionLLaMABackbone(BaseModule):
    """What every VisionLLaMA backbone shares (module doc).

    Subclasses set :attr:`OUT_TYPES`, :attr:`NEW_TASK_TENSORS`, ``self.frozen_stages``
    and call :meth:`setup_out_type` / :meth:`setup_frozen` in their constructor.
    """

    OUT_TYPES: Tuple[str, ...] = ()
    #: key prefixes of tensors the backbone adds for its task (an output norm after
    #: pooling, the pyramid's per-stage norms) that a pre-trained encoder lacks
    NEW_TASK_TENSORS: Tuple[str, ...] = ()

    # ------------------------------------------------------------------ arguments
    def setup_out_type(self, out_type: str) -> str:
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got {out_type!r}')
        self.out_type = out_type
        return out_type

    def setup_frozen(self, frozen_stages: Any, num: int) -> None:
        """Keep ``frozen_stages`` (-1..num), freeze now and after every ``train()``;
        register the checkpoint preparation."""
        need_int(type(self).__name__, 'frozen_stages', frozen_stages)
        if not -1 <= frozen_stages <= num:
            raise ValueError(f'frozen_stages must be in [-1, {num}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self._register_load_state_dict_pre_hook(self._prepare_checkpoint)
        self._freeze_stages()

    # ------------------------------------------------------------------ init / loading
    def init_weights(self) -> None:
        """``init_cfg=dict(type='Pretrained', ...)``: the strict, reported load of
        :func:`~vllama_mm.models.weights.load_pretrained` (not mmengine's lenient
        initializer); otherwise the default init, then mmengine's for other init_cfgs."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [c for c in cfgs if is_pretrained(c)]
        if not pretrained:
            self.apply(init_module)
            self.init_extra()
            super().init_weights()
            return
        others = [c for c in cfgs if c is not None and not is_pretrained(c)]
        if others:  # e.g. a Constant init next to the checkpoint: mmengine's, first
            self.init_cfg, keep = others, self.init_cfg
            super().init_weights()
            self.init_cfg, self._is_init = keep, False
        load_pretrained(self, pretrained[-1], self.NEW_TASK_TENSORS)
        self._is_init = True

    def init_extra(self) -> None:
        """Random init of what :func:`init_module` does not cover (e.g. a class token)."""

    def drop_unused(self, state_dict: dict, prefix: str, logger: MMLogger) -> None:
        """Remove checkpoint entries this backbone has no use for, logging why."""

    def _prepare_checkpoint(self, state_dict, prefix, *args, **kwargs) -> None:
        """Load pre-hook: drop what is unused here, refuse learned RoPE frequencies this
        model would ignore, then refuse tensors of other shapes."""
        self.drop_unused(state_dict, prefix, MMLogger.get_current_instance())
        for name, module in self.named_modules():
            key = f'{prefix}{name}.freqs'
            if isinstance(module, RoPE2D) and key in state_dict and \
                    module.rope_type != 'mixed':
                raise ValueError(f'{type(self).__name__}: the checkpoint has learned RoPE '
                                 f"frequencies {key} (rope_type='mixed') but this model has "
                                 f'rope_type={module.rope_type!r}, which would ignore them: '
                                 "build it with rope_type='mixed'")
        check_shapes(self, state_dict, prefix)

    # ------------------------------------------------------------------ freezing
    def frozen_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """Modules (eval, no grad) and parameters (no grad) of the first
        ``frozen_stages``."""
        return []

    def _freeze_stages(self) -> None:
        if self.frozen_stages <= 0:
            return
        for part in self.frozen_parts():
            if isinstance(part, nn.Parameter):
                part.requires_grad = False
                continue
            part.eval()
            for p in part.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'VisionLLaMABackbone':
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------ lr decay
    def layer_id(self, name: str) -> Optional[int]:
        """Layer of parameter ``name`` (no prefix) for lr decay; None: after the blocks."""
        return None

    @property
    def num_blocks(self) -> int:
        raise NotImplementedError

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay (mmpretrain convention).

        Returns ``(layer_depth, num_blocks + 2)``: embeddings 0, the blocks 1..num_blocks
        (see :meth:`layer_id`), everything after them and names outside ``prefix`` (the
        head) ``num_blocks + 1``.
        """
        num_layers = self.num_blocks + 2
        depth = self.layer_id(param_name[len(prefix):]) \
            if param_name.startswith(prefix) else None
        return (num_layers - 1 if depth is None else depth), num_layers


def state_keys(state_dict: Mapping[str, Any], prefix: str, start: str) -> List[str]:
    """Keys of ``state_dict`` under ``prefix + start``."""
    return [k for k in state_dict if k.startswith(prefix + start)]
