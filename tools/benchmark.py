"""Speed, memory and FLOP/s of VisionLLaMA backbones beside their mmpretrain peers.

For every model of one run it measures

* **forward**: ``model.eval()``, ``torch.no_grad()``, one batch -> images/s;
* **training step**: ``model.train()``, forward, a scalar loss (mean square of every
  output), backward, and an optimizer step (plain SGD by default: stateless, so the
  step is the same tiny cost for every model; ``--optimizer adamw`` for AdamW) ->
  images/s;
* **peak memory** of each, above the memory held before the call: on CUDA
  ``torch.cuda.max_memory_allocated``; on CPU the peak of the tensor storage that the
  call's ops create and that is alive at once (every aten op seen through a
  ``TorchDispatchMode``, each new storage counted until it is freed): the bytes of
  activations, gradients and temporaries, independent of the malloc arenas. With
  ``--compile`` (whose kernels a dispatch mode does not see) the CPU figure is the peak
  resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) above the
  resident size before the call, after ``malloc_trim(0)``. Measured in one extra
  untimed call per model;
* **forward FLOP/s** = forward MACs x 2 (counted by ``tools/analysis/get_flops.py``)
  x images/s, as a fraction of the machine's GEMM rate in the models' precision (the
  best of a large ``torch.mm`` timed 3 times in every round): the physical ceiling.

Timing: ``--warmup`` untimed calls, then ``--repeats`` rounds; each round times every
model once (forward and training step) in an order rotated from round to round, a model
next to its baseline. Each figure is the median over rounds; each ratio is the median
of per-round ratios (a model and its baseline timed back to back), which cancels most
of the drift of a shared, loaded machine, reported with the interquartile range of the
per-round ratios; ``TARGETS`` (the speed goals) get a verdict from that range. The
load average is recorded.

Models come from config files: each row of ``DEFAULT_PAIRS`` is one of our configs and
the upstream config it is compared with (mmpretrain ``VisionTransformer`` for the plain
model, Twins ``SVT`` for the pyramid), both at our config's input size; the backbone is
``cfg.model.backbone`` (``tools/analysis/get_flops.py`` builds it). ``--models NAME``
picks default rows by config name, positional CONFIGs time any config (``--baseline``
for a peer). ``--ref REV`` adds our models built from the ``vllama_mm/models`` of git
revision REV (before/after a change); ``--with-cp [full|selective]`` adds each of our
models with activation checkpointing (timed, with its peak memory).

Devices: CPU by default (fp32; ``--amp`` for bf16 autocast); CUDA when available (bf16
autocast) or ``--device``.

Usage (the docs table, docs/benchmark.md)::

    python tools/benchmark.py --ref 5bb002e --with-cp --out-dir docs/
    python tools/benchmark.py --models vision-llama-b --batch 8 --repeats 15
    python tools/benchmark.py --models pyramid-vision-llama-s --ref HEAD~1 --compile
    python tools/benchmark.py configs/mmseg/upernet/upernet_pvllama-s_8xb2-160k_ade20k-512x512.py
"""
import argparse
import ctypes
import importlib
import io
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import doc_table  # noqa: E402  (the shared doc-table writer)
import get_flops as gf  # noqa: E402  (config loading, backbone building, FLOP counting)

_C = 'configs/mmpretrain/'
#: (our config, the upstream config it is compared with); the default run
DEFAULT_PAIRS = [
    (_C + 'vision_llama/vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py',
     'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py'),
    (_C + 'pyramid_vision_llama/pyramid-vision-llama-s_8xb128_in1k.py',
     'mmpretrain::twins/twins-svt-small_8xb128_in1k.py'),
    (_C + 'pyramid_vision_llama/pyramid-vision-llama-b_8xb128_in1k.py',
     'mmpretrain::twins/twins-svt-base_8xb128_in1k.py'),
]


