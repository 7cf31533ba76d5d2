"""A checkpoint layout: its key table, how to recognise it, and what model it implies."""
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Tuple

from torch import Tensor

from .common import ConversionError, Converted, StateDict, listing
from .keymap import Group, to_official, to_ours


@dataclass(frozen=True)
class Layout:
    """One official checkpoint layout.

    Attributes:
        name: format name (``meta['vllama_mm']['format']``).
        description: what produces such files, for messages.
        groups: the key table (see :mod:`.keymap`).
        detect: True when a state dict is in this layout.
        finish: ``finish(mapped, source_sd, notes, head_dim=..., **options) -> Converted``;
            turns the table's symbols and flags into the backbone config.
        container: where the official weights live (``'model'`` / ``'state_dict'``).
        head_dim: default channels per head (not stored in the weights).
        drops: ``(official key, reason)`` for keys that are read and discarded.
        passthrough: official key prefixes kept unchanged (e.g. the MAE decoder).
        ignore: official key prefixes discarded with a note.
    """
    name: str
    description: str
    groups: Tuple[Group, ...]
    detect: Callable[[Mapping[str, Tensor]], bool]
    finish: Callable[..., Converted]
    container: str = 'model'
    head_dim: int = 64
    drops: Tuple[Tuple[str, str], ...] = ()
    passthrough: Tuple[str, ...] = ()
    ignore: Tuple[str, ...] = ()

    def convert(self, sd: Mapping[str, Tensor], head_dim: int = 0, **options: Any) -> Converted:
        """Official weights -> :class:`Converted` (every key accounted for)."""
        mapped = to_ours(sd, self.groups, self.name)
        notes = []
        for key, reason in self.drops:
            if key in sd:
                mapped.used.add(key)
                notes.append(f'dropped {key} {tuple(sd[key].shape)}: {reason}')
        for k in sd:
            if k.startswith(self.passthrough) and self.passthrough:
                mapped.state_dict[k] = sd[k]
                mapped.used.add(k)
        ignored = [k for k in sd if self.ignore and k.startswith(self.ignore)]
        if ignored:
            mapped.used.update(ignored)
            notes.append(f'dropped {listing(ignored)}')
        left = [k for k in sd if k not in mapped.used]
        if left:
            raise ConversionError(f'{self.name} checkpoint: unrecognised keys {listing(left)} '
                                  '(not part of the official layout this converter knows)')
        return self.finish(mapped, sd, notes, head_dim=head_dim or self.head_dim, **options)

    def to_official(self, sd: Mapping[str, Tensor]) -> StateDict:
        """Our weights -> the official layout (the content of ``container``)."""
        return to_official(sd, self.groups, self.name, self.passthrough)

