"""mmpretrain's own visualization tools on our configs, with the locked matplotlib and
grad-cam (issue 27.5): ``browse_dataset.py`` in its default mode and ``vis_cam.py`` on a
tiny VisionLLaMA checkpoint, each run as a user runs it (a subprocess of the shipped
script, from the installed package's ``.mim/tools``)."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs/mmpretrain/vision_llama/'
                  'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')


def mmpretrain_tool(name: str) -> str:
    spec = importlib.util.find_spec('mmpretrain')
    if spec is None:
        pytest.skip('mmpretrain is not installed')
    path = osp.join(spec.submodule_search_locations[0], '.mim', 'tools', 'visualization',
                    f'{name}.py')
    assert osp.isfile(path), f'{path}: the mmpretrain wheel ships its tools there'
    return path


def run(argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = str(tmp_path_factory.mktemp('vis') / 'data')
    generate(root, num_train=1, num_val=1, img_size=64, num_classes=2)
    return root


def test_browse_dataset_default_mode_writes_the_transformed_images(data, tmp_path):
    tool = mmpretrain_tool('browse_dataset')
    out = tmp_path / 'browse'
    r = run([tool, CONFIG, '--output-dir', str(out), '--not-show', '--show-number', '2',
             '--cfg-options', f'train_dataloader.dataset.data_root={data}'], cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) == 2 and all(f.endswith('.JPEG') for f in files)
    from PIL import Image
    img = np.asarray(Image.open(out / files[0]))
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0  # a drawn figure


def test_vis_cam_on_a_tiny_checkpoint(data, tmp_path):
    tool = mmpretrain_tool('vis_cam')
    pytest.importorskip('pytorch_grad_cam')
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import vllama_mm.mmpretrain  # noqa: F401  (registers VisionLLaMA)
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    img = osp.join(data, 'val', 'class_00', sorted(os.listdir(osp.join(data, 'val',
                                                                       'class_00')))[0])
    out = tmp_path / 'cam.png'
    r = run([tool, img, CONFIG, ckpt, '--save-path', str(out), '--vit-like',
             '--device', 'cpu'], cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'as the target layer' in r.stdout
    from PIL import Image
    cam = np.asarray(Image.open(out)).astype(np.float32)
    src = np.asarray(Image.open(img).convert('RGB')).astype(np.float32)
    assert cam.shape == src.shape == (64, 64, 3)
    assert np.abs(cam - src[..., ::-1]).mean() > 1.0  # the heat map is drawn over the image
