"""The output folder of the synthetic-data generators: never mixed with stale or foreign files.

A generator marks a finished dataset with ``<out_dir>/.complete`` holding its
arguments. Writing again with the same arguments is a no-op; with other arguments the
folders the generator owns are emptied first (a smaller rerun would otherwise leave the
old extra images, and CustomDataset would pick them up); a non-empty folder without the
mark (real data, or a run that was interrupted before the mark) is refused.
"""
import os
import os.path as osp
import shutil
from typing import Sequence


def stamp_text(params: str, writer: str = '') -> str:
    """What a generator writes into ``.complete``: its arguments, and who it wrote for."""
    return f'{params}\nwriter: {writer}' if writer else params


def _writer_of(stamp_text: str) -> str:
    """The ``writer:`` line of a ``.complete`` mark ('' for the generator's own CLI)."""
    for line in stamp_text.splitlines()[1:]:
        if line.startswith('writer: '):
            return line[len('writer: '):]
    return ''


def claim_output_dir(out_dir: str, params: str, owned: Sequence[str],
                     writer: str = '') -> bool:
    """Prepare ``out_dir`` for a generator; ``True`` when it already holds this dataset.

    ``owned``: the sub-folders and files (relative to ``out_dir``) the generator writes.
    ``writer``: the tool on whose behalf it writes (e.g. ``'tools/demo.py'``; '' for the
    generator itself); a dataset marked by another writer is never replaced.
    Raises ``FileExistsError`` naming the folder when one of them holds files this
    generator did not mark as its own, or that another writer marked.
    """
    stamp = osp.join(out_dir, '.complete')
    params = stamp_text(params, writer)
    if osp.exists(stamp):
        with open(stamp) as f:
            old = f.read()
        if old == params:
            return True
        if _writer_of(old) != writer:
            raise FileExistsError(
                f'{out_dir} holds a dataset written by '
                f'{_writer_of(old) or "tools/generate_synthetic_data.py"} with other '
                f'settings; {writer or "tools/generate_synthetic_data.py"} will not replace '
                'it: choose another output folder or delete this one first')
        os.remove(stamp)  # ours, written with other arguments: start again
        for name in owned:
            path = osp.join(out_dir, name)
            if osp.isdir(path):
                shutil.rmtree(path)
            elif osp.exists(path):
                os.remove(path)
        return False
    for name in owned:
        path = osp.join(out_dir, name)
        if (osp.isdir(path) and os.listdir(path)) or osp.isfile(path):
            raise FileExistsError(
                f'{path} is not empty and {out_dir} was not written by this generator (no '
                '.complete mark: real data, or an interrupted run); choose an empty '
                'out_dir or delete it first')
    return False
