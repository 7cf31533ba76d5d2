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

from .checkpoint import allow_mmengine_checkpoints
from .validate import (USER_ERRORS, ConfigError, check_cfg_options, check_checkpoint_file,
                       validate_cfg, warn_config_variables)

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


def use_gloo_without_cuda(cfg: Config) -> None:
    """Distributed runs on a machine without CUDA: gloo backend, CPU DDP.

    mmengine 0.10.7 assumes CUDA for ``--launcher pytorch`` (it calls
    ``torch.cuda.set_device`` and gives DDP ``device_ids``); NCCL needs CUDA too. Here the
    process group is created with gloo by :func:`build_runner` (mmengine then skips its
    own init) and DDP is built without device ids.
    """
    import torch
    if torch.cuda.is_available():
        return
    check_sync_bn_without_cuda(cfg)
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        print('[vllama_mm] CUDA is not available: using the gloo backend for distributed runs')
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def _sync_bn_paths(node: Any, path: str) -> list:
    if isinstance(node, dict):
        found = [path] if node.get('type') in ('SyncBN', 'MMSyncBN', 'SyncBatchNorm') else []
        for k, v in node.items():
            found += _sync_bn_paths(v, f'{path}.{k}')
        return found
    if isinstance(node, (list, tuple)):
        return [p for i, v in enumerate(node) for p in _sync_bn_paths(v, f'{path}.{i}')]
    return []


def check_sync_bn_without_cuda(cfg: Config) -> None:
    """A distributed run without CUDA cannot use SyncBN (torch's SyncBatchNorm needs GPU
    tensors; it would fail at the first training step): one error naming the layers.
    A single process is fine (mmengine turns SyncBN back into BN there)."""
    paths = _sync_bn_paths(cfg.get('model'), 'model')
    if cfg.get('sync_bn'):
        paths.append(f'sync_bn={cfg.sync_bn!r}')
    if paths:
        shown = ', '.join(paths[:4]) + (' ...' if len(paths) > 4 else '')
        fix = ' '.join(f'{p}.type=BN' for p in paths if p.startswith('model'))
        raise ConfigError(
            f'SyncBN ({shown}) needs CUDA, and this distributed run has none. Train on '
            'GPUs, in one process (SyncBN becomes BN there), or with per-rank BN statistics: '
            f'--cfg-options {fix or "sync_bn=None"} (docs/distributed.md)')


def exit_with_launcher() -> bool:
    """Have the kernel SIGTERM this process when its parent (the launcher) dies.

    torchrun's agent starts the ranks as its children; when the agent is killed
    (``kill -9``, a node agent crash), the ranks would keep running as orphans, holding
    the GPUs. Linux only (``prctl(PR_SET_PDEATHSIG)``); returns whether it is armed.
    """
    import ctypes
    import signal
    if not sys.platform.startswith('linux'):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def slurm_env_for_gloo() -> None:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from a SLURM task's
    environment, as mmengine's SLURM init derives them (it then calls
    ``torch.cuda.set_device``, which fails without CUDA)."""
    import subprocess
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS') if k not in os.environ]
    if missing:
        raise ConfigError(f'--launcher slurm: {", ".join(missing)} not set; start the job '
                           'with srun (tools/slurm_train.sh)')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_NODELIST', os.environ.get('SLURM_JOB_NODELIST', ''))
        out = subprocess.run(['scontrol', 'show', 'hostname', nodes], capture_output=True,
                             text=True, check=False).stdout.split()
        os.environ['MASTER_ADDR'] = out[0] if out else '127.0.0.1'


def _init_cpu_process_group(cfg: Config) -> None:
    """gloo process group for ``--launcher pytorch`` / ``slurm`` on a machine without CUDA
    (mmengine's own init would call ``torch.cuda.set_device``)."""
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') not in ('pytorch', 'slurm') or torch.cuda.is_available() \
            or dist.is_initialized():
        return
    if cfg.get('launcher') == 'slurm':
        slurm_env_for_gloo()
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'gloo')
    timeout = dist_cfg.pop('timeout', None)
    kwargs = {}
    if timeout is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend=backend, **kwargs)


