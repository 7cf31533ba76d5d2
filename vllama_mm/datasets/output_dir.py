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


def claim_output_dir(out_dir: str, params: str, owned: Sequence[str]) -> bool:
    """Prepare ``out_dir`` for a generator; ``True`` when it already holds this dataset.

    ``owned``: the sub-folders and files (relative to ``out_dir``) the generator writes.
    Raises ``FileExistsError`` naming the folder when one of them holds files this
    generator did not mark as its own.
    """
    stamp = osp.join(out_dir, '.complete')
    if osp.exists(stamp):
        with open(stamp) as f:
            if f.read() == params:
                return True
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
