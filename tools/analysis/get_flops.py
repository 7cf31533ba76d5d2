"""FLOPs and parameters of VisionLLaMA backbones next to their peers (ViT, Twins-SVT).

Counts with mmengine's fvcore-derived :class:`mmengine.analysis.FlopAnalyzer` (the
analyzer behind ``get_model_complexity_info``), so numbers follow the OpenMMLab
convention: **one fused multiply-add = one FLOP** (i.e. MACs; ViT-B/16 at 224 = 17.6 G).
Two handles are added to the stock ones, because the stock counter skips them:

* ``aten::scaled_dot_product_attention`` (every attention here and in mmpretrain's ViT
  and SVT-GSA): ``B*heads*N*Nk*(Hc + Hv)``, the q·k and attention·v products;
* ``aten::mul`` on complex tensors (the RoPE rotation, one complex product per channel
  pair): 4 per pair (2 multiplies + 2 fused multiply-adds).

Still not counted (reported per row as "uncounted ops"): other element-wise work
(SiLU and the SwiGLU gate product, GELU, layer scale, residual adds, softmax inside
SDPA, the pooled-key LN's ...). They are <1-2 % of the total for these models.

The RoPE tables are derived, cached data; they are built before tracing, so their
one-off construction is not part of the count (as in real use, where they are built
once per input size).

Usage::

    python tools/analysis/get_flops.py                     # every arch, every task
    python tools/analysis/get_flops.py --models vllama-b pvllama-s --tasks cls
    python tools/analysis/get_flops.py --update-doc docs/benchmark.md

Model names are ``<family>-<arch>[-<task>]`` (see :func:`parse_model`): families
``vllama`` (plain; archs s, b, l, mae-b, mae-l), ``pvllama`` (pyramid; s, b, l), and the
peers ``vit`` (mmpretrain ``VisionTransformer``; s = DeiT-S/ViT-S 384-d, b, l) and
``svt`` (mmpretrain Twins ``SVT``; s, b, l). Tasks: ``cls`` (224, classification
output), ``seg`` (512, UperNet feature maps), ``det`` (plain: 1024 with ViTDet windows
14 + 4 global blocks; pyramid/SVT: 800x1333 feature maps; ViT: 1024 with global
attention everywhere, as mmpretrain has no windowed ViT).
"""
import argparse
import math
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

FAMILIES = {'vllama': ('s', 'b', 'l', 'mae-b', 'mae-l'), 'pvllama': ('s', 'b', 'l'),
            'vit': ('s', 'b', 'l'), 'svt': ('s', 'b', 'l')}
TASKS = ('cls', 'seg', 'det')
PEER_FAMILY = {'vllama': 'vit', 'pvllama': 'svt'}
PEER_ARCH = {'mae-b': 'b', 'mae-l': 'l'}
# paper claims the tables put next to the measured ratios (DESIGN.md §2, paper tables)
CLAIMS = {'vllama': 'plain ≈ ViT of the same size', 'pvllama': 'pyramid = Twins-SVT'}
DOC_BEGIN, DOC_END = '<!-- flops:begin -->', '<!-- flops:end -->'


@dataclass
class ModelSpec:
    """One benchmarkable backbone: family, arch, task and input size (h, w)."""
    family: str
    arch: str
    task: str = 'cls'
    size: Tuple[int, int] = (224, 224)
    extra: Dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f'{self.family}-{self.arch}' + ('' if self.task == 'cls' else f'-{self.task}')

    @property
    def label(self) -> str:
        h, w = self.size
        return f'{self.name}@{h}' + ('' if h == w else f'x{w}')

    def peer(self) -> Optional['ModelSpec']:
        """The mmpretrain model this one is compared with (same size, task, input)."""
        family = PEER_FAMILY.get(self.family)
        if family is None:
            return None
        return ModelSpec(family, PEER_ARCH.get(self.arch, self.arch), self.task, self.size)


