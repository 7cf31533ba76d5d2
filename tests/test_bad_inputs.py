"""Wrong inputs fail with a message that names the problem (issue 9).

Complements the constructor-argument tables of test_vision_llama.py / test_pyramid.py:
here the same kinds of mistakes arrive the way a user makes them (config dicts built
through the libraries' registries, ``tools/train.py`` / ``tools/test.py`` command lines,
checkpoint files, ``--cfg-options``), plus the MAE encoder, forward-time tensors and
the loading of a checkpoint made for another arch. Through the tools, every one of them
must end as one ``error: ...`` line and exit status 2, never a traceback.
"""
import importlib.util
import itertools
import os
import os.path as osp
import subprocess
import sys
from typing import List, Tuple

import pytest
import torch
from mmengine.config import Config

from vllama_mm.engine.validate import (ConfigError, check_cfg_options, check_checkpoint_file,
                                       check_data_paths, dataset_paths,
                                       warn_config_variables)
from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA
from vllama_mm.models.mae import VisionLLaMAMAE
from _tool_loader import load_tool  # noqa: E402  (tests/)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs/mmpretrain/vision_llama/'
                'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2)
PYRAMID = dict(embed_dims=[32, 32, 32, 32], depths=[2, 2, 2, 2])
_RUN_IDS = itertools.count()


# ---------------------------------------------------------------- helpers
def _tool(name: str):
    """tools/<name>.py loaded as a module (in-process: no interpreter start-up per case)."""
    return load_tool(f'tools/{name}.py', f'_vllama_tool_{name}')


def run_tool(name: str, argv: List[str], monkeypatch, capsys) -> Tuple[int, str]:
    """Run ``tools/<name>.py argv`` in-process; it must exit. Returns (status, stderr)."""
    mod = _tool(name)
    # a fresh experiment name per call: Runners built within the same second would share
    # one MMLogger whose stream is a previous test's (closed) captured stdout
    run_id = next(_RUN_IDS)
    if '--cfg-options' not in argv:
        argv = [*argv, '--cfg-options']
    argv = [*argv, f'experiment_name=bad_inputs_{run_id}']
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py', *argv])
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('VLLAMA_MM_DEBUG', raising=False)
    with pytest.raises(SystemExit) as exc:
        mod.main()
    return exc.value.code, capsys.readouterr().err


def assert_clean_error(status: int, err: str, *needles: str) -> None:
    assert status == 2, err
    assert 'error: ' in err and 'Traceback' not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = str(tmp_path_factory.mktemp('bad_inputs') / 'data')
    generate(root, num_train=1, num_val=1, img_size=32, num_classes=2)
    return root


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory, data_root) -> str:
    """The demo config on existing tiny data (so only the injected mistake can fail)."""
    path = tmp_path_factory.mktemp('cfg') / 'tiny.py'
    path.write_text(f"""
_base_ = [{DEMO!r}]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=1, num_heads=2), img_size=32),
             head=dict(num_classes=2, in_channels=32))
data_preprocessor = dict(num_classes=2)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
""")
    return str(path)


@pytest.fixture(scope='module')
def demo_cfg() -> Config:
    return Config.fromfile(DEMO)


