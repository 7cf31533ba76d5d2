"""MMDetection: SimpleFPN/LN2d, synthetic COCO data, and tiny versions of both config
families (Mask R-CNN + pyramid VisionLLaMA, ViTDet + plain VisionLLaMA) trained and
evaluated through the real mmengine Runner, then run by DetInferencer."""
import copy
import math
import os.path as osp
import time
from typing import Dict

import numpy as np
import pytest
import torch
from mmengine.config import Config

import vllama_mm.mmdet  # noqa: F401  (registers into mmdet)
from vllama_mm.datasets.synthetic_coco import OBJECTS, generate
from vllama_mm.engine.runner_utils import build_runner
from vllama_mm.models import (LN2d, PyramidVisionLLaMA, SimpleFPN, VisionLLaMA, grid_positions,
                              rope_frequencies, rope_table)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'configs', 'mmdet')
PYRAMID_CFGS = [osp.join(CFG, 'mask_rcnn', f'mask-rcnn_pvllama-{a}_fpn_ms-crop-3x_coco.py')
                for a in 'sbl']
VITDET_36E = osp.join(CFG, 'vitdet', 'vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py')
VITDET_100E = osp.join(CFG, 'vitdet', 'vitdet_mask-rcnn_vllama-b-mae_lsj-1024-100e_coco.py')
VITDET_AS2D = osp.join(CFG, 'vitdet',
                       'vitdet_mask-rcnn_vllama-b-mae-as2drope_lsj-1024-36e_coco.py')

TINY_PLAIN = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128,
                  ffn_bias=True)
