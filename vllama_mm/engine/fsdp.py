"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for mmengine's ``Runner``, as a model wrapper.

mmengine 0.10.7's ``FSDPStrategy`` / ``MMFullyShardedDataParallel`` are FSDP1 and need an
accelerator. :class:`FSDP2ModelWrapper` is a normal ``model_wrapper_cfg`` entry for the normal
Runner (``tools/train.py --launcher pytorch|slurm``), on GPUs (NCCL) and on CPUs (gloo)::

    model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                             mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
    default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', ...))

How it fits mmengine's order of events:

* The model is built, initialised (``init_weights``), loaded (``load_from`` / ``resume``) and
  given to the optimizer constructor (layer decay, ``paramwise_cfg``) *unsharded*, with its
  original parameter names, exactly as for DDP. ``EMAHook`` copies it unsharded too.
* At the first ``train_step`` the wrapper applies ``fully_shard`` to every block
  (``block_types``) and then to the root, and re-points the optimizer at the sharded
  parameters (DTensors, same names); optimizer state loaded by a resume is sharded with them.
  From then on parameters, gradients and optimizer state are sharded; a block's full
  weights exist only while it runs (``reshard_after_forward``).
* Checkpoints: :func:`full_state_for_checkpoint` (called by ``AtomicCheckpointHook`` on
  every rank) gathers the full model and optimizer state onto rank 0, which writes the
  usual mmengine checkpoint (same keys and optimizer layout as a DDP run, atomic write,
  CRC-checked on load). Such a checkpoint resumes under FSDP2, DDP or one process.
* Gradient accumulation (``optim_wrapper.accumulative_counts``) uses :meth:`no_sync`, which
  mmengine's ``OptimWrapper.optim_context`` calls between updates.
* ``EMAHook``: use ``ema_type='FSDP2ExponentialMovingAverage'`` (gathers the sharded
  weights each update; the average itself is a full copy on every rank).

