"""A toy version of the paper's table 12: RoPE variants at test sizes 0.5x..2x.

A TOY, not the paper's experiment: tiny plain VisionLLaMA models (d 32, 3 layers, 2 heads),
400 CPU steps of batch 32 each, synthetic scenes. Each scene holds two small squares (red =
channel 0, green = channel 1) at random places; the class is where red sits relative to
green (left / right / above / below, by the larger offset). The squares are a patch or so
wide and far apart, so a patch sees at most one of them: without any position encoding the
classes are indistinguishable (attention and the class token are permutation invariant).
Scenes are defined in continuous coordinates, so the same scene renders exactly at any
resolution.

One model per trained RoPE variant (``none``, ``1d``, ``2d``) is trained at ``--train-size``
px (patch 4). ``as2d`` and ``ntk`` are the same network as ``2d`` at the training size (their
training would be identical), so they, and ``ntk_fixed`` (the authors' ``use_ntk``: theta
x ``--ntk-factor`` at every size), are switched into the ``2d`` model at test time, as table
12 switches RoPE without retraining. Every row is evaluated on the same held-out scenes
rendered at 0.5x..2x the training size.

    OMP_NUM_THREADS=1 python tools/analysis/rope_toy_resolution.py \\
        [--steps 400] [--train-size 32] [--out-dir docs/toy_resolution] [--seed 0]

Writes ``rope_toy_resolution.md`` / ``.json`` / ``.png`` into ``--out-dir`` and prints the
table. Fixed seeds: the numbers reproduce on the same machine and torch version.
"""
import argparse
import importlib.util
import json
import logging
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.logging import MMLogger  # noqa: E402

from vllama_mm.models import VisionLLaMA  # noqa: E402

CLASSES = ('left', 'right', 'above', 'below')  # where red is relative to green
HALF = 0.06  # half side of a square, in image units (~1 patch at the training size)
TRAINED = ('none', '1d', '2d')
SWITCHED = {'as2d': '2d', 'ntk': '2d', 'ntk_fixed': '2d'}  # test-time variant -> trained


def sample_scenes(n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``n`` scenes: centres ``[n, 2, 2]`` (object, (x, y)) in [0, 1] and labels ``[n]``.

    Red and green are at least 0.3 apart along the deciding axis and that offset is the
    larger one by a margin, so labels are unambiguous at every resolution.
    """
    centres, labels = [], []
    while len(labels) < n:
        c = HALF + (1 - 2 * HALF) * torch.rand(4 * n, 2, 2, generator=generator)
        d = c[:, 0] - c[:, 1]  # red - green, [m, 2] (dx, dy)
        horiz = d[:, 0].abs() > d[:, 1].abs()
        big, small = torch.where(horiz, d[:, 0].abs(), d[:, 1].abs()), \
            torch.where(horiz, d[:, 1].abs(), d[:, 0].abs())
        ok = (big > 0.3) & (big - small > 0.15)
        lab = torch.where(horiz, (d[:, 0] > 0).long(), 2 + (d[:, 1] > 0).long())
        centres.append(c[ok])
        labels.append(lab[ok])
    return torch.cat(centres)[:n], torch.cat(labels)[:n]


def render(centres: Tensor, size: int) -> Tensor:
    """Scenes ``[n, 2, 2]`` -> images ``[n, 3, size, size]``: each square is the pixels
    whose centre lies within ``HALF`` of its centre (area-exact up to the pixel grid)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres
    n = centres.shape[0]
    img = torch.zeros(n, 3, size, size)
    for obj in range(2):
        cx = centres[:, obj, 0].view(n, 1, 1)
        cy = centres[:, obj, 1].view(n, 1, 1)
        inside = ((coords.view(1, 1, size) - cx).abs() <= HALF) & \
            ((coords.view(1, size, 1) - cy).abs() <= HALF)
        img[:, obj] = inside.float()
    return (img - 0.1) / 0.3  # roughly zero-mean inputs


class ToyClassifier(nn.Module):
    """Tiny plain VisionLLaMA (patch 4, class token) + a linear head."""

    def __init__(self, rope_type: str, train_size: int):
        super().__init__()
        self.backbone = VisionLLaMA(
            dict(embed_dims=32, num_layers=3, num_heads=2, layer_scale_init=0.1),
            img_size=train_size, patch_size=4, rope_type=rope_type, out_type='cls_token')
        self.backbone.init_weights()
        self.head = nn.Linear(32, len(CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x)[0])


def set_rope(model: ToyClassifier, rope_type: str, ntk_factor: float) -> None:
    rope = model.backbone.rope
    rope.rope_type, rope.ntk_factor = rope_type, ntk_factor
    rope._cache.clear()  # tables are derived from the type: rebuilt on the next forward


def train(rope_type: str, images: Tensor, labels: Tensor, steps: int, batch: int,
          train_size: int, seed: int) -> ToyClassifier:
    torch.manual_seed(seed)
    model = ToyClassifier(rope_type, train_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch, ), generator=g)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 250) -> float:
    correct = sum((model(images[i:i + batch]).argmax(-1) == labels[i:i + batch]).sum().item()
                  for i in range(0, images.shape[0], batch))
    return 100.0 * correct / images.shape[0]