# ---------------------------------------------------------------- model configs via registries
@pytest.mark.parametrize('scope,cfg,match', [
    # 1. unknown arch preset
    ('mmpretrain', dict(type='VisionLLaMA', arch='xxl'), "unknown arch 'xxl'"),
    # 2. custom arch missing keys
    ('mmseg', dict(type='VisionLLaMA', arch=dict(embed_dims=64, num_heads=2)),
     r"missing keys \['num_layers'\]"),
    # 3. head dim not divisible by 4 (MAE encoder: 36 / 6 = 6)
    ('mmpretrain', dict(type='VisionLLaMAMAE', arch=dict(embed_dims=36, num_layers=1,
                                                         num_heads=6)), 'divisible by 4'),
    # 4. out_indices out of range (mmdet: a detector user asking for block 12 of 12)
    ('mmdet', dict(type='VisionLLaMA', arch=PLAIN, with_cls_token=False, out_type='featmap',
                   out_indices=(1, 2)), 'out_indices 2 is out of range for 2 layers'),
    # 5. frozen_stages out of range
    ('mmseg', dict(type='PyramidVisionLLaMA', arch=PYRAMID, frozen_stages=7), 'frozen_stages'),
    # 6. unknown rope_type
    ('mmpretrain', dict(type='VisionLLaMA', arch=PLAIN, rope_type='rotary'), 'rope_type'),
    # 7. pyramid custom arch with 3 stages
    ('mmdet', dict(type='PyramidVisionLLaMA', arch=dict(embed_dims=[32, 64, 96, 128],
                                                        depths=[2, 2, 2])),
     "'depths' must be a list of 4"),
    # 8. mask ratio 1 (nothing kept) / negative
    ('mmpretrain', dict(type='VisionLLaMAMAE', arch=PLAIN, mask_ratio=1.0), 'mask_ratio'),
    ('mmpretrain', dict(type='VisionLLaMAMAE', arch=PLAIN, mask_ratio=-0.25), 'mask_ratio'),
    # 9. MAE encoder asked for intermediate blocks / windows
    ('mmpretrain', dict(type='VisionLLaMAMAE', arch=PLAIN, out_indices=(0, 1)),
     'last block only'),
    ('mmpretrain', dict(type='VisionLLaMAMAE', arch=PLAIN, with_cls_token=False,
                        window_size=4), 'does not support window attention'),
    # 10. embed dims not divisible by the heads
    ('mmseg', dict(type='VisionLLaMA', arch=dict(embed_dims=64, num_layers=1, num_heads=3)),
     'not divisible by num_heads 3'),
])
def test_bad_model_config_through_registry(scope, cfg, match):
    importlib.import_module(f'vllama_mm.{scope}')
    from mmengine.registry import DefaultScope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        with pytest.raises((ValueError, TypeError), match=match):
            registry.build(cfg)


# ---------------------------------------------------------------- forward-time tensors
@pytest.mark.parametrize('make', [
    lambda: VisionLLaMA(PLAIN),
    lambda: PyramidVisionLLaMA(PYRAMID),
    lambda: VisionLLaMAMAE(PLAIN),
])
@pytest.mark.parametrize('shape', [(3, 32, 32), (1, 1, 3, 32, 32), (1, 4, 32, 32)])
def test_non_4d_or_wrong_channel_input_named(make, shape):
    """11. a [C, H, W] image without batch dim, a 5-D video tensor, RGBA instead of RGB."""
    m = make().eval()
    with pytest.raises(ValueError, match=r'expected input \[B, 3, H, W\], got shape'):
        m(torch.randn(*shape))


