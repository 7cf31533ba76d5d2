"""Distributed runs on machines without CUDA, and ranks that end with their launcher.

mmengine 0.10.7 assumes CUDA for ``--launcher pytorch`` / ``slurm`` (it calls
``torch.cuda.set_device`` and gives DDP ``device_ids``); here such a run gets a gloo
process group and CPU DDP instead, SyncBN is refused with one line, and a rank exits
when torchrun's agent dies. See docs/distributed.md.
"""
import os
import sys
from typing import Any

from mmengine.config import Config

from .validate import ConfigError

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
