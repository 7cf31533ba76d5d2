"""Config preparation and Runner construction shared by tools/train.py and tools/test.py.

The library is picked from the config's ``default_scope`` (mmpretrain / mmseg / mmdet, or
vllama_mm for the generation configs):
its vllama_mm registration module is imported, so configs work with or without
``custom_imports``.
"""
import argparse
import importlib
import logging
import os
import os.path as osp
import sys
import traceback
from typing import Any

from mmengine.config import Config

from ..datasets.named_samples import name_failing_samples
from .checkpoint import allow_mmengine_checkpoints
from .launch import _init_cpu_process_group, exit_with_launcher, use_gloo_without_cuda
from .validate import (USER_ERRORS, ConfigError, check_cfg_options, check_checkpoint_file,
                       validate_cfg, warn_config_variables)
from .work_dir import prepare_work_dir

#: What tools/train.py and tools/test.py report as one ``error:`` line (exit status 2)
#: while reading the config and building the Runner: the config / command-line errors
#: plus unreadable or unwritable files, config syntax errors and failed custom_imports.
CLI_ERRORS = USER_ERRORS + (OSError, SyntaxError, ImportError)

SCOPES = ('mmpretrain', 'mmseg', 'mmdet', 'vllama_mm')
# registration module per scope; 'vllama_mm' is the plugin's own scope (generation)
_PLUGIN_MODULES = {'vllama_mm': 'vllama_mm.generation'}


def load_config(path: str) -> Config:
    """``Config.fromfile`` whose syntax and ``custom_imports`` errors name the file and
    the module (a :class:`ConfigError`: one line from the tools)."""
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path!r}')
    try:
        return Config.fromfile(path)
    except SyntaxError as e:
        where = e.filename if e.filename and e.filename != '<unknown>' else \
            f'{path} (or one of its _base_ files)'
        raise ConfigError(f'syntax error in config {where}, line {e.lineno}: {e.msg}') from e
    except ImportError as e:
        cause: Any = e
        while cause is not None and not getattr(cause, 'name', None):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise ConfigError(f'config {path}: custom_imports: cannot import {cause.name!r} '
                          f'({cause}); install it, fix the module name, or put its folder '
                          'on PYTHONPATH') from e


