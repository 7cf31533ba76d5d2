"""Convert the released DiT-LLaMA / SiT-LLaMA training dumps to vllama_mm checkpoints.

A released file is a full training dump ``{'model', 'ema', 'opt', 'args'}`` with
``args`` an ``argparse.Namespace``. ``model`` and ``ema`` share one layout:
``pos_embed`` (unused, dropped), ``x_embedder.proj.*``, ``t_embedder.mlp.{0,2}.*``,
``y_embedder.embedding_table.weight``, ``blocks.i.adaLN_modulation.1.*``,
``blocks.i.attn.{qkv,proj}.*``, ``blocks.i.mlp.{c_fc1,c_fc2,c_proj}.weight`` and
``final_layer.{adaLN_modulation.1,linear}.*``. Our :class:`DiTLLaMA` keeps these names
except the MLP: ``c_fc1`` (gate) and ``c_fc2`` (up) stack into ``mlp.w12`` [2h, D] (rows
gate|up) and ``c_proj`` becomes ``mlp.w3``.

Output: ``{'state_dict': {'denoiser.<key>': ...}, 'meta': {'vllama_mm': {'format':
'dit-llama' | 'sit-llama', 'denoiser': <config dict with type>, ...}}}``.
"""
import argparse
import math
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..models.dit_llama import DIT_ARCHS
from ..models.weights import compare
from .checkpoint import verify_checkpoint

FORMATS = ('dit-llama', 'sit-llama')
_MARKERS = ('x_embedder.proj.weight', 't_embedder.mlp.0.weight',
            'y_embedder.embedding_table.weight', 'final_layer.linear.weight')


class DiTConversionError(ValueError):
    """A file that is not (or not entirely) a DiT-LLaMA / SiT-LLaMA dump."""


def load_dump(path: str, unsafe: bool = False) -> Any:
    """``torch.load`` on CPU with ``mmap=True`` (the optimizer state is never read into
    memory) and safe unpickling that allows only ``argparse.Namespace`` besides tensors."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        if unsafe:
            return torch.load(path, map_location='cpu', weights_only=False, mmap=True)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except RuntimeError as e:  # not a zip file (legacy format cannot be mmapped)
        if 'mmap' not in str(e):
            raise DiTConversionError(f'{path}: cannot be read as a torch checkpoint ({e})') from e
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=not unsafe)
    except Exception as e:  # UnpicklingError and friends
        raise DiTConversionError(
            f'{path}: safe loading refused it ({str(e).splitlines()[0]}); if you trust '
            'where it comes from, re-run with --unsafe') from e


def _strip(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in sd.items())


def is_dit_state_dict(sd: Any) -> bool:
    """True when ``sd`` is a tensor dict in the released DiT/SiT-LLaMA layout."""
    return isinstance(sd, Mapping) and all(
        k in sd or f'module.{k}' in sd for k in _MARKERS)


def is_dit_dump(ckpt: Any) -> bool:
    """True when ``ckpt`` holds a released-layout state dict under ``ema`` or ``model``."""
    return isinstance(ckpt, Mapping) and any(
        is_dit_state_dict(ckpt.get(name)) for name in ('ema', 'model')) or \
        is_dit_state_dict(ckpt)


def family_of(ckpt: Mapping, family: Optional[str] = None) -> str:
    """'dit-llama' or 'sit-llama' from ``--family``, else from the dump's ``args``
    (SiT's training script has ``path_type``/``prediction``; ``args.model`` names the
    network). The weights alone cannot tell: both families share one layout."""
    if family is not None:
        fam = {'dit': 'dit-llama', 'sit': 'sit-llama'}.get(family, family)
        if fam not in FORMATS:
            raise DiTConversionError(f'--family must be dit or sit, got {family!r}')
        return fam
    args = ckpt.get('args') if isinstance(ckpt, Mapping) else None
    a = vars(args) if isinstance(args, argparse.Namespace) else (
        args if isinstance(args, Mapping) else {})
    name = str(a.get('model', '')).lower()
    if 'path_type' in a or 'prediction' in a or name.startswith('sit'):
        return 'sit-llama'
    if name.startswith('dit'):
        return 'dit-llama'
    raise DiTConversionError('cannot tell DiT-LLaMA from SiT-LLaMA: the file has no '
                             "'args' naming the model; pass --family dit or --family sit")


def _arch_of(sd: Mapping[str, Tensor], num_heads: Optional[int]) -> Tuple[Any, int]:
    """(arch preset name or dict, depth) from the tensor shapes."""
    dim = sd['x_embedder.proj.weight'].shape[0]
    ids = {int(m.group(1)) for k in sd for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    depth = max(ids) + 1 if ids else 0
    if sorted(ids) != list(range(depth)):
        raise DiTConversionError(f'block indices are not contiguous: {sorted(ids)}')
    hidden = sd['blocks.0.mlp.c_fc1.weight'].shape[0] if depth else 0
    for name, (d, n, h) in DIT_ARCHS.items():
        if d == dim and n == depth and (num_heads is None or num_heads == h):
            return name.upper(), depth
    if num_heads is None:
        raise DiTConversionError(f'embed dims {dim} x depth {depth} is not a released size; '
                                 'pass --num-heads (not stored in the weights)')
    return dict(embed_dims=dim, num_layers=depth, num_heads=num_heads,
                mlp_hidden=hidden), depth


def convert_state_dict(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Released names -> :class:`DiTLLaMA` names (no prefix); drops ``pos_embed``."""
    out: Dict[str, Tensor] = OrderedDict()
    used = set()
    for k, v in sd.items():
        if k == 'pos_embed':
            used.add(k)
            continue
        m = re.match(r'(blocks\.\d+\.mlp)\.(c_fc1|c_fc2|c_proj)\.weight$', k)
        if m is None:
            out[k] = v
            used.add(k)
            continue
        base = m.group(1)
        if m.group(2) == 'c_proj':
            out[f'{base}.w3.weight'] = v
        elif m.group(2) == 'c_fc1':
            up = sd.get(f'{base}.c_fc2.weight')
            if up is None:
                raise DiTConversionError(f'{k} has no matching {base}.c_fc2.weight')
            out[f'{base}.w12.weight'] = torch.cat([v, up], dim=0)  # rows gate|up
        used.add(k)
    return out


