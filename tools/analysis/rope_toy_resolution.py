"""A toy version of the paper's table 12: RoPE variants at test sizes 0.5x..2x, over seeds.

A TOY, not the paper's experiment: tiny plain VisionLLaMA models (d 32, 3 layers, 2 heads),
400 CPU steps of batch 32 each, synthetic scenes. Each scene holds two small squares (red =
channel 0, green = channel 1) at random places; the class is where red sits relative to
green (left / right / above / below, by the larger offset). The squares are a patch or so
wide and far apart, so a patch sees at most one of them: without any position encoding the
classes are indistinguishable (attention and the class token are permutation invariant).
Scenes are defined in continuous coordinates, so the same scene renders exactly at any
resolution.

Per seed, one model per *training-changing* variant is trained at ``--train-size`` px
(patch 4): ``none``, ``1d``, ``2d``, ``mixed`` (learnable per-head frequencies, theta 10 as
rope-vit) and ``dinov3`` (normalised coordinates, trained with DINOv3's coordinate
augmentation ``rescale_coords=2``; off in eval). The test-time variants ``as2d``, ``ntk``,
``ntk_fixed`` (theta x ``--ntk-factor``) and ``yarn`` train exactly as ``2d`` (they equal
it at the training size), so they are switched into that seed's ``2d`` model, as table 12
switches RoPE without retraining. Every row is evaluated on held-out scenes rendered at
0.5x..2x the training size. A seed fixes the scenes (train and test), the initialisation
and the batch order; the table gives the mean over seeds and the min-max range.

    OMP_NUM_THREADS=1 python tools/analysis/rope_toy_resolution.py \\
        [--seeds 0 1 2] [--steps 400] [--train-size 32] [--out-dir docs/toy_resolution]

Writes ``rope_toy_resolution.md`` / ``.json`` (per-seed numbers, mean, std, min, max) /
``.png`` (mean with the min-max band) into ``--out-dir`` and prints the table. Each trained
model's results are also kept in ``<out-dir>/runs/<variant>_seed<k>.json`` together with
the settings and code digest that produced them; a rerun with the same settings and code
reuses them (``--fresh`` retrains), so an interrupted study resumes. The numbers reproduce
on the same machine and torch version.
"""
import argparse
import functools
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
from vllama_mm.models.rope import ROPE_TYPES  # noqa: E402

CLASSES = ('left', 'right', 'above', 'below')  # where red is relative to green
HALF = 0.06  # half side of a square, in image units (~1 patch at the training size)
# variants that change training: one model each per seed
TRAINED = ('none', '1d', '2d', 'mixed', 'dinov3')
# test-time variants: identical to 2d at the training size, switched into the 2d model
SWITCHED = {'as2d': '2d', 'ntk': '2d', 'ntk_fixed': '2d', 'yarn': '2d'}
VARIANTS = ('none', '1d', '2d', 'as2d', 'ntk', 'ntk_fixed', 'yarn', 'mixed', 'dinov3')  # rows
# backbone arguments of the trained variants beyond rope_type (the reference codes' choices:
# rope-vit trains RoPE-Mixed with theta 10; DINOv3 trains with rescale_coords=2, base 100)
TRAIN_KWARGS: Dict[str, Dict] = {
    'mixed': dict(rope_theta=10.0),
    'dinov3': dict(rope_theta=100.0, rope_cfg=dict(rescale_coords=2.0)),
}


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
            img_size=train_size, patch_size=4, rope_type=rope_type, out_type='cls_token',
            **TRAIN_KWARGS.get(rope_type, {}))
        self.backbone.init_weights()
        self.head = nn.Linear(32, len(CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, S, S] -> logits [B, 4]
        return self.head(self.backbone(x)[0])


def train(rope_type: str, images: Tensor, labels: Tensor, steps: int, batch: int,
          train_size: int, seed: int) -> ToyClassifier:
    """AdamW + one-cycle schedule from seed ``seed`` (init and batch order); eval mode out."""
    torch.manual_seed(seed)
    model = ToyClassifier(rope_type, train_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    model.train()  # dinov3: coordinate augmentation on
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch, ), generator=g)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()  # dinov3: augmentation off, deterministic tables


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


