"""The paper's MMPretrain configs, shrunk and run through the real mmengine Runner.

Each test loads a real config from ``configs/mmpretrain``, keeps everything that makes it
that recipe (pipelines incl. 3-Augment / RandAugment, samplers, optimizer, constructor,
schedule, loss, Mixup/CutMix, neck, head) and only shrinks what costs time: a tiny custom
arch, 16-64 px images, 10 generated ImageNet-style classes, batch 4, one epoch, no AMP on
CPU. Chains: tiny MAE pre-train -> fine-tune / linear probe through
``init_cfg=dict(type='Pretrained', prefix='backbone.')``, and tiny 192/128-px supervised
pre-train -> 224-px fine-tune, each checked tensor by tensor.
"""
import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader

from vllama_mm.datasets.synthetic_imagenet import generate
from vllama_mm.engine import allow_mmengine_checkpoints
from vllama_mm.engine.runner_utils import build_runner, import_plugin

ROOT = Path(__file__).resolve().parents[1] / 'configs' / 'mmpretrain'
NUM_CLASSES = 10
PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
PYRAMID = dict(embed_dims=[32, 32, 64, 64], depths=[2, 2, 2, 2])
PYRAMID_PX = 64
RESULTS: Dict[str, Dict] = {}  # measured numbers, printed at the end of the module


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    """10 classes x (4 train, 2 val) 64-px JPEGs in ImageNet layout, shared by the module."""
    root = tmp_path_factory.mktemp('synthetic_imagenet')
    info = generate(str(root), num_train=4, num_val=2, img_size=64, num_classes=NUM_CLASSES)
    return info['data_root']


@pytest.fixture(scope='module', autouse=True)
def cpu_setup():
    """One intra-op thread (tiny tensors; the test machines are small and shared) and a
    cheap ``Config.pretty_text``: the Runner yapf-formats the whole config several times
    per run (log, dump, checkpoint meta), ~1 s each, which dominates these tiny runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Config, 'pretty_text', property(
            lambda self: '\n'.join(f'{k} = {v!r}' for k, v in self.to_dict().items())))
        yield
    torch.set_num_threads(threads)
    print('\n--- tiny mmpretrain config runs ---')
    for name, r in RESULTS.items():
        print(f'{name}: ' + ', '.join(f'{k}={v}' for k, v in r.items()))


def walk(node: Any, fn: Callable[[dict], None]) -> None:
    """Call ``fn`` on every dict inside ``node`` (pipelines nest transforms)."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, (list, tuple)):
        for v in node:
            walk(v, fn)


def shrink_pipeline(pipeline: List[dict], crop: int, size: int) -> None:
    """Rescale every geometric transform from a ``crop``-px recipe to ``size`` px."""
    def fix(t: dict) -> None:
        kind = t.get('type')
        if kind in ('RandomResizedCrop', 'ResizeEdge'):
            t['scale'] = max(size, round(t['scale'] * size / crop))
        elif kind == 'CenterCrop':
            t['crop_size'] = size
    walk(pipeline, fix)


def tiny_plain_arch(arch: Any) -> dict:
    """The tiny counterpart of a plain arch: same MLP kind and layer scale."""
    tiny = dict(PLAIN)
    if isinstance(arch, dict):
        tiny.update(layer_scale_init=arch.get('layer_scale_init', 0.0),
                    ffn_bias=arch.get('ffn_bias', False))
    elif arch.startswith('mae'):
        tiny.update(layer_scale_init=0.0, ffn_bias=True)
    else:
        tiny.update(layer_scale_init=1e-4, ffn_bias=False)
    return tiny


