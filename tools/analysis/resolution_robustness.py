"""Top-1 of one classification checkpoint across test resolutions and RoPE variants.

Reproduces the kind of study in the VisionLLaMA paper's tables 4 and 12: a model trained
at one size is tested at other sizes (e.g. 0.5x to 2x) with its RoPE switched between
``none``, ``1d``, ``2d``, ``as2d`` (auto-scaled), ``ntk`` (ours: theta stretched by the
grid/anchor ratio), ``ntk_fixed`` (the authors' pyramid ``use_ntk``: theta times
``--ntk-factor``, 2 for the paper's table 12) and ``yarn`` (YaRN / NTK-by-parts, default
beta 32 / 1), without retraining.

Which variants apply depends on how the checkpoint was trained (read from the config and
checked against the checkpoint's RoPE parameters): ``mixed`` (learned frequencies) and
``dinov3`` (normalised, augmented coordinates) change training, so they are evaluated only
on a checkpoint trained with them, and such a checkpoint only with itself and ``none``;
``yarn`` applies to checkpoints trained with fixed-frequency 2D tables (``2d``, ``as2d``,
``ntk``, ``ntk_fixed``). Every other cell is ``n/a`` with the reason under the table. A
checkpoint whose learned RoPE parameters do not match the config (a ``mixed`` checkpoint
with a ``2d`` config, or the reverse) is refused with one line naming the key.

    python tools/analysis/resolution_robustness.py CONFIG CHECKPOINT \
        [--sizes 112 160 224 320 448] [--rope none 1d 2d as2d ntk ntk_fixed yarn ...] \
        [--ntk-factor 2] \
        [--out-dir DIR] [--cfg-options test_dataloader.batch_size=16 ...]

Everything runs through the real MMPretrain machinery: one Runner is built from the
config (the library is picked from its ``default_scope``), the checkpoint is loaded by
the Runner, and the config's test loop runs with the ``Accuracy`` metric (top-1). For
each size the test pipeline's resize/crop is rewritten so that the network sees
``size x size`` pixels (``ResizeEdge`` + ``CenterCrop`` keep their resize/crop ratio,
``Resize`` is set to the size, a pipeline without any resize gets one) and a new test
dataloader is built. RoPE tables are derived data, so switching the variant only sets
``rope_type`` on every :class:`~vllama_mm.models.rope.RoPE2D` of the backbone and drops
its cached tables; the weights are untouched.

Outputs in ``--out-dir``: ``resolution_robustness.md`` (a ``rope x size`` top-1 table,
also printed), ``resolution_robustness.png`` (one line per RoPE variant) and
``resolution_robustness.json`` (the raw numbers).

Backbones: the plain ``VisionLLaMA`` (one RoPE2D, all variants) and
``PyramidVisionLLaMA`` (one RoPE2D per stage; no ``1d``: LSA windows and pooled GSA keys
have no flat token index, those cells are reported as ``n/a``). A pyramid backbone with
an explicit ``rope_scale`` (the official-weights modes) fixes its GSA position scale, so
``as2d`` and ``2d`` only differ where that scale is derived from ``rope_type``.
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402

from vllama_mm.models.rope import ROPE_TYPES, RoPE2D  # noqa: E402

DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)
RESULT_NAME = 'resolution_robustness'
TOP1_KEY = 'accuracy/top1'
# transforms that fix the spatial size the network sees (last one wins)
CROP_TYPES = ('CenterCrop', 'EfficientNetCenterCrop')
RESIZE_TYPES = ('Resize', 'RandomResizedCrop', 'EfficientNetRandomCrop')
SIZE_TYPES = CROP_TYPES + RESIZE_TYPES + ('ResizeEdge', )


# ---------------------------------------------------------------------------- pipeline
def _type_name(transform: Dict) -> str:
    """``'Resize'`` for ``type='Resize'``, ``'mmcv.Resize'`` or the class itself."""
    t = transform.get('type')
    if t is None:
        raise ValueError(f'pipeline transform without a type: {transform!r}')
    name = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return name.split('.')[-1]


def _square(value: Union[int, Sequence[int]], what: str) -> int:
    """An int size, or the side of a square ``(w, h)`` size; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1] \
            and isinstance(value[0], int):
        return int(value[0])
    raise ValueError(f'{what} is not a square size: {value!r}; pass --sizes explicitly '
                     'and a square test pipeline')