TINY_PYRAMID = dict(embed_dims=[32, 64, 96, 128], depths=[1, 2, 2, 1])
FPN_CH = 32


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """One intra-op thread: on a small shared CPU, OpenMP oversubscription makes these
    tiny models ~15x slower (measured 6 s vs 0.4 s per Mask R-CNN iteration)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- SimpleFPN
def test_ln2d_matches_layer_norm_over_channels():
    ln = LN2d(6, eps=1e-6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 3) * 3 + 1
    # each pixel normalised over its channels alone (biased variance), then affine
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 1e-6) * ln.weight[:, None, None] \
        + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), ref)
    with pytest.raises(ValueError, match='B, C, H, W'):
        ln(torch.randn(2, 6))


def test_ln2d_through_mmcv_build_norm_layer_and_conv_module():
    """mmdet heads build norms with mmcv: it looks LN2d up in the mmdet scope, passes
    eps (1e-5 unless given) and sets requires_grad itself."""
    from mmcv.cnn import ConvModule, build_norm_layer
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        name, layer = build_norm_layer(dict(type='LN2d', requires_grad=False), 16)
        assert isinstance(layer, LN2d) and name == 'ln'
        assert layer.eps == 1e-5 and not any(p.requires_grad for p in layer.parameters())
        _, layer = build_norm_layer(dict(type='LN2d', requires_grad=True, eps=1e-6), 16)
        assert layer.eps == 1e-6 and all(p.requires_grad for p in layer.parameters())
        conv = ConvModule(8, 16, 3, padding=1, norm_cfg=dict(type='LN2d', requires_grad=True))
    assert conv.conv.bias is None and isinstance(conv.norm, LN2d)  # bias='auto' + norm
    assert conv(torch.randn(1, 8, 7, 5)).shape == (1, 16, 7, 5)


@pytest.mark.parametrize('hw', [(8, 8), (5, 7)])
def test_simple_fpn_levels(hw):
    fpn = SimpleFPN(64, [16, 32, 64, 64], out_channels=FPN_CH, num_outs=6)
    fpn.init_weights()
    x = torch.randn(2, 64, *hw)
    outs = fpn((x,))  # backbones return a 1-tuple
    h, w = hw
    expect = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (h // 2, w // 2)]
    for _ in range(2):  # extra levels: 1x1 max-pool, stride 2
        expect.append((math.ceil(expect[-1][0] / 2), math.ceil(expect[-1][1] / 2)))
    assert [tuple(o.shape[2:]) for o in outs] == expect
    assert all(o.shape[:2] == (2, FPN_CH) for o in outs)
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
    # every level ends with LN2d (unit affine at init): zero mean over channels
    torch.testing.assert_close(outs[0].mean(1), torch.zeros(2, *expect[0]), atol=1e-5, rtol=0)
    # 1x1 / 3x3 convs carry no bias when followed by a norm; ConvT keep theirs
    assert fpn.lateral_convs[0].conv.bias is None and fpn.fpn_convs[0].conv.bias is None
    assert fpn.fpn1[0].bias is not None
    # gradient reaches the input through all four branches
    x.requires_grad_(True)
    sum(o.sum() for o in fpn(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_simple_fpn_matches_a_conv_module_reference():
    """Same maps as ViTDet's neck written with mmcv ConvModules (1x1 and 3x3 conv, no
    bias, LN2d, no activation) on the same weights."""
    from mmcv.cnn import ConvModule
    from mmengine.registry import DefaultScope
    torch.manual_seed(0)
    fpn = SimpleFPN(32, out_channels=16, num_outs=5).eval()
    fpn.init_weights()
    with torch.no_grad():
        for p in fpn.parameters():  # non-trivial norms too
            p.add_(0.1 * torch.randn_like(p))
    norm_cfg = dict(type='LN2d', requires_grad=True, eps=1e-6)
    with DefaultScope.overwrite_default_scope('mmdet'):
        lat = [ConvModule(c, 16, 1, norm_cfg=norm_cfg, act_cfg=None) for c in (8, 16, 32, 32)]
        out = [ConvModule(16, 16, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None)
               for _ in range(4)]
    for ref, ours in zip(lat + out, list(fpn.lateral_convs) + list(fpn.fpn_convs)):
        ref.conv.weight.data.copy_(ours.conv.weight)
        ref.norm.weight.data.copy_(ours.norm.weight)
        ref.norm.bias.data.copy_(ours.norm.bias)
    x = torch.randn(2, 32, 6, 5)
    f = fpn.fpn1
    levels = [f[3](torch.nn.functional.gelu(f[1](f[0](x)))), fpn.fpn2[0](x), x,
              torch.nn.functional.max_pool2d(x, 2, 2)]
    ref_outs = [o(l(v)) for v, l, o in zip(levels, lat, out)]
    ref_outs.append(torch.nn.functional.max_pool2d(ref_outs[-1], 1, stride=2))
    with torch.no_grad():
        for a, b in zip(fpn(x), ref_outs):
            torch.testing.assert_close(a, b)


def test_simple_fpn_rejects_bad_config():
    with pytest.raises(ValueError, match='in_channels'):
        SimpleFPN(64, [16, 32, 64, 128])
    with pytest.raises(ValueError, match='LN2d'):
        SimpleFPN(64, norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(64, num_outs=3)
    with pytest.raises(ValueError, match='one backbone map'):
        SimpleFPN(64)((torch.randn(1, 64, 4, 4), torch.randn(1, 64, 4, 4)))
    with pytest.raises(ValueError, match=r'\[B, 64, H, W\]'):
        SimpleFPN(64)(torch.randn(1, 32, 4, 4))
    no_norm = SimpleFPN(64, norm_cfg=None)
    assert no_norm.lateral_convs[0].conv.bias is not None


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    generate(root, num_train=8, num_val=4, img_size=(96, 128), seed=0)
    return root


def _coco_val(dataset_cls, root):
    return dataset_cls(data_root=root, ann_file='annotations/instances_val2017.json',
                       data_prefix=dict(img='val2017/'), test_mode=True,
                       pipeline=[dict(type='LoadImageFromFile'),
                                 dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
                                      poly2mask=False)])


def test_synthetic_coco_reads_with_stock_dataset_and_metric(coco_root):
    """CocoDataset loads it unchanged; CocoMetric scores the ground truth as predictions
    with AP 1 for both bbox and segm (boxes, polygons, areas and ids agree)."""
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmdet.structures.mask import PolygonMasks
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):  # mmdet's LoadAnnotations
        ds = _coco_val(CocoDataset, coco_root)
    assert len(ds) == 4
    classes = ds.metainfo['classes']
    used = {classes.index(name) for name in OBJECTS}
    sizes, preds = set(), []
    for i in range(len(ds)):
        item = ds[i]
        h, w = item['img'].shape[:2]
        sizes.add((h, w))
        assert (h, w) == item['ori_shape'] and 96 <= min(h, w) and max(h, w) <= 128
        labels = item['gt_bboxes_labels']
        assert len(labels) >= 1 and set(labels.tolist()) <= used
        masks = item['gt_masks']
        assert isinstance(masks, PolygonMasks)
        bitmaps = masks.to_ndarray()  # [n, h, w]
        boxes = item['gt_bboxes'].tensor.numpy()  # xyxy
        for m, b in zip(bitmaps, boxes):  # the polygon fills its box
            ys, xs = np.nonzero(m)
            assert abs(xs.min() - b[0]) <= 1.5 and abs(xs.max() + 1 - b[2]) <= 1.5
            assert abs(ys.min() - b[1]) <= 1.5 and abs(ys.max() + 1 - b[3]) <= 1.5
        # the object pixels carry the class colour, the background does not
        img = item['img'][..., ::-1].astype(np.float32)  # BGR -> RGB
        for m, lab in zip(bitmaps, labels):
            colour = np.array(OBJECTS[classes[lab]][1], np.float32)
            inner = np.abs(img[m.astype(bool)] - colour).max(-1)
            assert np.median(inner) < 60
        preds.append(dict(
            img_id=item['img_id'], ori_shape=(h, w),
            pred_instances=dict(bboxes=torch.from_numpy(boxes), scores=torch.ones(len(labels)),
                                labels=torch.from_numpy(labels),
                                masks=torch.from_numpy(bitmaps.astype(bool)))))
    assert len(sizes) > 1  # varying sizes / aspect ratios

    metric = CocoMetric(ann_file=osp.join(coco_root, 'annotations/instances_val2017.json'),
                        metric=['bbox', 'segm'])
    metric.dataset_meta = ds.metainfo
    metric.process({}, preds)
    res = metric.evaluate(len(preds))
    assert res['coco/bbox_mAP'] == pytest.approx(1.0, abs=1e-3)
    assert res['coco/segm_mAP'] == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------- configs
def test_paper_configs_resolve_and_match_the_recipes():
    for path, arch, dims in zip(PYRAMID_CFGS, 'sbl', ([64, 128, 256, 512], [96, 192, 384, 768],
                                                       [128, 256, 512, 1024])):
        cfg = Config.fromfile(path)
        assert cfg.default_scope == 'mmdet' and cfg.custom_imports.imports == ['vllama_mm.mmdet']
        assert cfg.model.backbone.type == 'PyramidVisionLLaMA' and cfg.model.backbone.arch == arch
        assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
        assert cfg.model.backbone.compat == 'official'  # the released weights' geometry
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'  # the authors' --amp
        assert cfg.model.neck.in_channels == dims
        assert cfg.train_cfg.max_epochs == 36
        assert cfg.param_scheduler[1].milestones == [27, 33]
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 0.05)
        assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.0)
        assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
        kinds = [t.type for t in cfg.train_pipeline]
        assert 'RandomChoice' in kinds  # multi-scale + crop
    for path, iters in ((VITDET_36E, 137250), (VITDET_100E, 184375)):
        cfg = Config.fromfile(path)
        bb = cfg.model.backbone
        assert (bb.type, bb.arch, bb.img_size, bb.window_size, tuple(bb.global_attn_indexes)) \
            == ('VisionLLaMA', 'mae-b', 1024, 14, (2, 5, 8, 11))
        # the authors' RoPE: plain 2D over the 64x64 grid, unmasked zero-padded windows
        assert bb.rope_type == '2d' and bb.window_pad_mask is False
        assert not bb.with_cls_token and not bb.final_norm and bb.drop_path_rate == 0.1
        assert cfg.model.neck.type == 'SimpleFPN' and cfg.model.rpn_head.num_convs == 2
        assert cfg.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
        assert cfg.model.roi_head.bbox_head.norm_cfg.type == 'LN2d'
        assert cfg.model.roi_head.mask_head.norm_cfg.type == 'LN2d'
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
        assert cfg.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.7, flat_decay_mult=0.0)
        accumulate = cfg.optim_wrapper.get('accumulative_counts', 1)
        images = 8 * cfg.train_dataloader.batch_size  # per iteration on 8 GPUs
        assert images * accumulate == 64  # per optimizer step
        opt = cfg.optim_wrapper.optimizer
        assert (opt.lr, opt.weight_decay, tuple(opt.betas)) == (1e-4, 0.1, (0.9, 0.999))
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == iters
        assert cfg.val_cfg.type == 'ValLoop' and cfg.test_cfg.type == 'TestLoop'
        # iterations x images = epochs x 118k images (the authors' 36e schedule: 37.2)
        assert iters * images / 118000 == pytest.approx(37.22 if path == VITDET_36E else 100,
                                                        abs=0.01)
        assert all(m < iters for m in cfg.param_scheduler[1].milestones)
        assert cfg.param_scheduler[1].end == iters
        rr = [t for t in cfg.train_pipeline if t.type == 'RandomResize'][0]
        assert tuple(rr.ratio_range) == (0.1, 2.0) and tuple(rr.scale) == (1024, 1024)
    variant, row = Config.fromfile(VITDET_AS2D), Config.fromfile(VITDET_36E)
    bb = variant.model.backbone
    assert bb.img_size == 224 and bb.rope_type == 'as2d'  # anchored at the 14x14 grid
    bb.update(img_size=1024, rope_type='2d')
    assert variant.to_dict() == row.to_dict()  # nothing else differs


def test_paper_configs_build_consistent_models():
    """The necks take what the configured backbones give: channel lists against the arch
    zoo for every config; pyramid-S backbone + FPN and the SimpleFPN built and run."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    for path in PYRAMID_CFGS:
        cfg = Config.fromfile(path)
        arch = PyramidVisionLLaMA.arch_zoo[cfg.model.backbone.arch]
        assert cfg.model.neck.in_channels == arch['embed_dims']
    cfg_vitdet = Config.fromfile(VITDET_36E)
    dim = VisionLLaMA.arch_zoo[cfg_vitdet.model.backbone.arch]['embed_dims']
    assert cfg_vitdet.model.neck.backbone_channel == dim
    torch.manual_seed(0)
    cfg = Config.fromfile(PYRAMID_CFGS[0])
    with DefaultScope.overwrite_default_scope('mmdet'):
        bb_cfg = copy.deepcopy(cfg.model.backbone)
        bb_cfg.init_cfg = None
        backbone = MODELS.build(bb_cfg).eval()
        necks = [MODELS.build(cfg.model.neck).eval(), MODELS.build(cfg_vitdet.model.neck).eval()]
    n_params = sum(p.numel() for p in backbone.parameters())
    assert 20e6 < n_params < 30e6  # pyramid S: ~25 M with its classifier (docs/design.md, Pyramid)
    with torch.no_grad():
        outs = necks[0](backbone(torch.randn(1, 3, 64, 96)))
        outs_plain = necks[1]((torch.randn(1, dim, 4, 6),))
    for o in (outs, outs_plain):
        assert len(o) == 5 and all(t.shape[1] == 256 for t in o)
        assert [tuple(t.shape[2:]) for t in o][:4] == [(16, 24), (8, 12), (4, 6), (2, 3)]


