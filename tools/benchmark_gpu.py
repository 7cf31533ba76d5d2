"""bf16 training throughput, MFU and peak memory of the paper-size models beside their
peers on one CUDA GPU, eager and compiled (``tools/benchmark_gpu.sh``).

Pairs (same input, batch and optimizer for both sides):

* VisionLLaMA-B (224², ours) vs mmpretrain ``VisionTransformer`` ViT-B/16;
* Pyramid-VisionLLaMA-B (224²) vs mmpretrain Twins ``SVT`` base;
* DiT-LLaMA-XL/2 (32² latents, 4 channels) vs DiT-XL/2 (:class:`DiTBlock` below: the
  DiT paper's adaLN-Zero block, GELU MLP 4x, no RoPE; same width/depth/heads).

Per model and mode (eager; compiled: ``torch.compile`` of every transformer block by
default, ``--compile-scope model`` the whole model): warm-up steps, then timed training steps
(bf16 autocast forward, mean-square loss of the outputs, backward, SGD step) ->
images/s; peak memory (``torch.cuda.max_memory_allocated``) of one step; MFU =
training FLOPs per image (3x the forward FLOPs counted by ``torch.utils.flop_counter``
on a batch-1 forward: matmuls, convolutions and attention) x images/s / the GPU's dense
bf16 peak (:data:`PEAK_TFLOPS`, matched on the device name; ``--peak-tflops``
overrides). The table goes between the ``gpu-benchmark`` markers of
``<out-dir>/benchmark.md``.

``--tiny``: the same code on CPU with tiny architectures, the compiled runs through the
``eager`` backend (dynamo capture without code generation), 1+1 steps: a smoke test in
CI so that the GPU command cannot rot; its figures mean nothing.
"""
import argparse
import math
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import doc_table  # noqa: E402
sys.path.insert(0, osp.join(ROOT, 'tools'))
from benchmark import compile_blocks  # noqa: E402  (one block rule for both benchmarks)

#: dense bf16 tensor-core peaks (TFLOP/s, no sparsity), first match on the device name
PEAK_TFLOPS: List[Tuple[str, float]] = [
    ('B200', 2250.0), ('H200', 989.4), ('H100 PCIe', 756.0), ('H100', 989.4),
    ('H800', 989.4), ('GH200', 989.4), ('A100', 312.0), ('A800', 312.0),
    ('L40S', 362.1), ('L40', 181.0), ('A10G', 70.0), ('A10', 125.0), ('L4', 121.0),
    ('RTX 4090', 165.2), ('RTX 3090', 71.0), ('A6000', 154.8),
]
COLUMNS = ['model, mode', 'batch', 'train img/s', 'vs peer', 'train GFLOPs/img', 'MFU',
           'peak memory (GiB)', 'params (M)']
HEADER = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]


def peak_tflops(device: torch.device, override: Optional[float]) -> Optional[float]:
    """The dense bf16 peak of ``device`` (``override`` first; None when unknown)."""
    if override:
        return override
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value
    print(f'benchmark_gpu: no dense bf16 peak known for {name!r}; MFU is left out '
          '(pass --peak-tflops)')
    return None


# ----------------------------------------------------------------------------- DiT peer
def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """DiT's adaLN-Zero block: ``x += g * Attn(mod(LN(x)))``; ``x += g * MLP(mod(LN(x)))``
    with multi-head SDPA attention and a GELU(tanh) MLP of 4x width; x [B, N, D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        B, N, D = x.shape
        sa, ca, ga, sm, cm, gm = self.ada(c).chunk(6, dim=1)  # each [B, D]
        q, k, v = self.qkv(_modulate(self.norm1(x), sa, ca)).view(
            B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [B, h, N, Hc]
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        x = x + ga.unsqueeze(1) * self.proj(a)
        h = self.fc2(F.gelu(self.fc1(_modulate(self.norm2(x), sm, cm)), approximate='tanh'))
        return x + gm.unsqueeze(1) * h


class DiT(nn.Module):
    """DiT-*/p denoiser (class-conditional, learned sigma) for the throughput peer:
    patch conv, timestep MLP + label table, ``depth`` :class:`DiTBlock`, final adaLN +
    linear, unpatchify; fixed 2D sin-cos position embedding (a buffer)."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int = 2, in_ch: int = 4,
                 input_size: int = 32, num_classes: int = 1000):
        super().__init__()
        self.patch, self.out_ch = patch, 2 * in_ch
        self.x_embedder = nn.Conv2d(in_ch, dim, patch, patch)
        self.t_mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_table = nn.Embedding(num_classes + 1, dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch * patch * self.out_ch)
        n = input_size // patch
        self.register_buffer('pos', torch.randn(1, n * n, dim) * 0.02, persistent=False)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        B, _, H, W = x.shape
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos  # [B, N, D]
        freqs = torch.exp(-math.log(10000) * torch.arange(128, device=x.device) / 128)
        ang = t[:, None].float() * freqs[None]
        c = self.t_mlp(torch.cat([ang.cos(), ang.sin()], dim=-1)) + self.y_table(y)  # [B, D]
        for block in self.blocks:
            tokens = block(tokens, c)
        shift, scale = self.ada(c).chunk(2, dim=1)
        out = self.linear(_modulate(self.norm(tokens), shift, scale))  # [B, N, p*p*C]
        p, h, w = self.patch, H // self.patch, W // self.patch
        out = out.view(B, h, w, p, p, self.out_ch).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, self.out_ch, H, W)