def _load_tool():
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'resolution_robustness.py')
    spec = importlib.util.spec_from_file_location('resolution_robustness', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(steps: int = 400, train_size: int = 32, num_train: int = 4000, num_test: int = 1000,
        batch: int = 32, ntk_factor: float = 2.0, seed: int = 0,
        sizes: Optional[Sequence[int]] = None, variants: Sequence[str] = (
            'none', '1d', '2d', 'ntk', 'ntk_fixed', 'as2d')) -> Dict:
    """Train one tiny model per trained variant, evaluate every variant at every size."""
    if train_size % 8:
        raise ValueError(f'--train-size must be a multiple of 8 (patch 4, 0.5x), got {train_size}')
    sizes = list(sizes or [train_size // 2, train_size * 3 // 4, train_size,
                           train_size * 3 // 2, train_size * 2])
    g = torch.Generator().manual_seed(seed)
    train_c, train_y = sample_scenes(num_train, g)
    test_c, test_y = sample_scenes(num_test, g)
    train_x = render(train_c, train_size)
    test_x = {s: render(test_c, s) for s in sizes}
    models: Dict[str, ToyClassifier] = {}
    results: Dict[str, Dict[int, float]] = {}
    timing = {}
    for v in variants:
        trained = SWITCHED.get(v, v)
        if trained not in TRAINED:
            raise ValueError(f'unknown variant {v!r}; choose from {TRAINED + tuple(SWITCHED)}')
        if trained not in models:
            t0 = time.time()
            models[trained] = train(trained, train_x, train_y, steps, batch, train_size, seed)
            timing[trained] = round(time.time() - t0, 1)
            print(f'[toy] trained rope {trained!r}: {steps} steps in {timing[trained]} s',
                  flush=True)
        model = models[trained]
        set_rope(model, v, ntk_factor)
        results[v] = {s: accuracy(model, test_x[s], test_y) for s in sizes}
        set_rope(model, trained, ntk_factor)
        print(f'[toy] {v:>9}: ' + '  '.join(f'{s}px {a:5.1f}' for s, a in results[v].items()),
              flush=True)
    return dict(results=results, sizes=sizes, train_size=train_size, steps=steps,
                num_train=num_train, num_test=num_test, batch=batch, ntk_factor=ntk_factor,
                seed=seed, train_seconds=timing, torch=torch.__version__)


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=400, help='training steps per model')
    p.add_argument('--train-size', type=int, default=32, help='training resolution (px)')
    p.add_argument('--num-train', type=int, default=4000)
    p.add_argument('--num-test', type=int, default=1000)
    p.add_argument('--ntk-factor', type=float, default=2.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out-dir', default=osp.join('work_dirs', 'rope_toy_resolution'))
    args = p.parse_args(argv)
    if args.steps <= 0 or args.num_train <= 0 or args.num_test <= 0:
        p.error('--steps, --num-train and --num-test must be positive')
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights report
    summary = run(args.steps, args.train_size, args.num_train, args.num_test,
                  ntk_factor=args.ntk_factor, seed=args.seed)
    tool = _load_tool()
    os.makedirs(args.out_dir, exist_ok=True)
    table = tool.markdown_table(summary['results'], summary['sizes'], args.train_size)
    base = osp.join(args.out_dir, 'rope_toy_resolution')
    with open(base + '.md', 'w') as f:
        f.write(table + '\n')
    with open(base + '.json', 'w') as f:
        json.dump({**summary, 'results': {k: {str(s): a for s, a in v.items()}
                                          for k, v in summary['results'].items()}}, f, indent=2)
    tool.plot(summary['results'], summary['sizes'], args.train_size,
              f'toy: 4-class spatial layout, tiny VisionLLaMA, {args.steps} steps '
              f'at {args.train_size} px', base + '.png')
    print('\n' + table)
    print(f'[toy] wrote {base}.md/.json/.png')
    return summary


if __name__ == '__main__':
    main()