def load_tiny(rel: str, data_root: str, work_dir: Path) -> Config:
    """Load ``configs/mmpretrain/<rel>`` and shrink it (see the module docstring)."""
    cfg = Config.fromfile(str(ROOT / rel))
    import_plugin(cfg)
    model = cfg.model
    bb = model.backbone
    if bb.type == 'PyramidVisionLLaMA':
        crop, size = bb.img_size, PYRAMID_PX
        bb.arch = copy.deepcopy(PYRAMID)
        bb.img_size = size
        out_dims = PYRAMID['embed_dims'][-1]
    else:
        crop = bb.img_size
        size = max(8, crop // 7 // 8 * 8)  # 224 -> 32, 192 -> 24, 128 -> 16 px
        bb.arch = tiny_plain_arch(bb.arch)
        bb.img_size, bb.patch_size = size, 8
        out_dims = PLAIN['embed_dims']
        if bb.get('frozen_stages', -1) > 0:  # linear probe: freeze every (tiny) block
            bb.frozen_stages = PLAIN['num_layers']
    if model.type == 'MAE':
        model.neck.update(embed_dim=out_dims, patch_size=8, num_patches=(size // 8) ** 2,
                          decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        model.head.patch_size = 8
    else:
        model.head.update(in_channels=out_dims, num_classes=NUM_CLASSES)
        if model.get('neck') and model.neck.type == 'ClsBatchNormNeck':
            model.neck.input_features = out_dims
        cfg.data_preprocessor.num_classes = NUM_CLASSES

    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            continue
        ds = loader.dataset
        assert ds.type == 'ImageNet', ds.type  # the real dataset class, 10 classes
        ds.update(data_root=data_root, classes=str(Path(data_root) / 'classes.txt'),
                  split='train' if split == 'train' else 'val')
        loader.update(batch_size=4 if split == 'train' else 8, num_workers=0,
                      persistent_workers=False)
        shrink_pipeline(ds.pipeline, crop, size)

    # CPU: AMP -> plain OptimWrapper; one short epoch; logs every iteration
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
        cfg.optim_wrapper.pop('dtype', None)  # the bf16 rows
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                       mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
    cfg.work_dir = str(work_dir)
    cfg.load_from, cfg.resume = None, False
    cfg.randomness = dict(seed=0, deterministic=False)
    return cfg


def set_pretrained(cfg: Config, ckpt: str, *modules: str) -> None:
    """Point the config's Pretrained ``init_cfg``s (which must exist) at ``ckpt``."""
    for m in modules:
        init = cfg.model[m].init_cfg
        assert init.type == 'Pretrained' and init.prefix == f'{m}.', init
        init.checkpoint = ckpt


def run(name: str, cfg: Config, before_train: Optional[Callable] = None) -> Dict:
    """Train one epoch, evaluate classifiers; returns the measured numbers."""
    t0 = time.time()
    runner = build_runner(cfg)
    if before_train is not None:
        before_train(runner)
    runner.train()
    losses = [float(v) for v in runner.message_hub.get_scalar('train/loss').data[0]]
    assert losses and all(math.isfinite(v) for v in losses), losses
    result = dict(iters=len(losses), loss_first=round(losses[0], 4),
                  loss_last=round(losses[-1], 4))
    if cfg.get('val_dataloader') and runner.model.__class__.__name__ == 'ImageClassifier':
        metrics = runner.val()
        assert 'accuracy/top1' in metrics and 0.0 <= metrics['accuracy/top1'] <= 100.0
        result['top1'] = round(float(metrics['accuracy/top1']), 2)
    result['seconds'] = round(time.time() - t0, 1)
    result['runner'] = runner
    RESULTS[name] = {k: v for k, v in result.items() if k != 'runner'}
    return result


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint the way ``init_cfg=dict(type='Pretrained')`` does."""
    allow_mmengine_checkpoints()
    return CheckpointLoader.load_checkpoint(path, map_location='cpu')


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    return load_checkpoint(path)['state_dict']


def sub(sd: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def assert_loaded(module: torch.nn.Module, src: Dict[str, torch.Tensor],
                  new: set, dropped: set) -> None:
    """Every tensor of ``module`` equals ``src`` except the ``new`` ones; the keys of
    ``src`` that the module has no place for are exactly ``dropped``."""
    own = module.state_dict()
    assert set(own) - set(src) == new, set(own) - set(src)
    assert set(src) - set(own) == dropped, set(src) - set(own)
    for k, v in own.items():
        if k not in new:
            assert torch.equal(v, src[k]), f'{k} was not loaded from the checkpoint'


# ---------------------------------------------------------------- recipe values
VL, PV, MAE = 'vision_llama/', 'pyramid_vision_llama/', 'mae/'
RECIPES = {
    # file: (arch, px, batch/GPU, optimizer, lr, wd, epochs, drop path)
    VL + 'vision-llama-s-p16_8xb256-lamb-800e_in1k.py': ('s', 224, 256, 'Lamb', 4e-3, .05, 800, .05),
    VL + 'vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py': ('b', 192, 256, 'Lamb', 3e-3, .05, 800, .2),
    # L: the authors' command has no --unscale-lr, so DeiT scales 3e-3 by 2048 / 512
    VL + 'vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py': ('l', 128, 256, 'Lamb', 1.2e-2, .05, 800, .45),
    VL + 'vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py': ('b', 224, 64, 'AdamW', 1e-5, .1, 20, .2),
    VL + 'vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py': ('l', 224, 64, 'AdamW', 1e-5, .1, 20, .45),
    PV + 'pyramid-vision-llama-s_8xb128_in1k.py': ('s', 224, 128, 'AdamW', 1e-3, .05, 300, .2),
    PV + 'pyramid-vision-llama-b_8xb128_in1k.py': ('b', 224, 128, 'AdamW', 1e-3, .05, 300, .3),
    PV + 'pyramid-vision-llama-l_8xb128_in1k.py': ('l', 224, 128, 'AdamW', 1e-3, .05, 300, .5),
    MAE + 'mae_vision-llama-b-p16_8xb512-amp-coslr-800e_in1k.py': ('mae-b', 224, 512, 'AdamW', 2.4e-3, .05, 800, 0.),
    MAE + 'mae_vision-llama-b-p16_8xb512-amp-coslr-1600e_in1k.py': ('mae-b', 224, 512, 'AdamW', 2.4e-3, .05, 1600, 0.),
    # L 800e: the authors' file sets 256 images per GPU (its name says 512)
    MAE + 'mae_vision-llama-l-p16_8xb512-amp-coslr-800e_in1k.py': ('mae-l', 224, 256, 'AdamW', 2.4e-3, .05, 800, 0.),
    MAE + 'mae_vision-llama-l-p16_8xb512-amp-coslr-1600e_in1k.py': ('mae-l', 224, 512, 'AdamW', 2.4e-3, .05, 1600, 0.),
    MAE + 'mae_vision-llama-b-86m-p16_8xb512-amp-coslr-800e_in1k.py': (None, 224, 512, 'AdamW', 2.4e-3, .05, 800, 0.),
    MAE + 'benchmarks/vision-llama-b-p16_8xb128-coslr-100e_in1k.py': ('mae-b', 224, 128, 'AdamW', 2e-3, .05, 100, .1),
    MAE + 'benchmarks/vision-llama-b-p16_8xb2048-linear-coslr-90e_in1k.py': ('mae-b', 224, 2048, 'LARS', 6.4, 0., 90, 0.),
    # FSDP2 variants (docs/distributed.md): the same recipes; MAE-L fine-tuning is mmpretrain's
    # MAE ViT-L recipe (not a paper row)
    VL + 'vision-llama-l-p16_fsdp-8xb256-lamb-800e_in1k-128px.py': ('l', 128, 256, 'Lamb', 1.2e-2, .05, 800, .45),
    VL + 'vision-llama-l-p16_fsdp-8xb64-20e_in1k-128px-ft-224px.py': ('l', 224, 64, 'AdamW', 1e-5, .1, 20, .45),
    MAE + 'mae_vision-llama-l-p16_fsdp-8xb512-bf16-coslr-800e_in1k.py': ('mae-l', 224, 256, 'AdamW', 2.4e-3, .05, 800, 0.),
    MAE + 'benchmarks/vision-llama-l-p16_fsdp-8xb128-coslr-50e_in1k.py': ('mae-l', 224, 128, 'AdamW', 4e-3, .05, 50, .2),
}


def test_every_mmpretrain_config_has_a_recipe_row():
    # ablations/ and rope_variants/ hold one-option deltas of these configs, checked by
    # tests/test_ablations.py and tests/test_rope_variant_configs.py
    found = {str(p.relative_to(ROOT)) for p in ROOT.rglob('*.py')
             if not {'ablations', 'rope_variants'} & set(p.parts)}
    # the tiny configs (README 'Tiny configs', run by tests/test_tiny_configs.py)
    tiny = {VL + 'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py',
            'mae/mae_vision-llama-tiny-p8_1xb16-5e_synthetic-64px.py'}
    assert found - tiny == set(RECIPES)


@pytest.mark.parametrize('rel', sorted(RECIPES))
def test_recipe_values(rel):
    """The paper's recipe numbers (docs/design.md / the authors' command lines) are what the
    real config resolves to, and its schedule is consistent with its epoch count."""
    arch, px, batch, opt, lr, wd, epochs, dp = RECIPES[rel]
    cfg = Config.fromfile(str(ROOT / rel))
    assert cfg.custom_imports == dict(imports=['vllama_mm.mmpretrain'],
                                      allow_failed_imports=False)
    bb = cfg.model.backbone
    if arch is not None:
        assert bb.arch == arch
    assert bb.img_size == px and bb.get('drop_path_rate', 0.0) == pytest.approx(dp)
    assert cfg.train_dataloader.batch_size == batch
    o = cfg.optim_wrapper.optimizer
    assert (o.type, o.lr, o.get('weight_decay', 0.0)) == (opt, pytest.approx(lr), wd)
    assert cfg.train_cfg.max_epochs == epochs
    # warm-up hands over to the main schedule, which ends with training
    sched = cfg.param_scheduler
    assert sched[0].type == 'LinearLR' and sched[-1].type == 'CosineAnnealingLR'
    assert sched[0].end == sched[-1].begin and sched[-1].get('end', epochs) == epochs
    # training and evaluation crops match the backbone's RoPE anchor size
    crops = []
    walk(cfg.train_dataloader.dataset.pipeline,
         lambda t: crops.append(t['scale']) if t.get('type') == 'RandomResizedCrop' else None)
    if cfg.get('val_dataloader'):
        walk(cfg.val_dataloader.dataset.pipeline,
             lambda t: crops.append(t['crop_size']) if t.get('type') == 'CenterCrop' else None)
    assert crops and set(crops) == {px}, crops
    if cfg.model.type == 'ImageClassifier':
        dims = {'s': 384, 'b': 768, 'l': 1024, 'mae-b': 768, 'mae-l': 1024}[arch]
        if bb.type == 'PyramidVisionLLaMA':
            dims = {'s': 512, 'b': 768, 'l': 1024}[arch]
        assert cfg.model.head.in_channels == dims and cfg.model.head.num_classes == 1000
    if '_fsdp-' in rel:  # FSDP2 variant: the wrapper and the checkpoint hook it needs
        assert cfg.model_wrapper_cfg.type == 'FSDP2ModelWrapper'
        assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
        assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
        if 'benchmarks/' in rel:  # MAE ViT-L fine-tuning: layer decay 0.75
            assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.75
    if cfg.model.type == 'MAE':
        assert bb.type == 'VisionLLaMAMAE' and bb.mask_ratio == 0.75
        assert cfg.model.head.norm_pix and o.betas == (0.9, 0.95)
        assert cfg.train_dataloader.collate_fn == dict(type='default_collate')


def test_recipe_specifics():
    def load(rel):
        return Config.fromfile(str(ROOT / rel))
    s = load(VL + 'vision-llama-s-p16_8xb256-lamb-800e_in1k.py')
    assert s.model.head.loss.use_sigmoid  # DeiT III binary cross-entropy
    assert [a.type for a in s.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert [a.alpha for a in s.model.train_cfg.augments] == [0.8, 1.0]
    assert s.train_dataloader.sampler.type == 'RepeatAugSampler'
    three = [t for t in s.train_dataloader.dataset.pipeline if t.type == 'RandomChoice'][0]
    assert [t.type for t in three.transforms] == ['RandomGrayscale', 'Solarize', 'GaussianBlur']
    # the fine-tunes start from the last checkpoint of their own pre-training config
    for pre, ft in (('vision-llama-b-p16_8xb256-lamb-800e_in1k-192px',
                     'vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px'),
                    ('vision-llama-l-p16_8xb256-lamb-800e_in1k-128px',
                     'vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px')):
        cfg = load(VL + ft + '.py')
        want = f'work_dirs/{pre}/epoch_800.pth'
        assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=want,
                                                   prefix='backbone.')
        assert cfg.model.head.init_cfg.checkpoint == want
        assert cfg.model.head.loss.type == 'LabelSmoothLoss'
    for size, dp in (('s', .2), ('b', .3), ('l', .5)):
        cfg = load(PV + f'pyramid-vision-llama-{size}_8xb128_in1k.py')
        ra = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandAugment'][0]
        assert (ra.policies, ra.magnitude_level) == ('timm_increasing', 9)
        assert cfg.model.head.loss.label_smooth_val == 0.1
        assert cfg.model.backbone.out_type == 'avg_featmap'
    ft = load(MAE + 'benchmarks/vision-llama-b-p16_8xb128-coslr-100e_in1k.py')
    assert ft.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert ft.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.45
    assert ft.model.backbone.out_type == 'avg_featmap'
    lin = load(MAE + 'benchmarks/vision-llama-b-p16_8xb2048-linear-coslr-90e_in1k.py')
    assert lin.model.backbone.frozen_stages == 12 and lin.model.backbone.out_type == 'avg_featmap'
    for cfg in (ft, lin):  # the MAE class token never went through the encoder
        assert cfg.model.backbone.with_cls_token is False
    assert lin.model.neck.type == 'ClsBatchNormNeck'
    assert lin.auto_scale_lr.base_batch_size == 8 * 2048
    for cfg in (ft, lin):
        assert cfg.model.backbone.init_cfg == dict(
            type='Pretrained', checkpoint='pretrain/vllama-b-mae-1600e.pth', prefix='backbone.')
    paper = load(MAE + 'mae_vision-llama-b-86m-p16_8xb512-amp-coslr-800e_in1k.py')
    assert paper.model.backbone.arch == dict(embed_dims=768, num_layers=12, num_heads=12,
                                             feedforward_channels=2048, layer_scale_init=0.0,
                                             ffn_bias=False)


def test_three_augment_branches_do_what_deit3_does():
    """Each 3-Augment branch of the S config, built by mmpretrain's registry, on a BGR image:
    grayscale (3 equal channels), solarize at 128, Gaussian blur with radius in [0.1, 2]."""
    import numpy as np
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import TRANSFORMS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(str(ROOT / VL / 'vision-llama-s-p16_8xb256-lamb-800e_in1k.py'))
    choice = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice'][0]
    gray, solarize, blur = (TRANSFORMS.build(t) for t in choice.transforms)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = gray(dict(img=img.copy()))['img']
    assert out.shape == img.shape and (out[..., 0] == out[..., 1]).all() \
        and (out[..., 1] == out[..., 2]).all()
    out = solarize(dict(img=img.copy()))['img']
    assert (out == np.where(img < 128, img, 255 - img)).all()
    radii = [blur.random_magnitude() for _ in range(200)]
    assert 0.1 <= min(radii) < 0.3 and 1.8 < max(radii) <= 2.0
    out = blur(dict(img=img.copy()))['img']
    assert out.shape == img.shape and out.astype(float).var() < img.astype(float).var()
    # and the RandomChoice wrapper itself builds and runs
    build = TRANSFORMS.build(choice)
    assert build(dict(img=img.copy()))['img'].shape == img.shape


# ---------------------------------------------------------------- plain supervised
def test_plain_s_deit3_recipe(data_root, tmp_path):
    cfg = load_tiny('vision_llama/vision-llama-s-p16_8xb256-lamb-800e_in1k.py', data_root,
                    tmp_path)
    res = run('vision-llama-s (LAMB, BCE, 3-Augment, repeat-aug)', cfg)
    runner = res['runner']
    opt = runner.optim_wrapper.optimizer
    assert type(opt).__name__ == 'Lamb'
    # 1-D parameters (norms, biases, layer scale) and the class token: no weight decay
    names = {id(p): n for n, p in runner.model.named_parameters()}
    for group in opt.param_groups:
        for p in group['params']:
            n = names[id(p)]
            if p.ndim <= 1 or n.endswith('cls_token'):
                assert group['weight_decay'] == 0.0, n
            else:
                assert group['weight_decay'] == pytest.approx(0.05), n
    # repeated augmentation sampler and the 3-Augment choice survive the shrinking
    assert type(runner.train_dataloader.sampler).__name__ == 'RepeatAugSampler'
    kinds = [type(t).__name__ for t in runner.train_dataloader.dataset.pipeline.transforms]
    assert 'RandomChoice' in kinds and 'ColorJitter' in kinds and 'RandAugment' not in kinds


@pytest.mark.parametrize('size', ['b', 'l'])
def test_plain_low_res_pretrain_then_224_finetune(size, data_root, tmp_path):
    pre_rel, ft_rel = {
        'b': ('vision_llama/vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py',
              'vision_llama/vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py'),
        'l': ('vision_llama/vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py',
              'vision_llama/vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py'),
    }[size]
    pre = load_tiny(pre_rel, data_root, tmp_path / 'pre')
    assert pre.model.backbone.img_size < 32  # tiny 192 -> 24 px, 128 -> 16 px
    run(f'vision-llama-{size} low-res pre-train', pre)
    ckpt = str(tmp_path / 'pre' / 'epoch_1.pth')
    sd = load_state_dict(ckpt)

    ft = load_tiny(ft_rel, data_root, tmp_path / 'ft')
    set_pretrained(ft, ckpt, 'backbone', 'head')
    assert ft.model.backbone.img_size == 32  # anchored at the fine-tuning grid

    def check(runner):
        runner.model.init_weights()
        assert_loaded(runner.model.backbone, sub(sd, 'backbone.'), set(), set())
        assert_loaded(runner.model.head, sub(sd, 'head.'), set(), set())

    res = run(f'vision-llama-{size} 224-px fine-tune', ft, before_train=check)
    assert type(res['runner'].optim_wrapper.optimizer).__name__ == 'AdamW'


# ---------------------------------------------------------------- pyramid supervised
@pytest.mark.parametrize('size', ['s', 'b', 'l'])
def test_pyramid_supervised_recipe(size, data_root, tmp_path):
    cfg = load_tiny(f'pyramid_vision_llama/pyramid-vision-llama-{size}_8xb128_in1k.py',
                    data_root, tmp_path)
    res = run(f'pyramid-vision-llama-{size} (AdamW, RandAug, mixup/cutmix)', cfg)
    opt = res['runner'].optim_wrapper.optimizer
    assert type(opt).__name__ == 'AdamW' and opt.defaults['lr'] == pytest.approx(1e-3)
    dp = {'s': 0.2, 'b': 0.3, 'l': 0.5}[size]
    blocks = [b for stage in res['runner'].model.backbone.stages for b in stage]
    assert blocks[-1].drop_path.p == pytest.approx(dp)


# ---------------------------------------------------------------- MAE
@pytest.mark.parametrize('rel', [
    'mae/mae_vision-llama-b-p16_8xb512-amp-coslr-800e_in1k.py',
    'mae/mae_vision-llama-l-p16_8xb512-amp-coslr-800e_in1k.py',
    'mae/mae_vision-llama-l-p16_8xb512-amp-coslr-1600e_in1k.py',
    'mae/mae_vision-llama-b-86m-p16_8xb512-amp-coslr-800e_in1k.py',
])
def test_mae_pretrain_recipes(rel, data_root, tmp_path):
    cfg = load_tiny(rel, data_root, tmp_path)
    res = run(Path(rel).stem, cfg)
    model = res['runner'].model
    assert type(model.backbone).__name__ == 'VisionLLaMAMAE'
    assert model.backbone.mask_ratio == 0.75 and model.head.norm_pix


@pytest.fixture(scope='module')
def mae_ckpt(data_root, tmp_path_factory) -> str:
    """Tiny 1600-epoch-recipe MAE run; its checkpoint plus an absolute ``pos_embed`` as the
    released MAE weights carry (which VisionLLaMA must drop)."""
    work = tmp_path_factory.mktemp('mae')
    cfg = load_tiny('mae/mae_vision-llama-b-p16_8xb512-amp-coslr-1600e_in1k.py', data_root,
                    work)
    res = run('mae_vision-llama-b 1600e (pre-train for the chain)', cfg)
    assert res['loss_last'] > 0
    sd = load_state_dict(str(work / 'epoch_1.pth'))
    n = (cfg.model.backbone.img_size // 8) ** 2
    sd['backbone.pos_embed'] = torch.randn(1, n + 1, PLAIN['embed_dims'])
    path = str(work / 'mae_with_pos_embed.pth')
    torch.save(dict(state_dict=sd), path)  # the layout the converter writes
    return path


def test_mae_finetune_from_tiny_mae(mae_ckpt, data_root, tmp_path):
    cfg = load_tiny('mae/benchmarks/vision-llama-b-p16_8xb128-coslr-100e_in1k.py', data_root,
                    tmp_path)
    set_pretrained(cfg, mae_ckpt, 'backbone')
    src = sub(load_state_dict(mae_ckpt), 'backbone.')

    def check(runner):
        runner.model.init_weights()
        # GAP feature: new ``ln2``; final_norm=False drops ``ln1``; pos_embed and the
        # class token (with_cls_token=False) dropped
        assert_loaded(runner.model.backbone, src, new={'ln2.weight', 'ln2.bias'},
                      dropped={'pos_embed', 'cls_token', 'ln1.weight', 'ln1.bias'})

    res = run('vision-llama-b MAE fine-tune (layer decay .45)', cfg, before_train=check)
    groups = res['runner'].optim_wrapper.optimizer.param_groups
    scales = sorted({round(g['lr_scale'], 8) for g in groups if 'lr_scale' in g})
    depth = PLAIN['num_layers'] + 2  # embeddings, blocks, head
    assert scales == sorted(round(0.45 ** k, 8) for k in range(depth))
    for g in groups:  # base lr (before the warm-up scheduler scaled it) x layer scale
        assert g['initial_lr'] == pytest.approx(2e-3 * g['lr_scale'])


def test_mae_linear_probe_from_tiny_mae(mae_ckpt, data_root, tmp_path):
    cfg = load_tiny('mae/benchmarks/vision-llama-b-p16_8xb2048-linear-coslr-90e_in1k.py',
                    data_root, tmp_path)
    set_pretrained(cfg, mae_ckpt, 'backbone')
    src = sub(load_state_dict(mae_ckpt), 'backbone.')

    def check(runner):
        runner.model.init_weights()
        assert_loaded(runner.model.backbone, src, new={'ln2.weight', 'ln2.bias'},
                      dropped={'pos_embed', 'cls_token', 'ln1.weight', 'ln1.bias'})

    res = run('vision-llama-b MAE linear probe (LARS, BN neck)', cfg, before_train=check)
    runner = res['runner']
    assert type(runner.optim_wrapper.optimizer).__name__ == 'LARS'
    # the backbone stayed frozen through training: still exactly the MAE weights
    assert_loaded(runner.model.backbone, src, new={'ln2.weight', 'ln2.bias'},
                  dropped={'pos_embed', 'cls_token', 'ln1.weight', 'ln1.bias'})
    assert not any(p.requires_grad for p in runner.model.backbone.parameters())
    assert any(p.requires_grad for p in runner.model.head.parameters())