# ----------------------------------------------------------------------------- models
def build_pairs(tiny: bool) -> List[Tuple[str, Callable[[], nn.Module], str, Optional[Callable]]]:
    """(name, our builder, peer name, peer builder or None when its library is missing)."""
    from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA
    from vllama_mm.models.dit_llama import DiTLLaMA
    try:
        from mmpretrain.models import SVT, VisionTransformer
    except ImportError:
        SVT = VisionTransformer = None
        print('benchmark_gpu: mmpretrain is not installed; the ViT-B and SVT-B peer rows '
              'are left out (install the project environment, tools/setup_env.sh)')
    if tiny:
        plain = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128)
        vit = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=256)
        pyr = dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1])
        svt = dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4],
                   patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[4, 4, 4, 4],
                   sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7])
        dit = (64, 2, 2)
    else:
        plain, vit, pyr, svt, dit = 'b', 'b', 'b', 'base', (1152, 28, 16)
    ours_dit = dict(embed_dims=dit[0], num_layers=dit[1], num_heads=dit[2])
    return [
        ('VisionLLaMA-B', lambda: VisionLLaMA(plain, img_size=224), 'ViT-B/16',
         VisionTransformer and (lambda: VisionTransformer(vit, img_size=224, patch_size=16))),
        ('Pyramid-VisionLLaMA-B', lambda: PyramidVisionLLaMA(pyr, img_size=224), 'Twins SVT-B',
         SVT and (lambda: SVT(svt))),
        ('DiT-LLaMA-XL/2', lambda: DiTLLaMA(ours_dit, patch_size=2, input_size=32),
         'DiT-XL/2', lambda: DiT(*dit, patch=2, input_size=32)),
    ]


def make_inputs(name: str, batch: int, device: torch.device) -> Tuple[Tensor, ...]:
    if 'DiT' in name:
        return (torch.randn(batch, 4, 32, 32, device=device),
                torch.randint(0, 1000, (batch, ), device=device).float(),
                torch.randint(0, 1000, (batch, ), device=device))
    return (torch.randn(batch, 3, 224, 224, device=device), )