# ------------------------------------------------------------------ machine
def machine_info(device: torch.device) -> Dict[str, str]:
    info = {'torch': torch.__version__, 'threads': str(torch.get_num_threads()),
            'python': platform.python_version()}
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        fields = dict(line.split(':', 1) for line in out.splitlines() if ':' in line)
        info['cpu'] = fields.get('Model name', platform.processor()).strip()
        info['cores'] = fields.get('CPU(s)', str(os.cpu_count())).strip()
    except OSError:
        info['cpu'], info['cores'] = platform.processor(), str(os.cpu_count())
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def _glibc() -> Optional[ctypes.CDLL]:
    """The C library (for ``mallopt`` / ``malloc_trim``), or None where there is no glibc."""
    try:
        return ctypes.CDLL('libc.so.6')
    except OSError:
        return None


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def set_malloc(mode: str) -> str:
    """Set how glibc's malloc hands freed memory back, for CPU timing; returns the mode
    in effect (``'system'`` where glibc is not there).

    ``'retain'``: freed memory stays in the process (the heap top is trimmed only past
    1 GiB; blocks up to 256 MiB come from the heap, not ``mmap``), the CPU counterpart
    of PyTorch's CUDA caching allocator and of the jemalloc / tcmalloc preload that
    PyTorch's CPU tuning guide recommends. Without it glibc returns the top of the heap
    to the system whenever a forward frees more than its (adaptive) trim threshold, and
    the next call page-faults on all of it again: a cost that depends on the sizes of a
    model's transient tensors and on the heap's history, measured at up to 35 % of a
    forward and a run-to-run spread larger than the gaps between the models
    (docs/benchmark.md). The same for every model of a run. ``'system'``: glibc's
    defaults, untouched."""
    if mode == 'system':
        return mode
    libc = _glibc()
    ok = libc is not None and hasattr(libc, 'mallopt') and \
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) and \
        libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)
    if not ok:
        print('benchmark: --malloc retain needs glibc (mallopt); timing with the '
              'system allocator as it is', file=sys.stderr)
        return 'system'
    return mode


def load_average() -> Tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float('nan'), ) * 3


# ------------------------------------------------------------------ memory
class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created by the ops run under it and alive at once.

    Each storage an op returns is counted once (views share it) until it is freed
    (``weakref.finalize``); buffers a kernel uses internally and frees are not seen."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes and key not in self._seen:
                self._seen.add(key)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key, nbytes)
        return out


class PeakMemory:
    """Peak memory (bytes) of one call above what was held before it (see module doc).

    ``exact=False`` (compiled models on CPU): the resident set size instead of the
    tensor bytes."""

    def __init__(self, device: torch.device, exact: bool = True):
        self.device = device
        self.exact = exact and device.type == 'cpu'
        self._libc = None
        if device.type == 'cpu' and not self.exact:
            self._libc = _glibc()
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
                self.available = self._libc is not None
            except OSError:
                self.available = False  # not Linux/glibc: memory is not reported
        else:
            self.available = device.type in ('cpu', 'cuda')

    @staticmethod
    def _status_kib(key: str) -> int:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
        raise KeyError(key)

    def measure(self, fn: Callable[[], None]) -> Optional[int]:
        if not self.available:
            fn()
            return None
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        if self.exact:
            with _LiveTensorBytes() as mode:
                fn()
            return mode.peak
        self._libc.malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # VmHWM := VmRSS
        before = self._status_kib('VmRSS')
        fn()
        return (self._status_kib('VmHWM') - before) * 1024


# ------------------------------------------------------------------ models
@dataclass
class Entry:
    """One model of the run and its measurements."""
    key: str  # unique label: the config name, '... (ref 5bb002e)', '... (with_cp=full)'
    config: str
    size: Tuple[int, int]
    model: nn.Module
    batch: int
    ours: bool
    baseline: Optional[str] = None  # key of the entry it is compared with
    macs: Optional[int] = None  # forward MACs per image
    params: int = 0
    train: bool = True
    ref_key: Optional[str] = None  # key of its --ref twin (older code), if any
    fwd_s: List[float] = field(default_factory=list)
    train_s: List[float] = field(default_factory=list)
    fwd_mem: Optional[int] = None
    train_mem: Optional[int] = None
    memory_only: bool = False  # --with-cp twins: peak memory, not timed
    compiled_regions: int = 0  # --compile blocks: number of blocks compiled


