"""Safe loading of mmengine checkpoints under torch >= 2.6 (``weights_only=True``).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that
means safe unpickling, which rejects the few non-tensor objects mmengine itself writes
into checkpoints (``message_hub`` history buffers holding numpy arrays/scalars). Rather
than turning safe loading off for every file, allow-list exactly those classes.
"""
import pickle
from typing import Any, List

import torch

_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """A ``getattr`` that only resolves ``HistoryBuffer.<statistics method>``.

    mmengine's ``HistoryBuffer.__getstate__`` pickles its statistics methods by reference
    (``getattr(HistoryBuffer, 'mean')``), so every mmengine training checkpoint with a
    message hub contains ``builtins.getattr`` calls. Allow-listing the real ``getattr``
    would let a file reach arbitrary objects; this stand-in refuses anything else.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) '
        'while loading a checkpoint (only HistoryBuffer statistics methods are allowed)')


def mmengine_checkpoint_globals() -> List:
    """The classes an mmengine checkpoint pickles besides tensors and builtins."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    if int(np.__version__.split('.')[0]) >= 2:  # numpy 2 renamed numpy.core
        from numpy import _core as core
    else:
        from numpy import core
    safe = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of per-type classes (Float64DType ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    # protocol 2 (torch.save's default) names it __builtin__, later protocols builtins
    safe += [(history_buffer_getattr, '__builtin__.getattr'),
             (history_buffer_getattr, 'builtins.getattr')]
    return safe


def allow_mmengine_checkpoints() -> None:
    """Allow-list mmengine's checkpoint classes for ``torch.load(weights_only=True)``.

    Idempotent; re-adds entries that something removed in the meantime (a
    ``torch.serialization.safe_globals`` context removes its entries on exit).
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return
    present = torch.serialization.get_safe_globals()
    missing = [g for g in mmengine_checkpoint_globals() if g not in present]
    if missing:
        torch.serialization.add_safe_globals(missing)