def import_plugin(cfg: Config) -> str:
    """Import ``vllama_mm.<default_scope>`` (``vllama_mm.generation`` for the plugin's own
    scope ``vllama_mm``); returns the scope."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'config default_scope must be one of {SCOPES} '
                         f'(set by inheriting a library base), got {scope!r}')
    importlib.import_module(_PLUGIN_MODULES.get(scope, f'vllama_mm.{scope}'))
    return scope


def prepare_cfg(cfg: Config, args: argparse.Namespace, mode: str = 'train') -> Config:
    """Apply the command-line options of tools/train.py / tools/test.py to ``cfg``."""
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        # [validate] typos in --cfg-options keys fail here instead of being merged silently
        check_cfg_options(cfg, args.cfg_options)
        warn_config_variables(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if mode == 'train':
        if getattr(args, 'fp32', False):
            to_fp32(cfg)
        if getattr(args, 'amp', False):
            import torch
            if not torch.cuda.is_available():
                raise ConfigError(
                    "--amp: mmengine's mixed precision (AmpOptimWrapper) needs a GPU and "
                    'this machine has no CUDA device; train without --amp (fp32) on CPU')
            optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
            if optim_wrapper == 'AmpOptimWrapper':
                print('AMP training is already enabled in the config.')
            else:
                if optim_wrapper != 'OptimWrapper':
                    raise ValueError('--amp needs optim_wrapper.type OptimWrapper or '
                                     f'AmpOptimWrapper, got {optim_wrapper!r}')
                cfg.optim_wrapper.type = 'AmpOptimWrapper'
                cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if getattr(args, 'auto_scale_lr', False):
            cfg.auto_scale_lr.enable = True
        if getattr(args, 'resume', None) == 'auto':
            cfg.resume = True
            cfg.load_from = None
        elif getattr(args, 'resume', None) is not None:
            cfg.resume = True
            cfg.load_from = args.resume
        if getattr(args, 'no_validate', False):
            cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        fit_schedulers(cfg)
    if cfg.launcher != 'none':
        use_gloo_without_cuda(cfg)
    if mode == 'train':
        from .fsdp import check_fsdp_cfg
        check_fsdp_cfg(cfg)  # FSDP2ModelWrapper: AMP, checkpoint hook, EMA type
    drop_collate_scope(cfg)
    import_plugin(cfg)
    validate_cfg(cfg, mode)  # [validate] dataset / pretrained paths, before any building
    if mode == 'train' and not getattr(args, 'skip_data_check', False):
        from ..datasets.data_check import check_data
        check_data(cfg, 'train', quick=True)  # a few images per dataset / class
    return cfg


def drop_collate_scope(cfg: Config) -> Config:
    """Remove the ``_scope_`` key from the dataloaders' ``collate_fn`` dicts.

    A config inheriting a library base (``_base_ = 'mmpretrain::...'``) gets ``_scope_``
    in every inherited dict with a ``type``; registries read it, but mmengine's Runner
    passes the rest of ``collate_fn`` to the function as arguments, so mmpretrain's MAE
    configs failed with ``default_collate() got an unexpected keyword argument
    '_scope_'``. Collate functions are looked up without a scope anyway.
    """
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        collate = loader.get('collate_fn') if isinstance(loader, dict) else None
        if isinstance(collate, dict):
            collate.pop('_scope_', None)
    return cfg


#: ``AmpOptimWrapper`` arguments that mmengine's plain ``OptimWrapper`` does not take
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def to_fp32(cfg: Config) -> Config:
    """``tools/train.py --fp32``: an fp16/bf16 AMP config trains in full precision.

    ``optim_wrapper.type`` ``AmpOptimWrapper`` becomes ``OptimWrapper`` and the keys only
    the AMP wrapper takes (:data:`AMP_ONLY_KEYS`) are dropped; optimizer, constructor,
    paramwise settings and gradient clipping are kept. Retyping alone (``--cfg-options
    optim_wrapper.type=OptimWrapper``) fails on ``loss_scale``. A config already in fp32
    is left as it is.
    """
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or wrapper.get('type') not in (
            'AmpOptimWrapper', 'mmengine.AmpOptimWrapper'):
        return cfg
    dropped = [k for k in AMP_ONLY_KEYS if k in wrapper]
    for key in dropped:
        wrapper.pop(key)
    wrapper['type'] = 'OptimWrapper'
    print('[vllama_mm] --fp32: optim_wrapper AmpOptimWrapper -> OptimWrapper'
          + (f' (dropped {", ".join(dropped)})' if dropped else ''), file=sys.stderr)
    return cfg


def fit_schedulers(cfg: Config) -> Config:
    """Drop epoch-based ``param_scheduler`` entries that begin after the last epoch.

    A scheduler without ``end`` ends at ``max_epochs``; one that begins there (the
    cosine phase after a 1-epoch warm-up, with ``max_epochs=1``) makes mmengine fail
    with "end should be larger than begin". Such an entry would never act: it is
    removed, with a printed note.
    """
    max_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    schedulers = cfg.get('param_scheduler')
    if not isinstance(max_epochs, int) or not isinstance(schedulers, (list, tuple)):
        return cfg
    kept = []
    for i, sched in enumerate(schedulers):
        if isinstance(sched, dict) and sched.get('by_epoch', True) and \
                sched.get('begin', 0) >= max_epochs and sched.get('end') is None:
            print(f'[vllama_mm] param_scheduler[{i}] ({sched.get("type")}, begin='
                  f'{sched.get("begin")}) starts after the last epoch (train_cfg.max_epochs='
                  f'{max_epochs}): not used in this run', file=sys.stderr)
            continue
        kept.append(sched)
    if not kept:
        raise ConfigError(f'param_scheduler: every entry begins after the last epoch '
                          f'(train_cfg.max_epochs={max_epochs})')
    cfg.param_scheduler = kept
    return cfg


#: the keys mmengine's Runner needs for ``runner.test()``
TEST_LOOP_KEYS = ('test_dataloader', 'test_cfg', 'test_evaluator')


def check_test_loop(cfg: Config, config: str) -> None:
    """tools/test.py: a config without a test loop (pre-training, generation) is a
    :class:`ConfigError` naming what to run instead, before any checkpoint is loaded
    (mmengine would fail only after loading, with ``self._test_loop should not be None``)."""
    missing = [k for k in TEST_LOOP_KEYS if cfg.get(k) is None]  # {} is a default loop
    if not missing:
        return
    model = cfg.get('model') or {}
    if cfg.get('default_scope') == 'vllama_mm':
        instead = ('it is an image-generation config: sample with tools/generation/sample.py '
                   'CONFIG CKPT and score with tools/generation/fid.py (docs/generation.md)')
    elif model.get('type') in ('MAE', 'mmpretrain.MAE'):
        instead = ('it is MAE pre-training: evaluate the encoder with a fine-tuning or '
                   'linear-probe config, e.g. configs/mmpretrain/mae/benchmarks/'
                   'vision-llama-b-p16_8xb128-coslr-100e_in1k.py (its init_cfg checkpoint '
                   'is the pre-trained file)')
    else:
        instead = ('use a config that defines them (the paper-row fine-tuning or evaluation '
                   'config of this model)')
    raise ConfigError(f'{config} has no test loop ({", ".join(missing)} not set), so '
                      f'tools/test.py cannot evaluate it; {instead}')


def prepare_test_cfg(cfg: Config, args: argparse.Namespace) -> Config:
    """tools/test.py's ``--out`` (predictions), ``--show-dir`` and ``--tta``, as the
    libraries' own test scripts apply them; a config that lacks what an option needs
    is a :class:`ConfigError` naming the option."""
    scope = cfg.get('default_scope')
    if getattr(args, 'out', None) and getattr(args, 'out_item', 'pred') == 'pred':
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out {args.out}: predictions are written as a pickle, '
                              'give a .pkl file name (or --out-item metrics for a .json)')
        evaluator = cfg.get('test_evaluator')
        evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
        cfg.test_evaluator = [e for e in evaluators if e is not None] + [
            dict(type='DumpResults', out_file_path=args.out)]
    if getattr(args, 'show_dir', None):
        vis = (cfg.get('default_hooks') or {}).get('visualization')
        if not isinstance(vis, dict):
            raise ConfigError('--show-dir: the config has no default_hooks.visualization '
                              "(inherit the library's default_runtime.py)")
        if scope == 'mmpretrain':  # mmpretrain VisualizationHook
            vis.update(enable=True, out_dir=args.show_dir)
        elif scope == 'mmseg':  # SegVisualizationHook draws, the visualizer saves
            vis['draw'] = True
            cfg.visualizer['save_dir'] = args.show_dir
        else:  # mmdet DetVisualizationHook (a relative dir is under work_dir/<time>/)
            vis.update(draw=True, test_out_dir=args.show_dir)
    if getattr(args, 'tta', False):
        if 'tta_pipeline' not in cfg:
            raise ConfigError('--tta: the config defines no tta_pipeline (add one, as the '
                              "library's TTA configs do)")
        tta_model = cfg.get('tta_model')
        if tta_model is None and scope == 'mmpretrain':
            tta_model = dict(type='AverageClsScoreTTA')
        if tta_model is None:
            raise ConfigError(f'--tta: the config defines no tta_model (e.g. '
                              f"{'SegTTAModel' if scope == 'mmseg' else 'DetTTAModel'})")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.model = dict(tta_model, module=cfg.model)
    return cfg


def build_runner(cfg: Config, mode: str = 'train'):
    """``Runner.from_cfg`` or the config's ``runner_type``, with safe checkpoint loading and
    a readable console (per-parameter lines and dumps go to the log file only, see
    :mod:`vllama_mm.engine.console`). ``mode``: ``'train'`` takes the work-dir lock
    (:func:`prepare_work_dir`); tools/test.py passes ``'test'``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .console import log_file, quiet_console

    class QuietRunner(Runner):
        """mmengine's Runner whose console skips the records the log file keeps, and
        whose datasets name the file of a sample that fails to load."""

        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            quiet_console(logger)
            return logger

        @staticmethod
        def build_dataloader(*args, **kwargs):
            loader = Runner.build_dataloader(*args, **kwargs)
            name_failing_samples(loader.dataset)
            return loader

    prepare_work_dir(cfg, mode)  # before anything writes there
    allow_mmengine_checkpoints()
    check_checkpoint_file(cfg.get('load_from'), 'load_from')  # [validate] missing/truncated
    if cfg.get('launcher', 'none') == 'pytorch':
        exit_with_launcher()  # no orphaned ranks when torchrun's agent dies
    _init_cpu_process_group(cfg)
    if 'runner_type' not in cfg:
        runner = QuietRunner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
        quiet_console(runner.logger)
    path = log_file(runner.logger)
    if path is not None:
        runner.logger.info(f'full log (environment, config, per-parameter settings): {path}')
    return runner


