"""Convert a released VisionLLaMA checkpoint into a vllama_mm (mmengine) checkpoint.

Usage::

    python tools/model_converters/official2vllama.py SRC DST [--head-dim N] [--rope 2d|as2d]
        [--unsafe]

SRC is one of the authors' files (VisionLLaMA-Base/Large-MAE ``epoch_*.pth``,
Pyramid-VisionLLaMA-S/B/L ``best_checkpoint.pth``, or a DeiT3-style plain checkpoint);
its layout is detected. A file that is already in vllama_mm's layout, or holds another
model's weights (an mmpretrain ViT, a Twins, ...), is named as such and not converted. DST gets ``{'state_dict': ..., 'meta': {'vllama_mm': ...}}``
with ``backbone.``-prefixed keys (plus ``head.fc.*`` or the MAE ``neck.*``/``head.*``).
The backbone config that loads it (arch preset or custom dict and the options that
reproduce the official computation) is printed and stored in ``meta['vllama_mm']``.
See docs/checkpoints.md. DiT-LLaMA / SiT-LLaMA training dumps are detected first and
converted by vllama_mm.engine.convert_dit (extra options ``--weights ema|model``,
``--family dit|sit``, ``--num-heads``; see docs/generation.md).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from vllama_mm.engine import convert_dit  # noqa: E402
from vllama_mm.engine.convert import (ROPE_CHOICES, ConversionError,  # noqa: E402
                                      convert_checkpoint, format_backbone_cfg, load_official,
                                      save_converted)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a released VisionLLaMA checkpoint to the vllama_mm layout')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output mmengine checkpoint (.pth)')
    parser.add_argument('--head-dim', type=int, default=None,
                        help='channels per attention head (not stored in the weights); '
                             'default 64 for plain models, 32 for the pyramid')
    parser.add_argument('--rope', choices=ROPE_CHOICES, default=None,
                        help="DeiT3-style plain weights only: which of the authors' two RoPE "
                             "variants trained them: '2d' (default; unscaled positions) or "
                             "'as2d' (their auto_scale: positions x 14/G, AS2DRoPE anchored "
                             'at 14x14). Stored in the meta')
    parser.add_argument('--unsafe', action='store_true',
                        help='load SRC with torch.load(weights_only=False). Only for files '
                             'from a source you trust: unpickling can run arbitrary code')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    files = [a for a in argv if not a.startswith('-')]
    if len(files) >= 2 and osp.exists(files[1]) and osp.exists(files[0]) \
            and osp.samefile(files[0], files[1]):
        print(f'error: DST {files[1]} is SRC; choose another output file', file=sys.stderr)
        return 1
    if convert_dit.is_dit_dump_file(convert_dit.src_of(argv), '--unsafe' in argv):  # DiT/SiT
        return convert_dit.main(argv)  # options: --weights ema|model, --family dit|sit
    args = parse_args(argv)
    try:
        ckpt = load_official(args.src, unsafe=args.unsafe)
        conv = convert_checkpoint(ckpt, head_dim=args.head_dim, rope=args.rope)
        del ckpt
        save_converted(conv, args.dst, source=osp.basename(args.src))
    except (ConversionError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
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


if __name__ == '__main__':
    sys.exit(main())
