"""The converters' small vocabulary: a layout is a plain key table (``(official, ours)``
template rows serving both directions, as timm's ``checkpoint_filter_fn`` tables), the
two steps around it (fusing official tensors that are one tensor here: SwiGLU
``c_fc1|c_fc2 -> w12``, a global GSA ``q|kv -> qkv``, and splitting them back) and the
result type :class:`Converted`. Plain torch; no file access (the tools read and write)."""
import copy
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..rope import check_rope_width

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


#: ``(official key, our key)`` templates: one row serves both directions. A ``{name}``
#: field matches :data:`FIELDS` ``[name]`` and is copied to the other side.
Table = Sequence[Tuple[str, str]]
FIELDS = dict(i=r'\d+', j=r'\d+', s=r'\d+', n='[12]', w='weight|bias',
              a='qkv|q|kv|sr|norm|proj', m='ln1|ln2|attn\\.qkv|attn\\.proj|ffn\\.w12|ffn\\.w3')


def _regex(template: str) -> str:
    parts = re.split(r'\{(\w+)\}', template)  # literal, field, literal, ...
    return ''.join(re.escape(p) if k % 2 == 0 else f'(?P<{p}>{FIELDS[p]})'
                   for k, p in enumerate(parts))


def rename(key: str, table: Table, to_official: bool = False) -> Optional[str]:
    """``key`` through the first row of ``table`` that matches it whole (official ->
    ours, or ours -> official), or None."""
    for official, ours in table:
        src, dst = (ours, official) if to_official else (official, ours)
        m = re.fullmatch(_regex(src), key)
        if m:
            return dst.format(**m.groupdict())
    return None


def fuse(sd: Mapping[str, Tensor], first: str, second: str, fused: str,
         when: Callable[[str], bool] = lambda k: True) -> StateDict:
    """Keys containing ``first`` and their ``second`` twins (where ``when(key)``) become
    one tensor (rows first | second) under the key with ``fused``; the rest stays."""
    out = OrderedDict()
    for k, v in sd.items():
        part = first if first in k else second if second in k else None
        if part is None or not when(k):
            out[k] = v
            continue
        twin = k.replace(part, second if part == first else first)
        if twin not in sd:
            raise ConversionError(f'{listing([k, twin])} must be present together')
        if part == first:
            out[k.replace(first, fused)] = torch.cat([v, sd[twin]], dim=0)
    return out


def unfuse(sd: Mapping[str, Tensor], fused: str, first: str, second: str,
           rows: Callable[[Tensor], int], when: Callable[[str], bool] = lambda k: True
           ) -> StateDict:
    """Inverse of :func:`fuse`: the first ``rows(tensor)`` rows go to ``first``."""
    out = OrderedDict()
    for k, v in sd.items():
        if fused in k and when(k):
            n = rows(v)
            out[k.replace(fused, first)], out[k.replace(fused, second)] = v[:n], v[n:]
        else:
            out[k] = v
    return out


def strip_module(sd: Mapping[str, Tensor]) -> StateDict:
    """Drop a DDP ``module.`` prefix carried by every key."""
    if sd and all(k.startswith('module.') for k in sd):
        return OrderedDict((k[len('module.'):], v) for k, v in sd.items())
    return OrderedDict(sd)


def indices(keys, rx: str, fmt: str) -> List[Tuple[int, ...]]:
    """Index tuples captured by ``rx`` (sorted); each level must count 0..n-1."""
    found = sorted({tuple(int(g) for g in m.groups()) for k in keys
                    for m in [re.match(rx, k)] if m})

    def check(level: List[Tuple[int, ...]]) -> None:
        if not level or not level[0]:
            return
        heads = sorted({t[0] for t in level})
        if heads != list(range(len(heads))):
            raise ConversionError(f'{fmt} checkpoint: indices matched by {rx!r} are not '
                                  f'contiguous from 0: {heads}')
        for h in heads:
            check([t[1:] for t in level if t[0] == h])

    check(found)
    return found


@dataclass(frozen=True)
class Layout:
    """One official checkpoint layout.

    ``convert(sd, head_dim=..., **options) -> Converted`` maps its keys (every key
    accounted for) and reads the backbone config off the shapes; ``to_official`` is the
    inverse (also naming the official source of a key in the shape check's messages).
    """
    name: str
    description: str
    detect: Callable[[Mapping[str, Tensor]], bool]
    convert: Callable[..., Converted]
    to_official: Callable[[Mapping[str, Tensor]], StateDict]
    container: str = 'model'
    head_dim: int = 64


def apply_table(sd: Mapping[str, Tensor], table: Table, fmt: str,
                drops: Mapping[str, str] = {}, keep: Sequence[str] = (),
                ignore: Sequence[str] = ()) -> Tuple[StateDict, List[str]]:
    """Rename every key by ``table``; ``drops``: official key -> why it is discarded;
    ``keep``: prefixes passed through unchanged; ``ignore``: prefixes discarded with a
    note. Any other key is an error naming it. Returns ``(state dict, notes)``."""
    out, notes, left, ignored = OrderedDict(), [], [], []
    for k, v in sd.items():
        if k in drops:
            notes.append(f'dropped {k} {tuple(v.shape)}: {drops[k]}')
        elif keep and k.startswith(tuple(keep)):
            out[k] = v
        elif ignore and k.startswith(tuple(ignore)):
            ignored.append(k)
        else:
            new = rename(k, table)
            if new is None:
                left.append(k)
            else:
                out[new] = v
    if left:
        raise ConversionError(f'{fmt} checkpoint: unrecognised keys {listing(left)} '
                              '(not part of the official layout this converter knows)')
    if ignored:
        notes.append(f'dropped {listing(ignored)}')
    return out, notes


def back(sd: Mapping[str, Tensor], table: Table, fmt: str,
         keep: Sequence[str] = ()) -> StateDict:
    """Our keys -> official keys by ``table`` (``keep``: prefixes passed through)."""
    out = OrderedDict()
    for k, v in sd.items():
        new = k if keep and k.startswith(tuple(keep)) else rename(k, table, True)
        if new is None:
            raise ConversionError(f'no official {fmt} name for {k!r}')
        out[new] = v
    return out


def options_none(fmt: str, options: Mapping[str, Any]) -> None:
    """Layouts without options refuse them (e.g. ``--rope`` on a pyramid file)."""
    if options:
        raise ConversionError(f'{fmt} checkpoints take no {", ".join("--" + k for k in options)}'
                              ' option')
