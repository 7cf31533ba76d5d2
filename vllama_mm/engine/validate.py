"""Config checks run before a Runner is built, so that user mistakes fail fast and clearly.

mmengine builds datasets lazily (a missing ``data_root`` surfaces minutes later as a
traceback from a worker), merges any ``--cfg-options`` key silently (a typo such as
``train_cfg.max_iter=8`` creates a new, ignored key), and reports a truncated checkpoint
as a zip-reader error deep in ``torch.load``. The checks here turn these into one
:class:`ConfigError` line that names the key and the problem; ``tools/train.py`` and
``tools/test.py`` print it as ``error: ...`` and exit with status 2.

``--cfg-options`` rule (see :func:`check_cfg_options`): a key may override anything that
exists and may add new keys, except

* a new top-level key that the Runner does not read (:data:`RUNNER_KEYS`),
* a new key (at any depth) whose name is a near-copy of an existing sibling
  (``difflib`` ratio >= :data:`TYPO_RATIO`): almost always a typo,
* a path through a value that is not a dict/list (``optimizer.lr.x``) or a list index
  out of range.

Adding a genuinely new key that looks like an existing one needs a config file edit.
"""
import difflib
import os
import os.path as osp
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

#: Top-level keys that mmengine's Runner (or our tools) read; they may be added from the
#: command line even when the config does not define them.
RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader',
    'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'compile',
    'find_unused_parameters', 'sync_bn', 'activation_checkpointing', 'efficient_conv_bn_eval',
    'runner_type', 'custom_imports', 'strategy', 'tta_model', 'tta_pipeline'})

#: ``difflib.SequenceMatcher`` ratio from which a new key is taken for a typo of a sibling.
TYPO_RATIO = 0.8

#: Exceptions that mean "the config or the command line is wrong" while a Runner is built.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)

_DATALOADERS = {'train': ('train_dataloader', 'val_dataloader'),
                'test': ('test_dataloader', )}


class ConfigError(ValueError):
    """A config / command-line value that cannot work; the message names key and problem."""


# ---------------------------------------------------------------------------- cfg-options
def _close(name: str, candidates: Sequence[str]) -> List[str]:
    return difflib.get_close_matches(name, [str(c) for c in candidates], n=3,
                                     cutoff=TYPO_RATIO)


def _did_you_mean(matches: Sequence[str], prefix: str = '') -> str:
    if not matches:
        return ''
    return ' (did you mean ' + ' or '.join(repr(prefix + m) for m in matches) + '?)'


def check_cfg_options(cfg: Config, options: Optional[Dict[str, Any]]) -> None:
    """Reject ``--cfg-options`` keys that are typos of existing keys (rule: module doc).

    ``options`` is the flat ``{'a.b.c': value}`` dict that ``DictAction`` produces;
    call this before ``cfg.merge_from_dict(options)``.
    """
    if not options:
        return
    for full_key in options:
        parts = full_key.split('.')
        if any(p == '' for p in parts):
            raise ConfigError(f'--cfg-options key {full_key!r} has an empty component')
        node: Any = cfg
        for depth, part in enumerate(parts):
            where = '.'.join(parts[:depth]) or '<config root>'
            if part.startswith('_') and part.endswith('_'):  # _delete_ and friends
                break
            if isinstance(node, (list, tuple)):
                if not part.lstrip('-').isdigit():
                    raise ConfigError(f'--cfg-options {full_key}: {where} is a list; '
                                      f'index it with a number, not {part!r}')
                index = int(part)
                if not 0 <= index < len(node):
                    raise ConfigError(f'--cfg-options {full_key}: index {index} is out of '
                                      f'range for {where} (a list of {len(node)})')
                node = node[index]
                continue
            if not isinstance(node, (dict, Config)):
                if node is None:  # e.g. init_cfg=None: setting its fields replaces it
                    break
                raise ConfigError(f'--cfg-options {full_key}: {where} is a '
                                  f'{type(node).__name__} ({node!r}), it has no key {part!r}')
            keys = list(node.keys())
            if part in keys:
                node = node[part]
                continue
            prefix = '.'.join(parts[:depth] + [''])
            if depth == 0:
                if part in RUNNER_KEYS:
                    break
                raise ConfigError(
                    f'--cfg-options {full_key}: unknown top-level key {part!r}; the config '
                    f'does not define it and the Runner does not read it'
                    f'{_did_you_mean(_close(part, keys + sorted(RUNNER_KEYS)))}')
            close = _close(part, keys)
            if close:
                raise ConfigError(f'--cfg-options {full_key}: {where} has no key {part!r}'
                                  f'{_did_you_mean(close, prefix)}. Adding a new key this '
                                  'close to an existing one needs a config edit.')
            break  # a genuinely new key: allowed (e.g. model.backbone.init_cfg)