def test_window_larger_than_grid_is_supported_and_exact():
    """12. windows larger than the token grid are padded and masked, not an error.

    One 8x8 window over a 4x4 grid with masked padding is global attention; with plain
    2D RoPE (window-local positions = grid positions) it equals the global model exactly.
    """
    torch.manual_seed(0)
    arch = dict(PLAIN, layer_scale_init=1.0)
    kw = dict(with_cls_token=False, out_type='featmap', rope_type='2d', patch_size=8,
              img_size=32)
    glob = VisionLLaMA(arch, **kw).eval()
    win = VisionLLaMA(arch, window_size=8, **kw).eval()
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 3, 32, 32)  # 4x4 tokens, window 8
    with torch.no_grad():
        a, b = glob(x)[0], win(x)[0]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # the unmasked (official ViTDet) padding lets the zeros take part: different output
    unmasked = VisionLLaMA(arch, window_size=8, window_pad_mask=False, **kw).eval()
    unmasked.load_state_dict(glob.state_dict())
    with torch.no_grad():
        assert not torch.allclose(unmasked(x)[0], a, atol=1e-3)
    # the pyramid's 7x7 LSA windows on 2x2 / 1x1 late-stage grids (32 px input)
    with torch.no_grad():
        outs = PyramidVisionLLaMA(PYRAMID).eval()(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(torch.isfinite(o).all() for o in outs)


# ---------------------------------------------------------------- checkpoint of another arch
@pytest.mark.parametrize('cls,small,big', [
    (VisionLLaMA, PLAIN, dict(PLAIN, embed_dims=64)),
    (PyramidVisionLLaMA, PYRAMID, dict(PYRAMID, embed_dims=[64, 64, 64, 64])),
])
def test_pretrained_checkpoint_of_other_arch_is_an_error(cls, small, big, tmp_path):
    """13. mmengine's Pretrained init only *warns* on shape mismatches and keeps the random
    init; our backbones must refuse a checkpoint made for another width."""
    ckpt = str(tmp_path / 'other_arch.pth')
    state = {'backbone.' + k: v for k, v in cls(big).state_dict().items()}
    torch.save({'state_dict': state}, ckpt)
    model = cls(small, init_cfg=dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.'))
    with pytest.raises(ValueError, match=r'differ in shape \(.*\(32, 3, '):
        model.init_weights()


# ---------------------------------------------------------------- checkpoint files
def test_truncated_checkpoint_to_tools_test_is_a_clean_error(tiny_cfg, tmp_path):
    """14. a checkpoint cut short (interrupted copy): one line, exit 2 (a real subprocess:
    proves no traceback reaches the terminal)."""
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.zeros(4096)}}, good)
    data = good.read_bytes()
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(data[:len(data) // 2])
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', tiny_cfg, str(bad), '--work-dir', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert_clean_error(proc.returncode, proc.stderr, 'load_from', 'truncated', str(bad))
    check_checkpoint_file(str(good), 'load_from')  # the intact file passes


@pytest.mark.parametrize('content,match', [(None, 'not found'), (b'', 'empty')])
def test_missing_or_empty_checkpoint_named(tmp_path, content, match):
    """15. load_from pointing at nothing / at an empty file."""
    path = tmp_path / 'ckpt.pth'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f'load_from: .*{match}'):
        check_checkpoint_file(str(path), 'load_from')


def test_missing_pretrained_file_named_before_building(tiny_cfg, tmp_path, monkeypatch,
                                                       capsys):
    """16. init_cfg Pretrained checkpoint that does not exist: named by its config key."""
    status, err = run_tool('train', [
        tiny_cfg, '--work-dir', str(tmp_path), '--cfg-options',
        'model.backbone.init_cfg.type=Pretrained',
        'model.backbone.init_cfg.checkpoint=pretrain/nope.pth'], monkeypatch, capsys)
    assert_clean_error(status, err, 'model.backbone.init_cfg.checkpoint', 'pretrain/nope.pth')


# ---------------------------------------------------------------- dataset paths
def test_missing_dataset_path_named_before_building(tiny_cfg, tmp_path, monkeypatch, capsys):
    """17. tools/train.py with a data_root that does not exist: says which key and path,
    before the Runner exists (no work-dir log is created)."""
    work = tmp_path / 'work'
    status, err = run_tool('train', [
        tiny_cfg, '--work-dir', str(work), '--cfg-options',
        'train_dataloader.dataset.data_root=/nonexistent/imagenet'], monkeypatch, capsys)
    assert_clean_error(status, err, 'train_dataloader.dataset.data_root',
                       '/nonexistent/imagenet')
    assert not work.exists()


def test_dataset_path_rules(data_root):
    """18. data_prefix / ann_file joined with data_root, through dataset wrappers."""
    ok = dict(type='CustomDataset', data_root=data_root, data_prefix='train', ann_file='')
    assert [k for k, _ in dataset_paths(ok, 'd')] == ['d.data_root', 'd.data_prefix']
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=ok)),
        val_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            ok, dict(ok, ann_file='meta/val.txt'),
            dict(ok, data_prefix=dict(img_path='images/validation'))])),
        val_cfg=dict()))
    with pytest.raises(ConfigError, match=r'val_dataloader\.dataset\.datasets\.2\.data_prefix'
                                          r'\.img_path: path not found: .*images/validation'):
        check_data_paths(cfg, 'train')
    cfg.val_cfg = None  # --no-validate: the val loader is not used, not checked
    check_data_paths(cfg, 'train')
    cfg.train_dataloader.dataset.dataset.ann_file = 'annotations/instances_train2017.json'
    with pytest.raises(ConfigError, match=r'dataset\.dataset\.ann_file: path not found'):
        check_data_paths(cfg, 'train')
    check_data_paths(cfg, 'test')  # no test_dataloader: nothing to check
    remote = dict(ok, data_root='s3://bucket/imagenet')
    assert dataset_paths(remote, 'd') == []  # remote storage is not checked locally


