"""FLOPs and parameters of the backbone of OpenMMLab config files (ours and the peers).

Each argument is a config path (ours, or an upstream one such as
``mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py``); its
``model.backbone`` is built through the config's own registry and counted at the
config's input size (``--shape`` overrides it). Counting uses mmengine's
:class:`~mmengine.analysis.FlopAnalyzer`, the analyzer behind
``get_model_complexity_info`` that mmpretrain's, mmseg's and mmdet's own
``tools/analysis_tools/get_flops.py`` call, so the convention is OpenMMLab's: **one fused
multiply-add = one FLOP** (MACs; ViT-B/16 at 224 = 17.6 G). Two columns:

* ``stock (G)``: what that stock analyzer reports for the backbone (the upstream tools
  give the same number, within 2 %: ``tests/test_speed_features.py``);
* ``FLOPs (G)``: stock + ``aten::scaled_dot_product_attention``, which the stock
  analyzer skips: ``B*heads*N*Nk*(Hc + Hv)``, the q·k and attention·v products.

Still not counted (listed per row): element-wise work (the RoPE rotation, SiLU and the
SwiGLU gate product, layer scale, residual adds, softmax ...), <1-2 % here.
RoPE tables are built once before tracing (a warm-up forward), as in real use.

Usage::

    python tools/analysis/get_flops.py                     # the default table
    python tools/analysis/get_flops.py CONFIG [CONFIG ...] [--shape H [W]]
    python tools/analysis/get_flops.py --update-doc docs/benchmark.md [--models NAME ...]

``--models`` picks default rows by config name (the file name without ``.py``);
``--update-doc`` rewrites only the rows measured, keeping the others.
"""
import argparse
import importlib
import math
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import doc_table  # noqa: E402

C = 'configs/'
#: (our config, the upstream config it is compared with in the paper, or None)
DEFAULT_ROWS: List[Tuple[str, Optional[str]]] = [
    (C + 'mmpretrain/vision_llama/vision-llama-s-p16_8xb256-lamb-800e_in1k.py',
     'mmpretrain::deit/deit-small_4xb256_in1k.py'),
    (C + 'mmpretrain/vision_llama/vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py',
     'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py'),
    (C + 'mmpretrain/vision_llama/vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py',
     'mmpretrain::vision_transformer/vit-large-p16_64xb64_in1k.py'),
    (C + 'mmpretrain/pyramid_vision_llama/pyramid-vision-llama-s_8xb128_in1k.py',
     'mmpretrain::twins/twins-svt-small_8xb128_in1k.py'),
    (C + 'mmpretrain/pyramid_vision_llama/pyramid-vision-llama-b_8xb128_in1k.py',
     'mmpretrain::twins/twins-svt-base_8xb128_in1k.py'),
    (C + 'mmpretrain/pyramid_vision_llama/pyramid-vision-llama-l_8xb128_in1k.py',
     'mmpretrain::twins/twins-svt-large_16xb64_in1k.py'),
    (C + 'mmpretrain/mae/benchmarks/vision-llama-b-p16_8xb128-coslr-100e_in1k.py',
     'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'),
    (C + 'mmseg/upernet/upernet_vllama-b-mae_8xb2-amp-160k_ade20k-512x512.py',
     'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py'),
    (C + 'mmseg/upernet/upernet_pvllama-s_8xb2-160k_ade20k-512x512.py',
     'mmseg::twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py'),
    (C + 'mmseg/upernet/upernet_pvllama-b_8xb2-160k_ade20k-512x512.py',
     'mmseg::twins/twins_svt-b_uperhead_8xb2-160k_ade20k-512x512.py'),
    (C + 'mmdet/mask_rcnn/mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py', None),
    (C + 'mmdet/vitdet/vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py', None),
]
HEADER = ['| config | input | params (M) | FLOPs (G) | stock (G) | peer | peer params (M) | '
          'peer FLOPs (G) | FLOPs ratio | uncounted ops |',
          '|---|---|---|---|---|---|---|---|---|---|']


def config_name(path: str) -> str:
    return osp.splitext(osp.basename(path.split('::')[-1]))[0]


# ------------------------------------------------------------------ configs
def load_config(path: str):
    """The mmengine Config of ``path`` (a file, or ``pkg::path`` inside a library),
    with its ``custom_imports`` imported (our registrations)."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    if '::' not in path and not osp.exists(path):
        raise FileNotFoundError(f'config {path} not found; pass a config file path or '
                                "an upstream one as 'mmpretrain::dir/name.py'")
    if '::' in path:  # a config shipped inside an installed library
        from mmengine.hub import get_config
        cfg = get_config(path)
    else:
        cfg = Config.fromfile(path)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def _scope(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in ('mmpretrain', 'mmseg', 'mmdet'):
        raise ValueError(f"config default_scope {scope!r}: expected 'mmpretrain', 'mmseg' "
                         "or 'mmdet'")
    return scope


def input_size(cfg) -> Tuple[int, int]:
    """(H, W) the config's model sees: mmseg ``crop_size``; mmdet ``image_size`` (LSJ) or
    the test ``Resize`` scale (W, H); mmpretrain the backbone's ``img_size`` (224)."""
    scope = _scope(cfg)
    if scope == 'mmseg':
        return tuple(cfg.crop_size)
    if scope == 'mmdet':
        if cfg.get('image_size'):
            return tuple(cfg.image_size)
        for step in cfg.test_dataloader.dataset.pipeline:
            if step.get('type') == 'Resize' and step.get('scale'):
                w, h = step['scale']
                return (min(w, h), max(w, h))
        raise ValueError('mmdet config without image_size or a test Resize scale: '
                         'pass --shape H W')
    size = cfg.model.backbone.get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def build_backbone(cfg, models_module=None, **overrides) -> nn.Module:
    """``cfg.model.backbone`` built by the config's registry, without loading weights.

    ``models_module``: a ``vllama_mm.models``-like module to take our class from
    (``tools/benchmark.py --ref`` times an older revision); ``overrides`` are extra
    backbone arguments (e.g. ``with_cp=True``).
    """
    bb = dict(cfg.model.backbone)
    bb.pop('init_cfg', None)  # counting needs no checkpoint
    bb.update(overrides)
    if models_module is not None:
        return getattr(models_module, bb.pop('type'))(**bb)
    registry = importlib.import_module(f'{_scope(cfg)}.registry')
    return registry.MODELS.build(bb)