def warn_config_variables(cfg: Config, options: Optional[Dict[str, Any]]) -> List[str]:
    """Warn when ``--cfg-options`` sets a config variable such as ``data_root``.

    Config files substitute variables when they are read; overriding ``data_root``
    afterwards does not change ``train_dataloader.dataset.data_root``. Returns the
    warnings (also printed to stderr).
    """
    notes = []
    for full_key in options or {}:
        top = full_key.split('.')[0]
        if '.' not in full_key and top in cfg and top not in RUNNER_KEYS and \
                not isinstance(cfg[top], (dict, list)):
            notes.append(f'warning: --cfg-options {full_key}: {top!r} is a config variable; '
                         'values computed from it when the config was read (e.g. '
                         'train_dataloader.dataset.data_root) keep their old value. '
                         'Override those keys instead.')
    for note in notes:
        print(note, file=sys.stderr)
    return notes


# ---------------------------------------------------------------------------- paths
def _is_remote(path: str) -> bool:
    return '://' in path or path.startswith(('s3:', 'openmmlab:', 'torchvision:', 'mmcls:'))


def _datasets(cfg: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """Dataset dicts of a dataloader config, through wrappers (``dataset``/``datasets``)."""
    if isinstance(cfg, dict):
        yield key, cfg
        if isinstance(cfg.get('dataset'), dict):
            yield from _datasets(cfg['dataset'], f'{key}.dataset')
        for i, sub in enumerate(cfg.get('datasets') or []):
            yield from _datasets(sub, f'{key}.datasets.{i}')


def dataset_paths(dataset: Dict, key: str) -> List[Tuple[str, str]]:
    """``(config key, resolved path)`` for each local path a dataset config names.

    mmengine's ``BaseDataset`` joins ``ann_file`` and each ``data_prefix`` entry with
    ``data_root`` unless absolute; empty strings mean "not used". ``data_prefix`` may be a
    str (mmpretrain ``CustomDataset``) or a dict (``img_path``, ``seg_map_path``, ``img``).
    """
    backend = (dataset.get('backend_args') or {}).get('backend', 'local')
    if backend not in ('local', 'disk'):
        return []
    root = dataset.get('data_root') or ''
    if not isinstance(root, str) or _is_remote(root):
        return []
    out = []
    if root:
        out.append((f'{key}.data_root', root))

    def join(p: str) -> str:
        return p if (not root or osp.isabs(p)) else osp.join(root, p)

    ann = dataset.get('ann_file')
    if isinstance(ann, str) and ann and not _is_remote(ann):
        out.append((f'{key}.ann_file', join(ann)))
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, str):
        prefix = {'': prefix}
    if isinstance(prefix, dict):
        for name, p in prefix.items():
            if isinstance(p, str) and p and not _is_remote(p):
                out.append((f'{key}.data_prefix' + (f'.{name}' if name else ''), join(p)))
    return out


def check_data_paths(cfg: Config, mode: str = 'train') -> None:
    """Every local dataset path of the dataloaders ``mode`` uses must exist.

    ``mode='train'``: ``train_dataloader`` and ``val_dataloader`` (unless validation is
    off); ``'test'``: ``test_dataloader``. Raises :class:`ConfigError` naming the key.
    """
    if mode not in _DATALOADERS:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    for loader_key in _DATALOADERS[mode]:
        loader = cfg.get(loader_key)
        if not isinstance(loader, dict):
            continue
        if loader_key == 'val_dataloader' and cfg.get('val_cfg') is None:
            continue
        for key, dataset in _datasets(loader.get('dataset'), f'{loader_key}.dataset'):
            for name, path in dataset_paths(dataset, key):
                if not osp.exists(path):
                    raise ConfigError(
                        f'{name}: path not found: {path!r} (cwd {os.getcwd()}). Point it at '
                        f'your data, e.g. --cfg-options {name}=/path/to/data')


