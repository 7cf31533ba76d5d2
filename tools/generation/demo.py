"""CPU demo: train tiny DiT-LLaMA and SiT-LLaMA on generated class images, sample a grid
of each, and measure how often a sample is nearest (L2) to its own class's mean image.

    python tools/generation/demo.py [--out-dir work_dirs/generation_demo] [--iters N]

Runs the tiny configs of configs/generation through mmengine's Runner (as tools/train.py),
then samples the EMA weights of the last checkpoint (DDPM 100 steps / SDE 100 steps) with
classifier-free guidance 4 (the grid) and without (1.0). Chance is 1 / number of classes.
About four minutes in all on two idle CPU cores.
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import torch  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from vllama_mm.engine.checkpoint import allow_mmengine_checkpoints  # noqa: E402

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = {
    'DiT-LLaMA': 'configs/generation/dit_llama/dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py',
    'SiT-LLaMA': 'configs/generation/sit_llama/sit-llama-tiny-p4_1xb32-300i_synthetic-32px.py',
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Tiny DiT-LLaMA / SiT-LLaMA CPU demo')
    p.add_argument('--iters', type=int, default=None,
                   help="training iterations per model (default: the config's, DiT 500, "
                   'SiT 300)')
    p.add_argument('--n-per-class', type=int, default=16, help='samples per class')
    p.add_argument('--cfg-scale', type=float, default=4.0,
                   help='classifier-free guidance of the grid (also measured at 1.0)')
    p.add_argument('--out-dir', default='work_dirs/generation_demo')
    p.add_argument('--families', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


class _TrainProgress(Hook):
    """A progress bar over the training iterations, with the running loss."""

    def __init__(self, total: int, name: str):
        self.total, self.name, self.losses = total, name, []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))
        i = runner.iter + 1
        if i % 10 == 0 or i == self.total:
            recent = sum(self.losses[-10:]) / len(self.losses[-10:])
            done = int(30 * i / self.total)
            print(f'\r[{self.name}] train [{"#" * done}{"." * (30 - done)}] {i}/{self.total} '
                  f'loss {recent:.4f}', end='' if i < self.total else '\n', flush=True)


def nearest_mean_accuracy(images: torch.Tensor, labels: torch.Tensor,
                          means: torch.Tensor) -> float:
    """Fraction of images [N, 3, H, W] whose nearest (L2) class mean [K, 3, H, W] is
    their own label's."""
    d = torch.cdist(images.flatten(1), means.flatten(1))  # [N, K]
    return (d.argmin(1) == labels).float().mean().item()


def run(name: str, args: argparse.Namespace) -> float:
    from mmengine.config import Config

    from vllama_mm.engine.runner_utils import build_runner, prepare_cfg
    from vllama_mm.generation.apis import save_grid
    from vllama_mm.generation.datasets import SyntheticClassImages
    config = osp.join(ROOT, CONFIGS[name])
    work_dir = osp.join(args.out_dir, name.lower())
    iters = args.iters or Config.fromfile(config).train_cfg.max_iters
    ns = argparse.Namespace(launcher='none', work_dir=work_dir, amp=False, auto_scale_lr=False,
                            resume=None, no_validate=True, config=config,
                            cfg_options={'train_cfg.max_iters': iters,
                                         'default_hooks.checkpoint.interval': iters,
                                         'log_level': 'WARNING',
                                         'randomness.seed': args.seed})
    cfg = prepare_cfg(Config.fromfile(config), ns, mode='train')
    t0 = time.time()
    runner = build_runner(cfg)
    bar = _TrainProgress(iters, name)
    runner.register_hook(bar)
    runner.train()
    train_s = time.time() - t0
    model = runner.model
    allow_mmengine_checkpoints()  # safe loading of the run's own mmengine checkpoint
    ckpt = torch.load(osp.join(work_dir, f'iter_{iters}.pth'), map_location='cpu',
                      weights_only=True)
    model.load_state_dict(ckpt['state_dict'], strict=True)  # the EMA weights
    ds_cfg = cfg.train_dataloader.dataset
    data = SyntheticClassImages(ds_cfg.num_classes, ds_cfg.num_per_class, ds_cfg.image_size,
                                ds_cfg.seed, flip=False)
    k = ds_cfg.num_classes
    labels = torch.arange(k).repeat_interleave(args.n_per_class)
    means = data.class_means()
    accs = {}
    t0 = time.time()
    for scale in sorted({1.0, args.cfg_scale}):
        images = model.sample(labels, cfg_scale=scale, progress=True,
                              generator=torch.Generator().manual_seed(args.seed))
        accs[scale] = nearest_mean_accuracy(images, labels, means)
        if scale == args.cfg_scale:
            grid = osp.join(args.out_dir, f'{name.lower()}_grid.png')
            save_grid(images, grid, nrow=args.n_per_class)
    sample_s = time.time() - t0
    acc = accs[args.cfg_scale]
    # a reference point: the real training images themselves
    real = torch.stack([data[i]['inputs'] for i in range(len(data))])
    real_acc = nearest_mean_accuracy(real, torch.tensor(data.labels), data.class_means())
    print(f'[{name}] trained {iters} iters in {train_s:.0f} s, sampled '
          f'{len(accs)} x {len(labels)} in {sample_s:.0f} s -> {grid} '
          f'(guidance {args.cfg_scale:g})')
    for scale, a in accs.items():
        print(f'[{name}] guidance {scale:g}: {a:.1%} of samples are nearest their own class '
              f'mean image (chance {1 / k:.1%}; real training images {real_acc:.1%})')
    return acc


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    results = {name: run(name, args) for name in args.families}
    print(f'summary (guidance {args.cfg_scale:g}): '
          + ', '.join(f'{n} {a:.1%}' for n, a in results.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