def default_size(family: str, task: str) -> Tuple[int, int]:
    if task == 'cls':
        return (224, 224)
    if task == 'seg':
        return (512, 512)
    return (800, 1333) if family in ('pvllama', 'svt') else (1024, 1024)


def parse_model(text: str) -> ModelSpec:
    """``'<family>-<arch>[-<task>][@<h>[x<w>]]'`` -> :class:`ModelSpec`.

    E.g. ``vllama-b``, ``vllama-mae-b-seg``, ``pvllama-s-det@800x1333``, ``vit-b@384``.
    """
    name, _, size = text.partition('@')
    family, _, rest = name.partition('-')
    if family not in FAMILIES:
        raise ValueError(f'model {text!r}: unknown family {family!r}; '
                         f'choose one of {sorted(FAMILIES)}')
    task = 'cls'
    for t in TASKS:
        if rest.endswith('-' + t):
            rest, task = rest[:-len(t) - 1], t
    if rest not in FAMILIES[family]:
        raise ValueError(f'model {text!r}: unknown {family} arch {rest!r}; '
                         f'choose one of {FAMILIES[family]}')
    if size:
        try:
            hw = tuple(int(v) for v in size.lower().split('x'))
        except ValueError:
            raise ValueError(f'model {text!r}: size must be H or HxW, got {size!r}') from None
        if len(hw) not in (1, 2) or min(hw) < 32:
            raise ValueError(f'model {text!r}: size must be H or HxW (>= 32), got {size!r}')
        hw = (hw[0], hw[-1])
    else:
        hw = default_size(family, task)
    return ModelSpec(family, rest, task, hw)


def _plain_out_indices(num_layers: int) -> List[int]:
    # UperNet taps (mmseg's MAE/BEiT configs): 3, 5, 7, 11 of 12; 7, 11, 15, 23 of 24
    return [3, 5, 7, 11] if num_layers == 12 else [7, 11, 15, 23]


def _global_indexes(num_layers: int) -> List[int]:
    # ViTDet: 4 evenly spaced global blocks, the last one included
    step = num_layers // 4
    return [step * (i + 1) - 1 for i in range(4)]


def _plain_task_kwargs(task: str, num_layers: int) -> Dict:
    """Output settings of a plain backbone (ours or mmpretrain's ViT) for a task:
    class token for classification, feature maps without class token or final norm
    for dense tasks (UperNet taps 4 blocks)."""
    if task == 'cls':
        return dict(out_type='cls_token')
    kw = dict(with_cls_token=False, out_type='featmap', final_norm=False)
    if task == 'seg':
        kw['out_indices'] = _plain_out_indices(num_layers)
    return kw


def build_model(spec: ModelSpec, models_module=None, **overrides) -> nn.Module:
    """The backbone of ``spec``, as the paper's configs (or mmpretrain's) build it.

    ``models_module``: a ``vllama_mm.models``-like module to take our classes from
    (the benchmark's ``--ref`` compares an older revision); ``overrides`` go to our
    constructors (e.g. ``with_cp=True``).
    """
    if models_module is None:
        import vllama_mm.models as models_module
    fam, arch, task = spec.family, spec.arch, spec.task
    if fam == 'vllama':
        cls = models_module.VisionLLaMA
        num_layers = cls.arch_zoo[arch]['num_layers']
        kw = _plain_task_kwargs(task, num_layers)
        if task == 'det':  # ViTDet: 14x14 windows, 4 global blocks
            kw.update(window_size=14, global_attn_indexes=_global_indexes(num_layers))
        kw.update(overrides)
        return cls(arch, img_size=224, **kw)
    if fam == 'pvllama':
        kw = dict(out_type='avg_featmap' if task == 'cls' else 'featmap')
        kw.update(overrides)
        return models_module.PyramidVisionLLaMA(arch, img_size=224, **kw)
    if fam == 'vit':
        from mmpretrain.models import VisionTransformer
        vit_arch = {'s': 'deit-s', 'b': 'b', 'l': 'l'}[arch]
        num_layers = 12 if arch != 'l' else 24
        return VisionTransformer(vit_arch, img_size=spec.size, patch_size=16,
                                 **_plain_task_kwargs(task, num_layers))
    if fam == 'svt':
        from mmpretrain.models import SVT
        out = (3, ) if task == 'cls' else (0, 1, 2, 3)
        return SVT(arch={'s': 'small', 'b': 'base', 'l': 'large'}[arch], out_indices=out)
    raise ValueError(f'unknown family {fam!r}')


