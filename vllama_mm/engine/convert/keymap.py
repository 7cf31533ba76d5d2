"""Key tables: one description of a layout drives conversion in both directions.

A layout is a list of :class:`Group` s. A group is one repeated unit (the stem, a layer
``{i}``, a pyramid block ``{s}.{j}``): the regexes that find its indices in either
layout, the :class:`Rule` s every instance has, and :class:`Variant` s for instances that
differ (LSA vs GSA blocks, class token or not). A rule names our key and the official
key(s) it comes from; several official keys are fused row-wise (``cat(dim=0)``) into
ours and split back in proportion to their leading shape coefficients.

Shapes are checked while reading official weights. Shape tokens: an int, ``'*'`` (any),
a symbol ``'d'`` or a multiple ``'3d'``. A symbol is bound by its first occurrence
within the group's scope (e.g. ``'stage {s}'``, or global) and checked afterwards, so the
bindings double as the architecture the weights imply (``d``, ``h``, ``sr``, ...).
Optional rules carry a flag name (``'qkv_bias'``, ``'ls'``): present everywhere or
nowhere, and the flag value is part of the architecture too.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .common import ConversionError, StateDict, listing

Token = Union[int, str]
Shape = Tuple[Token, ...]
Index = Tuple[int, ...]


@dataclass(frozen=True)
class Rule:
    """Our key template and the official key template(s) fused into it (rows, in order).

    ``shapes`` gives one shape per official part; ``flag`` makes the rule optional.
    """
    ours: str
    official: Tuple[str, ...]
    shapes: Tuple[Shape, ...] = ()
    flag: Optional[str] = None


def rule(ours: str, official: Union[str, Sequence[str]], *shapes: Shape,
         flag: Optional[str] = None) -> Rule:
    """Shorthand: ``rule('ln1.weight', 'norm1.weight', ('d',))``."""
    official = (official, ) if isinstance(official, str) else tuple(official)
    return Rule(ours, official, tuple(shapes), flag)


def prefixed(rules: Sequence[Rule], ours: str, official: str) -> Tuple[Rule, ...]:
    """The same rules under other key prefixes (one block table, several models)."""
    return tuple(Rule(ours + r.ours, tuple(official + o for o in r.official), r.shapes,
                      r.flag) for r in rules)


@dataclass(frozen=True)
class Variant:
    """Rules for the instances whose last index has ``parity`` (None: any) and, when
    ``marked``, whose source has the first rule's key. ``binds`` fixes symbols."""
    rules: Tuple[Rule, ...]
    parity: Optional[int] = None
    marked: bool = False
    binds: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Group:
    """A repeated unit; ``names`` are its index names (``()`` for a single instance)."""
    name: str
    official_rx: str = ''
    ours_rx: str = ''
    names: Tuple[str, ...] = ()
    rules: Tuple[Rule, ...] = ()
    variants: Tuple[Variant, ...] = ()
    scope: str = ''  # symbol scope label, e.g. 'stage {s}'; '' = global


@dataclass
class Mapped:
    """Result of :func:`to_ours`: our weights plus what the tables learned."""
    state_dict: StateDict
    symbols: Dict[Tuple[str, str], int]  # (scope label, symbol) -> value
    flags: Dict[str, bool]
    indices: Dict[str, List[Index]]
    used: set = field(default_factory=set)

    def sym(self, name: str, scope: str = '') -> Optional[int]:
        return self.symbols.get((scope, name))


# ------------------------------------------------------------------------ indices
def find_indices(keys, rx: str, fmt: str) -> List[Index]:
    """Index tuples captured by ``rx``; each level must count 0..n-1."""
    pattern = re.compile(rx)
    found = sorted({tuple(int(g) for g in m.groups()) for k in keys for m in [pattern.match(k)]
                    if m})
    _check_contiguous(found, rx, fmt)
    return found


def _check_contiguous(found: List[Index], rx: str, fmt: str) -> None:
    if not found or not found[0]:
        return
    heads = sorted({t[0] for t in found})
    if heads != list(range(len(heads))):
        raise ConversionError(f'{fmt} checkpoint: indices matched by {rx!r} are not '
                              f'contiguous from 0: {heads}')
    for h in heads:
        _check_contiguous([t[1:] for t in found if t[0] == h], rx, fmt)


def _fill(template: str, names: Sequence[str], idx: Index) -> str:
    return template.format(**dict(zip(names, idx)))


def _pick(group: Group, idx: Index, has: Callable[[Rule], bool]) -> Optional[Variant]:
    for v in group.variants:
        if v.parity is not None and (not idx or idx[-1] % 2 != v.parity):
            continue
        if v.marked and not has(v.rules[0]):
            continue
        return v
    return None


# ------------------------------------------------------------------------ shapes
def _split_token(t: Token) -> Tuple[int, Optional[str]]:
    """``'3d'`` -> (3, 'd'); ``'d'`` -> (1, 'd'); ``7`` -> (7, None); ``'*'`` -> (1, '*')."""
    if isinstance(t, int):
        return t, None
    m = re.fullmatch(r'(\d*)([A-Za-z_*]\w*)', t)
    return (int(m.group(1)) if m.group(1) else 1), m.group(2)


def _coef(shape: Shape) -> int:
    return _split_token(shape[0])[0] if shape and not isinstance(shape[0], int) else 1


