"""Forward against the peers and before/after a revision, activation-checkpointing modes
and the RoPE rotation of our backbones, paired per round (process CPU time, one thread).

* ``peers``: no-grad forward of the three default pairs (VisionLLaMA-B vs ViT-B,
  Pyramid-S / -B vs Twins SVT-S / -B, built from the configs of ``tools/benchmark.py``),
  fp32 and bf16 autocast in the same run: per-round ratio ours / peer (throughput;
  median and interquartile range), the same per multiply-add, and with ``--ref REV``
  our model built from the ``vllama_mm/models`` of REV, timed in the same rounds;
* ``forward``: no-grad forward of each backbone, this checkout vs the ``vllama_mm/models``
  of ``--ref REV`` (the same weights), fp32 and bf16 autocast: per-round ratio
  after / before (median and interquartile range);
* ``cp``: the training step (forward, mean-square loss, backward) of the pyramid configs
  with ``with_cp`` = none / full / selective and full on the first stage(s) only
  (:data:`STAGE_CP`) beside the Twins SVT of the same size (which
  has no activation checkpointing in mmpretrain 1.2) in the same rounds: per-round time
  ratio to none and peak tensor bytes (the exact CPU measurement of
  ``tools/benchmark.py``), also against SVT's and SVT's per multiply-add;
* ``rope``: the q and k rotation alone at ViT-B and Pyramid stage-1 sizes (views of one
  qkv projection as in the attention): the former ``unbind``/``stack`` form, the
  float32-table form of the previous code and the current :func:`apply_rope`; time and
  error against a float64 rotation.

    python tools/analysis/speed_features.py --only peers --ref 516164b --repeats 9
    python tools/analysis/speed_features.py --only cp --amp --repeats 7
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
from torch.utils.checkpoint import CheckpointPolicy

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))
import benchmark as bench  # noqa: E402  (ref models, peak memory, paired ratios)
import vllama_mm.models.backbone_utils as backbone_utils  # noqa: E402

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


#: (name, our config, peer config, peer name): the default pairs of tools/benchmark.py
PAIRS = [(n, ours, peer, pn) for n, pn, (ours, peer) in zip(
    ('VisionLLaMA-B', 'Pyramid-S', 'Pyramid-B'), ('ViT-B', 'SVT-S', 'SVT-B'), bench.DEFAULT_PAIRS)]


def _backbone(config: str, models_module=None) -> torch.nn.Module:
    """``cfg.model.backbone`` of ``config`` with its own ``init_weights()`` (as
    ``tools/benchmark.py``); ``models_module``: build our class from a ``--ref`` tree."""
    path = config if '::' in config else osp.join(ROOT, config)  # mmpretrain:: or ours
    return bench._init(bench.gf.build_backbone(bench.gf.load_config(path), models_module))


def _macs(model: torch.nn.Module) -> int:
    return bench.gf.count_complexity(model, (224, 224)).flops


def _rounds(fns: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, List[float]]:
    """One warm-up call each, then ``repeats`` rounds timing every call once, in an order
    rotated from round to round."""
    for f in fns.values():
        f()
    t: Dict[str, List[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            t[k].append(_time(fns[k]))
    return t


def _scaled(a: List[float], b: List[float], factor: float) -> str:
    med, q1, q3 = bench._paired_ratios(a, b)
    return f'{med * factor:.3f} [{q1 * factor:.3f}-{q3 * factor:.3f}]'


def peer_rows(ref_module, args) -> List[str]:
    """No-grad forward, ours vs the peer (and vs our ``--ref`` twin), fp32 and bf16."""
    rows = []
    for name, ours_cfg, peer_cfg, peer_name in PAIRS:
        if name not in args.models:
            continue
        torch.manual_seed(0)
        models = {'ours': _backbone(ours_cfg), 'peer': _backbone(peer_cfg)}
        if ref_module is not None:
            models['ref'] = _backbone(ours_cfg, ref_module)
            models['ref'].load_state_dict(models['ours'].state_dict())
        mac_ratio = _macs(models['ours']) / _macs(models['peer'])
        for m in models.values():
            m.eval()  # (mmpretrain's BaseBackbone.train returns None: no chaining)
        x = torch.randn(args.batch, 3, 224, 224)
        fns = {}
        for amp in (False, True):
            for k, m in models.items():
                def call(m=m, amp=amp):
                    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=amp):
                        m(x)
                fns[(k, amp)] = call
        t = _rounds(fns, args.repeats)
        for amp in (False, True):
            ours, peer = t[('ours', amp)], t[('peer', amp)]
            vs_ref = _ratio_text(ours, t[('ref', amp)]) if ref_module is not None else '—'
            rows.append(f'| {name} vs {peer_name} | {"bf16" if amp else "fp32"} | '
                        f'{statistics.median(ours) * 1e3:.0f} | '
                        f'{statistics.median(peer) * 1e3:.0f} | {_ratio_text(ours, peer)} | '
                        f'{mac_ratio:.3f} | {_scaled(ours, peer, mac_ratio)} | {vs_ref} |')
            print(rows[-1], flush=True)
    return rows


def _save_all(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective-checkpointing policy of the overhead control: keep every output (in-place
    and factory ops, which the cache may not hold, are re-run)."""
    name = str(getattr(op, 'overloadpacket', op)).split('.')[-1]
    if name.endswith('_') or name.startswith(('empty', 'new_empty', 'bernoulli')):
        return CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.MUST_SAVE


