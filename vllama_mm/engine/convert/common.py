"""Types and message helpers shared by the converter modules."""
import copy
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from torch import Tensor

from ...models.rope import check_rope_width

StateDict = Dict[str, Tensor]
_MAX_LISTED = 8


class ConversionError(ValueError):
    """The file is not a checkpoint this converter understands (message says why)."""


@dataclass
class Converted:
    """A converted checkpoint.

    Attributes:
        fmt: the detected layout name (``'mae'``, ``'deit3'``, ``'pyramid'``, ...).
        state_dict: ``backbone.*`` plus ``head.fc.*`` or ``neck.*``/``head.*``.
        backbone: backbone config (``type``, ``arch`` and the options that reproduce the
            authors' computation).
        head: classifier head facts (``num_classes``, ``in_channels``) or ``None``.
        notes: human-readable notes (dropped keys, assumptions, presets).
        options: the user's choices that shaped ``backbone`` (e.g. ``rope='2d'``).
    """
    fmt: str
    state_dict: StateDict
    backbone: Dict[str, Any]
    head: Optional[Dict[str, int]] = None
    notes: List[str] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)

    def meta(self, source: str = '') -> Dict[str, Any]:
        """The ``meta['vllama_mm']`` record (plain Python types only)."""
        return dict(format=self.fmt, source=source, backbone=copy.deepcopy(self.backbone),
                    head=copy.deepcopy(self.head), notes=list(self.notes),
                    options=copy.deepcopy(self.options))


def listing(keys: Iterable[Any], n: int = _MAX_LISTED) -> str:
    """``'a', 'b', ... (+k more)``: a short, quoted list for error messages."""
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(repr(k) for k in keys[:n]) + more


def short(msg: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    msg = ' '.join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + ' ...'


def heads(dim: int, head_dim: int, where: str) -> int:
    """Number of heads of a ``dim`` wide layer; errors name the fix (``--head-dim``)."""
    if head_dim <= 0 or dim % head_dim:
        raise ConversionError(f'{where}: width {dim} is not divisible by the head dim '
                              f'{head_dim}; pass the right --head-dim')
    try:
        check_rope_width(head_dim)
    except ValueError as e:
        raise ConversionError(f'{where}: {e}') from e
    return dim // head_dim
