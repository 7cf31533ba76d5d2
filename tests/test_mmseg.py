"""MMSegmentation integration: the ADE20K UperNet configs, run for real on tiny models.

The real config files under configs/mmseg/upernet are loaded with ``Config.fromfile``
(their ``mmseg::`` bases resolved from the installed wheel), shrunk (tiny backbone and
heads, 64x64 crops, 4 iterations, CPU norms/optimizer) and run through the real mmengine
Runner on generated ADE20K-layout data, so the dataset, pipeline, model, optimizer
constructor, evaluation and checkpoint paths are the ones a user runs.
"""
import copy
import math
import os
import os.path as osp
import time
from typing import Dict, List

import mmseg
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.apis import MMSegInferencer
from mmseg.datasets import ADE20KDataset
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules
from PIL import Image

import vllama_mm.mmseg  # noqa: F401  (registers VisionLLaMA, PyramidVisionLLaMA, constructor)
from vllama_mm.datasets.synthetic_ade20k import class_labels, generate
from vllama_mm.engine.runner_utils import build_runner
from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(REPO, 'configs', 'mmseg', 'upernet')
PLAIN = 'upernet_vllama-b-mae_8xb2-amp-160k_ade20k-512x512.py'
PLAIN_L = 'upernet_vllama-l-mae_8xb2-amp-160k_ade20k-512x512.py'
DROPIN = 'upernet_vllama-b-mae-dropin_8xb2-amp-160k_ade20k-512x512.py'
PLAIN_AS2D = 'upernet_vllama-b-mae-as2drope_8xb2-amp-160k_ade20k-512x512.py'
PLAIN_L_AS2D = 'upernet_vllama-l-mae-as2drope_8xb2-amp-160k_ade20k-512x512.py'
PYRAMID = {a: f'upernet_pvllama-{a}_8xb2-160k_ade20k-512x512.py' for a in 'sbl'}
CROP = (64, 64)
MAX_ITERS = 4

TINY_PLAIN = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128,
                  ffn_bias=True)
TINY_PYRAMID = dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 2, 1])
TIMINGS: Dict[str, float] = {}


def _walk(obj, fn) -> None:
    """Apply ``fn`` to every dict nested in ``obj`` (dicts and lists)."""
    if isinstance(obj, dict):
        fn(obj)
        for v in obj.values():
            _walk(v, fn)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, fn)


def _unscoped(obj):
    """Copy of a plain config tree without ``_scope_`` keys."""
    if isinstance(obj, dict):
        return {k: _unscoped(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unscoped(v) for v in obj)
    return obj


def _cpu_norm(d: dict) -> None:
    if d.get('type') == 'SyncBN':
        d['type'] = 'BN'


def _shrink_pipeline(pipeline: List[dict]) -> None:
    """ADE20K's (2048, 512) resize and 512 crop -> (256, 64) and 64: same transforms, tiny."""
    for t in pipeline:
        if t['type'] in ('Resize', 'RandomResize') and 'scale' in t:
            t['scale'] = (4 * CROP[1], CROP[0])
        if t['type'] == 'RandomCrop':
            t['crop_size'] = CROP


def tiny_cfg(name: str, data_root: str, work_dir: str) -> Config:
    """Load a real config and shrink it for a few CPU iterations on generated data."""
    cfg = Config.fromfile(osp.join(CFG_DIR, name))
    model = cfg.model
    bb = model.backbone
    bb.init_cfg = None  # no pretrained file in tests
    if bb.type == 'VisionLLaMA':
        bb.arch = TINY_PLAIN
        bb.out_indices = (0, 1, 2, 3)
        dims = [TINY_PLAIN['embed_dims']] * 4
        model.neck.embed_dim = dims[0]
        model.neck.norm_cfg = dict(type='BN', requires_grad=True)  # default is SyncBN
    else:
        bb.arch = TINY_PYRAMID
        dims = TINY_PYRAMID['embed_dims']
    model.decode_head.in_channels = dims
    model.decode_head.channels = 32
    model.auxiliary_head.in_channels = dims[2]
    model.auxiliary_head.channels = 16
    model.data_preprocessor.size = CROP
    if model.test_cfg.get('mode') == 'slide':
        model.test_cfg.crop_size = CROP
        model.test_cfg.stride = (43, 43)  # 512 / 341 of the recipe, scaled
    _walk(model, _cpu_norm)

    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.batch_size = 2 if split == 'train' else 1
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
        _shrink_pipeline(loader.dataset.pipeline)

    if not torch.cuda.is_available() and cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU
        cfg.optim_wrapper.pop('loss_scale', None)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=MAX_ITERS, val_interval=MAX_ITERS)
    cfg.param_scheduler = [  # the recipe's warm-up + poly decay, squeezed into 4 iterations
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1),
        dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1, end=MAX_ITERS, by_epoch=False)
    ]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = MAX_ITERS
    cfg.env_cfg.cudnn_benchmark = False
    cfg.randomness = dict(seed=0)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    return cfg