def pipeline_size(pipeline: Sequence[Dict]) -> Optional[int]:
    """Side of the square input the test pipeline produces, or None if it never resizes.

    A ``CenterCrop`` after ``ResizeEdge``/``Resize`` decides; ``ResizeEdge`` alone gives
    its short edge.
    """
    sizing = [t for t in pipeline if _type_name(t) in SIZE_TYPES and
              (_type_name(t) != 'Resize' or t.get('scale') is not None)]
    if not sizing:
        return None
    t = sizing[-1]  # the last resize/crop decides what the network sees
    name = _type_name(t)
    if name in CROP_TYPES:
        return _square(t['crop_size'], f'{name}.crop_size')
    if name == 'ResizeEdge':
        return int(t['scale'])
    return _square(t['scale'], f'{name}.scale')


def resize_pipeline(pipeline: Sequence[Dict], size: int) -> List[Dict]:
    """A copy of a test pipeline whose output is ``size x size`` pixels.

    ``ResizeEdge``/``Resize`` followed by a crop keep their resize/crop ratio (e.g.
    256/224 -> ``ResizeEdge(round(size*256/224))`` + ``CenterCrop(size)``); a resize
    without a crop is set to ``size`` (``Resize`` as ``(size, size)``, no aspect ratio;
    ``ResizeEdge`` gets a ``CenterCrop(size)`` after it); a pipeline without any resize
    (images already at the training size) gets ``Resize(scale=(size, size))`` after its
    loading transforms.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f'test size must be a positive int, got {size!r}')
    if isinstance(pipeline, (str, bytes)) or not isinstance(pipeline, Sequence):
        raise TypeError(f'pipeline must be a list of transform dicts, got {type(pipeline)}')
    src = [copy.deepcopy(t) for t in pipeline]
    names = [_type_name(t) for t in src]
    crops = [i for i, n in enumerate(names) if n in CROP_TYPES]
    out: List[Dict] = []
    for i, (t, name) in enumerate(zip(src, names)):
        crop = next((_square(src[c]['crop_size'], f'{names[c]}.crop_size')
                     for c in crops if c > i), None)  # the crop after this resize
        out.append(t)
        if name in CROP_TYPES:
            t['crop_size'] = size
        elif name == 'ResizeEdge':
            if crop is not None:  # keep the resize/crop ratio, e.g. 256/224
                t['scale'] = max(1, round(size * int(t['scale']) / crop))
            else:  # short edge only: crop the long one
                t['scale'] = size
                out.append(dict(type='CenterCrop', crop_size=size))
        elif name == 'Resize':
            if crop is not None and t.get('scale') is not None:
                scale = t['scale'] if isinstance(t['scale'], (list, tuple)) \
                    else (t['scale'], t['scale'])
                t['scale'] = tuple(s if s == -1 else max(1, round(size * s / crop))
                                   for s in scale)
            elif crop is None:
                t.pop('scale_factor', None)
                t.update(scale=(size, size), keep_ratio=False)
        elif name in RESIZE_TYPES:  # random crops used at test time: square output
            t['scale'] = size
    if not any(n in SIZE_TYPES for n in names):  # images used as stored: add a resize
        loads = [i for i, n in enumerate(names) if n.startswith('Load')]
        packs = [i for i, n in enumerate(names) if n.startswith('Pack')]
        at = loads[-1] + 1 if loads else (packs[0] if packs else 0)
        out.insert(at, dict(type='Resize', scale=(size, size), keep_ratio=False))
    got = pipeline_size(out)
    if got != size:
        raise ValueError(f'could not set the test pipeline to {size} px (it gives {got}): '
                         f'{[_type_name(t) for t in out]}')
    return out


def _dataset_pipelines(dataset: Dict) -> List[Dict]:
    """Dataset config dicts that own a ``pipeline`` (through wrappers and concatenations)."""
    if 'pipeline' in dataset:
        return [dataset]
    if 'dataset' in dataset:
        return _dataset_pipelines(dataset['dataset'])
    if 'datasets' in dataset:
        return [d for sub in dataset['datasets'] for d in _dataset_pipelines(sub)]
    raise ValueError('test_dataloader.dataset has no pipeline (looked through '
                     '`dataset` and `datasets` wrappers)')


def dataloader_at_size(dataloader: Dict, size: int) -> Dict:
    """A copy of a dataloader config whose dataset pipelines give ``size x size``."""
    dl = copy.deepcopy(dataloader)
    for ds in _dataset_pipelines(dl['dataset']):
        ds['pipeline'] = resize_pipeline(ds['pipeline'], size)
    return dl


def base_test_size(cfg: Config) -> Optional[int]:
    """Training/test size of the config: its test pipeline's output, else backbone img_size."""
    sizes = {pipeline_size(ds['pipeline'])
             for ds in _dataset_pipelines(cfg.test_dataloader['dataset'])}
    sizes.discard(None)
    if len(sizes) == 1:
        return sizes.pop()
    if len(sizes) > 1:
        raise ValueError(f'the test datasets use different sizes {sorted(sizes)}')
    img_size = cfg.get('model', {}).get('backbone', {}).get('img_size')
    return None if img_size is None else _square(img_size, 'model.backbone.img_size')