# ------------------------------------------------------------------ counting
def _shape(value) -> Optional[List[int]]:
    return value.type().sizes() if value.isCompleteTensor() else None


def sdpa_flop_jit(inputs, outputs) -> Counter:
    """MACs of ``aten::scaled_dot_product_attention(q, k, v, ...)``:
    ``B*heads*N*Nk*Hc`` for q·kᵀ plus ``B*heads*N*Nk*Hv`` for attention·v."""
    q, k, v = (_shape(x) for x in inputs[:3])
    n, nk = q[-2], k[-2]
    batch = math.prod(q[:-2])
    return Counter({'scaled_dot_product_attention': batch * n * nk * (q[-1] + v[-1])})


class ComplexMulHandle:
    """``aten::mul`` handle. RoPE's complex product per channel pair counts 4 (2 mul +
    2 fused mul-add); real element-wise products stay uncounted (fvcore convention)
    and are tallied in ``real_calls`` so the report can say so."""

    def __init__(self) -> None:
        self.real_calls = 0

    def __call__(self, inputs, outputs) -> Counter:
        out = outputs[0]
        if out.isCompleteTensor() and 'Complex' in str(out.type().scalarType()):
            return Counter({'rope (complex mul)': 4 * math.prod(_shape(out))})
        self.real_calls += 1
        return Counter()


@dataclass
class Complexity:
    flops: int  # MACs, fvcore convention
    params: int
    by_operator: Dict[str, int]
    uncounted: Dict[str, int]  # op -> occurrences

    @property
    def stock_flops(self) -> int:
        """What the stock counter (``get_model_complexity_info``) reports: no SDPA, no RoPE."""
        return self.flops - self.by_operator.get('scaled_dot_product_attention', 0) \
            - self.by_operator.get('rope (complex mul)', 0)


def count_complexity(model: nn.Module, size: Tuple[int, int], batch: int = 1,
                     device: str = 'cpu') -> Complexity:
    """FLOPs (MACs) and parameters of ``model`` on a [batch, 3, H, W] input.

    Our RoPE tables are built before tracing (one warm-up forward), as in real use.
    """
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.print_helper import parameter_count
    model.to(device)
    model.eval()  # (mmpretrain's BaseBackbone.train returns None: no chaining)
    x = torch.randn(batch, 3, *size, device=device)
    with torch.no_grad():
        if any(type(m).__name__ == 'RoPE2D' for m in model.modules()):
            model(x)  # fills the RoPE caches: tracing then sees tables as constants
        analyzer = FlopAnalyzer(model, (x, ))
        mul = ComplexMulHandle()
        analyzer.set_op_handle(**{'aten::scaled_dot_product_attention': sdpa_flop_jit,
                                  'aten::mul': mul})
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analyzer.total()
        by_op = dict(analyzer.by_operator())
        uncounted = dict(analyzer.unsupported_ops())
    if mul.real_calls:
        uncounted['aten::mul'] = mul.real_calls
    return Complexity(total, parameter_count(model)[''], by_op, uncounted)


def _head_params(model: nn.Module, spec: ModelSpec) -> int:
    """Parameters of a 1000-class linear head on the classification feature."""
    if spec.task != 'cls':
        return 0
    dims = {'vllama': lambda m: m.embed_dims, 'pvllama': lambda m: m.embed_dims[-1],
            'vit': lambda m: m.embed_dims, 'svt': lambda m: m.embed_dims[-1]}
    d = dims[spec.family](model)
    return d * 1000 + 1000


