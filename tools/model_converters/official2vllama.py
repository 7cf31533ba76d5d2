"""Convert a released VisionLLaMA checkpoint into a vllama_mm (mmengine) checkpoint.

Usage::

    python tools/model_converters/official2vllama.py SRC DST [--head-dim N] [--rope 2d|as2d]
        [--unsafe]
    python tools/model_converters/official2vllama.py DUMP DST [--weights ema|model]
        [--family dit|sit] [--num-heads N] [--unsafe]

SRC is one of the authors' files (VisionLLaMA-Base/Large-MAE ``epoch_*.pth``,
Pyramid-VisionLLaMA-S/B/L ``best_checkpoint.pth``, or a DeiT3-style plain checkpoint);
its layout is detected. A file that is already in vllama_mm's layout, or holds another
model's weights (an mmpretrain ViT, a Twins, ...), is named as such and not converted.
DST gets ``{'state_dict': ..., 'meta': {'vllama_mm': ...}}`` with ``backbone.``-prefixed
keys (plus ``head.fc.*`` or the MAE ``neck.*``/``head.*``). The backbone config that
loads it (arch preset or custom dict and the options that reproduce the official
computation) is printed and stored in ``meta['vllama_mm']``. See docs/checkpoints.md.

A DiT-LLaMA / SiT-LLaMA training dump (DUMP) is recognised by its keys and converted to
``denoiser.*`` weights with the second set of options (see docs/generation.md).

The key tables live beside the models (:mod:`vllama_mm.models.convert`); this script
reads, writes and prints.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import Any, List, Mapping, Optional

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from vllama_mm.engine.checkpoint import load_official  # noqa: E402
from vllama_mm.models.convert import (ROPE_CHOICES, ConversionError,  # noqa: E402
                                      convert_checkpoint)
from vllama_mm.models.convert import dit  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a released VisionLLaMA checkpoint to the vllama_mm layout')
    parser.add_argument('src', help='official checkpoint (.pth) or DiT/SiT-LLaMA dump (.pt)')
    parser.add_argument('dst', help='output mmengine checkpoint (.pth)')
    parser.add_argument('--unsafe', action='store_true',
                        help='load SRC with torch.load(weights_only=False). Only for files '
                             'from a source you trust: unpickling can run arbitrary code')
    plain = parser.add_argument_group('backbone checkpoints (MAE, DeiT3-style, pyramid)')
    plain.add_argument('--head-dim', type=int, default=None,
                       help='channels per attention head (not stored in the weights); '
                            'default 64 for plain models, 32 for the pyramid')
    plain.add_argument('--rope', choices=ROPE_CHOICES, default=None,
                       help="DeiT3-style plain weights only: which of the authors' two RoPE "
                            "variants trained them: '2d' (default; unscaled positions) or "
                            "'as2d' (their auto_scale: positions x 14/G, AS2DRoPE anchored "
                            'at 14x14). Stored in the meta')
    gen = parser.add_argument_group('DiT-LLaMA / SiT-LLaMA training dumps')
    gen.add_argument('--weights', choices=['ema', 'model'], default=None,
                     help='which weights of the dump to convert (default: ema, as sampled)')
    gen.add_argument('--family', choices=['dit', 'sit'], default=None,
                     help="DiT (DDPM) or SiT (flow); read from the dump's args when omitted")
    gen.add_argument('--num-heads', type=int, default=None,
                     help='attention heads, only for sizes outside S/B/L/XL')
    return parser.parse_args(argv)


def _refuse(args: argparse.Namespace, names: List[str], what: str) -> None:
    """Options of the other kind of file are an error naming them (never ignored)."""
    given = [n for n in names if getattr(args, n) is not None]
    if given:
        opts = ', '.join('--' + n.replace('_', '-') for n in given)
        raise ConversionError(f'{args.src} is {what}: {opts} does not apply to it')


def save(out: Mapping[str, Any], dst: str) -> None:
    """``torch.save`` to ``dst``; its folder must exist (no stray directories made)."""
    parent = osp.dirname(osp.abspath(dst))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'output directory does not exist: {parent}')
    torch.save(out, dst)


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


def convert_dit(ckpt: Any, args: argparse.Namespace) -> int:
    """The DiT-LLaMA / SiT-LLaMA dump path: convert, check it loads, write, report."""
    _refuse(args, ['head_dim', 'rope'], 'a DiT-LLaMA / SiT-LLaMA training dump')
    out = dit.convert_dump(ckpt, weights=args.weights or 'ema', family=args.family,
                           num_heads=args.num_heads)
    dit.check_loads(out)
    out['meta']['vllama_mm']['source'] = osp.basename(args.src)
    save(out, args.dst)
    meta = out['meta']['vllama_mm']
    print(f"detected layout: {meta['format']} ({meta['weights']} weights)")
    print(f"wrote {args.dst}: {len(out['state_dict'])} tensors under 'denoiser.'")
    print(f"denoiser config: {meta['denoiser']}")
    return 0


def convert_backbone(ckpt: Any, args: argparse.Namespace) -> int:
    """The backbone path (MAE, DeiT3-style plain, pyramid): convert, check, write, report."""
    _refuse(args, ['weights', 'family', 'num_heads'], 'not a DiT-LLaMA / SiT-LLaMA dump')
    conv = convert_checkpoint(ckpt, head_dim=args.head_dim, rope=args.rope)
    del ckpt
    save(dict(state_dict=OrderedDict((k, v.contiguous()) for k, v in conv.state_dict.items()),
              meta=dict(vllama_mm=conv.meta(osp.basename(args.src)))), args.dst)
    n_backbone = sum(k.startswith('backbone.') for k in conv.state_dict)
    n_other = len(conv.state_dict) - n_backbone
    print(f'detected layout: {conv.fmt}')
    if 'compat' in conv.backbone:
        print(f"compat preset: {conv.backbone['compat']!r} (the authors' geometry, which "
              'these weights were trained with)')
    for name, value in conv.options.items():
        print(f'{name}: {value}')
    print(f'wrote {args.dst}: {n_backbone} backbone tensors, {n_other} neck/head tensors')
    for note in conv.notes:
        print(f'note: {note}')
    if conv.head is not None:
        print(f"classifier: head=dict(type='LinearClsHead', num_classes="
              f"{conv.head['num_classes']}, in_channels={conv.head['in_channels']})")
    print('backbone config:')
    print(format_backbone_cfg(conv.backbone, checkpoint=args.dst))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if osp.exists(args.dst) and osp.exists(args.src) and osp.samefile(args.src, args.dst):
        print(f'error: DST {args.dst} is SRC; choose another output file', file=sys.stderr)
        return 1
    try:
        ckpt = load_official(args.src, unsafe=args.unsafe)
        run = convert_dit if dit.is_dit_dump(ckpt) else convert_backbone
        return run(ckpt, args)
    except (ConversionError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