# ---------------------------------------------------------------- --cfg-options
@pytest.mark.parametrize('key,match', [
    # 19. a typo of an existing leaf
    ('train_cfg.max_epoch', r"has no key 'max_epoch' \(did you mean 'train_cfg.max_epochs'"),
    # 20. a typo in the middle of the path
    ('model.backbon.arch', r"did you mean 'model.backbone'"),
    # 21. an unknown top-level key
    ('train_pipelin', r"unknown top-level key 'train_pipelin'.*did you mean 'train_pipeline'"),
    ('max_iters', 'unknown top-level key'),
    # 22. a path through a number / a list index out of range
    ('optim_wrapper.optimizer.lr.value', r"optim_wrapper.optimizer.lr is a float"),
    ('train_pipeline.7.type', 'index 7 is out of range for train_pipeline'),
])
def test_cfg_options_typos_rejected(demo_cfg, key, match):
    with pytest.raises(ConfigError, match=match):
        check_cfg_options(demo_cfg, {key: 1})


@pytest.mark.parametrize('key', [
    'train_cfg.max_epochs',                 # existing leaf
    'model.backbone.init_cfg',              # new key, no look-alike sibling
    'model.backbone.drop_path_rate',        # existing
    'find_unused_parameters',               # new top-level key the Runner reads
    'train_pipeline.1.prob',                # list element
    'model.backbone._delete_',              # mmengine's merge directive
])
def test_cfg_options_legitimate_keys_accepted(demo_cfg, key):
    check_cfg_options(demo_cfg, {key: 1})


def test_cfg_option_typo_through_tools_train(tiny_cfg, tmp_path, monkeypatch, capsys):
    status, err = run_tool('train', [tiny_cfg, '--work-dir', str(tmp_path), '--cfg-options',
                                     'train_dataloader.batchsize=4'], monkeypatch, capsys)
    assert_clean_error(status, err, "did you mean 'train_dataloader.batch_size'")


def test_overriding_a_config_variable_warns(demo_cfg, capsys):
    notes = warn_config_variables(demo_cfg, {'data_root': '/data/x', 'work_dir': 'w'})
    assert len(notes) == 1 and "'data_root' is a config variable" in notes[0]
    assert 'train_dataloader.dataset.data_root' in capsys.readouterr().err


# ---------------------------------------------------------------- whole configs via tools
def test_config_without_default_scope(tmp_path, monkeypatch, capsys):
    """23. a hand-written config that inherits no library base: no default_scope."""
    cfg = tmp_path / 'no_scope.py'
    cfg.write_text("model = dict(type='ImageClassifier', backbone=dict(type='VisionLLaMA'))\n")
    status, err = run_tool('train', [str(cfg), '--work-dir', str(tmp_path)], monkeypatch,
                           capsys)
    assert_clean_error(status, err, 'default_scope must be one of', 'None')


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    """24. a config path that does not exist."""
    status, err = run_tool('test', [str(tmp_path / 'nope.py'), 'x.pth'], monkeypatch, capsys)
    assert_clean_error(status, err, 'nope.py')