def denoiser_config(sd: Mapping[str, Tensor], fmt: str, num_heads: Optional[int] = None,
                    args: Optional[Mapping] = None) -> Dict[str, Any]:
    """The ``DiTLLaMA`` config (with ``type``) that loads ``sd`` strictly."""
    w = sd['x_embedder.proj.weight']  # [D, C, p, p]
    dim, in_ch, patch = w.shape[0], w.shape[1], w.shape[2]
    arch, _ = _arch_of(sd, num_heads)
    out_ch = sd['final_layer.linear.weight'].shape[0] // (patch * patch)
    if out_ch not in (in_ch, 2 * in_ch):
        raise DiTConversionError(f'final layer gives {out_ch} channels for {in_ch} inputs')
    rows = sd['y_embedder.embedding_table.weight'].shape[0]
    size = None
    if 'pos_embed' in sd:  # [1, N, D] over the training grid (square in their code)
        g = math.isqrt(sd['pos_embed'].shape[1])
        size = g * patch
    elif args and args.get('image_size'):
        size = int(args['image_size']) // 8
    cfg = dict(type='DiTLLaMA', arch=arch, patch_size=int(patch), in_channels=int(in_ch),
               input_size=int(size or 32), num_classes=int(rows - 1),
               class_dropout_prob=0.1, learn_sigma=out_ch == 2 * in_ch,
               return_sigma=fmt == 'dit-llama', rope_type='2d')
    return cfg


