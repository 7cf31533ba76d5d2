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
def is_remote(path: str) -> bool:
    return '://' in path or path.startswith(('s3:', 'openmmlab:', 'torchvision:', 'mmcls:'))


def dataset_dicts(cfg: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """Dataset dicts of a dataloader config, through wrappers (``dataset``/``datasets``)."""
    if isinstance(cfg, dict):
        yield key, cfg
        if isinstance(cfg.get('dataset'), dict):
            yield from dataset_dicts(cfg['dataset'], f'{key}.dataset')
        for i, sub in enumerate(cfg.get('datasets') or []):
            yield from dataset_dicts(sub, f'{key}.datasets.{i}')


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
    if not isinstance(root, str) or is_remote(root):
        return []
    out = []
    if root:
        out.append((f'{key}.data_root', root))

    def join(p: str) -> str:
        return p if (not root or osp.isabs(p)) else osp.join(root, p)

    ann = dataset.get('ann_file')
    if isinstance(ann, str) and ann and not is_remote(ann):
        out.append((f'{key}.ann_file', join(ann)))
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, str):
        prefix = {'': prefix}
    if isinstance(prefix, dict):
        for name, p in prefix.items():
            if isinstance(p, str) and p and not is_remote(p):
                out.append((f'{key}.data_prefix' + (f'.{name}' if name else ''), join(p)))
    return out


def mode_datasets(cfg: Config, mode: str = 'train') -> Iterator[Tuple[str, Dict]]:
    """``(config key, dataset dict)`` of the dataloaders ``mode`` uses, wrappers included.

    ``mode='train'``: ``train_dataloader`` and ``val_dataloader`` (unless validation is
    off); ``'test'``: ``test_dataloader``.
    """
    if mode not in _DATALOADERS:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    for loader_key in _DATALOADERS[mode]:
        loader = cfg.get(loader_key)
        if isinstance(loader, dict) and not (loader_key == 'val_dataloader'
                                             and cfg.get('val_cfg') is None):
            yield from dataset_dicts(loader.get('dataset'), f'{loader_key}.dataset')


def check_data_paths(cfg: Config, mode: str = 'train') -> None:
    """Every local dataset path of the dataloaders ``mode`` uses must exist
    (:func:`mode_datasets`). Raises :class:`ConfigError` naming the key."""
    for key, dataset in mode_datasets(cfg, mode):
        for name, path in dataset_paths(dataset, key):
            if not osp.exists(path):
                raise ConfigError(
                    f'{name}: path not found: {path!r} (cwd {os.getcwd()}). Point it at '
                    f'your data, e.g. --cfg-options {name}=/path/to/data')


def _dicts(node: Any, key: str, match) -> Iterator[Tuple[str, Dict]]:
    """``(config key, dict)`` of every dict in ``node`` (recursively) that ``match``es."""
    if isinstance(node, dict):
        if match(node):
            yield key, node
        for k, v in node.items():
            yield from _dicts(v, f'{key}.{k}', match)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _dicts(v, f'{key}.{i}', match)


def check_checkpoint_file(path: Optional[str], key: str) -> None:
    """A local checkpoint must exist, be complete and pass its zip CRC checks.

    See :func:`vllama_mm.engine.checkpoint.verify_checkpoint` (empty, truncated and
    flipped-byte files); raises :class:`ConfigError` naming ``key`` and the file.
    """
    from .checkpoint import CheckpointError, verify_checkpoint
    if not path or not isinstance(path, str) or is_remote(path):
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
    for key, init in _dicts(cfg.get('model'), 'model', lambda d: d.get('type') == 'Pretrained'
                            and isinstance(d.get('checkpoint'), str)):
        check_checkpoint_file(init['checkpoint'], f'{key}.checkpoint')


def check_model_cfg(cfg: Config, mode: str = 'train') -> None:
    """Settings that fail late and obscurely: a dense task fed one vector per image
    (``out_type``), fp16 AMP without a GPU."""
    if cfg.get('default_scope') in ('mmseg', 'mmdet'):
        for key, backbone in _dicts(cfg.get('model'), 'model', lambda d: d.get('type') in (
                'VisionLLaMA', 'vllama_mm.VisionLLaMA')):
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
           'warn_config_variables', 'dataset_paths', 'mode_datasets', 'check_data_paths',
           'check_checkpoint_file', 'check_pretrained_files', 'check_model_cfg',
           'validate_cfg', 'exit_with_error']
