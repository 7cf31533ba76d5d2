"""A checkpoint hook that cannot lose the last good checkpoint, and honest auto-resume.

mmengine's ``CheckpointHook`` (0.10.7) deletes the oldest kept checkpoint *before*
writing the new one and writes the new one in place: a SIGKILL (pre-emption, OOM kill,
wall-time limit) during the write, with ``max_keep_ckpts=1``, leaves a truncated
``epoch_N.pth``, no previous checkpoint and ``last_checkpoint`` naming a deleted file.

:class:`AtomicCheckpointHook` keeps every option of ``CheckpointHook`` and changes the
order of the file operations (local disks; other backends keep mmengine's behaviour):

1. write ``<name>.tmp``, ``fsync`` it, ``os.replace`` it onto ``<name>``, ``fsync`` the
   directory: ``<name>`` is either absent or complete, never partial;
2. only then remove the checkpoints that ``max_keep_ckpts`` drops;
3. update ``last_checkpoint`` last, itself through a temporary file and a rename.

With ``resume=True`` and no explicit file (``tools/train.py --resume``), before loading
it checks the checkpoint ``last_checkpoint`` names (missing file, empty, garbage,
dangling, truncated, CRC error) and otherwise falls back to the newest intact checkpoint
in the work dir, logging what it skipped and why.

Also (see docs/reliability.md): a best checkpoint is written completely before the
previous one is removed; a training run takes ``<work_dir>/train.lock`` (another live
run in the same work dir is refused, naming it); the config stored in a checkpoint is
compared as data (a JSON copy, or the text parsed without executing it); a non-finite
loss for ``max_nonfinite_steps`` consecutive iterations stops training, and nothing
non-finite is saved.

Registered in mmengine's root ``HOOKS`` registry (visible from every library scope);
the configs set it with ``default_hooks.checkpoint.type='AtomicCheckpointHook'``.
"""
import ast
import atexit
import glob
import inspect
import json
import logging
import math
import os
import os.path as osp
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from mmengine.dist import broadcast_object_list, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .checkpoint import (CheckpointError, allow_mmengine_checkpoints, nonfinite_tensors,
                         verify_checkpoint)
from .validate import ConfigError

TMP_SUFFIX = '.tmp'
LOCK_NAME = 'train.lock'
#: meta key of the data-only (JSON) copy of the run's config, read back on resume.
CFG_JSON_KEY = 'vllama_mm_cfg_json'