def _pretrained_inits(node: Any, key: str) -> Iterator[Tuple[str, Dict]]:
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            yield key, node
        for k, v in node.items():
            yield from _pretrained_inits(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _pretrained_inits(v, f'{key}.{i}')


def check_checkpoint_file(path: Optional[str], key: str) -> None:
    """A local checkpoint must exist, be complete and pass its zip CRC checks.

    See :func:`vllama_mm.engine.checkpoint.verify_checkpoint` (empty, truncated and
    flipped-byte files); raises :class:`ConfigError` naming ``key`` and the file.
    """
    from .checkpoint import CheckpointError, verify_checkpoint
    if not path or not isinstance(path, str) or _is_remote(path):
        return
    if not osp.exists(path):
        raise ConfigError(f'{key}: checkpoint file not found: {path!r}')
    if osp.isdir(path):
        raise ConfigError(f'{key}: {path!r} is a directory, not a checkpoint file')
    try:
        verify_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f'{key}: {e}') from e


def check_pretrained_files(cfg: Config) -> None:
    """``init_cfg=dict(type='Pretrained', checkpoint=...)`` files must exist (training)."""
    for key, init in _pretrained_inits(cfg.get('model'), 'model'):
        check_checkpoint_file(init['checkpoint'], f'{key}.checkpoint')


def _backbones(node: Any, key: str) -> Iterator[Tuple[str, Dict]]:
    """``(config key, dict)`` of every ``VisionLLaMA`` model dict in ``node``."""
    if isinstance(node, dict):
        if node.get('type') in ('VisionLLaMA', 'vllama_mm.VisionLLaMA'):
            yield key, node
        for k, v in node.items():
            yield from _backbones(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _backbones(v, f'{key}.{i}')


def check_model_cfg(cfg: Config, mode: str = 'train') -> None:
    """Settings that fail late and obscurely: a dense task fed one vector per image
    (``out_type``), fp16 AMP without a GPU."""
    if cfg.get('default_scope') in ('mmseg', 'mmdet'):
        for key, backbone in _backbones(cfg.get('model'), 'model'):
            out_type = backbone.get('out_type', 'cls_token')
            if out_type != 'featmap':
                raise ConfigError(
                    f'{key}.out_type: {out_type!r}' + (' (the default)' if 'out_type' not
                                                       in backbone else '') +
                    ' gives one vector per image; a dense (mmseg / mmdet) model needs '
                    "feature maps: set out_type='featmap'")
    if mode == 'train':
        wrapper = (cfg.get('optim_wrapper') or {}).get('type')
        if wrapper == 'AmpOptimWrapper':
            import torch
            if not torch.cuda.is_available():
                raise ConfigError(
                    "optim_wrapper.type: 'AmpOptimWrapper' (fp16 mixed precision) needs a "
                    'GPU and this machine has no CUDA device; on CPU train in fp32: add '
                    '--fp32 to the tools/train.py command')


def validate_cfg(cfg: Config, mode: str = 'train') -> None:
    """All checks for ``tools/train.py`` (``mode='train'``) / ``tools/test.py``."""
    check_data_paths(cfg, mode)
    from .dropin import check_dropin
    check_dropin(cfg)  # leftovers of a library config's own backbone
    check_model_cfg(cfg, mode)
    if mode == 'train':
        check_pretrained_files(cfg)


# ---------------------------------------------------------------------------- backbone args
#: Kind of every scalar backbone argument checked by :func:`check_backbone_args`
#: (``arch.<key>``: a key of the resolved ``arch`` dict).
BACKBONE_ARG_KINDS = {
    'img_size': 'size', 'patch_size': 'pos_int', 'in_channels': 'pos_int',
    'window_size': 'nonneg_int', 'frozen_stages': 'int', 'rope_theta': 'pos_real',
    'norm_eps': 'pos_real', 'qkv_bias': 'bool', 'with_cls_token': 'bool',
    'final_norm': 'bool', 'window_pad_mask': 'bool',
    'double_final_norm': 'bool', 'drop_rate': 'nonneg_real', 'attn_drop_rate': 'nonneg_real',
    'drop_path_rate': 'nonneg_real', 'arch.layer_scale_init': 'nonneg_real',
    'arch.ffn_bias': 'bool',
}
_KIND_TEXT = {'pos_int': 'a positive int', 'nonneg_int': 'an int >= 0', 'int': 'an int',
              'pos_real': 'a finite number > 0', 'nonneg_real': 'a finite number >= 0',
              'bool': 'True or False', 'size': 'a positive int or a pair (h, w) of them'}


def _fits(value: Any, kind: str) -> bool:
    import math
    if kind == 'bool':
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == 'size':
        pair = value if isinstance(value, (list, tuple)) and len(value) == 2 else (value, )
        return all(_fits(v, 'pos_int') for v in pair)
    if kind.endswith('_int') or kind == 'int':
        ok = isinstance(value, int)
    else:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
    if not ok:
        return False
    return value > 0 if kind.startswith('pos') else value >= 0 if kind.startswith('nonneg') \
        else True


def check_backbone_args(owner: str, args: Dict[str, Any], arch: Dict[str, Any],
                        num_outputs: int) -> None:
    """Type and range of a backbone's arguments, before anything is built.

    Without it a string ``rope_theta`` fails deep inside ("'>' not supported between
    'str' and 'int'"), ``patch_size=8.7`` / ``window_size=2.5`` are truncated, a negative
    or NaN ``layer_scale_init`` disables layer scale and ``ffn_bias='no'`` means True.
    ``args``: the constructor's arguments by name (unknown names are ignored);
    ``num_outputs``: layers (plain) or stages (pyramid) that ``out_indices`` indexes:
    duplicates or a non-increasing order are errors (the outputs come in block order,
    one per block). Raises ``ValueError`` naming the argument, its value and what it
    must be.
    """
    values = dict(args)
    values.update({f'arch.{k}': v for k, v in arch.items()})
    for name, kind in BACKBONE_ARG_KINDS.items():
        if name in values and not _fits(values[name], kind):
            value = values[name]
            raise ValueError(f'{owner}: {name} must be {_KIND_TEXT[kind]}, got {value!r}'
                             f' ({type(value).__name__})')
    out_indices = values.get('out_indices')
    if isinstance(out_indices, (list, tuple)) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in out_indices):
        resolved = [i + num_outputs if i < 0 else i for i in out_indices]
        if any(b <= a for a, b in zip(resolved, resolved[1:])):
            raise ValueError(f'{owner}: out_indices must be increasing without duplicates '
                             f'(one output per block, in block order), got {tuple(out_indices)}'
                             + (f' = {tuple(resolved)}' if resolved != list(out_indices) else ''))


