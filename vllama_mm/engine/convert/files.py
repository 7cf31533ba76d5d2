"""Reading released checkpoints safely, writing converted ones, printing configs."""
import argparse
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..checkpoint import mmengine_checkpoint_globals, verify_checkpoint
from .common import ConversionError, Converted, short


def _safe_globals() -> List:
    """Non-tensor objects the released files legitimately pickle.

    DeiT/Twins training checkpoints store ``args`` (an ``argparse.Namespace``); mmengine
    checkpoints store message-hub buffers (numpy arrays, ``HistoryBuffer`` and references
    to its statistics methods through ``getattr``, resolved by a restricted stand-in).
    """
    return [argparse.Namespace] + mmengine_checkpoint_globals()


def load_official(path: str, unsafe: bool = False) -> Dict[str, Any]:
    """``torch.load`` a released checkpoint on CPU with safe (weights-only) unpickling.

    Only ``argparse.Namespace`` and mmengine's own checkpoint classes are allowed besides
    tensors. A file that needs anything else fails with a message naming it; pass
    ``unsafe=True`` (``--unsafe``) only for a file from a source you trust.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.getsize(path) == 0:
        raise ConversionError(f'{path}: the file is empty (interrupted download?)')
    verify_checkpoint(path, ConversionError)  # zip CRC: truncated / flipped bytes, named
    try:
        if unsafe:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        else:
            # only what is not allowed already: the context removes its entries on exit
            allowed = torch.serialization.get_safe_globals()
            extra = [g for g in _safe_globals() if g not in allowed]
            with torch.serialization.safe_globals(extra):
                ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if 'Weights only load failed' in msg or 'Unsupported global' in msg:
            found = re.findall(r'Unsupported global: GLOBAL ([\w.]+)', msg) + re.findall(
                r'(refusing getattr\([^)]*\)|unsupported GLOBAL [\w.]+ whose module \w+ '
                r'is blocked)', msg)
            what = f' ({"; ".join(sorted(set(found)))})' if found else ''
            raise ConversionError(
                f'{path}: the file pickles non-tensor objects{what} that safe loading '
                '(torch.load(weights_only=True)) refuses. If you trust where it comes '
                'from, re-run with --unsafe (loads it with weights_only=False).') from e
        raise ConversionError(f'{path}: cannot unpickle the file (corrupt or not a PyTorch '
                              f'checkpoint): {short(msg)}') from e
    except Exception as e:  # noqa: BLE001  any other failure means an unreadable file
        raise ConversionError(f'{path}: cannot read the file as a PyTorch checkpoint '
                              f'(truncated or corrupt?): {short(str(e))}') from e
    return ckpt


def save_converted(conv: Converted, dst: str, source: str = '') -> Dict[str, Any]:
    """Write ``{'state_dict': ..., 'meta': {'vllama_mm': ...}}`` to ``dst``."""
    out = dict(state_dict=OrderedDict((k, v.contiguous()) for k, v in conv.state_dict.items()),
               meta=dict(vllama_mm=conv.meta(source)))
    parent = osp.dirname(osp.abspath(dst))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'output directory does not exist: {parent}')
    torch.save(out, dst)
    return out


def format_backbone_cfg(cfg: Mapping[str, Any], checkpoint: Optional[str] = None) -> str:
    """The backbone config as ready-to-paste Python source."""
    cfg = dict(cfg)
    if checkpoint is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    return 'backbone=' + _py(cfg, 1)


def _py(v: Any, indent: int) -> str:
    if isinstance(v, dict):
        pad = '    ' * indent
        items = [f'{k}={_py(x, indent + 1)}' for k, x in v.items()]
        one = 'dict(' + ', '.join(items) + ')'
        if len(one) + 4 * indent <= 88:
            return one
        return 'dict(\n' + ',\n'.join(pad + i for i in items) + ')'
    if isinstance(v, (list, tuple)):
        inner = ', '.join(_py(x, indent) for x in v)
        return f'[{inner}]' if isinstance(v, list) else f'({inner}{"," if len(v) == 1 else ""})'
    return repr(v)