def convert_dump(ckpt: Any, weights: str = 'ema', family: Optional[str] = None,
                 num_heads: Optional[int] = None) -> Dict[str, Any]:
    """Loaded dump -> ``{'state_dict': {'denoiser.*'}, 'meta': {'vllama_mm': ...}}``."""
    if weights not in ('ema', 'model'):
        raise DiTConversionError(f'--weights must be ema or model, got {weights!r}')
    if not isinstance(ckpt, Mapping):
        raise DiTConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    if is_dit_state_dict(ckpt):
        sd, where = ckpt, '<top level>'
    else:
        sd, where = ckpt.get(weights), weights
        if not is_dit_state_dict(sd):
            have = sorted(k for k in ckpt if is_dit_state_dict(ckpt[k]))
            raise DiTConversionError(f"the dump has no '{weights}' weights in the DiT/SiT-LLaMA "
                                     f'layout (found: {have or sorted(ckpt)[:8]})')
    sd = _strip(sd)
    fmt = family_of(ckpt, family)
    args = ckpt.get('args')
    args = vars(args) if isinstance(args, argparse.Namespace) else None
    cfg = denoiser_config(sd, fmt, num_heads, args)
    state = OrderedDict((f'denoiser.{k}', v.contiguous())
                        for k, v in convert_state_dict(sd).items())
    meta = dict(format=fmt, denoiser=cfg, weights=where)
    return dict(state_dict=state, meta=dict(vllama_mm=meta))


def check_loads(out: Mapping[str, Any]) -> None:
    """Build the stored denoiser config on the meta device and load the weights strictly
    (shapes and names), so a converted file is known to load before it is written."""
    from ..models.dit_llama import DiTLLaMA
    cfg = dict(out['meta']['vllama_mm']['denoiser'])
    cfg.pop('type')
    with torch.device('meta'):
        model = DiTLLaMA(**cfg)
    sd = {k[len('denoiser.'):]: v for k, v in out['state_dict'].items()}
    missing, bad, unexpected = compare(model.state_dict(), sd)
    if missing or unexpected or bad:
        raise DiTConversionError(f'converted weights do not fit DiTLLaMA({cfg}): missing '
                                 f'{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, '
                                 f'shape mismatch {sorted(bad)[:5]}')


def src_of(argv: Sequence[str]) -> Optional[str]:
    """The first argument naming an existing file (the SRC of official2vllama.py)."""
    return next((a for a in argv if not a.startswith('-') and osp.isfile(a)), None)


def is_dit_dump_file(path: Optional[str], unsafe: bool = False) -> bool:
    """Cheap check (mmap; safe loading unless ``unsafe``) used by official2vllama.py to
    dispatch here."""
    if not path:
        return False
    try:
        return is_dit_dump(load_dump(path, unsafe=unsafe))
    except Exception:  # not ours: the generic converter reports the problem
        return False


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Convert a released DiT-LLaMA / SiT-LLaMA '
                                'training dump to a vllama_mm checkpoint')
    p.add_argument('src', help='released .pt training dump')
    p.add_argument('dst', help='output checkpoint (.pth)')
    p.add_argument('--weights', choices=['ema', 'model'], default='ema',
                   help='which weights of the dump to convert (default: ema, as sampled)')
    p.add_argument('--family', choices=['dit', 'sit'], default=None,
                   help="DiT (DDPM) or SiT (flow); read from the dump's args when omitted")
    p.add_argument('--num-heads', type=int, default=None,
                   help='attention heads, only for sizes outside S/B/L/XL')
    p.add_argument('--unsafe', action='store_true',
                   help='torch.load(weights_only=False): only for files you trust')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        verify_checkpoint(args.src, DiTConversionError)  # zip CRC: truncated / flipped bytes
        ckpt = load_dump(args.src, unsafe=args.unsafe)
        out = convert_dump(ckpt, weights=args.weights, family=args.family,
                           num_heads=args.num_heads)
        check_loads(out)
        parent = osp.dirname(osp.abspath(args.dst))
        if not osp.isdir(parent):
            raise FileNotFoundError(f'output directory does not exist: {parent}')
        out['meta']['vllama_mm']['source'] = osp.basename(args.src)
        torch.save(out, args.dst)
    except (DiTConversionError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    meta = out['meta']['vllama_mm']
    print(f"detected layout: {meta['format']} ({meta['weights']} weights)")
    print(f"wrote {args.dst}: {len(out['state_dict'])} tensors under 'denoiser.'")
    print(f"denoiser config: {meta['denoiser']}")
    return 0