One process (``--launcher none``) is never wrapped by mmengine: the wrapper config is then
ignored and the model trains unsharded.
"""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import ExponentialMovingAverage
from torch import nn

# blocks that get their own fully_shard unit by default: ours, and mmpretrain's ViT layer
# (the MAE decoder)
DEFAULT_BLOCK_TYPES = ('VisionLLaMABlock', 'DiTLLaMABlock', 'TransformerEncoderLayer')
_DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16,
           'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16}


def _dtype(value: Union[None, str, torch.dtype], key: str) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise ValueError(f'FSDP2ModelWrapper: mp_policy.{key}={value!r} is not a dtype; use '
                         f'one of {sorted(_DTYPES)} or None')
    return _DTYPES[value]


def _is_dtensor(x: Any) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(x, DTensor)


def _full(x: Any) -> Any:
    """A DTensor gathered to a plain CPU tensor (a collective: every rank must call it)."""
    return x.full_tensor().cpu() if _is_dtensor(x) else x


class FSDP2ModelWrapper(nn.Module):
    """mmengine model wrapper that trains ``module`` with FSDP2 (per block and at the root).

    Args:
        module: the model (an mmengine ``BaseModel``); mmengine passes it.
        block_types: class names of the modules that become their own FSDP unit (their
            parameters are gathered only while they run). Default: the VisionLLaMA /
            DiT-LLaMA blocks and mmpretrain's ``TransformerEncoderLayer``.
        mp_policy: the blocks' ``MixedPrecisionPolicy`` fields, dtypes as names
            (``'bfloat16'``): ``param_dtype`` (compute), ``reduce_dtype`` (gradient
            reduction), ``output_dtype`` (default fp32 when ``param_dtype`` is set),
            ``cast_forward_inputs``. The rest of the model (root unit) computes in fp32 and
            reduces in ``reduce_dtype``. Default: full fp32.
        reshard_after_forward: free each block's gathered weights after its forward (less
            memory, one more all-gather in backward).
    """

    def __init__(self, module: nn.Module, block_types: Optional[Sequence[str]] = None,
                 mp_policy: Optional[Dict] = None, reshard_after_forward: bool = True):
        super().__init__()
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError('FSDP2ModelWrapper needs a distributed run (tools/train.py '
                               '--launcher pytorch or slurm)')
        self.module = module
        self.block_types = tuple(block_types if block_types is not None
                                 else DEFAULT_BLOCK_TYPES)
        from torch.distributed.fsdp import MixedPrecisionPolicy
        policy = dict(mp_policy or {})
        allowed = {'param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs'}
        unknown = set(policy) - allowed
        if unknown:
            raise ValueError(f'FSDP2ModelWrapper: unknown mp_policy keys {sorted(unknown)}; '
                             f'supported: {sorted(allowed)}')
        for key in ('param_dtype', 'reduce_dtype', 'output_dtype'):
            policy[key] = _dtype(policy.get(key), key)
        if policy['param_dtype'] is not None and policy['output_dtype'] is None:
            policy['output_dtype'] = torch.float32
        # blocks compute in param_dtype and hand fp32 on; the root unit (embeddings, final
        # norm, head, loss) keeps fp32 weights and compute, as autocast keeps losses in fp32
        self.mp_policy = MixedPrecisionPolicy(**policy)
        self.root_policy = MixedPrecisionPolicy(reduce_dtype=policy['reduce_dtype'])
        self.reshard_after_forward = bool(reshard_after_forward)
        self.blocks = [m for m in module.modules() if type(m).__name__ in self.block_types]
        if not self.blocks:
            raise ValueError(f'FSDP2ModelWrapper: the model ({type(module).__name__}) has no '
                             f'module of block_types={list(self.block_types)}; set '
                             'model_wrapper_cfg.block_types to its block class names')
        self.sharded = False

    # ------------------------------------------------------------------ sharding
    def shard(self, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """``fully_shard`` every block, then the root; re-point ``optimizer`` (and its state)
        at the sharded parameters. Idempotent."""
        if self.sharded:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        device = next(self.module.parameters()).device.type
        mesh = init_device_mesh(device, (dist.get_world_size(),))
        names = {id(p): n for n, p in self.module.named_parameters()}
        kwargs = dict(mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        for block in reversed(self.blocks):  # inner units before the ones holding them
            fully_shard(block, mp_policy=self.mp_policy, **kwargs)
        fully_shard(self.module, mp_policy=self.root_policy, **kwargs)
        self.sharded = True
        local = sum(p.to_local().numel() if _is_dtensor(p) else p.numel()
                    for p in self.module.parameters())
        total = sum(p.numel() for p in self.module.parameters())
        print_log(f'FSDP2: {len(self.blocks)} blocks and the root sharded over '
                  f'{dist.get_world_size()} ranks ({local} of {total} parameters on this rank, '
                  f'mixed precision {self.mp_policy})', logger='current')
        if optimizer is not None:
            _repoint_optimizer(optimizer, names, dict(self.module.named_parameters()))

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate unreduced gradients locally (mmengine calls it between updates)."""
        if self.sharded:
            self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            if self.sharded:
                self.module.set_requires_gradient_sync(True)

    # ------------------------------------------------------------------ mmengine steps
    def train_step(self, data: Union[dict, tuple, list], optim_wrapper) -> Dict[str, Any]:
        """As ``MMDistributedDataParallel.train_step``; shards on the first call."""
        if not self.sharded:
            if type(optim_wrapper).__name__ == 'AmpOptimWrapper':
                raise ValueError(
                    'FSDP2ModelWrapper with AmpOptimWrapper: its loss scaler checks only '
                    "this rank's gradient shard for inf/NaN (ranks would skip different "
                    "steps); use optim_wrapper.type='OptimWrapper' and model_wrapper_cfg."
                    "mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32')")
            self.shard(optim_wrapper.optimizer)
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        optim_wrapper.update_params(parsed_loss)
        return log_vars

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        return self.module.test_step(data)

    def _run_forward(self, data: Union[dict, tuple, list], mode: str) -> Any:
        if isinstance(data, dict):
            return self.module(**data, mode=mode)
        if isinstance(data, (list, tuple)):
            return self.module(*data, mode=mode)
        raise TypeError(f'Output of data_preprocessor should be list, tuple or dict, '
                        f'but got {type(data)}')

    # ------------------------------------------------------------------ checkpoints
    def full_state_dict(self) -> Dict[str, torch.Tensor]:
        """The unsharded ``state_dict`` (original names, CPU); a collective on every rank."""
        return OrderedDict((k, _full(v)) for k, v in self.module.state_dict().items())


def _repoint_optimizer(optimizer: torch.optim.Optimizer, names: Dict[int, str],
                       sharded: Dict[str, nn.Parameter]) -> None:
    """Swap the optimizer's parameters (and their state, sharded alike) for the sharded ones."""
    from torch.distributed.tensor import distribute_tensor
    for group in optimizer.param_groups:
        new_params = []
        for p in group['params']:
            if id(p) not in names:
                raise RuntimeError('FSDP2ModelWrapper: the optimizer holds a parameter that is '
                                   'not in the model; build it from the model')
            q = sharded[names[id(p)]]
            state = optimizer.state.pop(p, None)
            if state:
                # every rank loaded the same full state: each keeps its own shard, no comms
                optimizer.state[q] = {
                    k: distribute_tensor(v.to(q.device), q.device_mesh, q.placements,
                                         src_data_rank=None)
                    if torch.is_tensor(v) and v.shape == q.shape and v.dim() > 0 else v
                    for k, v in state.items()}
            new_params.append(q)
        group['params'] = new_params


def _full_optimizer_state(optimizer: torch.optim.Optimizer) -> Dict:
    """``optimizer.state_dict()`` with every DTensor gathered (a collective on every rank).

    Same layout as an unsharded run (state keyed by parameter index), so a DDP run or one
    process can resume it."""
    sd = optimizer.state_dict()
    sd['state'] = {i: {k: _full(v) for k, v in sorted(s.items())}
                   for i, s in sorted(sd['state'].items())}
    return sd


