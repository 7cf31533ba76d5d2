"""Drop-ins into the libraries' own configs (issue 27.4): each README "Drop-in" block,
copied verbatim from the README, trains through tools/train.py on tiny synthetic data.
The test adds only sizing (tiny widths, small images, the generated data, 2 iterations):
every edit a user needs is the README's. Forgetting an edit is a one-line error that
names it."""
import os.path as osp
import re

import pytest
from mmengine.config import Config
from test_first_use import run_tool  # noqa: E402  (tests/)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTION = "## Drop-in into the libraries' own configs"


def readme_blocks() -> dict:
    """``{stock base: python block}`` of the README's drop-in section."""
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.index('\n## ', start + len(SECTION))
    blocks = re.findall(r'```python\n(.*?)```', text[start:end], re.S)
    out = {}
    for block in blocks:
        base = re.match(r"_base_ = \['([^']+)'\]", block).group(1)
        out[base] = block
    return out


BLOCKS = readme_blocks()
MAE_SEG = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'
SWIN_SEG = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
SWIN_DET = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
MAE_PRE = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py'
VIT = 'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py'
LIB = {MAE_SEG: 'mmseg', SWIN_SEG: 'mmseg', SWIN_DET: 'mmdet', MAE_PRE: 'mmpretrain',
       VIT: 'mmpretrain'}

# ---- sizing only: what makes each run tiny (no edit a user of the real config needs)
_SEG_DATA = '''
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=DATA, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=DATA, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
'''
_CLS_DATA = '''
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=DATA, pipeline=[
                            dict(type='LoadImageFromFile'),
                            dict(type='RandomResizedCrop', scale=32, backend='pillow'),
                            dict(type='PackInputs')]))
train_cfg = dict(max_epochs=1)
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
resume = False
'''
TINY = {
    MAE_SEG: _SEG_DATA + '''
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=2), img_size=64,
                  out_indices=(0, 1, 2, 3)),
    neck=dict(embed_dim=64, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64] * 4, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(43, 43)))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=4))  # the tiny backbone's block count
''',
    SWIN_SEG: _SEG_DATA + '''
dims = [32, 64, 96, 128]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=dims, depths=[1, 1, 1, 1]), img_size=64),
    decode_head=dict(in_channels=dims, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=dims[2], channels=16, norm_cfg=norm_cfg))
''',
    SWIN_DET: '''
dims = [32, 64, 96, 128]
ch = 32
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=dims, depths=[1, 1, 1, 1]), img_size=128),
    neck=dict(in_channels=dims, out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=DATA + '/', pipeline=pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
''',
    MAE_PRE: _CLS_DATA + '''
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=2, num_heads=2), img_size=32,
                  patch_size=8),
    neck=dict(num_patches=16, patch_size=8, embed_dim=64, decoder_embed_dim=32,
              decoder_depth=1, decoder_num_heads=2),
    head=dict(patch_size=8))
''',
    VIT: _CLS_DATA + '''
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2), img_size=32,
                  patch_size=8),
    head=dict(num_classes=10, in_channels=32, hidden_dim=64))
data_preprocessor = dict(num_classes=10)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
''',
}
KIND = {MAE_SEG: 'ade20k', SWIN_SEG: 'ade20k', SWIN_DET: 'coco', MAE_PRE: 'imagenet',
        VIT: 'imagenet'}


def _generate(kind: str, root: str) -> None:
    if kind == 'ade20k':
        from vllama_mm.datasets.synthetic_ade20k import generate
        generate(root, num_train=4, num_val=1)
    elif kind == 'coco':
        from vllama_mm.datasets.synthetic_coco import generate
        generate(root, num_train=2, num_val=1)
    else:
        from vllama_mm.datasets.synthetic_imagenet import generate
        generate(root, num_train=1, num_val=1, img_size=32)


def test_readme_lists_every_swap():
    assert set(BLOCKS) == set(TINY)


@pytest.mark.parametrize('base', sorted(TINY))
def test_stock_config_with_the_readme_edits_trains(base, tmp_path, monkeypatch, capsys):
    pytest.importorskip(LIB[base])
    pytest.importorskip('mmcv.ops')
    data = str(tmp_path / 'data')
    _generate(KIND[base], data)
    (tmp_path / 'dropin.py').write_text(BLOCKS[base])
    (tmp_path / 'tiny.py').write_text(f"_base_ = ['./dropin.py']\nDATA = {data!r}\n" +
                                      TINY[base])
    work = str(tmp_path / 'work')
    argv = [str(tmp_path / 'tiny.py'), '--work-dir', work, '--fp32']
    code, out = run_tool('train', argv, monkeypatch, capsys)
    assert code == 0, out.err[-3000:]
    cfg = Config.fromfile(str(tmp_path / 'dropin.py'))
    assert cfg.model.backbone.type in ('VisionLLaMA', 'VisionLLaMAMAE', 'PyramidVisionLLaMA')
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert osp.isfile(f.read().strip())


#: (stock base, what the user left out, the config text without it, what the error says)
FORGOTTEN = [
    (MAE_SEG, '_delete_', lambda b: b.replace('_delete_=True, ', ''),
     r"model.backbone: VisionLLaMA has no argument\(s\) \[.*'embed_dims', 'init_values', "
     r"'mlp_ratio', .*'num_heads', 'num_layers'\].*_delete_=True"),
    (MAE_SEG, 'pretrained', lambda b: b.replace('    pretrained=None,\n', ''),
     r"model.pretrained='./pretrain/mae_pretrain_vit_base_mmcls.pth'.*set "
     r'model.pretrained=None'),
    (MAE_SEG, 'constructor', lambda b: b.replace(
        "optim_wrapper = dict(constructor='LayerDecayOptimWrapperConstructor')", ''),
     r"optim_wrapper.constructor='LayerDecayOptimizerConstructor' handles only.*use "
     r"constructor='LayerDecayOptimWrapperConstructor'"),
    (SWIN_DET, '_delete_', lambda b: b.replace('_delete_=True, ', ''),
     r"PyramidVisionLLaMA has no argument\(s\) \[.*'depths'.*'mlp_ratio'.*\].*_delete_=True"),
]


@pytest.mark.parametrize('base, left_out, edit, match', FORGOTTEN,
                         ids=[f'{LIB[b]}-{w}' for b, w, _, _ in FORGOTTEN])
def test_a_forgotten_edit_is_one_line_naming_it(base, left_out, edit, match, tmp_path,
                                                monkeypatch, capsys):
    pytest.importorskip(LIB[base])
    data = str(tmp_path / 'data')
    _generate(KIND[base], data)
    (tmp_path / 'dropin.py').write_text(edit(BLOCKS[base]))
    (tmp_path / 'tiny.py').write_text(f"_base_ = ['./dropin.py']\nDATA = {data!r}\n" +
                                      TINY[base])
    code, out = run_tool('train', [str(tmp_path / 'tiny.py'), '--work-dir',
                                   str(tmp_path / 'w'), '--fp32'], monkeypatch, capsys)
    assert code == 2, out.err[-3000:]
    line = out.err.strip().splitlines()[0]
    assert line.startswith('error: ') and re.search(match, line), out.err
    assert 'Traceback' not in out.err