class WorkDirLocked(ConfigError):
    """Another live training run holds the work dir (a user error: exit status 2)."""


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN / inf for too many consecutive iterations."""


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


def checkpoint_progress(path: str) -> Optional[Tuple[int, int]]:
    """``(iter, epoch)`` stored in an mmengine training checkpoint's meta, else ``None``.

    Reads the pickle only (tensors stay memory-mapped, never read); ``None`` for a file
    that is not a training checkpoint (no ``meta`` with ``epoch`` / ``iter``, e.g. a
    converted or foreign ``.pth``) or cannot be unpickled safely.
    """
    import torch
    allow_mmengine_checkpoints()
    try:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001 - refused or unreadable: not ours to resume
        return None
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or 'state_dict' not in ckpt:
        return None
    it, ep = meta.get('iter'), meta.get('epoch')
    if not isinstance(it, int) or not isinstance(ep, int):
        return None
    return it, ep


def _progress_text(prog: Tuple[int, int]) -> str:
    return f'epoch {prog[1]}, iter {prog[0]}'


def _inside(path: str, folder: str) -> bool:
    return osp.dirname(osp.abspath(path)) == osp.abspath(folder)


def find_resumable_checkpoint(work_dir: str,
                              ckpt_dir: Optional[str] = None) -> Tuple[Optional[str], str]:
    """The checkpoint auto-resume should load, and a note saying which and why.

    The candidates are the file ``work_dir/last_checkpoint`` names and every ``*.pth``
    in ``ckpt_dir`` (default ``work_dir``; ``best_*`` files hold no optimizer state and
    are skipped). Damaged files (truncated, CRC error) and files that are not mmengine
    training checkpoints (no ``meta`` epoch / iter) are left out, with a note; of the
    rest the one with the highest (iter, epoch) **stored in its meta** wins (file times
    change with ``cp``; the record may name an older file, even outside the work dir),
    the recorded one on a tie. Returns ``(path, note)``; the note contains ``instead``
    whenever the choice is not simply the recorded file. ``(None, '')``: nothing to
    resume (a fresh work dir). Raises :class:`CheckpointError` when checkpoints exist
    but none is intact.
    """
    ckpt_dir = ckpt_dir or work_dir
    record = osp.join(work_dir, 'last_checkpoint')
    recorded = None
    problem = ''
    if not osp.exists(record):
        problem = f'{record} does not exist'
    else:
        with open(record, 'rb') as f:
            raw = f.read()
        try:
            recorded = raw.decode('utf-8').strip()
        except UnicodeDecodeError:
            recorded = None
        if not recorded:
            problem = f'{record} is {"empty" if not raw.strip() else "not a file name"}'
            recorded = None
        elif not osp.isfile(recorded):
            problem = f'{record} names {recorded[:200]!r}, which does not exist'
            recorded = None
    candidates = sorted(p for p in glob.glob(osp.join(ckpt_dir, '*.pth'))
                        if osp.isfile(p) and not osp.basename(p).startswith('best_'))
    if recorded is not None and not any(osp.abspath(p) == osp.abspath(recorded)
                                        for p in candidates):
        candidates.append(recorded)
    skipped: List[str] = []
    foreign: List[str] = []
    ranked: List[Tuple[Tuple[int, int], int, str]] = []
    unreadable: List[str] = []
    for path in candidates:  # the pickle only: cheap, tensors are not read
        prog = checkpoint_progress(path)
        if prog is None:
            unreadable.append(path)
        else:
            ranked.append((prog, int(path == recorded), path))
    for path in unreadable:  # damaged (named) or not a training checkpoint (ignored)
        try:
            verify_checkpoint(path)
            foreign.append(path)
        except CheckpointError as e:
            skipped.append(str(e))
            if path == recorded:
                problem = str(e)
    chosen = None
    for entry in sorted(ranked, reverse=True):  # newest first; verify until one is intact
        try:
            verify_checkpoint(entry[2])
        except CheckpointError as e:
            skipped.append(str(e))
            if entry[2] == recorded:
                problem = str(e)
            continue
        chosen = entry
        break
    if recorded is not None and recorded in foreign:
        problem = f'{record} names {recorded}, which is not a training checkpoint'
    ignored = (f'; ignored {", ".join(foreign)}: not mmengine training checkpoints (no '
               'meta epoch / iter)') if foreign else ''
    if chosen is None:
        if recorded is None and not skipped:
            return None, (f'nothing to resume in {ckpt_dir}{ignored}; training from the '
                          'start' if foreign else '')
        raise CheckpointError(f'cannot resume from {ckpt_dir}: {problem or "no usable file"}'
                              f', and no other intact checkpoint is there '
                              f'({"; ".join(skipped) or "none found"}){ignored}. Pass one '
                              'with --resume PATH, or start without --resume.')
    prog, _, path = chosen
    where = f' (skipped: {"; ".join(skipped)})' if skipped else ''
    if recorded is not None and path == recorded:
        if ignored or skipped:
            return path, (f'resuming from {path} ({_progress_text(prog)}), named by {record} '
                          f'and the newest intact checkpoint{where}{ignored}; ignoring the '
                          'others instead')
        return path, (f'resuming from {path} ({_progress_text(prog)}): named by {record}, '
                      f'the newest intact checkpoint in {ckpt_dir}')
    if recorded is not None and not problem:
        rec = next(p for p, _, q in ranked if q == recorded)
        outside = '' if _inside(recorded, ckpt_dir) else f', outside {ckpt_dir}'
        problem = (f'{record} names {recorded} ({_progress_text(rec)}{outside}), older than '
                   f'{path} ({_progress_text(prog)})')
    return path, (f'{problem}; resuming from the newest intact checkpoint {path} instead '
                  f'({_progress_text(prog)}, by the epoch / iter in its meta){where}{ignored}')


# ---------------------------------------------------------------------------- work dir
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
    """
    removed = []
    for tmp in glob.glob(osp.join(ckpt_dir, '*' + TMP_SUFFIX)):
        try:
            os.remove(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
        if log:
            print_log(f'removed {tmp}: an incomplete checkpoint of an interrupted save',
                      logger='current')
    return removed


# ---------------------------------------------------------------------------- configs
class _NotData(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """Value of a data-only expression: literals, ``dict(k=v)``, lists, tuples, sets."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _NotData(f'line {node.lineno}: ** in a dict')
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args and all(k.arg for k in node.keywords):
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in ('inf', 'nan'):
        return float(node.id)
    raise _NotData(f'line {getattr(node, "lineno", "?")}: {type(node).__name__} is not a '
                   'literal value')


def parse_config_text(text: str) -> Dict[str, Any]:
    """The ``name = value`` assignments of a config text, evaluated as data only.

    Nothing is executed: only literal values and ``dict(...)`` calls are accepted (what
    mmengine's ``Config.pretty_text`` writes); anything else (a function call, an import,
    an expression statement) raises ``ValueError`` naming the line.
    """
    tree = ast.parse(text, mode='exec')
    out: Dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise _NotData(f'line {stmt.lineno}: a {type(stmt).__name__} statement, not a '
                           '`name = value` assignment')
        out[stmt.targets[0].id] = _literal(stmt.value)
    return out


def stored_config(checkpoint: dict) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(config dict, '')`` of the run that wrote ``checkpoint``, or ``(None, why not)``.

    Prefers the JSON copy this hook stores in ``meta`` (:data:`CFG_JSON_KEY`); else
    parses mmengine's ``meta['cfg']`` text with :func:`parse_config_text`. Never executes
    anything from the file.
    """
    meta = checkpoint.get('meta') or {}
    if not isinstance(meta, dict):
        return None, 'no meta'
    data = meta.get(CFG_JSON_KEY)
    if isinstance(data, str):
        try:
            cfg = json.loads(data)
            if isinstance(cfg, dict):
                return cfg, ''
        except ValueError as e:
            return None, f'its JSON config copy is not valid JSON ({e})'
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None, 'it stores no config'
    try:
        return parse_config_text(text), ''
    except (SyntaxError, ValueError, RecursionError) as e:
        return None, (f'its config text is not plain data ({type(e).__name__}: {e}); it is '
                      'not executed')


_DEFAULTS_CACHE: Dict[Tuple[str, str], Dict[str, Any]] = {}


def class_defaults(type_name: Any) -> Dict[str, Any]:
    """Constructor defaults of the class a config ``type`` names in the current scope's
    registries (MODELS first); ``{}`` when it cannot be resolved."""
    if not isinstance(type_name, str):
        return {}
    from mmengine import registry
    scope = registry.DefaultScope.get_current_instance()
    key = (scope.scope_name if scope is not None else '', type_name)
    if key in _DEFAULTS_CACHE:
        return _DEFAULTS_CACHE[key]
    found: Dict[str, Any] = {}
    names = [type_name] if '.' in type_name or not key[0] else \
        [f'{key[0]}.{type_name}', type_name]  # the root registries search by scope prefix
    for reg in (registry.MODELS, registry.DATASETS, registry.TRANSFORMS):
        cls = None
        for name in names:
            try:
                cls = reg.get(name)
            except Exception:  # noqa: BLE001 - unresolvable in this scope
                cls = None
            if cls is not None:
                break
        if cls is not None:
            try:
                params = inspect.signature(cls).parameters.values()
            except (TypeError, ValueError):
                break
            found = {p.name: p.default for p in params
                     if p.default is not inspect.Parameter.empty}
            break
    _DEFAULTS_CACHE[key] = found
    return found


_UNSET = '<unset>'


def config_diff(old: Any, new: Any, key: str,
                defaults: Optional[Callable[[Any], Dict[str, Any]]] = None) -> List[str]:
    """``'key.path: old -> new'`` for every leaf that differs (tuples compare as lists).

    ``defaults(type_name)``: constructor defaults of a dict's ``type``; a key set on one
    side only counts as equal when the other side's default is that value (an explicit
    ``rope_type='as2d'`` equals leaving the default).
    """
    if isinstance(old, tuple):
        old = list(old)
    if isinstance(new, tuple):
        new = list(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        fill = {}
        if defaults is not None and old.get('type') == new.get('type'):
            fill = defaults(old.get('type'))
        for k in list(old) + [k for k in new if k not in old]:
            if k == '_scope_':
                continue
            a, b = old.get(k, _UNSET), new.get(k, _UNSET)
            if a == _UNSET and k in fill:
                a = fill[k]
            if b == _UNSET and k in fill:
                b = fill[k]
            out += config_diff(a, b, f'{key}.{k}', defaults)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in config_diff(a, b, f'{key}.{i}', defaults)]
    return [] if _same(old, new) else [f'{key}: {old!r} -> {new!r}']


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _as_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The config as JSON data (what a checkpoint stores and resume reads back)."""
    return json.loads(json.dumps(cfg, default=repr))


def _is_training(runner) -> bool:
    """Whether ``runner`` is in ``train()`` (its train loop is built before ``before_run``)."""
    from mmengine.runner import BaseLoop
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def _ckpt_dir(runner, out_dir: Optional[str]) -> str:
    if out_dir is None:
        return runner.work_dir
    return osp.join(out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that writes atomically and removes old files only afterwards.

    Same arguments as ``mmengine.hooks.CheckpointHook``, plus ``max_nonfinite_steps``:
    training stops (:class:`NonFiniteLossError`) once the loss has been NaN / inf for
    this many consecutive iterations (``0``: never); no checkpoint is written while the
    loss or the weights are non-finite. See the module doc for the rest.
    """

    def __init__(self, *args, max_nonfinite_steps: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(max_nonfinite_steps, bool) or not isinstance(max_nonfinite_steps, int) \
                or max_nonfinite_steps < 0:
            raise ValueError('AtomicCheckpointHook: max_nonfinite_steps must be an int >= 0 '
                             f'(0: never stop), got {max_nonfinite_steps!r}')
        self.max_nonfinite_steps = max_nonfinite_steps
        self._nonfinite_streak = 0
        self._locked_dir: Optional[str] = None

    def before_run(self, runner) -> None:
        """Take the work-dir lock, remove leftovers of a killed write, pick the file
        auto-resume loads.

        Runs before ``Runner.load_or_resume`` (``CheckpointHook`` itself only sets up its
        output directory later, in ``before_train``). Lock and clean-up happen only for
        training (``runner.test()`` calls ``before_run`` too).
        """
        super().before_run(runner)
        allow_mmengine_checkpoints()  # resume reads mmengine's own classes (safe loading)
        load_from = getattr(runner, '_load_from', None)
        if isinstance(load_from, str) and osp.isfile(load_from):
            verify_checkpoint(load_from)  # resume / load_from: zip CRC before loading
        ckpt_dir = _ckpt_dir(runner, self.out_dir)
        if not isinstance(get_file_backend(ckpt_dir, backend_args=self.backend_args),
                          LocalBackend):
            print_log(f'AtomicCheckpointHook: {ckpt_dir} is not on a local disk; '
                      'checkpoints are written by the backend as mmengine does (not '
                      'atomically)', logger='current', level=logging.WARNING)
            return
        if is_main_process() and _is_training(runner):
            acquire_work_dir_lock(runner.work_dir)  # no-op when tools/train.py took it
            self._locked_dir = runner.work_dir
            if osp.isdir(ckpt_dir):
                remove_stale_temporaries(ckpt_dir)
        # mmengine 0.10.7 keeps these as private Runner attributes; load_or_resume() reads
        # them after before_run, so setting _load_from here picks the file it resumes from
        if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
            choice: List[Any] = [None, '']
            if is_main_process():
                try:
                    choice = list(find_resumable_checkpoint(runner.work_dir, ckpt_dir))
                except CheckpointError as e:
                    choice = [e, '']
            if get_world_size() > 1:
                broadcast_object_list(choice)
            path, note = choice
            if isinstance(path, Exception):
                raise path
            if note:
                print_log(f'auto-resume: {note}', logger='current',
                          level=logging.WARNING if 'instead' in note else logging.INFO)
            if path is not None:
                runner._load_from = path

    def after_run(self, runner) -> None:
        super().after_run(runner)
        if self._locked_dir is not None:
            release_work_dir_lock(self._locked_dir)
            self._locked_dir = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store a data-only (JSON) copy of the config: resume compares it without
        executing the ``meta['cfg']`` text."""
        super().before_save_checkpoint(runner, checkpoint)
        meta = checkpoint.setdefault('meta', {})
        if isinstance(meta, dict):
            try:
                meta[CFG_JSON_KEY] = json.dumps(runner.cfg.to_dict(), default=repr)
            except (TypeError, ValueError, RecursionError) as e:
                print_log(f'AtomicCheckpointHook: the config is not storable as JSON ({e}); '
                          'resume will not compare it', logger='current',
                          level=logging.WARNING)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume: compare this run's config with the one the checkpoint was saved by.

        The stored config is read as data only (:func:`stored_config`); one that cannot
        be read so is reported and not compared. Keys set on one side only compare
        equal when they hold the class's default. A different ``model`` is an error
        naming the differences (the weights would be loaded non-strictly into another
        model). Changed ``optim_wrapper`` / ``param_scheduler`` / ``train_cfg`` values
        are logged as warnings: mmengine restores the optimizer and scheduler *state*
        from the checkpoint (so e.g. a new ``lr`` is replaced by the checkpoint's),
        while ``train_cfg`` applies as given.
        """
        if not getattr(runner, '_resume', False):
            return  # load_from: weights only, another config is the point
        saved, why = stored_config(checkpoint)
        if saved is None:
            print_log(f'resume: cannot read the config stored in the checkpoint ({why}); '
                      'its settings are not compared', logger='current', level=logging.WARNING)
            return
        now = _as_data(runner.cfg.to_dict())
        model = config_diff(saved.get('model'), now.get('model'), 'model', class_defaults)
        if model:
            raise ValueError(
                f'resume: the model config differs from the one the checkpoint was trained '
                f'with ({"; ".join(model[:8])}{"; ..." if len(model) > 8 else ""}). Resume '
                'with the original config, or start a new run from its weights with '
                'load_from=CHECKPOINT (without --resume)')
        for key, what in (('optim_wrapper', "the optimizer state (lr, momentum, ...) is the "
                           "checkpoint's, not these values"),
                          ('param_scheduler', "the schedulers' state is the checkpoint's"),
                          ('train_cfg', 'the new values apply')):
            diff = config_diff(saved.get(key), now.get(key), key, class_defaults)
            if diff:
                print_log(f'resume: {key} changed since the checkpoint was written '
                          f'({"; ".join(diff[:8])}): {what}. To train with new optimizer '
                          'settings, start a new run with load_from=CHECKPOINT.',
                          logger='current', level=logging.WARNING)

    # ------------------------------------------------------------------ non-finite
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Count consecutive non-finite losses (stop at ``max_nonfinite_steps``), then
        save as ``CheckpointHook`` does (skipped while the loss is non-finite)."""
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        if loss is not None and self.max_nonfinite_steps > 0:
            import torch
            bad = torch.as_tensor(loss).detach().float()
            bad = (~torch.isfinite(bad)).any().float().reshape(1)
            if get_world_size() > 1:  # every rank stops together
                from mmengine.dist import all_reduce
                all_reduce(bad, op='sum')
            if bool(bad.item()):
                self._nonfinite_streak += 1
                value = float(torch.as_tensor(loss).detach().float().reshape(-1)[0])
                if self._nonfinite_streak >= self.max_nonfinite_steps:
                    last = runner.message_hub.get_info('last_ckpt') or self.last_ckpt
                    raise NonFiniteLossError(
                        f'training stopped at iteration {runner.iter + 1} (epoch '
                        f'{runner.epoch + 1}): the loss was {value} for '
                        f'{self._nonfinite_streak} consecutive iterations '
                        f'(default_hooks.checkpoint.max_nonfinite_steps='
                        f'{self.max_nonfinite_steps}). Likely causes: too high a learning '
                        'rate (lower optim_wrapper.optimizer.lr, add warm-up), no gradient '
                        'clipping (optim_wrapper.clip_grad=dict(max_norm=1.0)), fp16 '
                        'overflow (AmpOptimWrapper with loss_scale=\'dynamic\', or bf16), '
                        'or NaN / inf in the input data. Last finite checkpoint: '
                        f'{last or "none written"}')
            else:
                self._nonfinite_streak = 0
        super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def _finite_to_save(self, runner, what: str) -> bool:
        """Whether a checkpoint may be written now (finite loss and weights)."""
        if self._nonfinite_streak:
            print_log(f'AtomicCheckpointHook: not saving {what}: the loss is non-finite; '
                      'the last finite checkpoint stays latest', logger='current',
                      level=logging.WARNING)
            return False
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        bad = nonfinite_tensors(model.state_dict())
        if bad:
            print_log(f'AtomicCheckpointHook: not saving {what}: {len(bad)} weight '
                      f'tensor(s) hold NaN / inf ({", ".join(bad[:4])}); the last finite '
                      'checkpoint stays latest', logger='current', level=logging.WARNING)
            return False
        return True

    # ------------------------------------------------------------------ writing
    def _write_atomic(self, save: Callable, out_dir: str, filename: str, *args,
                      **kwargs) -> None:
        """``runner.save_checkpoint`` into ``filename.tmp``, fsync, rename onto ``filename``.

        A failed write (disk full, ...) removes its temporary at once and names the file
        and the need for room for two checkpoints.
        """
        tmp, final = osp.join(out_dir, filename + TMP_SUFFIX), osp.join(out_dir, filename)
        from .fsdp import full_state_for_checkpoint  # FSDP2: gathered on every rank first
        try:
            with full_state_for_checkpoint(getattr(save, '__self__', None)):
                save(out_dir, filename + TMP_SUFFIX, *args, **kwargs)  # master_only in mmengine
        except Exception as e:
            if is_main_process() and osp.exists(tmp):
                os.remove(tmp)
            if isinstance(e, OSError):
                raise OSError(e.errno, f'writing checkpoint {final} failed ({e.strerror or e}); '
                              'its temporary was removed. The atomic checkpoint hook needs '
                              'room for two checkpoints (the new one is complete before the '
                              'old one is removed): free disk space or lower '
                              'max_keep_ckpts, then resume') from e
            raise
        if not is_main_process():
            return
        _fsync_path(tmp)
        os.replace(tmp, final)
        _fsync_path(out_dir)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        if not self._finite_to_save(runner, self.filename_tmpl.format(step)):
            return
        drop: List[str] = []  # removed only after the new checkpoint is complete
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                old = self.keep_ckpt_ids.popleft()
                drop.append(self.file_backend.join_path(self.out_dir,
                                                        self.filename_tmpl.format(old)))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        self._write_atomic(
            runner.save_checkpoint, self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        for path in drop:
            if path != self.last_ckpt and osp.isfile(path):
                os.remove(path)
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's best-checkpoint logic with the order of the file operations changed:
        the new best file is written completely (atomically) first, the previous best is
        removed only afterwards (mmengine 0.10.7 removes it first: a kill in between left
        no best checkpoint at all)."""
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        if not self.save_best:
            return
        step = runner.epoch if self.by_epoch else runner.iter
        cur_type = 'epoch' if self.by_epoch else 'iter'
        ckpt_filename = self.filename_tmpl.format(step)
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])
        single = len(self.key_indicators) == 1
        updated = False
        for key_indicator, rule in zip(self.key_indicators, self.rules):
            score = metrics[key_indicator]
            score_key = 'best_score' if single else f'best_score_{key_indicator}'
            info_key = 'best_ckpt' if single else f'best_ckpt_{key_indicator}'
            old_path = self.best_ckpt_path if single else \
                self.best_ckpt_path_dict[key_indicator]
            best = runner.message_hub.get_info(score_key, self.init_value_map[rule])
            if score is None or not self.is_better_than[key_indicator](score, best):
                continue
            if isinstance(score, float) and not math.isfinite(score):
                continue  # a NaN metric is never "best"
            if not updated and not self._finite_to_save(runner, 'a best checkpoint'):
                return
            updated = True
            runner.message_hub.update_info(score_key, score)
            name = f'best_{key_indicator}_{ckpt_filename}'.replace('/', '_')
            new_path = self.file_backend.join_path(self.out_dir, name)
            if single:
                self.best_ckpt_path = new_path
            else:
                self.best_ckpt_path_dict[key_indicator] = new_path
            runner.message_hub.update_info(info_key, new_path)
            self._write_atomic(runner.save_checkpoint, self.out_dir, name,
                               file_client_args=self.file_client_args, save_optimizer=False,
                               save_param_scheduler=False, meta=meta, by_epoch=False,
                               backend_args=self.backend_args)
            if old_path and old_path != new_path and is_main_process():
                if self.file_backend.isfile(old_path):
                    self.file_backend.remove(old_path)
                    runner.logger.info(f'The previous best checkpoint {old_path} is removed')
            runner.logger.info(f'The best checkpoint with {score:0.4f} {key_indicator} '
                               f'at {step} {cur_type} is saved to {name}.')
        # as mmengine: save the latest again so that it records the new best file
        if updated and self.last_ckpt is not None:
            self._save_checkpoint_with_step(runner, step, meta)