class _KeepMetrics(Hook):
    """Keeps the metrics of the last validation run."""

    def __init__(self):
        self.metrics = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = metrics


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('ade20k'))
    generate(root, num_train=16, num_val=8, img_size=(64, 64), seed=0)
    return root


def _train(name: str, ade_root: str, work_dir: str) -> Dict:
    cfg = tiny_cfg(name, ade_root, work_dir)
    runner = build_runner(cfg)
    keep = _KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    t0 = time.perf_counter()
    runner.train()
    TIMINGS[name] = time.perf_counter() - t0
    return dict(cfg=cfg, runner=runner, metrics=keep.metrics,
                ckpt=osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))


@pytest.fixture(scope='module')
def plain_run(ade_root, tmp_path_factory) -> Dict:
    return _train(PLAIN, ade_root, str(tmp_path_factory.mktemp('plain')))


@pytest.fixture(scope='module')
def pyramid_run(ade_root, tmp_path_factory) -> Dict:
    return _train(PYRAMID['b'], ade_root, str(tmp_path_factory.mktemp('pyramid')))


# ----------------------------------------------------------------------------- data
def test_generated_data_reads_as_ade20k(ade_root):
    """mmseg's own ADE20KDataset + LoadAnnotations(reduce_zero_label) read the files:
    ADE label 0 -> 255 (ignored), labels 1..150 -> 0..149."""
    init_default_scope('mmseg')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', reduce_zero_label=True)]
    ds = ADE20KDataset(data_root=ade_root, pipeline=pipeline,
                       data_prefix=dict(img_path='images/training',
                                        seg_map_path='annotations/training'))
    assert len(ds) == 16 and len(ds.metainfo['classes']) == 150
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        raw = np.array(Image.open(item['seg_map_path']))
        seg = item['gt_seg_map']
        assert item['img'].shape == (64, 64, 3) and seg.shape == (64, 64)
        assert (seg[raw == 0] == 255).all()
        assert (seg[raw > 0] == raw[raw > 0].astype(np.int64) - 1).all()
        seen |= set(np.unique(raw).tolist())
    labels = class_labels(8)
    assert labels[0] == 1 and labels[-1] == 150
    assert seen <= {0, *labels} and 0 in seen and len(seen) >= 6


def test_generate_is_idempotent_and_never_mixes_datasets(tmp_path):
    root = str(tmp_path / 'ade')
    generate(root, num_train=3, num_val=2, img_size=(32, 48), seed=1)
    img = osp.join(root, 'images', 'training', 'ADE_train_00000001.jpg')
    ann = osp.join(root, 'annotations', 'training', 'ADE_train_00000001.png')
    assert Image.open(img).size == (48, 32) and Image.open(ann).size == (48, 32)
    before = open(ann, 'rb').read()
    generate(root, num_train=3, num_val=2, img_size=(32, 48), seed=1)  # kept as is
    assert open(ann, 'rb').read() == before
    generate(root, num_train=2, num_val=1, img_size=(32, 48), seed=2)  # replaced
    assert sorted(os.listdir(osp.join(root, 'annotations', 'training'))) == \
        ['ADE_train_00000001.png', 'ADE_train_00000002.png']
    assert open(ann, 'rb').read() != before
    foreign = tmp_path / 'real'
    (foreign / 'images' / 'training').mkdir(parents=True)
    (foreign / 'images' / 'training' / 'ADE_train_00000001.jpg').write_bytes(b'real data')
    with pytest.raises(FileExistsError, match='not written by this generator'):
        generate(str(foreign))
    assert (foreign / 'images' / 'training' / 'ADE_train_00000001.jpg').read_bytes() == \
        b'real data'


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        generate(str(tmp_path), num_train=0)
    with pytest.raises(TypeError, match='img_size'):
        generate(str(tmp_path), img_size=(64, 64, 3))
    with pytest.raises(ValueError, match='num_classes'):
        generate(str(tmp_path), num_classes=151)