# ------------------------------------------------------------------ counting
def _shape(value) -> Optional[List[int]]:
    return value.type().sizes() if value.isCompleteTensor() else None


def sdpa_flop_jit(inputs, outputs) -> Counter:
    """MACs of ``aten::scaled_dot_product_attention(q, k, v, ...)``:
    ``B*heads*N*Nk*Hc`` for q·kᵀ plus ``B*heads*N*Nk*Hv`` for attention·v."""
    q, k, v = (_shape(x) for x in inputs[:3])
    return Counter({'scaled_dot_product_attention':
                    math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])})


@dataclass
class Complexity:
    flops: int  # MACs, stock + SDPA
    params: int
    by_operator: Dict[str, int]
    uncounted: Dict[str, int]  # op -> occurrences

    @property
    def stock_flops(self) -> int:
        """What the stock analyzer (``get_model_complexity_info``) reports: no SDPA."""
        return self.flops - self.by_operator.get('scaled_dot_product_attention', 0)


def count_complexity(model: nn.Module, size: Tuple[int, int], batch: int = 1,
                     device: str = 'cpu') -> Complexity:
    """FLOPs (MACs) and parameters of ``model`` on a [batch, 3, H, W] input."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.print_helper import parameter_count
    model.to(device)
    model.eval()  # (mmpretrain's BaseBackbone.train returns None: no chaining)
    x = torch.randn(batch, 3, *size, device=device)
    with torch.no_grad():
        model(x)  # fills the RoPE caches: tracing then sees the tables as constants
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.set_op_handle(**{'aten::scaled_dot_product_attention': sdpa_flop_jit})
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analyzer.total()
        by_op = dict(analyzer.by_operator())
        uncounted = dict(analyzer.unsupported_ops())
    return Complexity(total, parameter_count(model)[''], by_op, uncounted)


def measure(config: str, shape: Optional[Tuple[int, int]] = None,
            device: str = 'cpu') -> Dict:
    """One config's backbone: name, input, parameters and :class:`Complexity`."""
    cfg = load_config(config)
    size = tuple(shape) if shape else input_size(cfg)
    model = build_backbone(cfg)
    return dict(name=config_name(config), size=size,
                c=count_complexity(model, size, device=device))


# ------------------------------------------------------------------ report
def _g(v: float) -> str:
    return f'{v / 1e9:.2f}'


def _m(v: float) -> str:
    return f'{v / 1e6:.1f}'


def table_row(ours: Dict, peer: Optional[Dict]) -> str:
    c = ours['c']
    h, w = ours['size']
    cells = [ours['name'], f'{h}x{w}', _m(c.params), _g(c.flops), _g(c.stock_flops)]
    if peer:
        pc = peer['c']
        cells += [peer['name'], _m(pc.params), _g(pc.flops), f'{c.flops / pc.flops:.3f}']
    else:
        cells += ['—'] * 4
    cells.append(', '.join(sorted(k.replace('aten::', '') for k in c.uncounted)) or '—')
    return '| ' + ' | '.join(cells) + ' |'


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('configs', nargs='*', help='config files (default: the paper rows)')
    p.add_argument('--peer', default=None, help='config compared with every CONFIG')
    p.add_argument('--models', nargs='+', default=None, metavar='NAME',
                   help='default rows whose config name contains NAME')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input H [W] (default: the config\'s own size)')
    p.add_argument('--device', default='cpu', help='device the traced forward runs on')
    p.add_argument('--update-doc', default=None, metavar='MD',
                   help='update the measured rows between the flops markers of this file')
    args = p.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        p.error(f'--shape takes H or H W, got {args.shape}')
    return args


def selected_rows(args) -> List[Tuple[str, Optional[str]]]:
    if args.configs:
        return [(c, args.peer) for c in args.configs]
    rows = DEFAULT_ROWS
    if args.models:
        rows = [r for r in rows if any(m in config_name(r[0]) for m in args.models)]
        if not rows:
            raise ValueError(f'--models {args.models} matches no default row; choose from '
                             f'{[config_name(r[0]) for r in DEFAULT_ROWS]}')
    return [(osp.join(ROOT, c), p) for c, p in rows]


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    shape = None if args.shape is None else (args.shape[0], args.shape[-1])
    lines, cache = [], {}
    for config, peer in selected_rows(args):
        ours = measure(config, shape, args.device)
        other = None
        if peer:  # the peer at our input size
            key = (peer, ours['size'])
            if key not in cache:
                cache[key] = measure(peer, ours['size'], args.device)
            other = cache[key]
        lines.append(table_row(ours, other))
        print(lines[-1], flush=True)
    print('\n'.join(HEADER + lines))
    if args.update_doc:
        doc_table.update_doc(args.update_doc, 'flops', HEADER, lines)
        print(f'updated {len(lines)} rows in {args.update_doc}')
    return lines


if __name__ == '__main__':
    main()