class _Reader:
    """Reads official tensors with shape checks and symbol binding."""

    MIXED = dict(h='SwiGLU hidden sizes', sr='GSA sub-sampling ratios')

    def __init__(self, sd: Mapping[str, Tensor], fmt: str):
        self.sd, self.fmt = sd, fmt
        self.used: set = set()
        self.symbols: Dict[Tuple[str, str], int] = {}
        self.flags: Dict[str, Tuple[bool, str]] = {}

    def bind(self, scope: str, name: str, value: int, key: str) -> None:
        old = self.symbols.setdefault((scope, name), value)
        if old != value:
            where = f'{scope} ' if scope else ''
            raise ConversionError(f'{self.fmt} checkpoint: {where}mixes '
                                  f'{self.MIXED.get(name, name)} {old} and {value} '
                                  f'(at {key!r})')

    def take(self, key: str, shape: Shape, scope: str) -> Tensor:
        if key not in self.sd:
            raise ConversionError(f'{self.fmt} checkpoint: missing expected key {key!r}')
        t = self.sd[key]
        ok = not shape or t.dim() == len(shape)
        expected = []
        for tok, n in zip(shape, t.shape) if ok else ():
            coef, sym = _split_token(tok)
            if sym is None or sym == '*':
                want = coef if sym is None else n
            elif sym in self.MIXED or (scope, sym) not in self.symbols:
                if n % coef:
                    ok = False
                    break
                self.bind(scope, sym, n // coef, key)
                want = coef * self.symbols[(scope, sym)]
            else:
                want = coef * self.symbols[(scope, sym)]
            expected.append(want)
            ok = ok and want == n
        if not ok:
            want = tuple(expected) if len(expected) == len(shape) else shape
            raise ConversionError(f'{self.fmt} checkpoint: {key!r} has shape '
                                  f'{tuple(t.shape)}, expected {tuple(want)}')
        self.used.add(key)
        return t

    def flag(self, name: str, present: bool, key: str) -> None:
        old = self.flags.setdefault(name, (present, key))
        if old[0] != present:
            state = lambda p: 'present' if p else 'missing'  # noqa: E731
            raise ConversionError(f'{self.fmt} checkpoint: {key!r} is {state(present)} but '
                                  f'{old[1]!r} is {state(old[0])} (optional {name!r} weights '
                                  'must be in every layer or in none)')


# ------------------------------------------------------------------------ both directions
def to_ours(sd: Mapping[str, Tensor], groups: Sequence[Group], fmt: str) -> Mapped:
    """Official state dict -> ours, following the tables. Unused keys are left for the
    caller (drops, pass-through, or an 'unrecognised keys' error)."""
    rd = _Reader(sd, fmt)
    out: StateDict = OrderedDict()
    indices: Dict[str, List[Index]] = {}
    for g in groups:
        found = find_indices(sd, g.official_rx, fmt) if g.names else [()]
        indices[g.name] = found
        for idx in found:
            scope = _fill(g.scope, g.names, idx)
            fill = lambda s: _fill(s, g.names, idx)  # noqa: E731
            variant = _pick(g, idx, lambda r: fill(r.official[0]) in sd)
            if g.variants and variant is None:
                raise ConversionError(f'{fmt} checkpoint: {g.name} {idx} matches no known '
                                      'block kind')
            for name, value in (variant.binds if variant else ()):
                rd.bind(scope, name, value, fill(g.official_rx))
            for r in g.rules + (variant.rules if variant else ()):
                keys = [fill(o) for o in r.official]
                if r.flag is not None:
                    present = [k in sd for k in keys]
                    if any(present) and not all(present):
                        raise ConversionError(f'{fmt} checkpoint: {listing(keys)} must be '
                                              'present together')
                    rd.flag(r.flag, present[0], keys[0])
                    if not present[0]:
                        continue
                shapes = r.shapes or ((), ) * len(keys)
                parts = [rd.take(k, s, scope) for k, s in zip(keys, shapes)]
                out[fill(r.ours)] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return Mapped(out, rd.symbols, {k: v[0] for k, v in rd.flags.items()}, indices, rd.used)


def to_official(sd: Mapping[str, Tensor], groups: Sequence[Group], fmt: str,
                passthrough: Sequence[str] = ()) -> StateDict:
    """Our state dict -> the official layout (inverse of :func:`to_ours`)."""
    out: StateDict = OrderedDict()
    used = set()
    for g in groups:
        found = find_indices(sd, g.ours_rx, fmt) if g.names else [()]
        for idx in found:
            fill = lambda s: _fill(s, g.names, idx)  # noqa: E731
            variant = _pick(g, idx, lambda r: fill(r.ours) in sd)
            for r in g.rules + (variant.rules if variant else ()):
                key = fill(r.ours)
                if key not in sd:
                    continue
                v = sd[key]
                names = [fill(o) for o in r.official]
                if len(names) == 1:
                    out[names[0]] = v
                else:
                    coefs = [_coef(s) for s in r.shapes] if r.shapes else [1] * len(names)
                    unit, rest = divmod(v.shape[0], sum(coefs))
                    if rest:
                        raise ConversionError(f'cannot split {key!r} {tuple(v.shape)} into '
                                              f'row blocks {coefs}')
                    for n, part in zip(names, v.split([c * unit for c in coefs], dim=0)):
                        out[n] = part
                used.add(key)
    for k, v in sd.items():
        if k in used:
            continue
        if k.startswith(tuple(passthrough)):
            out[k] = v
        else:
            raise ConversionError(f'no official {fmt} name for {k!r}')
    return out