def load_ref_models(rev: str):
    """``vllama_mm/models`` of git revision ``rev`` as a separate importable package.

    The revision's ``vllama_mm/models`` and ``vllama_mm/engine`` are extracted as
    ``vllama_ref_<rev>.{models,engine}``; the engine's ``__init__`` is left empty (the
    models only import plain helper modules from it) so that nothing registers twice.
    """
    short = subprocess.run(['git', 'rev-parse', '--short', rev], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    archive = subprocess.run(['git', 'archive', rev, 'vllama_mm/models', 'vllama_mm/engine'],
                             cwd=ROOT, capture_output=True, check=True).stdout
    tmp = tempfile.mkdtemp(prefix='vllama_ref_')
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp)  # our own repository's files
    pkg = f'vllama_ref_{short}'
    os.rename(osp.join(tmp, 'vllama_mm'), osp.join(tmp, pkg))
    for init in (osp.join(tmp, pkg, '__init__.py'), osp.join(tmp, pkg, 'engine', '__init__.py')):
        open(init, 'w').close()
    sys.path.insert(0, tmp)
    return importlib.import_module(f'{pkg}.models'), short


def _init(model: nn.Module) -> nn.Module:
    if hasattr(model, 'init_weights'):
        model.init_weights()  # realistic magnitudes (layer scale, trunc-normal linears)
    return model


# ------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def make_calls(entry: Entry, x: torch.Tensor, args, device: torch.device
               ) -> Tuple[Callable[[], None], Callable[[], None]]:
    model = entry.model
    runner = model
    if args.compile == 'model':
        # dynamic shapes: one graph for every input size (the setting the configs use,
        # compile=dict(dynamic=True)); tests/test_speed_features.py counts the recompiles
        runner = torch.compile(model, dynamic=True)
    elif args.compile == 'blocks':  # in place, static shapes (see compile_blocks)
        entry.compiled_regions = compile_blocks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == 'sgd':
        opt = torch.optim.SGD(params, lr=1e-6)
    else:
        opt = torch.optim.AdamW(params, lr=1e-6)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if _amp(args, device) else None

    def run():
        if amp is None:
            return runner(x)
        with amp:
            return runner(x)

    def forward() -> None:
        model.eval()
        # no_grad (as mmengine's val/test loops); not inference_mode, whose tensors a
        # later training step could not use
        with torch.no_grad():
            run()

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        outs = run()
        loss = sum(o.float().pow(2).mean() for o in outs)
        loss.backward()
        opt.step()

    return forward, train_step


