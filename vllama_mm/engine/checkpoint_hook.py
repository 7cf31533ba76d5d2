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

Registered in mmengine's root ``HOOKS`` registry (visible from every library scope);
the configs set it with ``default_hooks.checkpoint.type='AtomicCheckpointHook'``.
"""
import glob
import logging
import os
import os.path as osp
from typing import Any, Callable, List, Optional, Tuple

from mmengine.config import Config
from mmengine.dist import broadcast_object_list, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .checkpoint import CheckpointError, allow_mmengine_checkpoints, verify_checkpoint

TMP_SUFFIX = '.tmp'


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


def find_resumable_checkpoint(work_dir: str,
                              ckpt_dir: Optional[str] = None) -> Tuple[Optional[str], str]:
    """The checkpoint auto-resume should load, and a note when it is not the recorded one.

    Returns ``(path, note)``: the file ``work_dir/last_checkpoint`` names when it is
    intact (note ``''``); else the newest intact ``*.pth`` in ``ckpt_dir`` (default
    ``work_dir``; ``best_*`` files hold no optimizer state and are skipped), with a note
    saying why the recorded one was not used. ``(None, '')``: nothing to resume (a fresh
    work dir). Raises :class:`CheckpointError` when checkpoints exist but none is intact.
    """
    ckpt_dir = ckpt_dir or work_dir
    record = osp.join(work_dir, 'last_checkpoint')
    recorded = None
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
        elif not osp.isfile(recorded):
            problem = f'{record} names {recorded[:200]!r}, which does not exist'
        else:
            try:
                verify_checkpoint(recorded)
                return recorded, ''
            except CheckpointError as e:
                problem = str(e)
    candidates = [p for p in glob.glob(osp.join(ckpt_dir, '*.pth'))
                  if osp.isfile(p) and not osp.basename(p).startswith('best_')
                  and p != recorded]
    candidates.sort(key=lambda p: (osp.getmtime(p), p), reverse=True)
    skipped: List[str] = []
    for path in candidates:
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        note = f'{problem}; resuming from the newest intact checkpoint {path} instead'
        if skipped:
            note += f' (skipped: {"; ".join(skipped)})'
        return path, note
    if recorded is None and not candidates:
        return None, ''  # nothing was ever saved here: train from the start
    raise CheckpointError(f'cannot resume from {ckpt_dir}: {problem}, and no other intact '
                          f'checkpoint is there ({"; ".join(skipped) or "none found"}). '
                          'Pass one with --resume PATH, or start without --resume.')


def config_diff(old: Any, new: Any, key: str) -> List[str]:
    """``'key.path: old -> new'`` for every leaf that differs (tuples compare as lists)."""
    if isinstance(old, tuple):
        old = list(old)
    if isinstance(new, tuple):
        new = list(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            if k == '_scope_':
                continue
            out += config_diff(old.get(k, '<unset>'), new.get(k, '<unset>'), f'{key}.{k}')
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in config_diff(a, b, f'{key}.{i}')]
    return [] if old == new else [f'{key}: {old!r} -> {new!r}']


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that writes atomically and removes old files only afterwards.

    Same arguments as ``mmengine.hooks.CheckpointHook``; see the module doc for the order
    of the file operations and the auto-resume fallback.
    """

    def before_run(self, runner) -> None:
        """Remove leftovers of a killed write; pick the file auto-resume loads.

        Runs before ``Runner.load_or_resume`` (``CheckpointHook`` itself only sets up its
        output directory later, in ``before_train``).
        """
        super().before_run(runner)
        allow_mmengine_checkpoints()  # resume reads mmengine's own classes (safe loading)
        load_from = getattr(runner, '_load_from', None)
        if isinstance(load_from, str) and osp.isfile(load_from):
            verify_checkpoint(load_from)  # resume / load_from: zip CRC before loading
        ckpt_dir = runner.work_dir
        if self.out_dir is not None:  # CheckpointHook appends the work dir's name
            ckpt_dir = osp.join(self.out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
        if not isinstance(get_file_backend(ckpt_dir, backend_args=self.backend_args),
                          LocalBackend):
            print_log(f'AtomicCheckpointHook: {ckpt_dir} is not on a local disk; '
                      'checkpoints are written by the backend as mmengine does (not '
                      'atomically)', logger='current', level=logging.WARNING)
            return
        if is_main_process():  # leftovers of a write that was killed
            for tmp in glob.glob(osp.join(ckpt_dir, '*' + TMP_SUFFIX)):
                os.remove(tmp)
                print_log(f'removed {tmp}: an incomplete checkpoint of an interrupted save',
                          logger='current')
        # mmengine 0.10.7 keeps these as private Runner attributes; load_or_resume() reads
        # them after before_run, so setting _load_from here picks the file it resumes from
        if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
            choice: List[Any] = [None, '']
            if is_main_process():
                choice = list(find_resumable_checkpoint(runner.work_dir, ckpt_dir))
            if get_world_size() > 1:
                broadcast_object_list(choice)
            path, note = choice
            if note:
                print_log(f'auto-resume: {note}', logger='current', level=logging.WARNING)
            if path is not None:
                runner._load_from = path

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume: compare this run's config with the one the checkpoint was saved by.

        A different ``model`` is an error naming the differences (the weights would be
        loaded non-strictly into another model). Changed ``optim_wrapper`` /
        ``param_scheduler`` / ``train_cfg`` values are logged as warnings: mmengine
        restores the optimizer and scheduler *state* from the checkpoint (so e.g. a new
        ``lr`` is replaced by the checkpoint's), while ``train_cfg`` applies as given.
        """
        if not getattr(runner, '_resume', False):
            return  # load_from: weights only, another config is the point
        text = (checkpoint.get('meta') or {}).get('cfg')
        if not isinstance(text, str):
            return
        try:
            saved = Config.fromstring(text, file_format='.py').to_dict()
        except Exception as e:  # noqa: BLE001 - an unreadable old config is only reported
            print_log(f'resume: cannot read the config stored in the checkpoint ({e}); '
                      'its settings are not compared', logger='current', level=logging.WARNING)
            return
        now = runner.cfg.to_dict()
        model = config_diff(saved.get('model'), now.get('model'), 'model')
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
            diff = config_diff(saved.get(key), now.get(key), key)
            if diff:
                print_log(f'resume: {key} changed since the checkpoint was written '
                          f'({"; ".join(diff[:8])}): {what}. To train with new optimizer '
                          'settings, start a new run with load_from=CHECKPOINT.',
                          logger='current', level=logging.WARNING)

    # ------------------------------------------------------------------ writing
    def _write_atomic(self, save: Callable, out_dir: str, filename: str, *args,
                      **kwargs) -> None:
        """``runner.save_checkpoint`` into ``filename.tmp``, fsync, rename onto ``filename``."""
        from .fsdp import full_state_for_checkpoint  # FSDP2: gathered on every rank first
        with full_state_for_checkpoint(getattr(save, '__self__', None)):
            save(out_dir, filename + TMP_SUFFIX, *args, **kwargs)  # master_only in mmengine
        if not is_main_process():
            return
        tmp, final = osp.join(out_dir, filename + TMP_SUFFIX), osp.join(out_dir, filename)
        _fsync_path(tmp)
        os.replace(tmp, final)
        _fsync_path(out_dir)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
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
        """mmengine's best-checkpoint logic, each best file written atomically.

        (mmengine removes the previous best file before writing the new one; a kill in
        between loses the best file, never training progress: best files are not used
        for resuming.)
        """
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        save = runner.save_checkpoint
        runner.save_checkpoint = lambda out_dir, filename, *a, **k: self._write_atomic(
            save, out_dir, filename, *a, **k)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            del runner.save_checkpoint  # the instance attribute; the method is back
