"""Forward before/after a revision and activation-checkpointing modes of our backbones,
built from the classes (no config, no mmpretrain needed), paired per round.

* ``forward``: no-grad forward of each backbone, this checkout vs the ``vllama_mm/models``
  of ``--ref REV`` (the same weights), fp32 and bf16 autocast: per-round ratio
  after / before (median and interquartile range);
* ``cp``: the training step (forward, mean-square loss, backward) with ``with_cp`` =
  none / full / selective: per-round time ratio to none and peak tensor bytes (the
  exact CPU measurement of ``tools/benchmark.py``);
* ``rope``: the q and k rotation alone at ViT-B size ([4, 12, 197, 64] each, views of
  one qkv projection as in the attention): the former ``unbind``/``stack`` form, the
  current pair swap, the pair swap with tables cast to the activations' dtype, and q
  and k rotated in one call; time and error against a float64 rotation.

    python tools/analysis/speed_features.py --ref c4928f5 --repeats 7
    python tools/analysis/speed_features.py --only rope --repeats 25
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


def rope_rows(args) -> List[str]:
    from vllama_mm.models.rope import RoPE2D, apply_rope, pair_signs, swap_pairs

    def former(x, t):  # the rotation before this change: unbind, negate, stack
        a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.addcmul(x * t[0], torch.stack((-b, a), dim=-1).flatten(-2),
                             t[1]).to(x.dtype)

    def low_tables(x, t):  # tables in the activations' dtype
        cos, sin = t[0].to(x.dtype), t[1].to(x.dtype)
        return torch.addcmul(x * cos, swap_pairs(x), pair_signs(sin))
    table = RoPE2D(64, (14, 14), 'as2d').grid(14, 14, num_prefix=1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        qkv = torch.randn(4, 197, 3, 12, 64).to(dtype).permute(2, 0, 3, 1, 4)  # [3,B,h,N,Hc]
        q, k = qkv[0], qkv[1]
        variants = {
            'former (unbind/neg/stack)': lambda: (former(q, table), former(k, table)),
            'pair swap (current)': lambda: (apply_rope(q, table), apply_rope(k, table)),
            'pair swap, tables in x dtype': lambda: (low_tables(q, table), low_tables(k, table)),
            'q and k in one call': lambda: tuple(apply_rope(qkv[:2], table).unbind(0)),
        }
        qd, kd, cos, sin = q.double(), k.double(), table[0].double(), table[1].double()
        ref = [torch.stack((z[..., 0::2] * cos[:, 0::2] - z[..., 1::2] * sin[:, 0::2],
                            z[..., 0::2] * sin[:, 0::2] + z[..., 1::2] * cos[:, 0::2]),
                           -1).flatten(-2) for z in (qd, kd)]
        t: Dict[str, List[float]] = {n: [] for n in variants}
        for r in range(args.repeats):
            for n, f in variants.items():
                t[n].append(_time(f))
        for n, f in variants.items():
            err = torch.cat([(o.double() - e).flatten() for o, e in zip(f(), ref)])
            rms = (err.pow(2).mean() / torch.cat([e.flatten() for e in ref]).pow(2).mean()).sqrt()
            rows.append(f'| {str(dtype)[6:]} | {n} | {statistics.median(t[n]) * 1e3:.2f} | '
                        f'{_ratio_text(t[n], t["former (unbind/neg/stack)"])} | '
                        f'{err.abs().max():.2e} | {rms:.2e} |')
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ref', default=None, help='revision for the forward before/after')
    p.add_argument('--models', nargs='+', default=list(ARCHS), choices=list(ARCHS))
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--amp', action='store_true', help='bf16 autocast for the cp rows')
    p.add_argument('--only', choices=['forward', 'cp', 'rope'], default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from vllama_mm.engine.console import quiet_console
    quiet_console()
    if args.only == 'rope':
        print('| dtype | q, k rotation | ms | speed-up vs former [IQR] | max abs error | '
              'rms relative error |\n|---|---|---|---|---|---|')
        rope_rows(args)
        return
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