def default_sizes(base: int, factors: Sequence[float] = DEFAULT_FACTORS,
                  multiple: int = 8) -> List[int]:
    """``base`` times each factor, rounded to a multiple of ``multiple`` (0.5x..2x)."""
    return sorted({max(multiple, int(round(base * f / multiple)) * multiple) for f in factors})


# ---------------------------------------------------------------------------- RoPE
def rope_modules(backbone) -> List[RoPE2D]:
    """Every RoPE2D of the backbone (one for the plain model, one per pyramid stage)."""
    mods = [m for m in backbone.modules() if isinstance(m, RoPE2D)]
    if not mods:
        raise TypeError(f'{type(backbone).__name__} has no RoPE2D module: this tool switches '
                        'the RoPE of VisionLLaMA / PyramidVisionLLaMA backbones')
    return mods


def supported_rope_types(backbone) -> Tuple[str, ...]:
    """RoPE variants the backbone's geometry defines (the pyramid has no ``1d``)."""
    return tuple(getattr(backbone, 'ROPE_TYPES', ROPE_TYPES))


def set_rope_type(backbone, rope_type: str, ntk_factor: Optional[float] = None,
                  rope_cfg: Optional[Dict] = None) -> None:
    """Switch every RoPE2D of ``backbone`` to ``rope_type`` with ``rope_cfg`` (None: the
    variant's defaults, e.g. YaRN's beta 32 / 1) and ``ntk_factor``, when given, for
    ``'ntk_fixed'``; cached tables are dropped (``RoPE2D.configure``)."""
    if ntk_factor is not None and not ntk_factor > 0:
        raise ValueError(f'ntk_factor must be > 0, got {ntk_factor}')
    if rope_type not in ROPE_TYPES:
        raise ValueError(f'rope_type must be one of {ROPE_TYPES}, got {rope_type!r}')
    allowed = supported_rope_types(backbone)
    if rope_type not in allowed:
        raise ValueError(f'{type(backbone).__name__} supports rope_type {allowed}, '
                         f'not {rope_type!r}')
    for m in rope_modules(backbone):
        if rope_type in ('as2d', 'ntk', 'yarn') and m.anchor_hw is None:
            raise ValueError(f'rope_type={rope_type!r} needs an anchor grid, this RoPE2D has none')
        if ntk_factor is not None:
            m.ntk_factor = float(ntk_factor)
        m.configure(rope_type, rope_cfg)  # tables are derived: rebuilt on the next forward