# ---------------------------------------------------------------------------- errors
def _log_files(runner: Any):
    logger = getattr(runner, 'logger', None)
    return [h for h in getattr(logger, 'handlers', []) if isinstance(h, logging.FileHandler)]


def _worker_error(text: str) -> str:
    """``'in a data-loader worker: <Type>: <message>'`` for torch's re-raised worker error.

    torch wraps an exception of a ``DataLoader`` worker as "Caught X in DataLoader worker
    process N. Original Traceback ...": the line naming the file is its last; cut at a
    fixed length it was lost. ``''`` for any other message.
    """
    if not text.startswith('Caught ') or 'Original Traceback' not in text:
        return ''
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f'in a data-loader worker: {lines[-1]}' if lines else ''


def run_or_exit(runner: Any, action: str) -> Any:
    """``runner.train()`` / ``runner.test()``; an exception ends as one ``error:`` line.

    The full traceback goes to the run's log file only (``<work_dir>/<time>/<time>.log``),
    the terminal gets ``error: <Type>: <message>`` and the log's path; exit status 1.
    ``VLLAMA_MM_DEBUG=1`` re-raises instead. ``KeyboardInterrupt`` is not caught.
    """
    try:
        return getattr(runner, action)()
    except Exception as exc:  # noqa: BLE001 - reported, then exit 1
        if os.environ.get('VLLAMA_MM_DEBUG', '0') not in ('', '0'):
            raise
        text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        files = _log_files(runner)
        for handler in files:
            handler.acquire()
            try:
                handler.stream.write(f'{action} failed:\n{text}')
                handler.flush()
            finally:
                handler.release()
        msg = _worker_error(str(exc)) or ' '.join(
            str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())
        if len(msg) > 600:
            msg = msg[:600] + ' ...'
        if 'timed out' in msg.lower() or 'timeout' in msg.lower():
            msg += (' [a distributed collective waited longer than env_cfg.dist_cfg.timeout: '
                    'a rank stalled or died; see docs/reliability.md]')
        where = (f'traceback in {files[0].baseFilename}' if files
                 else 'set VLLAMA_MM_DEBUG=1 for the traceback')
        print(f'error: {type(exc).__name__}: {msg}\n({where})', file=sys.stderr)
        sys.exit(1)