# ------------------------------------------------------------------ table
def complexity_rows(specs: Sequence[ModelSpec], device: str = 'cpu',
                    progress: Callable = lambda it, **kw: it) -> List[Dict]:
    rows, seen = [], {}

    def measure(spec: ModelSpec) -> Dict:
        if spec.label not in seen:
            model = build_model(spec)
            c = count_complexity(model, spec.size, device=device)
            seen[spec.label] = dict(spec=spec, c=c, head=_head_params(model, spec))
            del model
        return seen[spec.label]

    for spec in progress(specs, desc='counting'):
        ours = measure(spec)
        peer = spec.peer()
        rows.append(dict(ours=ours, peer=measure(peer) if peer else None))
    return rows


def _g(v: float) -> str:
    return f'{v / 1e9:.2f}'


def _m(v: float) -> str:
    return f'{v / 1e6:.1f}'


def markdown_table(rows: List[Dict]) -> str:
    lines = ['| model | input | params (M) | +IN-1k head (M) | FLOPs (G) | stock counter (G) | '
             'peer | peer params (M) | peer FLOPs (G) | FLOPs ratio | paper claim | '
             'uncounted ops (ours) |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        o, p = r['ours'], r['peer']
        s, c = o['spec'], o['c']
        h, w = s.size
        unc = ', '.join(sorted(k.replace('aten::', '') for k in c.uncounted)) or '—'
        head = _m(c.params + o['head']) if o['head'] else '—'
        if p:
            ps, pc = p['spec'], p['c']
            peer_cells = [f'{ps.name}', _m(pc.params), _g(pc.flops), f'{c.flops / pc.flops:.3f}']
        else:
            peer_cells = ['—', '—', '—', '—']
        claim = CLAIMS.get(s.family, '—')
        if s.arch.startswith('mae-'):  # compared with the ViT the paper fine-tunes next to
            claim = 'released MAE layout (SwiGLU 4x wider, ~3x ViT FLOPs)'
        if s.task == 'det' and s.family == 'vllama':
            claim += '; peer has no windows'
        lines.append(f'| {s.name} | {h}x{w} | {_m(c.params)} | {head} | {_g(c.flops)} | '
                     f'{_g(c.stock_flops)} | ' + ' | '.join(peer_cells) + f' | {claim} | {unc} |')
    return '\n'.join(lines)


def default_specs(tasks: Sequence[str]) -> List[ModelSpec]:
    specs = []
    for task in tasks:
        for fam in ('vllama', 'pvllama'):
            for arch in FAMILIES[fam]:
                specs.append(ModelSpec(fam, arch, task, default_size(fam, task)))
    return specs


def update_doc(path: str, text: str) -> None:
    """Replace the block between the flops markers of ``path`` (append it if absent)."""
    block = f'{DOC_BEGIN}\n{text}\n{DOC_END}'
    old = open(path).read() if osp.exists(path) else ''
    if DOC_BEGIN in old and DOC_END in old:
        new = old[:old.index(DOC_BEGIN)] + block + old[old.index(DOC_END) + len(DOC_END):]
    else:
        new = old + ('\n' if old and not old.endswith('\n') else '') + block + '\n'
    with open(path, 'w') as f:
        f.write(new)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=None,
                   help='model names (<family>-<arch>[-<task>][@HxW]); default: every '
                        'vllama and pvllama arch for each of --tasks, each with its peer')
    p.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS)
    p.add_argument('--device', default='cpu', help='device the traced forward runs on')
    p.add_argument('--update-doc', default=None, metavar='MD',
                   help='write the table between the flops markers of this markdown file')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    specs = [parse_model(m) for m in args.models] if args.models else \
        default_specs(args.tasks)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    rows = complexity_rows(specs, args.device,
                           progress=(lambda it, **kw: tqdm(it, **kw)) if tqdm else
                           (lambda it, **kw: it))
    table = markdown_table(rows)
    print(table)
    if args.update_doc:
        update_doc(args.update_doc, table)
        print(f'written to {args.update_doc}')


if __name__ == '__main__':
    main()
