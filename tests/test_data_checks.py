"""Data (issue 14 item 7): the synthetic-data generators never mix old and new files."""
import os

import pytest

from vllama_mm.datasets import synthetic_coco, synthetic_imagenet


@pytest.mark.parametrize('module,split_dir', [(synthetic_imagenet, 'train/class_00'),
                                              (synthetic_coco, 'train2017')])
def test_generator_replaces_its_own_data_and_refuses_foreign(module, split_dir, tmp_path):
    root = str(tmp_path / 'data')
    kw = dict(img_size=16, num_classes=2) if module is synthetic_imagenet else {}
    module.generate(root, num_train=3, num_val=1, **kw)
    folder = os.path.join(root, split_dir)
    assert len(os.listdir(folder)) == 3
    module.generate(root, num_train=2, num_val=1, **kw)  # a smaller rerun: no stale files
    assert len(os.listdir(folder)) == 2
    foreign = tmp_path / 'real'
    (foreign / split_dir).mkdir(parents=True)
    (foreign / split_dir / 'mine.jpg').write_bytes(b'real data')
    with pytest.raises(FileExistsError, match='not written by this generator'):
        module.generate(str(foreign), num_train=1, num_val=1, **kw)
    assert (foreign / split_dir / 'mine.jpg').read_bytes() == b'real data'


# ---------------------------------------------------------------- dataset checks
import json  # noqa: E402
import os.path as osp  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from PIL import Image  # noqa: E402

from vllama_mm.datasets import synthetic_ade20k  # noqa: E402
from vllama_mm.datasets.data_check import DataError, check_data  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _cls_cfg(root: str) -> Config:
    loader = lambda split: dict(dataset=dict(type='CustomDataset', data_root=root,  # noqa
                                             data_prefix=split))
    return Config(dict(default_scope='mmpretrain', train_dataloader=loader('train'),
                       val_dataloader=loader('val'), val_cfg=dict(),
                       test_dataloader=loader('val')))


@pytest.fixture
def imagenet(tmp_path) -> str:
    root = str(tmp_path / 'imnet')
    synthetic_imagenet.generate(root, num_train=2, num_val=1, img_size=16, num_classes=3)
    return root


@pytest.mark.parametrize('fault,match', [
    ('zero_byte', r'train/class_01/train_01_00000\.JPEG: empty file \(0 bytes\)'),
    ('garbage', r'train/class_01/train_01_00000\.JPEG: cannot be decoded as an image'),
    ('empty_class', r'train/class_02: empty class folder'),
    ('class_lists', r"different class folders \(4 vs 3; only in the first: \['class_99'\]"),
])
def test_classification_data_faults_are_named(imagenet, fault, match):
    check_data(_cls_cfg(imagenet))  # the intact data passes
    bad = osp.join(imagenet, 'train', 'class_01', 'train_01_00000.JPEG')
    if fault == 'zero_byte':
        open(bad, 'wb').close()
    elif fault == 'garbage':
        open(bad, 'wb').write(b'not a jpeg at all' * 10)
    elif fault == 'empty_class':
        for f in os.listdir(osp.join(imagenet, 'train', 'class_02')):
            os.remove(osp.join(imagenet, 'train', 'class_02', f))
    else:
        os.makedirs(osp.join(imagenet, 'train', 'class_99'))
        Image.new('RGB', (8, 8)).save(osp.join(imagenet, 'train', 'class_99', 'a.png'))
    with pytest.raises(DataError, match=match):
        check_data(_cls_cfg(imagenet), quick=False)


def _coco_cfg(root: str, with_mask: bool = True) -> Config:
    ds = dict(type='CocoDataset', data_root=root, ann_file='annotations/instances_val2017.json',
              data_prefix=dict(img='val2017/'),
              pipeline=[dict(type='LoadImageFromFile'),
                        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)])
    return Config(dict(default_scope='mmdet', test_dataloader=dict(dataset=ds)))


@pytest.mark.parametrize('drop,match', [
    ('bbox', r"instances_val2017\.json: annotations\[0\] \(id \d+\) lacks \['bbox'\]"),
    ('category_id', r"lacks \['category_id'\]"),
    ('segmentation', r"lacks \['segmentation'\]"),
    ('file_name', r"images\[0\] lacks \['file_name'\]"),
])
def test_coco_annotation_faults_are_named(tmp_path, drop, match):
    root = str(tmp_path / 'coco')
    synthetic_coco.generate(root, num_train=1, num_val=2)
    check_data(_coco_cfg(root), mode='test', quick=False)
    ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
    coco = json.load(open(ann_file))
    del (coco['images'] if drop == 'file_name' else coco['annotations'])[0][drop]
    json.dump(coco, open(ann_file, 'w'))
    with pytest.raises(DataError, match=match):
        check_data(_coco_cfg(root), mode='test', quick=False)
    if drop == 'segmentation':  # boxes only: masks are not needed
        check_data(_coco_cfg(root, with_mask=False), mode='test', quick=False)


def _ade_cfg(root: str) -> Config:
    ds = dict(type='ADE20KDataset', data_root=root, reduce_zero_label=True,
              data_prefix=dict(img_path='images/validation',
                               seg_map_path='annotations/validation'))
    return Config(dict(default_scope='mmseg', model=dict(decode_head=dict(num_classes=150)),
                       test_dataloader=dict(dataset=ds)))


@pytest.mark.parametrize('fault,match', [
    ('out_of_range', r'ADE_val_00000001\.png: labels \[151, 200\] out of range: 150 classes '
                     r'with reduce_zero_label'),
    ('rgb', r'ADE_val_00000001\.png: label map must be single-channel .*got mode RGB'),
    ('size', r'ADE_val_00000001\.png: size \(16, 16\) differs from its image'),
])
def test_segmentation_label_faults_are_named(tmp_path, fault, match):
    root = str(tmp_path / 'ade')
    synthetic_ade20k.generate(root, num_train=1, num_val=2, img_size=(32, 32))
    check_data(_ade_cfg(root), mode='test', quick=False)
    seg = osp.join(root, 'annotations', 'validation', 'ADE_val_00000001.png')
    labels = np.asarray(Image.open(seg)).copy()
    if fault == 'out_of_range':
        labels[0, 0], labels[0, 1], labels[1, 1] = 151, 200, 255  # 255: ignore, allowed
        Image.fromarray(labels).save(seg)
    elif fault == 'rgb':
        Image.fromarray(labels).convert('RGB').save(seg)
    else:
        Image.fromarray(labels[:16, :16]).save(seg)
    with pytest.raises(DataError, match=match):
        check_data(_ade_cfg(root), mode='test', quick=False)


def test_check_dataset_tool_names_the_file(imagenet, tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(_cls_cfg(imagenet).pretty_text)
    ok = subprocess.run([sys.executable, 'tools/analysis/check_dataset.py', str(cfg)],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and 'no problem found' in ok.stdout, ok.stderr
    open(osp.join(imagenet, 'val', 'class_00', 'val_00_00000.JPEG'), 'wb').close()
    bad = subprocess.run([sys.executable, 'tools/analysis/check_dataset.py', str(cfg)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert 'val_00_00000.JPEG: empty file (0 bytes)' in bad.stderr.splitlines()[0]
