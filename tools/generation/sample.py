"""Sample a PNG grid from a trained (or converted released) DiT-LLaMA / SiT-LLaMA.

    python tools/generation/sample.py CONFIG CKPT --classes 207 360 387 974 88 979 417 279 \
        --n-per-class 4 --out samples.png [--sampler ddpm --steps 250] [--cfg-scale 4.0]

Rows are classes, columns samples. CKPT: a tools/train.py checkpoint (EMA weights by
default) or the output of tools/model_converters/official2vllama.py.
"""
import argparse
import pickle
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Sample a class grid (PNG) from a generator')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--classes', type=int, nargs='+', default=[0, 1, 2, 3])
    p.add_argument('--n-per-class', type=int, default=4)
    p.add_argument('--out', default='samples.png', help='PNG grid path')
    p.add_argument('--sampler', default=None,
                   help='DiT: ddpm | ddim; SiT: sde | euler | heun | dopri5 (config default)')
    p.add_argument('--steps', type=int, default=None,
                   help="sampling steps as the references count them (config default): "
                        "DiT ddim N = DiT's ddimN spacing; SiT euler/heun N = N time "
                        "points, N - 1 steps; SiT sde N = N evaluations")
    p.add_argument('--cfg-scale', type=float, default=1.0,
                   help='classifier-free guidance scale (1.0: none, as the paper FIDs)')
    p.add_argument('--latent-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='latent grid to sample (default: the training size)')
    p.add_argument('--weights', choices=['ema', 'raw'], default='ema')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vllama_mm.generation.apis import load_generator, save_grid
    try:
        model, _ = load_generator(args.config, args.checkpoint, args.weights, args.device,
                                  args.cfg_options)
        n = model.denoiser.num_classes
        bad = [c for c in args.classes if not 0 <= c < n]
        if bad:
            raise ValueError(f'--classes {bad} outside 0..{n - 1}')
        labels = torch.tensor([c for c in args.classes for _ in range(args.n_per_class)],
                              device=args.device)
        sampler = {}
        if args.sampler:
            sampler['type'] = args.sampler
        if args.steps:
            sampler['num_steps'] = args.steps
        gen = torch.Generator(args.device).manual_seed(args.seed)
        images = model.sample(labels, latent_hw=args.latent_size, cfg_scale=args.cfg_scale,
                              generator=gen, progress=True, **sampler)
        save_grid(images, args.out, nrow=args.n_per_class)
    except (ValueError, OSError, ImportError, SyntaxError, RuntimeError,
            pickle.UnpicklingError) as e:  # refused, truncated, damaged, non-finite files
        print(f'error: {" ".join(str(e).split())[:800]}', file=sys.stderr)
        return 1
    print(f'wrote {args.out}: {len(args.classes)} classes x {args.n_per_class} samples')
    return 0


if __name__ == '__main__':
    sys.exit(main())