# ----------------------------------------------------------------------------- tiny runs
def _walk(node, fn):
    """Apply ``fn(dict)`` to every dict in a nested config."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _walk(v, fn)


def _scale_sizes(cfg: Config, factor: float) -> None:
    """Shrink every image size in the pipelines and batch augments by ``factor``."""
    def fix(d):
        for key in ('scale', 'scales', 'crop_size', 'size'):
            v = d.get(key)
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], (list, tuple)):
                d[key] = [tuple(int(round(s * factor)) for s in p) for p in v]
            elif isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(s, int) for s in v):
                d[key] = tuple(int(round(s * factor)) for s in v)
        if d.get('type') == 'SyncBN':
            d['type'] = 'BN'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'model'):
        _walk(cfg[key], fix)


def tiny_cfg(path: str, data_root: str, work_dir: str, family: str, iters: int) -> Config:
    """The real config with a tiny backbone/heads, ~128 px images, CPU-friendly settings."""
    cfg = Config.fromfile(path)
    m = cfg.model
    if family == 'vitdet':
        m.backbone.update(arch=TINY_PLAIN, img_size=64, window_size=4,
                          global_attn_indexes=(1, 3), drop_path_rate=0.0, init_cfg=None)
        m.neck.update(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=FPN_CH)
        m.roi_head.bbox_head.conv_out_channels = FPN_CH
        _scale_sizes(cfg, 128 / 1024)
        assert m.data_preprocessor.pad_size_divisor == 1024  # pads test inputs to 1024
        m.data_preprocessor.pad_size_divisor = 128
    else:
        m.backbone.update(arch=TINY_PYRAMID, img_size=64, drop_path_rate=0.0, init_cfg=None)
        m.neck.update(in_channels=TINY_PYRAMID['embed_dims'], out_channels=FPN_CH)
        _scale_sizes(cfg, 1 / 8)  # 480..800 x 1333 -> 60..100 x 167, crop 48..75
    m.rpn_head.update(in_channels=FPN_CH, feat_channels=FPN_CH)
    m.roi_head.bbox_roi_extractor.out_channels = FPN_CH
    m.roi_head.mask_roi_extractor.out_channels = FPN_CH
    m.roi_head.bbox_head.update(in_channels=FPN_CH, fc_out_channels=64)
    m.roi_head.mask_head.update(in_channels=FPN_CH, conv_out_channels=FPN_CH)
    m.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    m.train_cfg.rcnn.sampler.num = 64
    m.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
    m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=20)  # an untrained model still predicts

    for split in ('train', 'val', 'test'):
        dl = cfg[f'{split}_dataloader']
        dl.update(num_workers=0, persistent_workers=False, batch_size=2)
        ds = dl.dataset.get('dataset', dl.dataset)
        folder = 'train2017' if split == 'train' else 'val2017'
        ds.update(data_root=data_root, ann_file=f'annotations/instances_{folder}.json',
                  data_prefix=dict(img=f'{folder}/'))
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = osp.join(
            data_root, 'annotations/instances_val2017.json')

    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU
    cfg.optim_wrapper.pop('loss_scale', None)
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.param_scheduler = None
    if family == 'vitdet':
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters,
                             val_begin=iters + 1)
        cfg.default_hooks.checkpoint.update(by_epoch=False, interval=iters, max_keep_ckpts=1)
    else:
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1,
                             val_begin=2)
        cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=1)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.randomness = dict(seed=0)
    cfg.env_cfg.cudnn_benchmark = False
    return cfg


def _train_and_eval(cfg: Config) -> Dict:
    runner = build_runner(cfg)
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    n_iter = runner.iter
    metrics = runner.val()
    ckpt = osp.join(cfg.work_dir, 'last_checkpoint')
    with open(ckpt) as f:
        ckpt = f.read().strip()
    dumped = osp.join(cfg.work_dir, osp.basename(cfg.filename))
    return dict(runner=runner, metrics=metrics, iters=n_iter, s_per_iter=train_s / n_iter,
                ckpt=ckpt, cfg_path=dumped)


@pytest.fixture(scope='module')
def vitdet_run(coco_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('vitdet'))
    cfg = tiny_cfg(VITDET_36E, coco_root, work, 'vitdet', iters=4)
    return _train_and_eval(cfg)


@pytest.fixture(scope='module')
def pyramid_run(coco_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('pyramid'))
    cfg = tiny_cfg(PYRAMID_CFGS[1], coco_root, work, 'pyramid', iters=4)
    return _train_and_eval(cfg)


@pytest.mark.parametrize('run', ['vitdet_run', 'pyramid_run'])
def test_tiny_train_and_coco_eval(run, request):
    res = request.getfixturevalue(run)
    metrics = res['metrics']
    print(f"\n{run}: {res['iters']} iters, {res['s_per_iter']:.2f} s/iter, "
          f"bbox_mAP {metrics['coco/bbox_mAP']}, segm_mAP {metrics['coco/segm_mAP']}")
    assert res['iters'] == 4
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP_50'):
        assert key in metrics and math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0
    model = res['runner'].model
    assert type(model).__name__ == 'MaskRCNN'
    if run == 'vitdet_run':
        assert isinstance(model.backbone, VisionLLaMA) and isinstance(model.neck, SimpleFPN)
        assert isinstance(model.roi_head.bbox_head.shared_convs[0].norm, LN2d)
        assert isinstance(model.roi_head.mask_head.convs[0].norm, LN2d)
        # layer-wise lr decay 0.7 reached the optimizer: the patch embed is 5 layers deep
        groups = res['runner'].optim_wrapper.optimizer.param_groups
        by_name = {g['param_name']: g for g in groups if 'param_name' in g}
        lr = by_name['neck.fpn1.0.weight']['lr']
        assert by_name['backbone.patch_embed.projection.weight']['lr'] == \
            pytest.approx(lr * 0.7 ** 5)
        assert by_name['backbone.layers.0.ln1.weight']['weight_decay'] == 0.0
        # test inputs are padded to the training size (the global blocks' grid is fixed)
        # while img_shape stays the resized image, so boxes are clipped to the image
        batch = next(iter(res['runner'].val_dataloader))
        data = model.data_preprocessor(batch, False)
        assert data['inputs'].shape[2:] == (128, 128)
        shapes = [d.img_shape for d in data['data_samples']]
        assert all(max(s) == 128 for s in shapes) and any(min(s) < 128 for s in shapes)
    else:
        assert isinstance(model.backbone, PyramidVisionLLaMA)


@pytest.mark.parametrize('run', ['vitdet_run', 'pyramid_run'])
def test_det_inferencer_on_tiny_checkpoint(run, request, coco_root):
    from mmdet.apis import DetInferencer
    res = request.getfixturevalue(run)
    inferencer = DetInferencer(model=res['cfg_path'], weights=res['ckpt'], device='cpu',
                               show_progress=False)
    img = osp.join(coco_root, 'val2017', '000000100001.jpg')
    out = inferencer(img, return_vis=False, no_save_vis=True, no_save_pred=True)
    pred = out['predictions'][0]
    n = len(pred['labels'])
    assert 0 < n <= 20 and len(pred['scores']) == n and len(pred['bboxes']) == n
    assert len(pred['masks']) == n  # RLE masks from the mask head
    assert all(0 <= lab < 80 for lab in pred['labels'])
    # the checkpoint round trip gives the inferencer the trained runner's weights
    trained = res['runner'].model.state_dict()
    loaded = inferencer.model.state_dict()
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[k].cpu(), loaded[k].cpu()) for k in trained)


# ----------------------------------------------------------------------------- RoPE tables
SHAPES = [(64, 96), (96, 64), (64, 96), (128, 64)]


def _fresh_outputs(model, x):
    fresh = copy.deepcopy(model)  # deepcopy drops the table cache (RoPE2D.__getstate__)
    with torch.no_grad():
        return fresh(x)


def test_plain_backbone_tables_follow_each_input_shape():
    torch.manual_seed(0)
    bb = VisionLLaMA(arch=TINY_PLAIN, img_size=64, with_cls_token=False, out_type='featmap',
                     final_norm=False, window_size=4, global_attn_indexes=(1, 3)).eval()
    bb.init_weights()
    freqs = rope_frequencies(32, 10000.0)
    for h, w in SHAPES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            out = bb(x)[0]
        gh, gw = h // 16, w // 16
        assert out.shape == (1, 64, gh, gw)
        torch.testing.assert_close(out, _fresh_outputs(bb, x)[0])
        glob, win = bb.rope_tables((gh, gw), x.device)
        # AS2DRoPE: the grid is mapped onto the 4x4 anchor (64 px / 16)
        ref = rope_table(grid_positions(gh, gw, scale=(4 / gw, 4 / gh)), freqs)
        assert glob[0].shape == (gh * gw, 32)
        torch.testing.assert_close(glob[0], ref[0])
        torch.testing.assert_close(glob[1], ref[1])
        ref_win = rope_table(grid_positions(4, 4), freqs)  # window-local, unscaled
        torch.testing.assert_close(win[0], ref_win[0])
        torch.testing.assert_close(win[1], ref_win[1])


def test_pyramid_backbone_tables_follow_each_input_shape():
    torch.manual_seed(0)
    bb = PyramidVisionLLaMA(arch=TINY_PYRAMID, img_size=64).eval()
    bb.init_weights()
    freqs = rope_frequencies(32, 10000.0)
    for h, w in SHAPES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            outs = bb(x)
        assert [tuple(o.shape[2:]) for o in outs] == [(h // s, w // s) for s in (4, 8, 16, 32)]
        for a, b in zip(outs, _fresh_outputs(bb, x)):
            torch.testing.assert_close(a, b)
        # GSA query table of stage 0: the grid auto-scaled onto the 16x16 anchor
        gh, gw = h // 4, w // 4
        _, gsa_q, _ = bb.rope_tables(0, (gh, gw), x.device)
        ref = rope_table(grid_positions(gh, gw, scale=(16 / gw, 16 / gh)), freqs)
        torch.testing.assert_close(gsa_q[0], ref[0])


def test_detector_features_follow_batch_shapes(pyramid_run):
    """Batches of different padded sizes through the trained detector give the same
    features as a fresh copy that never saw another shape."""
    model = pyramid_run['runner'].model.eval()
    for h, w in [(96, 160), (160, 96), (96, 160)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            feats = model.extract_feat(x)
            fresh = copy.deepcopy(model).extract_feat(x)
        assert tuple(feats[0].shape[2:]) == (h // 4, w // 4)
        for a, b in zip(feats, fresh):
            torch.testing.assert_close(a, b)
