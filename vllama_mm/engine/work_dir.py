"""The work dir of a training run: one run at a time, and files that are whole or absent.

``<work_dir>/train.lock`` keeps a second live run out of a work dir (its checkpoints and
``last_checkpoint`` would be replaced under the first); small files are replaced
atomically (temporary, ``fsync``, rename); ``*.tmp`` leftovers of a killed checkpoint
write are removed before anything else writes. :func:`prepare_work_dir` does all of it
for ``tools/train.py`` before the Runner is built; the checkpoint hook again for Runners
built elsewhere.
"""
import atexit
import glob
import json
import os
import os.path as osp
import socket
import sys
import time
from typing import Dict, List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

from .validate import ConfigError

TMP_SUFFIX = '.tmp'


LOCK_NAME = 'train.lock'


class WorkDirLocked(ConfigError):
    """Another live training run holds the work dir (a user error: exit status 2)."""


def _fsync_path(path: str) -> None:
    """Flush a file (or a directory entry table) to the disk."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) if osp.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``; readers see the old or the new text."""
    tmp = path + TMP_SUFFIX
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(osp.dirname(osp.abspath(path)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_HELD_LOCKS: Dict[str, int] = {}


def _release_locks() -> None:
    for path, pid in list(_HELD_LOCKS.items()):
        if pid == os.getpid():
            release_work_dir_lock(osp.dirname(path))


def acquire_work_dir_lock(work_dir: str) -> str:
    """Take ``<work_dir>/train.lock`` for this process (idempotent); returns its path.

    Two training runs in one work dir would replace each other's checkpoints and
    ``last_checkpoint``. The lock records pid, host, start time and command line; a
    lock of a live process on this host (or of any other host) is a
    :class:`WorkDirLocked` error naming it; a lock whose process is gone (killed, the
    machine rebooted) is replaced, with a note. Released at exit.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    if _HELD_LOCKS.get(path) == os.getpid() and osp.isfile(path):
        return path
    me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime(
        '%Y-%m-%d %H:%M:%S'), cmd=' '.join(sys.argv)[:300])
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    other = json.load(f)
                pid, host = int(other['pid']), str(other['host'])
            except (OSError, ValueError, KeyError, TypeError):
                other, pid, host = None, -1, ''
            if other is not None and pid == os.getpid() and host == me['host']:
                _HELD_LOCKS[path] = pid
                return path
            if other is not None and (host != me['host'] or _pid_alive(pid)):
                raise WorkDirLocked(
                    f'work dir {work_dir} is in use by another training run: pid {pid} on '
                    f"{host}, started {other.get('started')} ({other.get('cmd', '?')}). Wait "
                    'for it to end, choose another --work-dir, or, if that process is gone, '
                    f'remove {path}')
            what = f'of pid {pid} on {host}, which is no longer running' if other \
                else 'that is not readable'
            print(f'[vllama_mm] removing a stale lock {path} ({what})', file=sys.stderr)
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, 'w') as f:
            json.dump(me, f)
        _HELD_LOCKS[path] = os.getpid()
        if len(_HELD_LOCKS) == 1:
            atexit.register(_release_locks)
        return path
    raise WorkDirLocked(f'could not take the lock {path}; another run keeps replacing it')


def release_work_dir_lock(work_dir: str) -> None:
    """Remove this process's ``train.lock`` (a lock of another process is left alone)."""
    path = osp.join(work_dir, LOCK_NAME)
    if _HELD_LOCKS.pop(path, None) != os.getpid():
        return
    try:
        with open(path) as f:
            if int(json.load(f).get('pid', -1)) != os.getpid():
                return
        os.remove(path)
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def remove_stale_temporaries(ckpt_dir: str, log: bool = True) -> List[str]:
    """Delete ``*.tmp`` leftovers of a killed checkpoint write; returns their paths.

    Call with the work-dir lock held (a live run's temporary is not stale). Run before
    anything else writes: after a disk-full failure the leftover is what fills the disk.
    Each removal is logged (``log=False``: printed, before the Runner has a logger).
    """
    removed = []
    for tmp in glob.glob(osp.join(ckpt_dir, '*' + TMP_SUFFIX)):
        try:
            os.remove(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
        msg = f'removed {tmp}: an incomplete checkpoint of an interrupted save'
        if log:
            print_log(msg, logger='current')
        else:
            print(f'[vllama_mm] {msg}', file=sys.stderr)
    return removed


def checkpoint_dir(work_dir: str, out_dir: Optional[str]) -> str:
    """Where ``CheckpointHook(out_dir=...)`` writes: ``out_dir/<work dir name>``, else the
    work dir itself."""
    if out_dir is None:
        return work_dir
    return osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))


def _rank() -> int:
    for var in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(var, '').isdigit():
            return int(os.environ[var])
    return 0


def prepare_work_dir(cfg: Config, mode: str = 'train') -> None:
    """Check the work dir before anything writes to it; for training take its lock and
    remove stale checkpoint temporaries.

    A ``work_dir`` that is a file or cannot be written (read-only file system, no
    permission) is a :class:`ConfigError` naming it. Training (rank 0): the work-dir lock
    (:func:`acquire_work_dir_lock`) first, then the
    ``*.tmp`` leftovers of a killed or disk-full checkpoint write are removed, before
    the Runner writes its logs (a leftover can be what fills the disk).
    """
    import tempfile
    work_dir = cfg.get('work_dir')
    if not isinstance(work_dir, str) or '://' in work_dir:
        return
    if osp.exists(work_dir) and not osp.isdir(work_dir):
        raise ConfigError(f'work_dir {work_dir!r} is a file, not a directory: choose another '
                          '--work-dir')
    try:
        os.makedirs(work_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write_test_', dir=work_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f'work_dir {work_dir!r} is not writable ({e.strerror or e}): choose '
                          'another --work-dir') from e
    if mode != 'train' or _rank() != 0:
        return
    acquire_work_dir_lock(work_dir)
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not isinstance(ckpt, dict) or ckpt.get('type') not in (
            'AtomicCheckpointHook', 'mmengine.AtomicCheckpointHook'):
        return
    out_dir = ckpt.get('out_dir') if isinstance(ckpt.get('out_dir'), str) else None
    ckpt_dir = checkpoint_dir(work_dir, out_dir)
    if '://' not in ckpt_dir and osp.isdir(ckpt_dir):
        remove_stale_temporaries(ckpt_dir, log=False)