def compile_blocks(model: nn.Module, **compile_kwargs) -> int:
    """Regional compilation: ``Module.compile()`` on every transformer block, in place.

    A block is a non-container element of an ``nn.ModuleList`` that holds an
    ``nn.Linear`` (our ``VisionLLaMABlock`` / ``DiTLLaMABlock``, mmpretrain's
    ``TransformerEncoderLayer``, Twins' ``GSAEncoderLayer`` / ``LSAEncoderLayer``), the same
    rule for our models and the peers. The blocks carry the MACs and the element-wise
    work; the stem, PEG convs and norms between them stay eager. Identical blocks share
    one compiled graph, so the warm-up is a few graphs instead of the whole model's (which
    inductor on a few CPU cores does not finish for Twins in 40 min). ``compile_kwargs``
    go to ``torch.compile``; by default ``dynamic=False``: static shapes, one graph per
    block kind and width (inductor in torch 2.11 fails on Twins' training block once its
    sizes are symbolic: "cannot determine truth value of Relational: 96*s47 < 96"), with
    dynamo's recompile limit raised so that no block kind falls back to eager. Returns the
    number of blocks compiled.
    """
    compile_kwargs.setdefault('dynamic', False)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    count = 0
    for lst in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        for block in lst:
            if isinstance(block, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
                continue
            if any(isinstance(m, nn.Linear) for m in block.modules()):
                block.compile(**compile_kwargs)
                count += 1
    return count


def _amp(args, device: torch.device) -> bool:
    """bf16 autocast (the configs' AMP training path): always on CUDA, on CPU with --amp."""
    return device.type == 'cuda' or args.amp


def timed(fn: Callable[[], None], device: torch.device, clock: Callable[[], float]) -> float:
    _sync(device)
    t0 = clock()
    fn()
    _sync(device)
    return clock() - t0


def gemm_rate(device: torch.device, n: int, dtype: torch.dtype,
              clock: Callable[[], float], calls: int = 3) -> float:
    """FLOP/s of an n x n x n matrix product (2 n^3 FLOPs), the best of ``calls``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm
    t = min(timed(lambda: torch.mm(a, b), device, clock) for _ in range(calls))
    return 2 * n ** 3 / t


# ------------------------------------------------------------------ report
def _median(v: Sequence[float]) -> float:
    return statistics.median(v) if v else float('nan')


def _paired_ratio(a: List[float], b: List[float]) -> float:
    """Median over rounds of throughput(a) / throughput(b) = time(b) / time(a)."""
    return _paired_ratios(a, b)[0]


def _paired_ratios(a: List[float], b: List[float]) -> Tuple[float, float, float]:
    """(median, first quartile, third quartile) over rounds of time(b) / time(a).

    The quartiles show how far one round's ratio strays: a target counts as met only
    when it is below the first quartile (see :func:`verdict`).
    """
    pairs = sorted(tb / ta for ta, tb in zip(a, b))
    if not pairs:
        return (float('nan'),) * 3
    if len(pairs) == 1:
        return (pairs[0],) * 3
    q1, _, q3 = statistics.quantiles(pairs, n=4, method='inclusive')
    return _median(pairs), q1, q3


#: The project's speed targets, training step against the baseline: plain B at least 0.97x
#: ViT-B/16; the pyramids at parity with the SVT of the same size per multiply-add.
TARGETS = {'vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px': ('train', 0.97),
           'pyramid-vision-llama-s_8xb128_in1k': ('train_per_mac', 1.0),
           'pyramid-vision-llama-b_8xb128_in1k': ('train_per_mac', 1.0)}


def verdict(median: float, q1: float, q3: float, target: float) -> str:
    """'met' (first quartile >= target), 'not met' (third quartile < target) or
    'within noise' (the interquartile range of per-round ratios straddles it)."""
    if math.isnan(median):
        return '—'
    if q1 >= target:
        return 'met'
    if q3 < target:
        return 'not met'
    return 'within noise'


def summarize(entries: Dict[str, Entry], gemm: List[float]) -> List[Dict]:
    ceiling = max(gemm)  # the best GEMM rate seen: the machine's ceiling
    rows = []
    for e in entries.values():
        fwd_ips = e.batch / _median(e.fwd_s) if e.fwd_s else float('nan')
        train_ips = e.batch / _median(e.train_s) if e.train_s else float('nan')
        row = dict(key=e.key, size=e.size, batch=e.batch,
                   params=e.params, macs=e.macs, fwd_ips=fwd_ips, train_ips=train_ips,
                   fwd_mem=e.fwd_mem, train_mem=e.train_mem, baseline=e.baseline,
                   fwd_s=e.fwd_s, train_s=e.train_s)
        row['gemm_frac'] = (2 * e.macs * fwd_ips / ceiling) if e.macs else float('nan')
        if e.baseline:
            b = entries[e.baseline]
            scale = e.batch / b.batch
            row['fwd_ratio'], row['fwd_q1'], row['fwd_q3'] = (
                v * scale for v in _paired_ratios(e.fwd_s, b.fwd_s))
            row['train_ratio'], row['train_q1'], row['train_q3'] = (
                (v * scale for v in _paired_ratios(e.train_s, b.train_s))
                if e.train_s and b.train_s else (float('nan'),) * 3)
            # throughput x work: the ratio per multiply-add (the models' MACs differ)
            per_mac = e.macs / b.macs if e.macs and b.macs else float('nan')
            for q in ('ratio', 'q1', 'q3'):
                row[f'train_per_mac_{q}'] = row[f'train_{q}'] * per_mac
        rows.append(row)
    return rows


def _fmt(v: Optional[float], spec: str = '.2f') -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '—'
    return format(v, spec)


def _mb(v: Optional[int]) -> str:
    return '—' if v is None else f'{v / 2 ** 20:.0f}'


HEADER = ['| model | input | batch | params (M) | GMACs/img | forward img/s | train img/s | '
          'forward peak MB | train peak MB | forward FLOP/s / GEMM | baseline | forward ratio | '
          'train ratio | train ratio per MAC | forward vs ref | train vs ref |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
TARGET_HEADER = ['| target (training step) | median [IQR] | verdict |', '|---|---|---|']


def describe(meta: Dict) -> str:
    """The text above the table: machine, load, method and command of this run."""
    h = meta
    return (
        f'Measured {h["date"]} on {h["machine"]["cpu"]} ({h["machine"]["cores"]} cores'
        + (f', {h["machine"]["gpu"]}' if 'gpu' in h['machine'] else '') +
        f'), torch {h["machine"]["torch"]}, {h["machine"]["threads"]} threads, '
        f'{h["precision"]}; load average {h["load_before"]} before, {h["load_after"]} after. '
        f'Median {h["timer"]} of {h["repeats"]} rounds after {h["warmup"]} warm-up; '
        f'training step = forward + backward + {h["optimizer"]} step{h["extras"]}. '
        f'{h["gemm_dtype"]} GEMM ceiling ({h["gemm_n"]}³ torch.mm): '
        f'{h["gemm_gflops"]:.0f} GFLOP/s.\n\nCommand: `{h["command"]}`\n\n'
        'Ratios are throughput / baseline throughput (> 1: faster than the baseline): the '
        'median of per-round ratios, in brackets their interquartile range. "Per MAC" '
        'multiplies the train ratio by the models\' MACs ratio (useful work per second); '
        '"vs ref": throughput / throughput of the same model built from the --ref code. '
        'Rows of models not in this run are kept from earlier runs. '
        '![benchmark](benchmark.png)')


def table_rows(rows: List[Dict]) -> List[str]:
    lines = []
    for r in rows:
        hh, ww = r['size']
        macs = _fmt(r['macs'] / 1e9 if r['macs'] else None)
        lines.append(
            f'| {r["key"]} | {hh}x{ww} | '
            f'{r["batch"]} | {r["params"] / 1e6:.1f} | {macs} | {_fmt(r["fwd_ips"])} | '
            f'{_fmt(r["train_ips"])} | {_mb(r["fwd_mem"])} | {_mb(r["train_mem"])} | '
            f'{_fmt(100 * r["gemm_frac"], ".0f")}% | {r["baseline"] or "—"} | '
            f'{_ratio(r, "fwd")} | {_ratio(r, "train")} | {_ratio(r, "train_per_mac")} | '
            f'{_fmt(r.get("vs_ref_fwd"))} | {_fmt(r.get("vs_ref_train"))} |')
    return lines


def target_rows(rows: List[Dict]) -> List[str]:
    lines = []
    for r in rows:
        if r['key'] not in TARGETS or not r.get('baseline'):
            continue
        kind, t = TARGETS[r['key']]
        v = verdict(r[f'{kind}_ratio'], r[f'{kind}_q1'], r[f'{kind}_q3'], t)
        what = 'per MAC ' if kind == 'train_per_mac' else ''
        lines.append(f'| {r["key"]} {what}>= {t:.2f} x {r["baseline"]} | '
                     f'{_ratio(r, kind)} | {v} |')
    return lines


def markdown(rows: List[Dict], meta: Dict) -> str:
    text = describe(meta) + '\n\n' + '\n'.join(HEADER + table_rows(rows))
    targets = target_rows(rows)
    return text + ('\n\n' + '\n'.join(TARGET_HEADER + targets) if targets else '')


def _ratio(r: Dict, kind: str) -> str:
    """``median [q1-q3]`` of a row's per-round ratios, or a dash."""
    m = r.get(f'{kind}_ratio')
    if m is None or math.isnan(m):
        return '—'
    return f'{m:.2f} [{r[f"{kind}_q1"]:.2f}–{r[f"{kind}_q3"]:.2f}]'


def _bars(ax, labels: List[str], series: Dict[str, List[float]], ylabel: str,
          title: str, ref_line: Optional[float] = None,
          spread: Optional[Dict[str, List[Tuple[float, float]]]] = None) -> None:
    """Grouped bars with their values printed on top; ``spread`` (q1, q3) per bar
    draws the interquartile range of per-round values as an error bar."""
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=name)
        if spread and name in spread:
            lo = [0 if math.isnan(v) else max(v - q1, 0) for v, (q1, _) in
                  zip(values, spread[name])]
            hi = [0 if math.isnan(v) else max(q3 - v, 0) for v, (_, q3) in
                  zip(values, spread[name])]
            ax.errorbar(xs, [0 if math.isnan(v) else v for v in values], yerr=[lo, hi],
                        fmt='none', ecolor='k', elinewidth=0.7, capsize=2)
        for bar, v in zip(bars, values):
            if not math.isnan(v):
                ax.annotate(f'{v:.2f}' if v < 10 else f'{v:.0f}',
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha='center', va='bottom', fontsize=6)
    if ref_line is not None:
        ax.axhline(ref_line, color='k', lw=0.8)
        finite = [v for vs in series.values() for v in vs if not math.isnan(v)] or [1.0]
        ax.set_ylim(min(0.5, min(finite) - 0.1), max(1.25, max(finite) + 0.1))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7, rotation=25, ha='right')
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7, loc='lower right')