# ----------------------------------------------------------------------------- configs
def test_configs_follow_the_recipes():
    """The full-size configs resolve through mmseg:: bases and carry the paper recipes."""
    for arch, name in PYRAMID.items():
        cfg = Config.fromfile(osp.join(CFG_DIR, name))
        dims = PyramidVisionLLaMA.arch_zoo[arch]['embed_dims']
        assert cfg.default_scope == 'mmseg'
        assert cfg.custom_imports.imports == ['vllama_mm.mmseg']
        bb = cfg.model.backbone
        assert bb.type == 'PyramidVisionLLaMA' and bb.arch == arch and bb.out_type == 'featmap'
        assert set(bb) >= {'img_size', 'out_indices', 'drop_path_rate', 'init_cfg'}
        assert 'pretrain_img_size' not in bb  # Swin base keys deleted
        assert bb.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                   checkpoint=f'pretrain/pvllama-{arch}_in1k.pth')
        assert list(cfg.model.decode_head.in_channels) == dims
        assert cfg.model.auxiliary_head.in_channels == dims[2]
        assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 150
        assert bb.compat == 'official'  # the released weights' geometry
        assert bb.drop_path_rate == (0.3 if arch == 'l' else 0.2)  # the authors' runs
        assert cfg.model.test_cfg.mode == 'slide' and tuple(cfg.model.test_cfg.stride) == (341, 341)
        opt = cfg.optim_wrapper
        assert opt.type == 'AmpOptimWrapper' and opt.optimizer.type == 'AdamW'  # their --amp
        assert opt.optimizer.lr == 6e-5 and opt.optimizer.weight_decay == 0.01
        assert tuple(opt.optimizer.betas) == (0.9, 0.999)
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
        assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
        assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
        assert cfg.param_scheduler[0].end == 1500
    for name, arch, idx in ((PLAIN, 'mae-b', (3, 5, 7, 11)), (PLAIN_L, 'mae-l', (7, 11, 15, 23)),
                            (DROPIN, 'mae-b', (3, 5, 7, 11))):
        cfg = Config.fromfile(osp.join(CFG_DIR, name))
        d = VisionLLaMA.arch_zoo[arch]['embed_dims']
        bb = cfg.model.backbone
        assert bb.type == 'VisionLLaMA' and bb.arch == arch and tuple(bb.out_indices) == idx
        # the authors' RoPE: plain 2D over the 32x32 fine-tuning grid
        assert bb.img_size == 512 and bb.rope_type == '2d' and bb.get('patch_size', 16) == 16
        assert bb.out_type == 'featmap' and bb.final_norm is False and bb.drop_path_rate == 0.1
        assert bb.init_cfg.prefix == 'backbone.'
        assert 'mlp_ratio' not in bb and 'init_values' not in bb  # MAE base keys deleted
        assert cfg.model.get('pretrained') is None
        assert cfg.model.neck.type == 'Feature2Pyramid' and cfg.model.neck.embed_dim == d
        assert list(cfg.model.neck.rescales) == [4, 2, 1, 0.5]
        assert list(cfg.model.decode_head.in_channels) == [d] * 4
        assert cfg.model.decode_head.num_classes == 150
        test_cfg = cfg.model.test_cfg
        assert test_cfg.mode == 'slide' and tuple(test_cfg.crop_size) == (512, 512)
        assert tuple(test_cfg.stride) == (341, 341)
        opt = cfg.optim_wrapper
        assert opt.constructor == 'LayerDecayOptimWrapperConstructor'
        assert opt.paramwise_cfg == dict(layer_decay_rate=0.65, flat_decay_mult=0.0)
        assert cfg.model.backbone.with_cls_token is False
        assert opt.optimizer.lr == 1e-4
    assert Config.fromfile(osp.join(CFG_DIR, PLAIN)).optim_wrapper.type == 'AmpOptimWrapper'
    large = Config.fromfile(osp.join(CFG_DIR, PLAIN_L))  # 8 GPUs x 1 image x 2 accumulated
    assert large.train_dataloader.batch_size == 1 and large.optim_wrapper.accumulative_counts == 2
    for name, paper_row in ((PLAIN_AS2D, PLAIN), (PLAIN_L_AS2D, PLAIN_L)):
        variant, row = (Config.fromfile(osp.join(CFG_DIR, n)) for n in (name, paper_row))
        bb = variant.model.backbone
        assert bb.img_size == 224 and bb.rope_type == 'as2d'  # anchored at the 14x14 grid
        bb.update(img_size=512, rope_type='2d')
        assert variant.to_dict() == row.to_dict()  # nothing else differs