def train_flops_per_image(model: nn.Module, name: str, device: torch.device) -> float:
    """3x the forward FLOPs of one image (forward + backward's two matmuls per matmul)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*make_inputs(name, 1, device))
    return 3.0 * counter.get_total_flops()


def measure(model: nn.Module, name: str, batch: int, compiled: bool, args,
            device: torch.device) -> Dict:
    """Images/s and peak memory of bf16 training steps (eager or compiled)."""
    inputs = make_inputs(name, batch, device)
    runner = model
    if compiled and args.compile_scope == 'model':
        runner = torch.compile(model, backend=args.backend)
    elif compiled:  # regional: every transformer block, in place (eager was measured first)
        compile_blocks(model, backend=args.backend)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            outs = runner(*inputs)
        outs = outs if isinstance(outs, (tuple, list)) else [outs]
        sum(o.float().pow(2).mean() for o in outs).backward()
        opt.step()

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    for _ in range(args.warmup):
        step()
    peak = None
    if device.type == 'cuda':
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync()
        peak = torch.cuda.max_memory_allocated(device)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    return dict(img_s=batch * args.steps / (time.perf_counter() - t0), peak=peak)


def run(args) -> List[Dict]:
    device = torch.device('cpu' if args.tiny else (args.device or 'cuda'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('benchmark_gpu: no CUDA device here; run it on a GPU machine, or '
                         'with --tiny for the CPU smoke test')
    peak = peak_tflops(device, args.peak_tflops)
    start = time.perf_counter()
    rows = []
    torch.manual_seed(0)
    for ours, build_ours, peer, build_peer in build_pairs(args.tiny):
        for name, build in ((ours, build_ours), (peer, build_peer)):
            if build is None:
                continue
            model = build().to(device)
            flops = train_flops_per_image(model, name, device)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            for mode in sorted(args.modes, key=['eager', 'compiled'].index):
                if time.perf_counter() - start > args.budget_s:
                    print(f'benchmark_gpu: over the --budget-s {args.budget_s} s, '
                          f'{name} {mode} left out')
                    continue
                r = measure(model, name, args.batch, mode == 'compiled', args, device)
                r.update(model=name, mode=mode, flops=flops, params=params,
                         peer=peer if name == ours else None)
                r['mfu'] = flops * r['img_s'] / (peak * 1e12) if peak else None
                rows.append(r)
                print(f'{name:24s} {mode:8s} {r["img_s"]:9.1f} img/s'
                      + (f'  MFU {r["mfu"]:.1%}' if r['mfu'] is not None else ''), flush=True)
            del model
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    by_key = {(r['model'], r['mode']): r for r in rows}
    for r in rows:
        other = by_key.get((r['peer'], r['mode'])) if r['peer'] else None
        r['vs_peer'] = r['img_s'] / other['img_s'] if other else None
    return rows


def table_rows(rows: List[Dict], batch: int) -> List[str]:
    def f(v, spec):
        return 'n/a' if v is None else format(v, spec)
    return ['| ' + ' | '.join([
        f"{r['model']}, {r['mode']}", str(batch), f(r['img_s'], '.1f'), f(r['vs_peer'], '.2f'),
        f(r['flops'] / 1e9, '.1f'), f(r['mfu'], '.1%'),
        f(r['peak'] and r['peak'] / 2 ** 30, '.1f'), f(r['params'], '.1f')]) + ' |'
        for r in rows]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tiny', action='store_true', help='CPU smoke test with tiny archs')
    p.add_argument('--device', default=None, help='CUDA device (default: cuda)')
    p.add_argument('--batch', type=int, default=None, help='batch (default 64; tiny 2)')
    p.add_argument('--steps', type=int, default=None, help='timed steps (default 20)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps (default 5)')
    p.add_argument('--modes', nargs='+', default=['eager', 'compiled'],
                   choices=['eager', 'compiled'])
    p.add_argument('--compile-scope', default='blocks', choices=['blocks', 'model'],
                   help="'blocks' (default): torch.compile every transformer block "
                        "(regional compilation, one graph per block kind: a short warm-up "
                        "that keeps six compiled models inside the budget); 'model': the "
                        "whole model, as a config's compile=True")
    p.add_argument('--backend', default=None,
                   help="torch.compile backend (default inductor; tiny: 'eager')")
    p.add_argument('--peak-tflops', type=float, default=None,
                   help='dense bf16 peak of the GPU (default: from the device name)')
    p.add_argument('--budget-s', type=float, default=420.0,
                   help='stop starting new measurements after this many seconds')
    p.add_argument('--out-dir', default=None,
                   help='write the table into <out-dir>/benchmark.md (gpu-benchmark markers)')
    args = p.parse_args(argv)
    tiny = args.tiny
    for key, full, small in (('batch', 64, 2), ('steps', 20, 1), ('warmup', 5, 1),
                             ('backend', 'inductor', 'eager')):
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else full)
    for key in ('batch', 'steps'):
        if getattr(args, key) < 1:
            raise SystemExit(f'benchmark_gpu: --{key} must be >= 1, got {getattr(args, key)}')
    return args


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    rows = run(args)
    device = 'CPU (tiny smoke test, figures meaningless)' if args.tiny else \
        torch.cuda.get_device_name(args.device or 'cuda')
    peak = peak_tflops(torch.device('cpu' if args.tiny else args.device or 'cuda'),
                       args.peak_tflops)
    note = (f'{time.strftime("%Y-%m-%d %H:%M")}, {device}, torch {torch.__version__}, bf16 '
            f'autocast, SGD, batch {args.batch}, {args.warmup} warm-up + {args.steps} timed '
            f'steps, compile backend {args.backend} ({args.compile_scope}); MFU against '
            + (f'{peak:.0f} TFLOP/s dense bf16' if peak else 'no known peak (n/a)')
            + '. Command: `tools/benchmark_gpu.sh '
            + ' '.join(sys.argv[1:] if argv is None else argv) + '`')
    lines = table_rows(rows, args.batch)
    print('\n'.join(HEADER + lines))
    if args.out_dir:
        doc = osp.join(args.out_dir, 'benchmark.md')
        os.makedirs(args.out_dir, exist_ok=True)
        doc_table.update_doc(doc, 'gpu-benchmark', HEADER, lines, note)
        print(f'written {doc}')
    return rows


if __name__ == '__main__':
    main()