def _with_policy(fn: Callable[[], None], policy) -> Callable[[], None]:
    """``fn`` with ``backbone_utils``' selective policy swapped for ``policy``."""
    def call():
        saved = backbone_utils._save_matmuls
        backbone_utils._save_matmuls = policy
        try:
            fn()
        finally:
            backbone_utils._save_matmuls = saved
    return call


#: per-stage ``with_cp`` of the pyramids measured beside the uniform modes: full
#: checkpointing of the stages with the most activation bytes per MAC only
STAGE_CP = (('full', 'none', 'none', 'none'), ('full', 'full', 'none', 'none'))


def _cp_label(mode) -> str:
    return mode if isinstance(mode, str) else 'per stage ' + '/'.join(mode)


def cp_rows(args) -> List[str]:
    """Training step of the pyramid configs with with_cp none / full / selective / the
    :data:`STAGE_CP` per-stage modes and of the SVT of the same size, in the same rounds."""
    rows = []
    mem = bench.PeakMemory(torch.device('cpu'))
    for name, ours_cfg, peer_cfg, peer_name in PAIRS:
        if name not in args.models or not name.startswith('Pyramid'):
            continue
        torch.manual_seed(0)
        base = _backbone(ours_cfg)
        peer = _backbone(peer_cfg)
        mac_ratio = _macs(base) / _macs(peer)
        x = torch.randn(args.batch, 3, 224, 224)
        models = {peer_name: peer}
        for mode in ('none', 'full', 'selective') + STAGE_CP:
            models[mode] = copy.deepcopy(base)
            models[mode].with_cp = mode

        def step(m):
            def call():
                m.train()
                with torch.autocast('cpu', torch.bfloat16, enabled=args.amp):
                    outs = m(x)
                sum(o.float().pow(2).mean() for o in outs).backward()
                m.zero_grad(set_to_none=True)
            return call
        fns = {k: step(m) for k, m in models.items()}
        # control: the selective machinery with a policy that saves every output, i.e.
        # recomputes nothing: its cost over 'none' is torch's per-op dispatch overhead
        fns['selective, nothing recomputed'] = _with_policy(step(models['selective']), _save_all)
        peaks = {k: mem.measure(f) for k, f in fns.items()}
        t = _rounds(fns, args.repeats)
        for k in fns:
            label = f'{peer_name} (mmpretrain, no with_cp)' if k == peer_name else _cp_label(k)
            vs_peer = peaks[k] / peaks[peer_name]
            rows.append(f'| {name if k != peer_name else peer_name} | {label} | '
                        f'{statistics.median(t[k]) * 1e3:.0f} | '
                        f'{_ratio_text(t["none"], t[k]) if k != "none" else "1"} | '
                        f'{peaks[k] / 2 ** 20:.0f} | {peaks[k] / peaks["none"]:.2f} | '
                        f'{vs_peer:.2f} | '
                        f'{vs_peer / mac_ratio if k != peer_name else 1:.2f} |')
            print(rows[-1], flush=True)
    return rows