def rope_state(backbone) -> List[Tuple[str, Dict, float]]:
    """``(rope_type, rope_cfg, ntk_factor)`` of every RoPE2D, to restore after switching."""
    return [(m.rope_type, copy.deepcopy(m.rope_cfg), m.ntk_factor)
            for m in rope_modules(backbone)]


def restore_rope(backbone, state: Sequence[Tuple[str, Dict, float]]) -> None:
    for m, (rope_type, rope_cfg, factor) in zip(rope_modules(backbone), state):
        m.ntk_factor = factor
        m.configure(rope_type, rope_cfg)


# variants that change training (learned frequencies / augmented normalised coordinates):
# only the checkpoint trained with one can be evaluated with it
TRAINED_ONLY = ('mixed', 'dinov3')
# checkpoints YaRN can be switched into: trained with fixed-frequency 2D tables on the
# integer grid (ntk / ntk_fixed / yarn train exactly as 2d: they differ only off the anchor)
YARN_FROM = ('2d', 'as2d', 'ntk', 'ntk_fixed', 'yarn')


def not_applicable(trained: str, variant: str) -> Optional[str]:
    """Why ``variant`` cannot be switched into a checkpoint trained with ``trained``
    (None if it can). ``none`` (RoPE off) always can."""
    if variant == trained or variant == 'none':
        return None
    if variant in TRAINED_ONLY:
        return (f'{variant!r} changes training (learnable frequencies / coordinate '
                f'augmentation); this checkpoint was trained with {trained!r}')
    if trained == 'mixed':
        return ("the checkpoint's RoPE frequencies are learned ('mixed'); fixed-frequency "
                'tables would replace them')
    if trained == 'dinov3':
        return ("the checkpoint was trained on normalised coordinates ('dinov3'); integer-grid "
                'tables do not match them')
    if variant == 'yarn' and trained not in YARN_FROM:
        return f"YaRN rescales 2D RoPE frequencies; this checkpoint was trained with {trained!r}"
    return None


def rope_state_keys(backbone, prefix: str = 'backbone.') -> List[str]:
    """State-dict keys (with ``prefix``) owned by the backbone's RoPE2D modules, e.g. the
    learnable frequencies of ``'mixed'``; tables are derived and never stored."""
    return sorted(f'{prefix}{n}.{k}' for n, m in backbone.named_modules()
                  if isinstance(m, RoPE2D) for k in m.state_dict())


def check_trained_rope(backbone, checkpoint_keys: Sequence[str], trained: str,
                       checkpoint: str, prefix: str = 'backbone.') -> None:
    """The checkpoint and the config agree on the RoPE it was trained with: learned RoPE
    parameters are in the checkpoint exactly when the config's variant has them."""
    own = rope_state_keys(backbone, prefix)
    prefixes = tuple(f'{prefix}{n}.' for n, m in backbone.named_modules()
                     if isinstance(m, RoPE2D))
    given = sorted(k for k in checkpoint_keys if k.startswith(prefixes))
    missing = sorted(set(own) - set(given))
    if missing:
        raise ValueError(f'{checkpoint} has no {missing[0]} (learned RoPE parameters of '
                         f'rope_type={trained!r}): it was not trained with this config\'s '
                         'RoPE; pass the config it was trained with')
    extra = sorted(set(given) - set(own))
    if extra:
        raise ValueError(f'{checkpoint} holds learned RoPE parameters ({extra[0]}) that '
                         f'rope_type={trained!r} does not have: it was trained with another '
                         "RoPE (e.g. 'mixed'); pass the config it was trained with")


# ---------------------------------------------------------------------------- outputs
def _fmt(v: Optional[float]) -> str:
    return 'n/a' if v is None else f'{v:.2f}'


