"""Forward before/after a revision and activation-checkpointing modes of our backbones,
built from the classes (no config, no mmpretrain needed), paired per round.

* ``forward``: no-grad forward of each backbone, this checkout vs the ``vllama_mm/models``
  of ``--ref REV`` (the same weights), fp32 and bf16 autocast: per-round ratio
  after / before (median and interquartile range);
* ``cp``: the training step (forward, mean-square loss, backward) with ``with_cp`` =
  none / full / selective: per-round time ratio to none and peak tensor bytes (the
  exact CPU measurement of ``tools/benchmark.py``).

    python tools/analysis/speed_features.py --ref c4928f5 --repeats 7
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))
import benchmark as bench  # noqa: E402  (ref models, peak memory, paired ratios)

ARCHS = {'VisionLLaMA-B': ('VisionLLaMA', 'b'), 'Pyramid-S': ('PyramidVisionLLaMA', 's'),
         'Pyramid-B': ('PyramidVisionLLaMA', 'b')}


def build(module, name: str) -> torch.nn.Module:
    cls, arch = ARCHS[name]
    model = getattr(module, cls)(arch, img_size=224)
    model.init_weights()
    return model


def _time(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _ratio_text(a: List[float], b: List[float]) -> str:
    med, q1, q3 = bench._paired_ratios(a, b)
    return f'{med:.3f} [{q1:.3f}-{q3:.3f}]'


def forward_rows(ref_module, args) -> List[str]:
    import vllama_mm.models as cur
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        new = build(cur, name).eval()
        old = build(ref_module, name).eval()
        old.load_state_dict(new.state_dict())
        x = torch.randn(args.batch, 3, 224, 224)
        for amp in (False, True):
            def run(m):
                def call():
                    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=amp):
                        m(x)
                return call
            fns = {'new': run(new), 'old': run(old)}
            for f in fns.values():
                f()
            t: Dict[str, List[float]] = {k: [] for k in fns}
            for r in range(args.repeats):
                for k in (('new', 'old') if r % 2 == 0 else ('old', 'new')):
                    t[k].append(_time(fns[k]))
            rows.append(f'| {name} | {"bf16" if amp else "fp32"} | '
                        f'{statistics.median(t["old"]) * 1e3:.0f} | '
                        f'{statistics.median(t["new"]) * 1e3:.0f} | '
                        f'{_ratio_text(t["new"], t["old"])} |')
            print(rows[-1], flush=True)
    return rows


def cp_rows(args) -> List[str]:
    import vllama_mm.models as cur
    rows = []
    mem = bench.PeakMemory(torch.device('cpu'))
    for name in args.models:
        torch.manual_seed(0)
        base = build(cur, name).train()
        x = torch.randn(args.batch, 3, 224, 224)
        models = {}
        for mode in ('none', 'full', 'selective'):
            models[mode] = copy.deepcopy(base)
            models[mode].with_cp = mode

        def step(m):
            def call():
                with torch.autocast('cpu', torch.bfloat16, enabled=args.amp):
                    outs = m(x)
                sum(o.float().pow(2).mean() for o in outs).backward()
                m.zero_grad(set_to_none=True)
            return call
        fns = {k: step(m) for k, m in models.items()}
        peaks = {k: mem.measure(f) for k, f in fns.items()}
        t: Dict[str, List[float]] = {k: [] for k in fns}
        order = list(fns)
        for r in range(args.repeats):
            for k in order[r % 3:] + order[:r % 3]:
                t[k].append(_time(fns[k]))
        for k in fns:
            rows.append(f'| {name} | {k} | {statistics.median(t[k]) * 1e3:.0f} | '
                        f'{_ratio_text(t["none"], t[k]) if k != "none" else "1"} | '
                        f'{peaks[k] / 2 ** 20:.0f} | {peaks[k] / peaks["none"]:.2f} |')
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ref', default=None, help='revision for the forward before/after')
    p.add_argument('--models', nargs='+', default=list(ARCHS), choices=list(ARCHS))
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--amp', action='store_true', help='bf16 autocast for the cp rows')
    p.add_argument('--only', choices=['forward', 'cp'], default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from vllama_mm.engine.console import quiet_console
    quiet_console()
    if args.only != 'cp':
        if not args.ref:
            raise SystemExit('speed_features: the forward rows need --ref REV')
        ref_module, short = bench.load_ref_models(args.ref)
        print(f'| model | precision | forward ms, {short} | forward ms, now | '
              f'speed-up [IQR] |\n|---|---|---|---|---|')
        forward_rows(ref_module, args)
    if args.only != 'forward':
        print('| model | with_cp | train step ms | time vs none [IQR] | peak MiB | '
              'peak vs none |\n|---|---|---|---|---|---|')
        cp_rows(args)


if __name__ == '__main__':
    main()