# backbone parameters of the full-size configs: docs/design.md (Plain, Pyramid) counts (official code)
# minus the parts the dense backbones do not have (1000-class head; MAE pos_embed, final LN)
FULL_BACKBONE_PARAMS = {
    PYRAMID['s']: 25.90e6 - (512 * 1000 + 1000),
    PYRAMID['b']: 56.03e6 - (768 * 1000 + 1000),
    PYRAMID['l']: 104.72e6 - (1024 * 1000 + 1000),
    PLAIN: 255.8e6 - 197 * 768 - 2 * 768,
    DROPIN: 255.8e6 - 197 * 768 - 2 * 768,
    PLAIN_L: None,
}


@pytest.mark.parametrize('name', sorted(FULL_BACKBONE_PARAMS))
def test_full_size_configs_build_and_run(name):
    """Each real config builds its full-size model (on the meta device: no memory, no
    compute) and maps a 512x512 crop to 150-class logits at 1/4 resolution."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(CFG_DIR, name))
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model).eval()
        x = torch.empty(1, 3, 512, 512)
        feats = model.extract_feat(x)
        assert [tuple(f.shape[2:]) for f in feats] == [(128, 128), (64, 64), (32, 32), (16, 16)]
        assert tuple(model._forward(x).shape) == (1, 150, 128, 128)
        assert tuple(model.auxiliary_head(feats).shape) == (1, 150, 32, 32)
    expected = FULL_BACKBONE_PARAMS[name]
    if expected is not None:
        n = sum(p.numel() for p in model.backbone.parameters())
        assert abs(n - expected) / expected < 1e-3, (n, expected)


def test_dropin_changes_only_the_backbone():
    """The drop-in config equals mmseg's MAE UperNet config except backbone, pretrained,
    the optimizer constructor and custom_imports."""
    ours = Config.fromfile(osp.join(CFG_DIR, DROPIN))
    upstream = Config.fromfile(osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'mae',
                                        'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'))
    assert upstream.model.backbone.type == 'MAE'
    # inheriting through ``mmseg::`` tags every typed dict with ``_scope_='mmseg'``
    ours, upstream = _unscoped(ours.to_dict()), _unscoped(upstream.to_dict())
    differing = {k for k in set(ours) | set(upstream) if ours.get(k) != upstream.get(k)}
    # + the reliability defaults: AtomicCheckpointHook and a collective timeout
    assert differing == {'model', 'optim_wrapper', 'custom_imports', 'default_hooks', 'env_cfg'}
    assert ours['default_hooks']['checkpoint']['type'] == 'AtomicCheckpointHook'
    assert {**ours['default_hooks'], 'checkpoint': None} == \
        {**upstream['default_hooks'], 'checkpoint': None}
    for key in set(upstream['model']) | set(ours['model']):
        same = ours['model'].get(key) == upstream['model'].get(key)
        assert same == (key not in ('backbone', 'pretrained')), key
    assert ours['model']['pretrained'] is None
    for key in ('type', 'optimizer'):
        assert ours['optim_wrapper'][key] == upstream['optim_wrapper'][key]
    assert ours['optim_wrapper']['paramwise_cfg']['layer_decay_rate'] == \
        upstream['optim_wrapper']['paramwise_cfg']['layer_decay_rate']


# ----------------------------------------------------------------------------- training
def _check_metrics(metrics) -> None:
    assert metrics is not None, 'validation did not run'
    assert 'mIoU' in metrics and 'aAcc' in metrics
    assert math.isfinite(metrics['mIoU']) and 0.0 <= metrics['mIoU'] <= 100.0
    assert math.isfinite(metrics['aAcc']) and 0.0 <= metrics['aAcc'] <= 100.0


def test_plain_mae_recipe_trains_and_evaluates(plain_run):
    _check_metrics(plain_run['metrics'])
    assert osp.isfile(plain_run['ckpt'])
    runner = plain_run['runner']
    assert runner.iter == MAX_ITERS
    assert type(runner.model.backbone).__name__ == 'VisionLLaMA'
    assert type(runner.optim_wrapper).__name__ in ('OptimWrapper', 'AmpOptimWrapper')
    print(f"\nplain tiny: {plain_run['metrics']} train+val {TIMINGS[PLAIN]:.1f}s")


def test_pyramid_recipe_trains_and_evaluates(pyramid_run):
    _check_metrics(pyramid_run['metrics'])
    assert osp.isfile(pyramid_run['ckpt'])
    bb = pyramid_run['runner'].model.backbone
    assert type(bb).__name__ == 'PyramidVisionLLaMA'
    assert bb.compat == 'official' and bb.rope_compat == 'official'
    assert bb.window_pad_mask is False and bb.rope_scale == 'official'
    print(f"\npyramid tiny: {pyramid_run['metrics']} train+val {TIMINGS[PYRAMID['b']]:.1f}s")


def test_pyramid_optimizer_exempts_norms(pyramid_run):
    """AdamW wd 0.01 except the backbone's LayerNorms (wd 0); layer scales are decayed, as
    in the authors' Twins recipe (``'norm'`` is its only exemption)."""
    groups = pyramid_run['runner'].optim_wrapper.optimizer.param_groups
    model = pyramid_run['runner'].model
    names = {id(p): n for n, p in model.named_parameters()}
    checked = 0
    for g in groups:
        for p in g['params']:
            n = names[id(p)]
            no_decay = n.startswith('backbone.') and (
                'norm' in n or '.ln1.' in n or '.ln2.' in n)
            assert g['weight_decay'] == (0.0 if no_decay else 0.01), n
            checked += no_decay
    assert checked > 0