def rope_rows(args) -> List[str]:
    from vllama_mm.models.rope import RoPE2D, apply_rope, pair_signs

    def former(x, t):  # two changes ago: unbind, negate, stack
        a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.addcmul(x * t[0], torch.stack((-b, a), dim=-1).flatten(-2),
                             t[1]).to(x.dtype)

    def flip_swap(x):  # the pair swap of the two forms before the current one
        return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)

    def fp32_tables(x, t):  # three changes ago: float32 tables on the strided views
        return torch.addcmul(x * t[0], flip_swap(x), pair_signs(t[1])).to(x.dtype)

    def flip_pairs(x, t):  # the previous form: contiguous, x-dtype tables, swap by flip
        x = x.contiguous()
        return torch.addcmul(x * t[0].to(x.dtype), flip_swap(x), pair_signs(t[1]).to(x.dtype))
    rows = []
    # (label, heads, grid, head dim, batch): ViT-B, and Pyramid-S stage 1 (7x7 windows)
    for label, h, grid, hc, b in (('ViT-B', 12, 14, 64, 4), ('Pyramid-S LSA 1', 2, 7, 32, 256)):
        table = RoPE2D(hc, (grid, grid), 'as2d').grid(grid, grid,
                                                      num_prefix=1 if label == 'ViT-B' else 0)
        n = table[0].shape[0]
        for dtype in (torch.float32, torch.bfloat16):
            qkv = torch.randn(b, n, 3, h, hc).permute(2, 0, 3, 1, 4)  # [3, B, h, N, Hc]
            q, k = qkv[0], qkv[1]
            ql, kl = q.to(dtype), k.to(dtype)
            variants = {
                'former (unbind/neg/stack)': lambda: (former(ql, table), former(kl, table)),
                'float32 tables on the views':
                    lambda: (fp32_tables(ql, table), fp32_tables(kl, table)),
                'contiguous, x-dtype tables, swap by flip (previous)':
                    lambda: (flip_pairs(ql, table), flip_pairs(kl, table)),
                'contiguous, x-dtype tables, swap by roll (current)':
                    lambda: (apply_rope(ql, table), apply_rope(kl, table)),
            }
            cos, sin = table[0].double(), table[1].double()
            # float64 rotation of the float32 q/k (before any bf16 rounding)
            ref = [torch.stack((z[..., 0::2] * cos[:, 0::2] - z[..., 1::2] * sin[:, 0::2],
                                z[..., 0::2] * sin[:, 0::2] + z[..., 1::2] * cos[:, 0::2]),
                               -1).flatten(-2) for z in (q.double(), k.double())]
            base = torch.cat([(z.to(dtype).double() - z.double()).flatten() for z in (q, k)])
            scale = torch.cat([e.flatten() for e in ref]).pow(2).mean()
            in_err = (base.pow(2).mean() / scale).sqrt()
            t = _rounds(variants, args.repeats)
            for nm, f in variants.items():
                err = torch.cat([(o.double() - e).flatten() for o, e in zip(f(), ref)])
                rms = (err.pow(2).mean() / scale).sqrt()
                rows.append(f'| {label} | {str(dtype)[6:]} | {nm} | '
                            f'{statistics.median(t[nm]) * 1e3:.2f} | '
                            f'{_ratio_text(t[nm], t["former (unbind/neg/stack)"])} | '
                            f'{in_err:.2e} | {rms:.2e} |')
                print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ref', default=None, help='revision for the before/after columns')
    p.add_argument('--models', nargs='+', default=list(ARCHS), choices=list(ARCHS))
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--amp', action='store_true', help='bf16 autocast for the cp rows')
    p.add_argument('--only', choices=['peers', 'forward', 'cp', 'rope'], default=None)
    p.add_argument('--malloc', default='retain', choices=['retain', 'system'],
                   help="glibc malloc keeps freed memory or not (tools/benchmark.py's)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f'malloc: {bench.set_malloc(args.malloc)}')
    from vllama_mm.engine.console import quiet_console
    quiet_console()
    print(f'load average before: {" ".join(f"{v:.1f}" for v in bench.load_average())}')
    if args.only == 'rope':
        print('| size | dtype | q, k rotation | ms | speed-up vs former [IQR] | '
              'rms error of bf16 q/k | rms error of the result |\n|---|---|---|---|---|---|---|')
        rope_rows(args)
    ref_module, short = bench.load_ref_models(args.ref) if args.ref else (None, None)
    if args.only in (None, 'peers'):
        print(f'| model | precision | ours ms | peer ms | ours / peer [IQR] | MACs ratio | '
              f'per MAC [IQR] | vs {short or "ref"} [IQR] |\n|---|---|---|---|---|---|---|---|')
        peer_rows(ref_module, args)
    if args.only in (None, 'forward'):
        if ref_module is None:
            raise SystemExit('speed_features: the forward rows need --ref REV')
        print(f'| model | precision | forward ms, {short} | forward ms, now | '
              f'speed-up [IQR] |\n|---|---|---|---|---|')
        forward_rows(ref_module, args)
    if args.only in (None, 'cp'):
        print('| model | with_cp | train step ms | time vs none [IQR] | peak MiB | '
              'peak vs none | peak vs SVT | vs SVT per MAC |\n|---|---|---|---|---|---|---|---|')
        cp_rows(args)
    print(f'load average after: {" ".join(f"{v:.1f}" for v in bench.load_average())}')


if __name__ == '__main__':
    main()
