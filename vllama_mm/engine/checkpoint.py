"""Safe loading of mmengine checkpoints under torch >= 2.6 (``weights_only=True``).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that
means safe unpickling, which rejects the few non-tensor objects mmengine itself writes
into checkpoints (``message_hub`` history buffers holding numpy arrays/scalars). Rather
than turning safe loading off for every file, allow-list exactly those classes.
"""
from typing import List

import torch

_done = False


def mmengine_checkpoint_globals() -> List:
    """The classes an mmengine checkpoint pickles besides tensors and builtins."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed numpy.core
    safe = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of per-type classes (Float64DType ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return safe


def allow_mmengine_checkpoints() -> None:
    """Allow-list mmengine's checkpoint classes for ``torch.load(weights_only=True)``."""
    global _done
    if _done or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    _done = True