def test_layer_decay_lr_scales(tmp_path):
    """Tiny plain config: block i gets lr * 0.65 ** (L - i) = 0.65 ** (L + 1 - depth),
    patch embed / class token 0.65 ** (L + 1), neck and heads 1; no weight decay for 1-D
    params (norms, biases) and the class token."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')
    cfg = tiny_cfg(PLAIN, str(tmp_path), str(tmp_path))
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    rate, lr, wd = 0.65, 1e-4, 0.05
    L = TINY_PLAIN['num_layers']
    seen = set()
    for g in wrapper.optimizer.param_groups:
        name = g['param_name']
        if name.startswith('backbone.layers.'):
            expected = rate ** (L - int(name.split('.')[2]))
        elif name.startswith(('backbone.patch_embed.', 'backbone.cls_token')):
            expected = rate ** (L + 1)
        else:
            assert not name.startswith('backbone.'), name
            expected = 1.0
        assert g['lr_scale'] == pytest.approx(expected), name
        assert g['lr'] == pytest.approx(lr * expected), name
        flat = g['params'][0].ndim == 1 or name == 'backbone.cls_token'
        assert g['weight_decay'] == (0.0 if flat else wd), name
        seen.add(round(expected, 8))
    assert len(seen) == L + 2  # embeddings, L blocks, neck/heads


# ----------------------------------------------------------------------------- inference
def test_inferencer_on_trained_checkpoint(plain_run):
    """MMSegInferencer (config + tiny trained weights): seg map has the input's shape,
    also for an odd non-square image that the pipeline resizes and slide inference tiles."""
    inferencer = MMSegInferencer(model=copy.deepcopy(plain_run['cfg']), weights=plain_run['ckpt'],
                                 device='cpu')
    rng = np.random.default_rng(0)
    for h, w in ((64, 64), (50, 90)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        out = inferencer(img)
        pred = out['predictions']
        assert pred.shape == (h, w)
        assert pred.min() >= 0 and pred.max() < 150
    assert len(inferencer.model.dataset_meta['classes']) == 150


@pytest.mark.parametrize('name', [PLAIN, PYRAMID['s']])
def test_upernet_non_square_shapes(name, tmp_path):
    """64x96 input: backbone / neck pyramids at strides 4..32, logits and the predicted
    seg map at full resolution, in train (loss) and predict modes."""
    init_default_scope('mmseg')
    cfg = tiny_cfg(name, str(tmp_path), str(tmp_path))
    model = MODELS.build(cfg.model)
    model.init_weights()
    x = torch.randn(2, 3, 64, 96)
    feats = model.extract_feat(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == list(cfg.model.decode_head.in_channels)
    model.eval()
    with torch.no_grad():
        logits = model._forward(x)
        assert logits.shape == (2, 150, 16, 24)
        preds = model.predict(x)
    for p in preds:
        assert p.pred_sem_seg.data.shape == (1, 64, 96)
        assert p.seg_logits.data.shape == (150, 64, 96)
    model.train()
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 96), pad_shape=(64, 96)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 96)))
        samples.append(s)
    losses = model.loss(x, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    stem = getattr(model.backbone, 'patch_embed', None) or model.backbone.patch_embeds[0]
    assert stem.projection.weight.grad is not None  # gradients reach the first layer