@pytest.mark.parametrize('option,needles', [
    # 25. a misspelt class name: the registry's KeyError, as one line
    ('model.backbone.type=VisionLlama', ('VisionLlama is not in the', 'registry')),
    # 26. a bad model argument raised while the Runner builds the model
    ('model.backbone.arch.num_heads=3', ('not divisible by num_heads 3', )),
    ('model.backbone.rope_type=rotary', ('rope_type must be one of', "'rotary'")),
])
def test_model_errors_through_tools_train_are_one_line(tiny_cfg, tmp_path, monkeypatch,
                                                        capsys, option, needles):
    status, err = run_tool('train', [tiny_cfg, '--work-dir', str(tmp_path), '--cfg-options',
                                     option], monkeypatch, capsys)
    assert_clean_error(status, err, *needles)


def test_debug_env_restores_the_traceback(tmp_path, monkeypatch):
    """VLLAMA_MM_DEBUG=1 re-raises instead of exiting (for bug reports)."""
    cfg = tmp_path / 'no_scope.py'
    cfg.write_text('model = dict()\n')
    mod = _tool('train')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', str(cfg), '--work-dir', str(tmp_path)])
    monkeypatch.setenv('VLLAMA_MM_DEBUG', '1')
    with pytest.raises(ValueError, match='default_scope'):
        mod.main()


# ---------------------------------------------------------------- silent before (model checks)
@pytest.mark.parametrize('make,match', [
    (lambda: VisionLLaMA(PLAIN, in_channels=0), 'in_channels must be a positive int'),
    (lambda: VisionLLaMA(dict(PLAIN, embed_dims=0)), 'must be a positive int, got 0'),
    (lambda: VisionLLaMA(dict(PLAIN, num_heads=2.5)), "'num_heads' must be a positive int"),
    (lambda: VisionLLaMA(dict(PLAIN, feedforward_channels=0)), 'feedforward_channels'),
    (lambda: VisionLLaMA(PLAIN, out_indices=[]), 'non-empty list of ints'),
    (lambda: PyramidVisionLLaMA(PYRAMID, out_indices='3'), 'non-empty list of ints'),
    (lambda: VisionLLaMA(PLAIN, drop_path_rate=1.5), r'drop_path_rate must be in \[0, 1\)'),
    (lambda: PyramidVisionLLaMA(PYRAMID, attn_drop_rate=-0.1), 'attn_drop_rate'),
    (lambda: VisionLLaMA(PLAIN, with_cls_token=False, out_type='featmap', window_size=-2),
     'window_size must be (an int )?>= 0'),
    (lambda: VisionLLaMA(PLAIN, with_cls_token=False, out_type='featmap', window_size=4,
                         global_attn_indexes='1'), 'global_attn_indexes must be'),
    (lambda: VisionLLaMA(PLAIN, rope_theta=0), 'theta must be (a finite number )?> 0'),
    (lambda: VisionLLaMA(PLAIN, rope_anchor=(0, 0)), 'anchor grid must be positive'),
])
def test_arguments_that_were_silently_accepted(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize('x,match', [
    (lambda: torch.zeros(1, 3, 32, 32).numpy(), 'expected a torch.Tensor'),
    (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 'floating-point'),
    (lambda: torch.zeros(1, 3, 0, 32), 'empty image'),
])
def test_input_type_named(x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VisionLLaMA(PLAIN)(x())


def test_mae_mask_ratio_that_keeps_no_token():
    m = VisionLLaMAMAE(PLAIN, mask_ratio=0.95)  # 32 px / patch 16: 4 patches, keeps 0
    with pytest.raises(ValueError, match='keeps no token of the 4 patches'):
        m(torch.randn(1, 3, 32, 32))
    assert m(torch.randn(1, 3, 160, 160))[0].shape == (1, 1 + 5, 32)  # 100 patches keep 5