def spread(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample std (n - 1; 0 for one seed), min and max of per-seed accuracies."""
    if not values:
        raise ValueError('no per-seed values to summarise')
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return dict(mean=mean, std=std, min=min(values), max=max(values), n=n)


def aggregate(per_seed: Dict[str, Dict[int, Dict[int, float]]]) -> Dict[str, Dict[int, Dict]]:
    """``{variant: {seed: {size: acc}}}`` -> ``{variant: {size: spread(...)}}``."""
    out: Dict[str, Dict[int, Dict]] = {}
    for v, seeds in per_seed.items():
        sizes = sorted({s for row in seeds.values() for s in row})
        out[v] = {s: spread([row[s] for row in seeds.values() if s in row]) for s in sizes}
    return out


def spread_table(stats: Dict[str, Dict[int, Dict]], sizes: Sequence[int], base: int) -> str:
    """``| RoPE | 16 | 32 (train) | ...`` rows of ``mean (min-max)`` top-1 (%)."""
    head = [f'{s} (train)' if s == base else str(s) for s in sizes]
    lines = ['| RoPE \\ test size (px) | ' + ' | '.join(head) + ' |',
             '|---|' + '---:|' * len(sizes)]
    for v, row in stats.items():
        cells = [f"{row[s]['mean']:.1f} ({row[s]['min']:.1f}-{row[s]['max']:.1f})"
                 if s in row else 'n/a' for s in sizes]
        lines.append(f'| {v} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """sha1 of the code that decides the numbers: the model code (vllama_mm/models/*.py)
    and this script's data, model, training and evaluation functions (not its output
    formatting), so cached results of other code are not reused."""
    import glob
    import hashlib
    import inspect
    h = hashlib.sha1()
    for path in sorted(glob.glob(osp.join(ROOT, 'vllama_mm', 'models', '*.py'))):
        with open(path, 'rb') as f:
            h.update(f.read())
    for obj in (sample_scenes, render, ToyClassifier, train, accuracy):
        h.update(inspect.getsource(obj).encode())
    h.update(repr((CLASSES, HALF, sorted(TRAIN_KWARGS.items()))).encode())
    return h.hexdigest()[:16]


def _settings(trained: str, evaluated: Sequence[str], seed: int, **kw) -> Dict:
    """Everything that decides one trained model's numbers (the cache key)."""
    return dict(trained=trained, evaluated=sorted(evaluated), seed=seed,
                train_kwargs=TRAIN_KWARGS.get(trained, {}), torch=torch.__version__,
                code=code_digest(), **kw)


def run(steps: int = 400, train_size: int = 32, num_train: int = 4000, num_test: int = 1000,
        batch: int = 32, ntk_factor: float = 2.0, seeds: Sequence[int] = (0, 1, 2),
        sizes: Optional[Sequence[int]] = None, variants: Sequence[str] = VARIANTS,
        cache_dir: Optional[str] = None, fresh: bool = False) -> Dict:
    """Per seed: train one tiny model per trained variant, evaluate every requested variant
    at every size; return per-seed numbers and their spread."""
    if train_size % 8:
        raise ValueError(f'--train-size must be a multiple of 8 (patch 4, 0.5x), got {train_size}')
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds must be distinct, got {list(seeds)}')
    unknown = [v for v in variants if SWITCHED.get(v, v) not in TRAINED]
    if unknown:
        raise ValueError(f'unknown variant(s) {unknown}; choose from {VARIANTS}')
    missing = sorted({v for v in variants if v not in ROPE_TYPES})
    if missing:
        raise ValueError(f'rope_type {missing} not in this vllama_mm (has {ROPE_TYPES}); '
                         'drop them from --variants')
    sizes = list(sizes or [train_size // 2, train_size * 3 // 4, train_size,
                           train_size * 3 // 2, train_size * 2])
    tool = _load_tool()
    # trained variant -> the variants evaluated on its model (itself first)
    plan: Dict[str, List[str]] = {}
    for v in variants:
        plan.setdefault(SWITCHED.get(v, v), []).append(v)
    common = dict(steps=steps, train_size=train_size, num_train=num_train, num_test=num_test,
                  batch=batch, ntk_factor=ntk_factor, sizes=sizes)
    per_seed: Dict[str, Dict[int, Dict[int, float]]] = {v: {} for v in variants}
    timing: Dict[str, Dict[int, Optional[float]]] = {t: {} for t in plan}
    for seed in seeds:
        data = None  # rendered lazily: a fully cached seed renders nothing
        for trained, evaluated in plan.items():
            settings = _settings(trained, evaluated, seed, **common)
            path = None if cache_dir is None else \
                osp.join(cache_dir, 'runs', f'{trained}_seed{seed}.json')
            cached = None
            if path is not None and not fresh and osp.isfile(path):
                with open(path) as f:
                    cached = json.load(f)
                if cached.get('settings') != settings:
                    cached = None  # other settings: retrain
            if cached is None:
                if data is None:
                    g = torch.Generator().manual_seed(seed)
                    train_c, train_y = sample_scenes(num_train, g)
                    test_c, test_y = sample_scenes(num_test, g)
                    data = (render(train_c, train_size), train_y,
                            {s: render(test_c, s) for s in sizes}, test_y)
                train_x, train_y, test_x, test_y = data
                t0 = time.time()
                model = train(trained, train_x, train_y, steps, batch, train_size, seed)
                seconds = round(time.time() - t0, 1)
                results, state = {}, tool.rope_state(model.backbone)
                for v in evaluated:
                    if v != trained:  # a test-time switch; the trained one as trained
                        tool.set_rope_type(model.backbone, v, ntk_factor)
                    results[v] = {str(s): accuracy(model, test_x[s], test_y) for s in sizes}
                    tool.restore_rope(model.backbone, state)
                cached = dict(settings=settings, train_seconds=seconds, results=results)
                if path is not None:
                    os.makedirs(osp.dirname(path), exist_ok=True)
                    with open(path, 'w') as f:
                        json.dump(cached, f, indent=1)
                note = f'{steps} steps in {seconds} s'
            else:
                note = f'reused {osp.relpath(path)}'
            timing[trained][seed] = cached['train_seconds']
            for v in evaluated:
                per_seed[v][seed] = {s: float(cached['results'][v][str(s)]) for s in sizes}
                print(f'[toy] seed {seed} {v:>9} ({note}): ' + '  '.join(
                    f'{s}px {per_seed[v][seed][s]:5.1f}' for s in sizes), flush=True)
    stats = aggregate(per_seed)
    return dict(results={v: {s: st['mean'] for s, st in row.items()} for v, row in stats.items()},
                stats=stats, per_seed=per_seed, seeds=list(seeds), sizes=sizes,
                train_size=train_size, steps=steps, num_train=num_train, num_test=num_test,
                batch=batch, ntk_factor=ntk_factor, train_kwargs=TRAIN_KWARGS,
                train_seconds=timing, torch=torch.__version__)


def write_outputs(summary: Dict, out_dir: str) -> str:
    """``rope_toy_resolution.md/.json/.png`` in ``out_dir``; returns the table."""
    tool = _load_tool()
    os.makedirs(out_dir, exist_ok=True)
    sizes, base = summary['sizes'], summary['train_size']
    table = spread_table(summary['stats'], sizes, base)
    secs = sorted(t for row in summary['train_seconds'].values() for t in row.values())
    note = (f"Top-1 (%) on {summary['num_test']} held-out scenes, mean over seeds "
            f"{summary['seeds']} with the min-max over seeds in parentheses; "
            f"{summary['steps']} steps of batch {summary['batch']} at {base} px per model "
            f"(median {secs[len(secs) // 2]} s of training per model, wall clock, one thread of a "
            f"2-core machine shared with other jobs), torch {summary['torch']}.")
    stem = osp.join(out_dir, 'rope_toy_resolution')
    with open(stem + '.md', 'w') as f:
        f.write(note + '\n\n' + table + '\n')

    def keyed(d):  # json keys are strings
        return {str(k): keyed(v) if isinstance(v, dict) else v for k, v in d.items()}
    with open(stem + '.json', 'w') as f:
        json.dump(keyed(summary), f, indent=1)
    bands = {v: {s: (st['min'], st['max']) for s, st in row.items()}
             for v, row in summary['stats'].items()}
    tool.plot(summary['results'], sizes, base,
              f"toy: 4-class spatial layout, tiny VisionLLaMA, {summary['steps']} steps at "
              f"{base} px\nmean and min-max over {len(summary['seeds'])} seeds",
              stem + '.png', bands=bands)
    return table


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='one model per trained variant and seed (default 0 1 2)')
    p.add_argument('--steps', type=int, default=400, help='training steps per model')
    p.add_argument('--train-size', type=int, default=32, help='training resolution (px)')
    p.add_argument('--num-train', type=int, default=4000)
    p.add_argument('--num-test', type=int, default=1000)
    p.add_argument('--ntk-factor', type=float, default=2.0)
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS,
                   help='table rows (trained ones train a model per seed)')
    p.add_argument('--out-dir', default=osp.join('work_dirs', 'rope_toy_resolution'))
    p.add_argument('--fresh', action='store_true',
                   help='retrain even where <out-dir>/runs holds results of the same settings')
    args = p.parse_args(argv)
    if args.steps <= 0 or args.num_train <= 0 or args.num_test <= 0:
        p.error('--steps, --num-train and --num-test must be positive')
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f'--seeds must be distinct, got {args.seeds}')
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights report
    try:
        summary = run(args.steps, args.train_size, args.num_train, args.num_test,
                      ntk_factor=args.ntk_factor, seeds=args.seeds, variants=args.variants,
                      cache_dir=args.out_dir, fresh=args.fresh)
    except ValueError as e:
        p.error(str(e))
    table = write_outputs(summary, args.out_dir)
    print('\n' + table)
    print(f"[toy] wrote {osp.join(args.out_dir, 'rope_toy_resolution')}.md/.json/.png")
    return summary


if __name__ == '__main__':
    main()