def markdown_table(results: Dict[str, Dict[int, Optional[float]]], sizes: Sequence[int],
                   base: Optional[int]) -> str:
    """``| RoPE | 32 | 64 (train) | ...`` rows of top-1 (%), ``n/a`` where undefined."""
    head = [f'{s} (train)' if s == base else str(s) for s in sizes]
    lines = ['| RoPE \\ test size (px) | ' + ' | '.join(head) + ' |',
             '|---|' + '---:|' * len(sizes)]
    for rope, row in results.items():
        lines.append(f'| {rope} | ' + ' | '.join(_fmt(row.get(s)) for s in sizes) + ' |')
    return '\n'.join(lines)


def plot(results: Dict[str, Dict[int, Optional[float]]], sizes: Sequence[int],
         base: Optional[int], title: str, path: str,
         bands: Optional[Dict[str, Dict[int, Tuple[float, float]]]] = None) -> None:
    """Line plot of top-1 against test size, one line per RoPE variant (Agg backend);
    ``bands`` (e.g. the min-max over seeds) are drawn as shaded ranges around the lines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for rope, row in results.items():
        pts = [(s, row[s]) for s in sizes if row.get(s) is not None]
        if pts:
            line, = ax.plot(*zip(*pts), marker='o', label=rope)
            band = (bands or {}).get(rope, {})
            spans = [(s, *band[s]) for s, _ in pts if s in band]
            if spans:
                xs, lo, hi = zip(*spans)
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if base is not None:
        ax.axvline(base, color='grey', linestyle='--', linewidth=1, label=f'train {base} px')
    ax.set_xscale('log', base=2)
    ax.set_xticks(list(sizes))
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel('test resolution (px)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Top-1 of a VisionLLaMA classifier across test sizes and RoPE variants',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmpretrain config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--sizes', type=int, nargs='+',
                        help='test sizes in px (default: 0.5x, 0.75x, 1x, 1.5x, 2x the '
                             "config's test size, rounded to multiples of 8)")
    parser.add_argument('--rope', nargs='+', choices=ROPE_TYPES, default=list(ROPE_TYPES),
                        help='RoPE variants to evaluate')
    parser.add_argument('--ntk-factor', type=float, default=2.0,
                        help="theta multiplier of rope 'ntk_fixed' (the authors' use_ntk; "
                             'default 2, the alpha of the paper\'s table 12)')
    parser.add_argument('--out-dir', help='where the table, plot and json go (default: '
                        'work_dirs/resolution_robustness/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=8 '
                             'test_dataloader.dataset.data_root=data/imagenet')
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if not args.ntk_factor > 0:
        parser.error(f'--ntk-factor must be > 0, got {args.ntk_factor}')
    if args.sizes is not None and any(s <= 0 for s in args.sizes):
        parser.error(f'--sizes must be positive, got {args.sizes}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    from mmengine.model import is_model_wrapper

    from vllama_mm.engine.runner_utils import build_runner, prepare_cfg

    cfg = Config.fromfile(args.config)
    cfg.log_level = 'WARNING'  # the per-evaluation lines below are the progress output
    out_dir = args.out_dir or osp.join('work_dirs', RESULT_NAME,
                                       osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)
    run_args = argparse.Namespace(launcher='none', cfg_options=args.cfg_options,
                                  work_dir=out_dir)
    cfg = prepare_cfg(cfg, run_args, mode='test')  # --cfg-options, work dir, plugin import
    if cfg.get('test_dataloader') is None:
        raise ValueError(f'{args.config} has no test_dataloader')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    # the real metric, top-1 only: the table holds one number per cell
    cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    # remove the training side: only the test loop is built
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler',
                'val_dataloader', 'val_cfg', 'val_evaluator'):
        cfg[key] = None

    base = base_test_size(cfg)
    if args.sizes:
        sizes = sorted(set(args.sizes))
    elif base is None:
        raise ValueError('cannot derive the training size from the test pipeline or '
                         'model.backbone.img_size; pass --sizes')
    else:
        sizes = default_sizes(base)
    test_dl_cfg = copy.deepcopy(cfg.test_dataloader)

    runner = build_runner(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise TypeError(f'{type(model).__name__} has no backbone; expected an ImageClassifier')
    ropes = rope_modules(backbone)
    original, trained_state = ropes[0].rope_type, rope_state(backbone)
    supported = supported_rope_types(backbone)
    skipped = {r: f'{type(backbone).__name__} does not define rope_type {r!r}'
               for r in args.rope if r not in supported}
    for r in args.rope:
        why = None if r in skipped else not_applicable(original, r)
        if why:
            skipped[r] = why
    if getattr(backbone, 'rope_scale', None) is not None:
        print(f'[resolution] note: backbone.rope_scale={backbone.rope_scale!r} fixes the GSA '
              'position scale; only window/anchor-derived scales follow rope_type')

    runner.call_hook('before_run')
    runner.load_or_resume()  # loads cfg.load_from into the model
    from mmengine.runner.checkpoint import _load_checkpoint

    from vllama_mm.models.weights import checkpoint_state_dict
    check_trained_rope(backbone, checkpoint_state_dict(
        _load_checkpoint(args.checkpoint, map_location='cpu')), original, args.checkpoint)
    loop = runner.test_loop
    print(f'[resolution] {type(backbone).__name__} (trained rope_type={original!r}), '
          f'training/test size {base} px; sizes {sizes}; rope {args.rope}', flush=True)

    results: Dict[str, Dict[int, Optional[float]]] = {r: {} for r in args.rope}
    todo = len(sizes) * (len(args.rope) - len(skipped))
    k = 0
    try:
        for size in sizes:
            loop.dataloader = runner.build_dataloader(dataloader_at_size(test_dl_cfg, size),
                                                      seed=runner.seed)
            for rope in args.rope:
                if rope in skipped:
                    results[rope][size] = None
                    continue
                k += 1
                if rope == original:  # as trained, with its rope_cfg
                    restore_rope(backbone, trained_state)
                else:
                    set_rope_type(backbone, rope, args.ntk_factor)
                t0 = time.time()
                metrics = loop.run()
                if TOP1_KEY not in metrics:
                    raise KeyError(f'the test loop returned {sorted(metrics)}, no {TOP1_KEY}')
                results[rope][size] = float(metrics[TOP1_KEY])
                print(f'[resolution] {k}/{todo} size {size} px, rope {rope}: top-1 '
                      f'{results[rope][size]:.2f} ({time.time() - t0:.1f} s)', flush=True)
    finally:
        restore_rope(backbone, trained_state)
        runner.call_hook('after_run')

    table = markdown_table(results, sizes, base)
    title = f'{osp.basename(args.config)}\n{osp.basename(args.checkpoint)}'
    notes = [f'Top-1 (%) of `{args.checkpoint}` ({args.config}), trained with '
             f'rope_type={original!r} at {base} px; rows: RoPE variant at test time.']
    notes += [f'n/a for {r}: {why}.' for r, why in skipped.items()]
    md_path = osp.join(out_dir, RESULT_NAME + '.md')
    with open(md_path, 'w') as f:
        f.write('\n'.join(notes) + '\n\n' + table + '\n')
    png_path = osp.join(out_dir, RESULT_NAME + '.png')
    plot(results, sizes, base, title, png_path)
    summary = dict(config=args.config, checkpoint=args.checkpoint, backbone=type(backbone).__name__,
                   trained_rope_type=original, base_size=base, sizes=sizes,
                   top1={r: {str(s): v for s, v in row.items()} for r, row in results.items()},
                   skipped=skipped)
    with open(osp.join(out_dir, RESULT_NAME + '.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('\n' + table + '\n')
    for r, why in skipped.items():
        print(f'n/a for {r}: {why}')
    print(f'[resolution] wrote {md_path}, {png_path}')
    return summary


if __name__ == '__main__':
    try:
        main()
    except ValueError as e:  # a bad value or file: one line naming it, no traceback
        sys.exit(f'resolution_robustness: error: {e}')