def plot(rows: List[Dict], path: str, title: str) -> None:
    """PNG: ratios vs baselines, speed-ups vs --ref (if any), hardware utilisation."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    compared = [r for r in rows if r['baseline']]
    refs = [r for r in rows if 'vs_ref_fwd' in r]
    top = [p for p in (compared, refs) if p]
    fig = plt.figure(figsize=(12, 8.5))
    grid = fig.add_gridspec(2, max(len(top), 1),
                            width_ratios=[len(p) + 1 for p in top] or [1])
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(top))]
    axes.append(fig.add_subplot(grid[1, :]))
    if compared:
        _bars(axes.pop(0), [f'{r["key"]}\nvs {r["baseline"]}' for r in compared],
              {'forward': [r['fwd_ratio'] for r in compared],
               'training step': [r['train_ratio'] for r in compared]},
              'throughput / baseline throughput',
              'VisionLLaMA vs peer (> 1: faster; bars: IQR over rounds)', 1.0,
              spread={'forward': [(r['fwd_q1'], r['fwd_q3']) for r in compared],
                      'training step': [(r['train_q1'], r['train_q3']) for r in compared]})
    if refs:
        _bars(axes.pop(0), [r['key'] for r in refs],
              {'forward': [r['vs_ref_fwd'] for r in refs],
               'training step': [r['vs_ref_train'] for r in refs]},
              'throughput / throughput at --ref', 'speed-up vs the reference code', 1.0)
    _bars(axes.pop(0), [r['key'] for r in rows],
          {'forward': [100 * r['gemm_frac'] for r in rows]},
          'forward FLOP/s, % of the GEMM rate', 'hardware utilisation (forward)')
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*',
                   help='config files to time (default: the DEFAULT_PAIRS rows)')
    p.add_argument('--baseline', default=None, help='config compared with every CONFIG')
    p.add_argument('--models', nargs='+', default=None, metavar='NAME',
                   help='default pairs whose config name contains NAME')
    p.add_argument('--batch', type=int, default=4, help='batch for inputs up to 384 px')
    p.add_argument('--batch-hires', type=int, default=1, help='batch for larger inputs')
    p.add_argument('--repeats', type=int, default=9, help='timed rounds (median)')
    p.add_argument('--warmup', type=int, default=1, help='untimed calls first')
    p.add_argument('--device', default=None, help='cpu / cuda (default: cuda if present)')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    p.add_argument('--optimizer', default='sgd', choices=['sgd', 'adamw'])
    p.add_argument('--timer', default='wall', choices=['wall', 'cpu'],
                   help="'cpu': process CPU time instead of wall time (CPU only; use with "
                        '--threads 1 on a machine loaded by other jobs)')
    p.add_argument('--train-max-pixels', type=int, default=600_000,
                   help='on CPU, skip the training step of inputs larger than this many '
                        'pixels (a 1024² step takes minutes on a few cores); 0: no limit')
    p.add_argument('--malloc', default='retain', choices=['retain', 'system'],
                   help='CPU: glibc malloc keeps freed memory (retain, default) or '
                        'returns it to the system (its defaults); see set_malloc')
    p.add_argument('--no-train', action='store_true', help='forward only')
    p.add_argument('--no-memory', action='store_true', help='skip the memory pass')
    p.add_argument('--no-flops', action='store_true', help='skip FLOP counting')
    p.add_argument('--compile', nargs='?', const='model', default=None,
                   choices=['model', 'blocks'],
                   help="'model' (the default): torch.compile(dynamic=True) every model, as a "
                        "config's compile=dict(dynamic=True); 'blocks': torch.compile every "
                        'transformer block (regional compilation, see compile_blocks)')
    p.add_argument('--amp', action='store_true',
                   help='bf16 autocast on CPU too (the AMP path of the configs; CUDA always)')
    p.add_argument('--with-cp', nargs='*', default=None, choices=['full', 'selective'],
                   help='also time and measure our backbones with activation checkpointing '
                        '(extra "(with_cp=MODE)" rows; no MODE: full)')
    p.add_argument('--ref', default=None, metavar='REV',
                   help='also time our models built from the vllama_mm/models of git '
                        'revision REV (before/after), each against the current code')
    p.add_argument('--ref-models', nargs='+', default=None, metavar='NAME',
                   help='which of our models get a REV twin (config names containing '
                        'NAME; default: all of ours)')
    p.add_argument('--gemm-n', type=int, default=2048, help='size of the GEMM ceiling')
    p.add_argument('--out-dir', default=None,
                   help='write benchmark.png there and the table into benchmark.md '
                        '(between its benchmark markers; other text is kept)')
    p.add_argument('--json', default=None, help='also dump raw numbers to this file')
    args = p.parse_args(argv)
    for name in ('batch', 'batch_hires', 'repeats'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 1')
    if args.warmup < 0:
        raise ValueError('--warmup must be >= 0')
    return args


def build_entries(args, device: torch.device) -> Dict[str, Entry]:
    if args.configs:
        pairs = [(c, args.baseline) for c in args.configs]
    else:
        pairs = [(osp.join(ROOT, c), b) for c, b in DEFAULT_PAIRS
                 if not args.models or any(m in gf.config_name(c) for m in args.models)]
        if not pairs:
            raise ValueError(f'--models {args.models} matches no default pair; choose from '
                             f'{[gf.config_name(c) for c, _ in DEFAULT_PAIRS]}')
    entries: Dict[str, Entry] = {}
    ref_module, ref_short = (load_ref_models(args.ref) if args.ref else (None, None))

    def add(config, size, key, ours, module=None, baseline=None, **overrides) -> Entry:
        model = gf.build_backbone(gf.load_config(config), module, **overrides)
        model = _init(model).to(device)
        batch = args.batch if max(size) <= 384 else args.batch_hires
        e = Entry(key, config, size, model, batch, ours, baseline,
                  params=sum(p.numel() for p in model.parameters()))
        e.train = not args.no_train and (device.type != 'cpu' or not args.train_max_pixels
                                         or size[0] * size[1] <= args.train_max_pixels)
        entries[e.key] = e
        return e

    for config, peer in pairs:
        name = gf.config_name(config)
        size = gf.input_size(gf.load_config(config))
        if peer and gf.config_name(peer) not in entries:
            add(peer, size, gf.config_name(peer), ours=False)
        e = add(config, size, name, ours=True, baseline=peer and gf.config_name(peer))
        if ref_module is not None and (not args.ref_models
                                       or any(m in name for m in args.ref_models)):
            # the twin has no baseline: it is compared with the current code
            e.ref_key = add(config, size, f'{name} (ref {ref_short})', True, ref_module).key
        for mode in (args.with_cp or ['full']) if args.with_cp is not None else []:
            add(config, size, f'{name} (with_cp={mode})', True, with_cp=mode)
    return entries


def round_order(entries: Dict[str, Entry], r: int) -> List[Entry]:
    """Groups (a model, its baseline, its ref twin) in an order rotated each round;
    inside a group the members alternate, so pairs are always timed back to back."""
    groups, placed = [], set()
    for e in entries.values():
        if e.key in placed:
            continue
        group = [e]
        for other in entries.values():
            if other is not e and other.key not in placed and (
                    e.baseline == other.key or other.baseline == e.key
                    or e.ref_key == other.key):
                group.append(other)
        placed.update(g.key for g in group)
        groups.append(group)
    k = r % len(groups)
    groups = groups[k:] + groups[:k]
    order = []
    for g in groups:
        order += g if r % 2 == 0 else g[::-1]
    return order


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.timer == 'cpu' and device.type != 'cpu':
        raise ValueError('--timer cpu measures CPU time: it cannot time CUDA kernels')
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    malloc = set_malloc(args.malloc) if device.type == 'cpu' else 'system'
    from tqdm import tqdm

    from vllama_mm.engine.console import quiet_console
    quiet_console()  # init_weights' per-parameter dumps stay off the console
    torch.manual_seed(0)
    load_before = load_average()
    entries = build_entries(args, device)

    # FLOPs (per image, batch 1 trace; the ref twin has the same arithmetic)
    if not args.no_flops:
        for e in tqdm(list(entries.values()), desc='counting FLOPs', leave=False):
            if ' (' in e.key:  # twins: the same arithmetic
                continue
            model = e.model if device.type == 'cpu' else \
                gf.build_backbone(gf.load_config(e.config))
            e.macs = gf.count_complexity(model, e.size).flops
        for e in entries.values():
            if ' (' in e.key:
                e.macs = entries[e.key.split(' (')[0]].macs

    inputs: Dict[Tuple, torch.Tensor] = {}
    calls = {}
    for e in entries.values():
        shape = (e.batch, 3, *e.size)
        if shape not in inputs:
            inputs[shape] = torch.randn(shape, device=device)
        calls[e.key] = make_calls(e, inputs[shape], args, device)

    if args.compile:
        # the first eval call compiles, the first training call compiles for grad mode
        args.warmup = max(args.warmup, 2)
    total = len(entries) * (args.warmup + (0 if args.no_memory else 1) + args.repeats)
    bar = tqdm(total=total, desc='benchmark')
    for _ in range(args.warmup):
        for e in entries.values():
            bar.set_postfix_str(f'warm-up {e.key}')
            fwd, trn = calls[e.key]
            if not e.memory_only or not args.no_memory:
                fwd()
                if e.train:
                    trn()
            bar.update()
    if not args.no_memory:
        mem = PeakMemory(device, exact=not args.compile)
        for e in entries.values():
            bar.set_postfix_str(f'memory {e.key}')
            fwd, trn = calls[e.key]
            e.fwd_mem = mem.measure(fwd)
            if e.train:
                e.train_mem = mem.measure(trn)
            bar.update()
    gemm = []
    # the ceiling in the precision the models run in
    dtype = torch.bfloat16 if _amp(args, device) else torch.float32
    # wall clock, or the process's CPU time (all its threads): on a machine shared with
    # other jobs, CPU time with --threads 1 is not inflated by waiting for a core
    clock = time.process_time if args.timer == 'cpu' else time.perf_counter
    for r in range(args.repeats):
        gemm.append(gemm_rate(device, args.gemm_n, dtype, clock))
        for e in round_order(entries, r):
            if e.memory_only:
                continue
            bar.set_postfix_str(f'round {r + 1} {e.key}')
            fwd, trn = calls[e.key]
            e.fwd_s.append(timed(fwd, device, clock))
            if e.train:
                e.train_s.append(timed(trn, device, clock))
            bar.update()
    bar.close()
    load_after = load_average()

    rows = summarize(entries, gemm)
    for e in entries.values():  # after / before speed-ups of --ref twins
        ref = e.ref_key
        if ref:
            row = next(r for r in rows if r['key'] == e.key)
            row['vs_ref_fwd'] = _paired_ratio(e.fwd_s, entries[ref].fwd_s)
            row['vs_ref_train'] = (_paired_ratio(e.train_s, entries[ref].train_s)
                                   if e.train_s else float('nan'))
    extras = ''
    if args.compile == 'model':
        extras += ', torch.compile(dynamic=True)'
    elif args.compile == 'blocks':
        extras += ', torch.compile of every transformer block (' + ', '.join(
            f'{e.key}: {e.compiled_regions}' for e in entries.values()) + ')'
    if args.with_cp is not None:
        extras += '; "(with_cp=...)" rows: activation checkpointing'
    if device.type == 'cpu':
        extras += f'; malloc: {malloc}'
    skipped = [e.key for e in entries.values() if not e.train and not args.no_train]
    if skipped:
        extras += f' (training step not timed for {", ".join(skipped)}: over ' \
                  f'--train-max-pixels on CPU)'
    meta = dict(date=time.strftime('%Y-%m-%d %H:%M'), machine=machine_info(device),
                precision='bf16 autocast' if _amp(args, device) else 'fp32',
                load_before=' '.join(f'{v:.1f}' for v in load_before),
                load_after=' '.join(f'{v:.1f}' for v in load_after),
                repeats=args.repeats, warmup=args.warmup, optimizer=args.optimizer,
                timer='process CPU time' if args.timer == 'cpu' else 'wall time',
                extras=extras, gemm_n=args.gemm_n, gemm_gflops=max(gemm) / 1e9,
                gemm_dtype=str(dtype).replace('torch.', ''),
                command='python tools/benchmark.py ' + ' '.join(
                    sys.argv[1:] if argv is None else argv))
    print(markdown(rows, meta))
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        plot(rows, osp.join(args.out_dir, 'benchmark.png'),
             f'{meta["machine"]["cpu"]}, {meta["precision"]}, torch {meta["machine"]["torch"]}')
        doc = osp.join(args.out_dir, 'benchmark.md')
        doc_table.update_doc(doc, 'benchmark', HEADER, table_rows(rows), describe(meta))
        doc_table.update_doc(doc, 'benchmark-targets', TARGET_HEADER, target_rows(rows))
        print(f'written {args.out_dir}/benchmark.md and benchmark.png')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1, default=str)
    return rows


if __name__ == '__main__':
    main()
