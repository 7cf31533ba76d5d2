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
in the work dir, logging what it skipped and why (:mod:`.resume`).

Also (see docs/reliability.md): a best checkpoint is written completely before the
previous one is removed; a training run takes ``<work_dir>/train.lock`` (another live
run in the same work dir is refused, naming it: :mod:`.work_dir`); the config stored in
a checkpoint is compared as data (a JSON copy, or the text parsed without executing it:
:mod:`.resume`); a non-finite
loss for ``max_nonfinite_steps`` consecutive iterations stops training, and nothing
non-finite is saved.

Registered in mmengine's root ``HOOKS`` registry (visible from every library scope);
the configs set it with ``default_hooks.checkpoint.type='AtomicCheckpointHook'``.
"""
import json
import logging
import math
import os
import os.path as osp
from typing import Any, Callable, List, Optional

from mmengine.dist import broadcast_object_list, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .checkpoint import (CheckpointError, allow_mmengine_checkpoints, nonfinite_tensors,
                         verify_checkpoint)
from .resume import (CFG_JSON_KEY, _as_data, class_defaults, config_diff,
                     find_resumable_checkpoint, stored_config)
from .work_dir import (TMP_SUFFIX, _fsync_path, acquire_work_dir_lock, checkpoint_dir,
                       release_work_dir_lock, remove_stale_temporaries, write_text_atomic)


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN / inf for too many consecutive iterations."""


def _is_training(runner) -> bool:
    """Whether ``runner`` is in ``train()`` (its train loop is built before ``before_run``)."""
    from mmengine.runner import BaseLoop
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


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
        ckpt_dir = checkpoint_dir(runner.work_dir, self.out_dir)
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
