"""Each library's tiny config (README 'Tiny configs') runs as a user runs it: from a folder
holding the generated dataset at the config's relative data_root, through the real Runner,
for two training iterations, a validation pass where the config has one, and a checkpoint.
Only the schedule length and work_dir are changed."""
import math
import os
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.hooks import Hook

from vllama_mm.engine.console import log_file
from vllama_mm.engine.runner_utils import build_runner, import_plugin

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = {
    'pyramid UperNet': ('configs/mmseg/upernet/upernet_pvllama-tiny_1xb2-20i_synthetic-ade20k-64x64.py',
                        'ade20k', 'mIoU'),
    'MAE UperNet': ('configs/mmseg/upernet/upernet_vllama-tiny-mae_1xb2-20i_synthetic-ade20k-64x64.py',
                    'ade20k', 'mIoU'),
    'Mask R-CNN': ('configs/mmdet/mask_rcnn/mask-rcnn_pvllama-tiny_fpn_1xb2-2e_synthetic-coco.py',
                   'coco', 'coco/segm_mAP'),
    'ViTDet': ('configs/mmdet/vitdet/vitdet_mask-rcnn_vllama-tiny_1xb2-20i_synthetic-coco.py',
               'coco', 'coco/segm_mAP'),
    'MAE pre-training': ('configs/mmpretrain/mae/mae_vision-llama-tiny-p8_1xb16-5e_synthetic-64px.py',
                         'imagenet', None),
}


class _KeepMetrics(Hook):
    """Keeps the metrics of the last validation run."""

    def __init__(self):
        self.metrics = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = metrics


def _generate(kind: str, root: str) -> None:
    """The dataset at the folder the config names, small enough for 2 iterations of batch 2
    (imagenet: 10 classes x 2 images = 20 for MAE's batch of 16 -> 2 iterations)."""
    if kind == 'ade20k':
        from vllama_mm.datasets.synthetic_ade20k import generate
        generate(root, num_train=4, num_val=2)
    elif kind == 'coco':
        from vllama_mm.datasets.synthetic_coco import generate
        generate(root, num_train=4, num_val=2)
    else:
        from vllama_mm.datasets.synthetic_imagenet import generate
        generate(root, num_train=2, num_val=1)


@pytest.mark.parametrize('family', sorted(TINY))
def test_tiny_config_trains_validates_and_saves(family, tmp_path, monkeypatch, capsys):
    path, kind, metric = TINY[family]
    cfg = Config.fromfile(osp.join(ROOT, path))
    init = cfg.model.backbone.get('init_cfg')
    assert not (isinstance(init, dict) and init.get('type') == 'Pretrained'), \
        'tiny configs start from scratch'
    data_root = cfg.train_dataloader.dataset.data_root
    assert not osp.isabs(data_root) and data_root.startswith('data/synthetic_')
    monkeypatch.chdir(tmp_path)  # the config's relative data_root, as from the repo root
    _generate(kind, data_root)

    if cfg.train_cfg.type == 'IterBasedTrainLoop':
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
        cfg.default_hooks.checkpoint.interval = 2
        expected = 'iter_2.pth'
    else:
        cfg.train_cfg.max_epochs = 1
        if 'val_interval' in cfg.train_cfg:
            cfg.train_cfg.val_interval = 1
        cfg.default_hooks.checkpoint.interval = 1
        expected = 'epoch_1.pth'
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    import_plugin(cfg)
    runner = build_runner(cfg)
    keep = _KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    runner.train()
    assert runner.iter == 2
    assert osp.isfile(osp.join(cfg.work_dir, expected))
    if metric is not None:  # validated at the end of training
        assert metric in keep.metrics and math.isfinite(keep.metrics[metric]), keep.metrics

    # readable console: dumps and per-parameter lines only in the log file
    console = capsys.readouterr().out
    with open(log_file(runner.logger)) as f:
        logged = f.read()
    for noise in ('System environment:', 'paramwise_options --', 'Hooks will be executed'):
        assert noise not in console, noise
    assert 'System environment:' in logged and 'Config:' in logged
    if 'paramwise_cfg' in cfg.optim_wrapper and \
            cfg.optim_wrapper.get('constructor') is None:  # mmengine's per-parameter lines
        assert 'paramwise_options --' in logged
    assert 'full log (environment, config, per-parameter settings): ' in console
    # fits on a screen; COCO runs add pycocotools' own prints (2 x 12 summary lines)
    assert len(console.splitlines()) < (80 if kind == 'coco' else 30), console


def test_readme_lists_every_tiny_config():
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    tiny = [osp.relpath(p, ROOT) for p in
            (os.path.join(d, f) for d, _, fs in os.walk(osp.join(ROOT, 'configs')) for f in fs)
            if 'tiny' in osp.basename(p)]
    assert len(tiny) == 8  # 6 for the OpenMMLab libraries, 2 for generation
    for path in tiny:
        assert path in readme, f'README does not list {path}'