class SampleError(RuntimeError):
    """Loading one sample failed; the message names its file."""


_NAMED_CLASSES: dict = {}
_PATH_KEYS = ('img_path', 'seg_map_path', 'file_name', 'filename', 'img')


def _sample_file(dataset: Any, index: int) -> str:
    try:
        info = dataset.get_data_info(index)
    except Exception:  # noqa: BLE001 - no name to give
        return ''
    if not isinstance(info, dict):
        return ''
    paths = [info[k] for k in _PATH_KEYS if isinstance(info.get(k), str) and info[k]]
    return ' / '.join(dict.fromkeys(paths))  # image and label map of segmentation


def name_failing_samples(dataset: Any) -> Any:
    """Make ``dataset[i]`` failures name the sample's file (``SampleError``).

    An undecodable image deep in an epoch otherwise ends as e.g. "image file is
    truncated", raised in a data-loader worker, without the file. The instance's class
    is swapped for a subclass whose ``__getitem__`` adds the file from
    ``get_data_info(i)`` (nothing else changes; only datasets of our tools' Runner).
    """
    cls = type(dataset)
    if not hasattr(dataset, 'get_data_info') or getattr(cls, '_vllama_names_files', False):
        return dataset
    named = _NAMED_CLASSES.get(cls)
    if named is None:
        def __getitem__(self, index):
            try:
                return cls.__getitem__(self, index)
            except Exception as e:  # noqa: BLE001 - re-raised with the file named
                path = _sample_file(self, index)
                if not path:
                    raise
                raise SampleError(f'{path}: cannot load sample {index} ({type(e).__name__}: '
                                  f'{" ".join(str(e).split())[:300]}); fix or remove the file '
                                  '(tools/analysis/check_dataset.py CONFIG scans them all)') \
                    from e
        named = type(cls.__name__, (cls, ), {'__getitem__': __getitem__,
                                            '_vllama_names_files': True,
                                            '__module__': cls.__module__,
                                            '__reduce_ex__': _reduce_as(cls)})
        _NAMED_CLASSES[cls] = named
    try:
        dataset.__class__ = named
    except TypeError:
        pass
    return dataset


def _reduce_as(cls: type):
    """Pickle (spawned workers) as the original class: the name-adding subclass only
    lives in this process."""
    def __reduce_ex__(self, protocol):
        self.__class__ = cls
        try:
            return cls.__reduce_ex__(self, protocol)
        finally:
            self.__class__ = _NAMED_CLASSES[cls]
    return __reduce_ex__


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
    (:func:`~vllama_mm.engine.checkpoint_hook.acquire_work_dir_lock`) first, then the
    ``*.tmp`` leftovers of a killed or disk-full checkpoint write are removed, before
    the Runner writes its logs (a leftover can be what fills the disk).
    """
    import tempfile

    from .checkpoint_hook import acquire_work_dir_lock, remove_stale_temporaries
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
    ckpt = ((cfg.get('default_hooks') or {}).get('checkpoint') or {})
    ckpt_dir = work_dir
    if isinstance(ckpt, dict) and isinstance(ckpt.get('out_dir'), str):
        if '://' in ckpt['out_dir']:
            return
        ckpt_dir = osp.join(ckpt['out_dir'], osp.basename(work_dir.rstrip(osp.sep)))
    if isinstance(ckpt, dict) and ckpt.get('type') in ('AtomicCheckpointHook',
                                                       'mmengine.AtomicCheckpointHook') \
            and osp.isdir(ckpt_dir):
        for tmp in remove_stale_temporaries(ckpt_dir, log=False):
            print(f'[vllama_mm] removed {tmp}: an incomplete checkpoint of an interrupted '
                  'save', file=sys.stderr)


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