@contextmanager
def full_state_for_checkpoint(runner: Any) -> Iterator[None]:
    """While ``runner.save_checkpoint`` runs (rank 0 only), its ``model.state_dict()`` and
    ``optimizer.state_dict()`` give the gathered full state. Every rank must enter (the
    gathering is a collective); a no-op unless the model is a sharded FSDP2ModelWrapper."""
    model = getattr(runner, 'model', None)
    if not isinstance(model, FSDP2ModelWrapper) or not model.sharded:
        yield
        return
    state = model.full_state_dict()
    optimizer = getattr(getattr(runner, 'optim_wrapper', None), 'optimizer', None)
    optim_state = _full_optimizer_state(optimizer) if optimizer is not None else None
    if dist.get_rank() != 0:
        yield
        return
    model.module.state_dict = lambda *a, **k: OrderedDict(state)  # instance attributes,
    # removed below
    if optim_state is not None:
        optimizer.state_dict = lambda: optim_state
    try:
        yield
    finally:
        del model.module.state_dict
        if optim_state is not None:
            del optimizer.state_dict


class FSDP2ExponentialMovingAverage(ExponentialMovingAverage):
    """mmengine's ``ExponentialMovingAverage`` for a model sharded by FSDP2ModelWrapper.

    The source weights are gathered (every rank, each update) and averaged into a full copy
    kept on every rank, so checkpoints and sampling use it as usual. Same arguments."""

    def update_parameters(self, model: nn.Module) -> None:
        src = (model.state_dict() if self.update_buffers else dict(model.named_parameters()))
        if not any(_is_dtensor(v) for v in src.values()):
            return super().update_parameters(model)
        full = {k: (v.full_tensor() if _is_dtensor(v) else v).detach() for k, v in src.items()}
        if self.steps == 0:
            for k, p_avg in self.avg_parameters.items():
                p_avg.data.copy_(full[k].data)
        elif self.steps % self.interval == 0:
            for k, p_avg in self.avg_parameters.items():
                if p_avg.dtype.is_floating_point:
                    self.avg_func(p_avg.data, full[k].data.to(p_avg.device), self.steps)
        if not self.update_buffers:
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1


def register_fsdp2() -> None:
    """Register the wrapper and the EMA model in mmengine's root registries (visible from
    every library scope); idempotent, never replaces another class."""
    from mmengine.registry import MODEL_WRAPPERS, MODELS

    from ..registry_utils import register_modules
    register_modules(MODEL_WRAPPERS, [FSDP2ModelWrapper])
    register_modules(MODELS, [FSDP2ExponentialMovingAverage])


def check_fsdp_cfg(cfg: Any) -> None:
    """Before building: the settings FSDP2ModelWrapper cannot train with, as one error each.

    (Called by tools/train.py; the wrapper itself refuses AmpOptimWrapper at its first step
    for other entry points.)"""
    from .validate import ConfigError
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type') != 'FSDP2ModelWrapper':
        return
    optim = (cfg.get('optim_wrapper') or {}).get('type', 'OptimWrapper')
    if optim == 'AmpOptimWrapper':
        raise ConfigError(
            "model_wrapper_cfg FSDP2ModelWrapper with optim_wrapper.type='AmpOptimWrapper' "
            '(or --amp): the loss scaler sees only its own gradient shard; use OptimWrapper and '
            "model_wrapper_cfg.mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32')")
    ckpt = ((cfg.get('default_hooks') or {}).get('checkpoint') or {}).get('type')
    if ckpt != 'AtomicCheckpointHook':
        raise ConfigError(
            f"model_wrapper_cfg FSDP2ModelWrapper with default_hooks.checkpoint.type={ckpt!r}: "
            "only AtomicCheckpointHook gathers the sharded state before saving; set "
            "default_hooks.checkpoint.type='AtomicCheckpointHook'")
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        if not isinstance(hook, dict) or hook.get('type') != 'EMAHook':
            continue
        ema = hook.get('ema_type', 'ExponentialMovingAverage')
        if ema != 'FSDP2ExponentialMovingAverage':
            raise ConfigError(
                f'model_wrapper_cfg FSDP2ModelWrapper with custom_hooks[{i}] EMAHook of '
                f"ema_type={ema!r}: it cannot average sharded weights; set "
                "ema_type='FSDP2ExponentialMovingAverage' (same arguments)")
        if cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None:
            raise ConfigError(
                f'model_wrapper_cfg FSDP2ModelWrapper with custom_hooks[{i}] EMAHook and a '
                'validation loop: EMAHook swaps the EMA weights into the sharded model for '
                'validation, which FSDP2 does not support; validate the saved checkpoints '
                '(tools/test.py) and set val_cfg=None, or train without FSDP2')
