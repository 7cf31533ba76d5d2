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
#: numpy's core package under numpy 1 and numpy 2 (renamed), as pickles name it
NUMPY_CORE_MODULES = ('numpy.core', 'numpy._core')


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
    # a pickle names the module of the numpy that wrote it: numpy.core.* (numpy 1) or
    # numpy._core.* (numpy 2); either file must load under either numpy
    for module in NUMPY_CORE_MODULES:
        safe += [(core.multiarray._reconstruct, f'{module}.multiarray._reconstruct'),
                 (core.multiarray.scalar, f'{module}.multiarray.scalar')]
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


# ---------------------------------------------------------------------------- integrity
class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as it is; the message names the file."""


_LEGACY_NAMED = set()  # legacy files already named as unverifiable (one line each)


def is_legacy_checkpoint(path: str) -> bool:
    """Whether ``path`` is a pre-zip (torch < 1.6) pickle, which has no CRCs to check."""
    with open(path, 'rb') as f:
        return f.read(4) != b'PK\x03\x04'


def nonfinite_tensors(state_dict: Any) -> List[str]:
    """Names of the floating-point tensors in ``state_dict`` holding NaN or inf."""
    if not isinstance(state_dict, dict):
        return []
    bad = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point()
                                                or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                bad.append(str(name))
    return bad


def check_finite_weights(state_dict: Any, source: str) -> None:
    """Refuse weights with NaN / inf tensors (a diverged run); the message names them.

    ``source`` names the file (or model) in the message. Raises :class:`CheckpointError`.
    """
    bad = nonfinite_tensors(state_dict)
    if bad:
        more = f' (+{len(bad) - 6} more)' if len(bad) > 6 else ''
        raise CheckpointError(
            f'{source}: {len(bad)} weight tensor(s) hold NaN or inf values '
            f'({", ".join(bad[:6])}{more}); the run that wrote them diverged. Use an '
            'earlier checkpoint of that run (training stops at non-finite losses and '
            'keeps the last finite checkpoint)')


def verify_checkpoint(path: str, error: type = None) -> None:
    """Check that ``path`` is a complete, uncorrupted ``torch.save`` archive.

    ``torch.save`` writes an uncompressed zip archive with a CRC-32 per member and the
    zip directory at the end of the file; ``torch.load`` checks neither, so a truncated
    file fails deep inside the zip reader and a file with flipped bytes loads and trains
    to NaN. This reads every member once and compares its CRC (~1 GB/s). Legacy
    (pre-zip, torch < 1.6) pickles carry no checksum and are only checked for emptiness.
    Raises :class:`CheckpointError` (or ``error``, e.g. the converter's own exception
    class) naming the file and what is wrong.
    """
    import os.path as osp
    import zipfile
    if error is not None and error is not CheckpointError:
        try:
            return verify_checkpoint(path)
        except CheckpointError as e:
            raise error(str(e)) from e
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointError(f'checkpoint file {path!r} is empty (an interrupted save, '
                              'copy or download); use another file')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head != b'PK\x03\x04':  # legacy pickle: no checksum to verify; say so, once
        if path not in _LEGACY_NAMED:
            _LEGACY_NAMED.add(path)
            import sys
            print(f'warning: checkpoint file {path!r} is in the legacy (non-zip, torch < 1.6) '
                  'format, which carries no checksums: it cannot be verified (re-save it '
                  'with torch.save to get CRC checks)', file=sys.stderr)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(
            f'checkpoint file {path!r} ({size} bytes) is truncated or corrupted ({e}); '
            'it was cut short while being written or copied: use another file') from e
    if bad is not None:
        raise CheckpointError(
            f'checkpoint file {path!r} is corrupted: the CRC of {bad!r} does not match '
            '(flipped bytes on disk or in transfer); copy or download it again')


def safe_load(path: str) -> Any:
    """``torch.load`` on CPU with safe unpickling (mmengine's classes allowed) and
    ``mmap`` for zip files (tensors are paged in only when read)."""
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True,
                      mmap=not is_legacy_checkpoint(path))


def check_finite_file(path: str) -> None:
    """:func:`verify_checkpoint`, then refuse the file when a weight tensor is NaN / inf.

    Loads with safe unpickling and ``mmap`` (tensors are paged in once for the check);
    the weights are the file's ``state_dict`` (mmengine) or the file itself (a plain
    state dict). Raises :class:`CheckpointError` naming the file and the tensors.
    """
    verify_checkpoint(path)
    ckpt = safe_load(path)
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    check_finite_weights(sd, f'checkpoint {path!r}')



# ---------------------------------------------------------------------------- released files
def _short(msg: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    msg = ' '.join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + ' ...'


def load_official(path: str, unsafe: bool = False) -> Any:
    """``torch.load`` a released checkpoint (any layout the converters know) on CPU.

    The file is verified first (:func:`verify_checkpoint`), then loaded with safe
    (weights-only) unpickling that allows, besides tensors, only ``argparse.Namespace``
    (the ``args`` of DeiT / Twins / DiT training dumps) and mmengine's own checkpoint
    classes; zip files are memory-mapped, so a training dump's optimizer state is never
    read. A file that needs anything else fails with a
    :class:`~vllama_mm.models.convert.ConversionError` naming it; ``unsafe=True``
    (``--unsafe``) only for a file from a source you trust.
    """
    import argparse
    import os.path as osp
    import re

    from ..models.convert import ConversionError
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.getsize(path) == 0:
        raise ConversionError(f'{path}: the file is empty (interrupted download?)')
    verify_checkpoint(path, ConversionError)  # zip CRC: truncated / flipped bytes, named
    mmap = not is_legacy_checkpoint(path)  # legacy pickles cannot be memory-mapped
    try:
        if unsafe:
            return torch.load(path, map_location='cpu', weights_only=False, mmap=mmap)
        # only what is not allowed already: the context removes its entries on exit
        allowed = torch.serialization.get_safe_globals()
        extra = [g for g in [argparse.Namespace] + mmengine_checkpoint_globals()
                 if g not in allowed]
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if 'Weights only load failed' in msg or 'Unsupported global' in msg:
            found = re.findall(r'Unsupported global: GLOBAL ([\w.]+)', msg) + re.findall(
                r'(refusing getattr\([^)]*\)|unsupported GLOBAL [\w.]+ whose module \w+ '
                r'is blocked)', msg)
            what = f' ({"; ".join(sorted(set(found)))})' if found else ''
            raise ConversionError(
                f'{path}: the file pickles non-tensor objects{what} that safe loading '
                '(torch.load(weights_only=True)) refuses. If you trust where it comes '
                'from, re-run with --unsafe (loads it with weights_only=False).') from e
        raise ConversionError(f'{path}: cannot unpickle the file (corrupt or not a PyTorch '
                              f'checkpoint): {_short(msg)}') from e
    except Exception as e:  # noqa: BLE001  any other failure means an unreadable file
        raise ConversionError(f'{path}: cannot read the file as a PyTorch checkpoint '
                              f'(truncated or corrupt?): {_short(str(e))}') from e
