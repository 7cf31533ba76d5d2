"""Write a markdown table between two HTML-comment markers of a doc, row by row.

Shared by ``tools/analysis/get_flops.py`` and ``tools/benchmark.py``. A row is keyed by
its first cell: rows measured in this run replace the rows with the same key, every
other row already in the doc is kept (a run on ``--models a`` must not delete ``b``).
Text outside the markers is never touched.
"""
import os.path as osp
from typing import List, Sequence, Tuple


def _markers(name: str) -> Tuple[str, str]:
    return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def row_key(line: str) -> str:
    """First cell of a markdown table row (``'| a | b |'`` -> ``'a'``)."""
    return line.strip().strip('|').split('|')[0].strip()


def merge_rows(old_block: str, header: Sequence[str], rows: Sequence[str]) -> List[str]:
    """Table lines: ``header``, then the old rows (replaced in place when a new row has
    their key) and the new rows with new keys. An old table with another header (other
    columns) cannot be merged and is dropped."""
    old = [line for line in old_block.splitlines() if line.strip().startswith('|')]
    if not old or old[0].strip() != header[0].strip():
        old = []
    new = {row_key(r): r for r in rows}
    merged = [new.pop(row_key(line), line) for line in old[2:]]  # after header, |---|
    return list(header) + merged + list(new.values())


def update_doc(path: str, name: str, header: Sequence[str], rows: Sequence[str],
               note: str = '') -> None:
    """Put ``header`` + ``rows`` (merged with the rows already there) and ``note`` (text
    above the table, replaced) between the ``name`` markers of ``path`` (appended at the
    end when the markers are absent)."""
    begin, end = _markers(name)
    text = open(path).read() if osp.exists(path) else ''
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        old, tail = rest.split(end, 1)
    else:
        head, old, tail = text + ('\n' if text and not text.endswith('\n') else ''), '', '\n'
    table = '\n'.join(merge_rows(old, header, rows))
    block = '\n'.join(p for p in (begin, note.strip(), table, end) if p)
    with open(path, 'w') as f:
        f.write(head + block + tail)
