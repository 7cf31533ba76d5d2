"""Config preparation and Runner construction shared by tools/train.py and tools/test.py.

The library is picked from the config's ``default_scope`` (mmpretrain / mmseg / mmdet, or
vllama_mm for the generation configs):
its vllama_mm registration module is imported, so configs work with or without
``custom_imports``.
"""
import argparse
import importlib
import os.path as osp

from mmengine.config import Config

from .checkpoint import allow_mmengine_checkpoints
from .validate import (check_cfg_options, check_checkpoint_file, validate_cfg,
                       warn_config_variables)

SCOPES = ('mmpretrain', 'mmseg', 'mmdet', 'vllama_mm')
# registration module per scope; 'vllama_mm' is the plugin's own scope (generation)
_PLUGIN_MODULES = {'vllama_mm': 'vllama_mm.generation'}


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
        if getattr(args, 'amp', False):
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
    if cfg.launcher != 'none':
        use_gloo_without_cuda(cfg)
    import_plugin(cfg)
    validate_cfg(cfg, mode)  # [validate] dataset / pretrained paths, before any building
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
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        print('[vllama_mm] CUDA is not available: using the gloo backend for distributed runs')
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def _init_cpu_process_group(cfg: Config) -> None:
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available() \
            or dist.is_initialized():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'gloo')
    timeout = dist_cfg.pop('timeout', None)
    kwargs = {}
    if timeout is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend=backend, **kwargs)


def build_runner(cfg: Config):
    """``Runner.from_cfg`` or the config's ``runner_type``, with safe checkpoint loading."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    allow_mmengine_checkpoints()
    check_checkpoint_file(cfg.get('load_from'), 'load_from')  # [validate] missing/truncated
    _init_cpu_process_group(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