def guard_traced_size(x: Any, owner: str) -> Any:
    """Under ``torch.jit.trace``: make the traced module refuse other input sizes.

    The RoPE tables and token-grid reshapes are fixed when tracing, so a module traced
    at 64x32 and run at 32x64 would return a transposed map. This adds a zero
    ``[1, 1, H, W]`` constant expanded to the input's (dynamic) shape: any other H x W
    fails inside the traced module with an expand size error; a warning at trace time
    says so. Eager calls return ``x`` unchanged.
    """
    import warnings

    import torch
    if not torch.jit.is_tracing():
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    warnings.warn(f'{owner} traced at input size {h}x{w}: the traced module only runs at '
                  f'this size (RoPE tables and token grids are fixed by tracing); other '
                  f'sizes fail with an expand size error', torch.jit.TracerWarning)
    return x + x.new_zeros(1, 1, h, w).expand_as(x)


# ---------------------------------------------------------------------------- CLI
def exit_with_error(exc: BaseException) -> None:
    """Print ``error: <message>`` to stderr and exit 2; ``VLLAMA_MM_DEBUG=1`` re-raises."""
    if os.environ.get('VLLAMA_MM_DEBUG', '0') not in ('', '0'):
        raise exc
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    kind = '' if isinstance(exc, ConfigError) else f'{type(exc).__name__}: '
    print(f'error: {kind}{msg}\n(set VLLAMA_MM_DEBUG=1 for the traceback)', file=sys.stderr)
    sys.exit(2)


__all__ = ['ConfigError', 'RUNNER_KEYS', 'TYPO_RATIO', 'USER_ERRORS', 'check_cfg_options',
           'warn_config_variables', 'dataset_paths', 'check_data_paths',
           'check_checkpoint_file', 'check_pretrained_files', 'check_model_cfg',
           'validate_cfg', 'BACKBONE_ARG_KINDS', 'check_backbone_args', 'guard_traced_size',
           'exit_with_error']
