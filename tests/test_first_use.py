"""Issue 27 items 3-5: every suggested fix runs, drop-ins into the libraries' own configs,
and the small things a new user meets (demo data folder, tools/test.py without a test
loop, numpy-2-written checkpoints, layer-decay keys of mmseg, ``pretrained=None``)."""
import os
import os.path as osp
import sys

import pytest
import torch
from _tool_loader import load_tool  # noqa: E402  (tests/)
from mmengine.config import Config

from vllama_mm.engine.validate import ConfigError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_DIT = osp.join(ROOT, 'configs/generation/dit_llama/dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py')

_RUNS = iter(range(10**6))


def run_tool(name, argv, monkeypatch, capsys):
    """``tools/<name>.py argv`` in-process: ``(exit code, captured out/err)``."""
    argv = list(argv)
    if '--cfg-options' not in argv:
        argv.append('--cfg-options')
    argv.append(f'experiment_name=first_use_{next(_RUNS)}')  # one MMLogger per run
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py', *argv])
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('VLLAMA_MM_DEBUG', raising=False)
    try:
        load_tool(f'tools/{name}.py', f'_first_use_{name}').main()
    except SystemExit as e:
        return e.code, capsys.readouterr()
    return 0, capsys.readouterr()


def suggested_flag(err: str) -> str:
    """The ``--flag`` an error line tells the user to add to the command."""
    import re
    m = re.search(r'add (--[a-z0-9-]+) to the tools/train.py command', err)
    assert m, f'no suggested flag in {err!r}'
    return m.group(1)


# ---------------------------------------------------------------------------- 27.3 --fp32
@pytest.mark.skipif(torch.cuda.is_available(), reason='the AMP-on-CPU error needs a CPU-only '
                    'machine')
def test_amp_config_on_cpu_error_suggests_a_command_that_runs(tmp_path, monkeypatch, capsys):
    """An fp16 AMP config (loss_scale + dtype, as the paper-row configs) on CPU: the named
    error suggests a flag; the same command with it trains and saves a checkpoint."""
    cfg = tmp_path / 'tiny_amp.py'
    cfg.write_text(f'_base_ = [{TINY_DIT!r}]\n'
                   "optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic', "
                   "dtype='float16')\n")
    work = str(tmp_path / 'work')
    argv = [str(cfg), '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2',
            'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']
    code, out = run_tool('train', argv, monkeypatch, capsys)
    assert code == 2 and 'AmpOptimWrapper' in out.err and 'needs a GPU' in out.err
    flag = suggested_flag(out.err)
    code, out = run_tool('train', [argv[0], flag, *argv[1:]], monkeypatch, capsys)
    assert code == 0, out.err[-2000:]
    assert 'AmpOptimWrapper -> OptimWrapper (dropped loss_scale, dtype)' in out.err
    assert osp.isfile(osp.join(work, 'iter_2.pth'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a CPU-only machine')
def test_amp_flag_on_cpu_suggests_dropping_it_and_that_runs(tmp_path, monkeypatch, capsys):
    work = str(tmp_path / 'work')
    argv = [TINY_DIT, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=1',
            'default_hooks.checkpoint.interval=1']
    code, out = run_tool('train', [TINY_DIT, '--amp', *argv[1:]], monkeypatch, capsys)
    assert code == 2 and 'train without --amp (fp32) on CPU' in out.err
    code, out = run_tool('train', argv, monkeypatch, capsys)
    assert code == 0 and osp.isfile(osp.join(work, 'iter_1.pth')), out.err[-2000:]


def test_sampling_raw_weights_without_ema_suggests_ema_and_that_runs(tmp_path, monkeypatch,
                                                                     capsys):
    """A run without EMAHook: ``--weights raw`` is refused naming ``--weights ema``, which
    samples a grid."""
    work = str(tmp_path / 'work')
    code, out = run_tool('train', [TINY_DIT, '--work-dir', work, '--cfg-options',
                                   'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1',
                                   'custom_hooks=[]'], monkeypatch, capsys)
    assert code == 0, out.err[-2000:]
    sample = load_tool('tools/generation/sample.py', '_first_use_sample')
    png = str(tmp_path / 'grid.png')
    argv = [TINY_DIT, osp.join(work, 'iter_1.pth'), '--classes', '0', '1', '--n-per-class', '1',
            '--steps', '2', '--out', png, '--device', 'cpu']
    assert sample.main([*argv, '--weights', 'raw']) == 1
    err = capsys.readouterr().err
    assert 'has no ema_state_dict (no EMAHook): use --weights ema' in err
    assert sample.main([*argv, '--weights', 'ema']) == 0 and osp.getsize(png) > 0


def test_fp32_rewrites_only_the_amp_wrapper():
    from vllama_mm.engine.runner_utils import to_fp32
    cfg = Config(dict(optim_wrapper=dict(
        type='AmpOptimWrapper', loss_scale='dynamic', dtype='bfloat16', clip_grad=dict(max_norm=1.0),
        constructor='LayerDecayOptimWrapperConstructor', optimizer=dict(type='AdamW', lr=1e-3),
        paramwise_cfg=dict(layer_decay_rate=0.65))))
    to_fp32(cfg)
    assert cfg.optim_wrapper.to_dict() == dict(
        type='OptimWrapper', clip_grad=dict(max_norm=1.0),
        constructor='LayerDecayOptimWrapperConstructor', optimizer=dict(type='AdamW', lr=1e-3),
        paramwise_cfg=dict(layer_decay_rate=0.65))
    # the result builds as mmengine's OptimWrapper (the retyped dict alone does not)
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), dict(
        cfg.optim_wrapper, constructor='DefaultOptimWrapperConstructor', paramwise_cfg=None))
    assert type(wrapper).__name__ == 'OptimWrapper'
    with pytest.raises(TypeError, match='loss_scale'):
        build_optim_wrapper(torch.nn.Linear(2, 2), dict(
            type='OptimWrapper', loss_scale='dynamic', optimizer=dict(type='SGD', lr=0.1)))
    plain = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    assert to_fp32(plain).optim_wrapper.to_dict() == dict(type='OptimWrapper',
                                                          optimizer=dict(type='SGD'))


def test_amp_and_fp32_together_are_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', TINY_DIT, '--amp', '--fp32'])
    with pytest.raises(SystemExit) as e:
        load_tool('tools/train.py', '_first_use_train_args').parse_args()
    assert e.value.code == 2 and 'not allowed with argument' in capsys.readouterr().err


# ---------------------------------------------------------------------------- 27.5 test loop
@pytest.mark.parametrize('config, needle', [
    (TINY_DIT, 'tools/generation/sample.py'),
])
def test_tools_test_without_a_test_loop_says_so_before_loading(config, needle, tmp_path,
                                                               monkeypatch, capsys):
    """No checkpoint is even looked at (the path does not exist): the config is refused first."""
    missing = str(tmp_path / 'never_read.pth')
    code, out = run_tool('test', [config, missing, '--work-dir', str(tmp_path)], monkeypatch,
                         capsys)
    assert code == 2
    assert 'has no test loop (test_dataloader, test_cfg, test_evaluator not set)' in out.err
    assert needle in out.err and 'never_read' not in out.err


def test_check_test_loop_names_the_mae_benchmarks():
    from vllama_mm.engine.runner_utils import check_test_loop
    cfg = Config(dict(default_scope='mmpretrain', model=dict(type='MAE'),
                      test_dataloader=None))
    with pytest.raises(ConfigError, match='MAE pre-training: .*configs/mmpretrain/mae/benchmarks/'):
        check_test_loop(cfg, 'mae.py')
    path = osp.join(ROOT, 'configs/mmpretrain/mae/benchmarks/'
                    'vision-llama-b-p16_8xb128-coslr-100e_in1k.py')
    assert osp.isfile(path)  # the named config exists and has a test loop
    pytest.importorskip('mmpretrain')
    bench = Config.fromfile(path)
    check_test_loop(bench, path)


# ---------------------------------------------------------------------------- 27.5 numpy 2
def numpy2_checkpoint(src: str, dst: str) -> None:
    """Rewrite the torch.save file ``src`` as numpy 2 writes it: every ``numpy.core`` global
    of the pickle (protocol 2: ``GLOBAL 'numpy.core.multiarray _reconstruct'``, text, so a
    byte replacement is exact) named ``numpy._core``; records re-written by torch's own
    zip writer (valid CRCs)."""
    reader = torch._C.PyTorchFileReader(src)
    writer = torch._C.PyTorchFileWriter(dst)
    written_by_writer = ('.data/serialization_id', 'version', '.format_version',
                         '.storage_alignment', 'byteorder')
    for name in reader.get_all_records():
        if name in written_by_writer:
            continue
        record = bytes(reader.get_record(name))
        if name == 'data.pkl':
            assert b'numpy.core.multiarray' in record
            record = record.replace(b'numpy.core.multiarray', b'numpy._core.multiarray')
        writer.write_record(name, record, len(record))
    writer.write_end_of_file()
    del writer


def test_safe_loading_accepts_a_numpy2_written_checkpoint(tmp_path):
    """What mmengine writes (a message hub with numpy arrays and scalars), as numpy 2 names
    it, loads with weights_only=True; other globals stay refused."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    from vllama_mm.engine.checkpoint import allow_mmengine_checkpoints, verify_checkpoint
    buf = HistoryBuffer()
    buf.update(np.float64(0.5))
    src, dst = str(tmp_path / 'np1.pth'), str(tmp_path / 'np2.pth')
    torch.save({'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {'loss': buf}, 'arr': np.arange(3.0),
                                'scalar': np.float32(2.0)}}, src)
    numpy2_checkpoint(src, dst)
    verify_checkpoint(dst)
    with open(dst, 'rb') as f:
        import zipfile
        with zipfile.ZipFile(f) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    assert b'numpy._core.multiarray' in pkl and b'numpy.core.multiarray' not in pkl
    allow_mmengine_checkpoints()
    for path in (src, dst):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt['message_hub']['arr'].tolist() == [0.0, 1.0, 2.0]
        assert float(ckpt['message_hub']['scalar']) == 2.0
        assert ckpt['message_hub']['log_scalars']['loss'].current() == 0.5
    # the allow-list names exactly the reconstruct functions, nothing else of numpy._core
    evil = str(tmp_path / 'evil.pth')
    torch.save({'x': np.arange(2)}, src)
    reader = torch._C.PyTorchFileReader(src)
    record = bytes(reader.get_record('data.pkl')).replace(
        b'numpy.core.multiarray\n_reconstruct', b'numpy._core.multiarray\nc_einsum')
    writer = torch._C.PyTorchFileWriter(evil)
    for name in reader.get_all_records():
        if name == 'data.pkl':
            writer.write_record(name, record, len(record))
        elif name.startswith('data/'):
            rec = bytes(reader.get_record(name))
            writer.write_record(name, rec, len(rec))
    writer.write_end_of_file()
    del writer
    with pytest.raises(Exception, match='numpy._core.multiarray.c_einsum'):
        torch.load(evil, weights_only=True)


# ---------------------------------------------------------------------------- 27.5 demo data
def test_demo_data_has_its_own_folder_and_nothing_replaces_another_writers_data(tmp_path):
    from vllama_mm.datasets.synthetic_imagenet import generate
    demo = load_tool('tools/demo.py', '_first_use_demo')
    import argparse
    import inspect
    src = inspect.getsource(demo.main)
    assert "'data/demo_imagenet'" in src
    gen_doc = load_tool('tools/generate_synthetic_data.py', '_first_use_gen').__doc__
    assert 'data/synthetic_imagenet' in gen_doc and 'data/demo_imagenet' not in gen_doc
    del argparse
    root = str(tmp_path / 'd')
    generate(root, num_train=2, num_val=1, img_size=32, num_classes=2)  # the CLI's data
    with pytest.raises(FileExistsError, match='written by tools/generate_synthetic_data.py '
                       'with other settings; tools/demo.py will not replace it'):
        generate(root, num_train=3, num_val=1, img_size=64, num_classes=2,
                 writer='tools/demo.py')
    assert len(os.listdir(osp.join(root, 'train', 'class_00'))) == 2  # untouched
    demo_root = str(tmp_path / 'demo')
    generate(demo_root, num_train=3, num_val=1, img_size=32, num_classes=2,
             writer='tools/demo.py')
    generate(demo_root, num_train=3, num_val=1, img_size=32, num_classes=2,
             writer='tools/demo.py')  # the same: kept
    with pytest.raises(FileExistsError, match='written by tools/demo.py'):
        generate(demo_root, num_train=2, num_val=1, img_size=32, num_classes=2)
    # one writer with new sizes still regenerates its own data (unchanged behaviour)
    generate(root, num_train=1, num_val=1, img_size=32, num_classes=2)
    assert len(os.listdir(osp.join(root, 'train', 'class_00'))) == 1


# ---------------------------------------------------------------------------- 27.4 pieces
@pytest.mark.parametrize('name', ['VisionLLaMA', 'PyramidVisionLLaMA', 'VisionLLaMAMAE'])
def test_backbones_accept_pretrained_none_and_name_init_cfg_otherwise(name):
    from vllama_mm import models
    cls = getattr(models, name)
    arch = dict(embed_dims=32, num_layers=1, num_heads=2) if name != 'PyramidVisionLLaMA' \
        else dict(embed_dims=[32, 32, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1])
    kw = dict(arch=arch, img_size=32) if name != 'PyramidVisionLLaMA' else dict(arch=arch,
                                                                               img_size=64)
    if name == 'VisionLLaMA':
        kw.update(patch_size=8)
    if name == 'VisionLLaMAMAE':
        kw.update(patch_size=8)
    cls(**kw, pretrained=None)
    with pytest.raises(ValueError, match=r"pretrained='x.pth' is not supported.*"
                       r"model.pretrained=None.*init_cfg=dict\(type='Pretrained', "
                       r"checkpoint='x.pth'\)"):
        cls(**kw, pretrained='x.pth')


def _decay_model(num_layers: int = 3):
    from vllama_mm.models import VisionLLaMA

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = VisionLLaMA(arch=dict(embed_dims=16, num_layers=num_layers,
                                                  num_heads=2), img_size=16, patch_size=8)
            self.head = torch.nn.Linear(16, 2)
    return Net()


def _groups(paramwise_cfg, num_layers=3):
    from vllama_mm.engine.layer_decay import LayerDecayOptimWrapperConstructor
    ctor = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05)),
        paramwise_cfg)
    groups = ctor(_decay_model(num_layers)).optimizer.param_groups
    return {g['param_name']: (g['lr'], g['weight_decay']) for g in groups}


def mmseg_layer_decay_reference(model, num_layers, decay_rate, lr, wd):
    """What mmseg 1.2's ``LayerDecayOptimizerConstructor`` gives a ViT with ``num_layers``
    blocks (its layer-id rule and no-decay rule, written out): name -> (lr, wd)."""
    out = {}
    max_id = num_layers + 2
    for name, p in model.named_parameters():
        if name.startswith('backbone.patch_embed') or name in ('backbone.cls_token',
                                                               'backbone.pos_embed'):
            layer_id = 0
        elif name.startswith('backbone.layers'):
            layer_id = int(name.split('.')[2]) + 1
        else:
            layer_id = max_id - 1
        no_decay = p.ndim == 1 or name.endswith('.bias')
        out[name] = (lr * decay_rate**(max_id - layer_id - 1), 0.0 if no_decay else wd)
    return out


@pytest.mark.parametrize('paramwise_cfg', [
    dict(num_layers=3, layer_decay_rate=0.65),  # mmseg MAE / BEiT configs
    dict(num_layers=3, decay_rate=0.65, decay_type='layer_wise'),  # LearningRateDecay...
])
def test_layer_decay_understands_mmseg_keys_as_mmseg_means_them(paramwise_cfg):
    got = _groups(paramwise_cfg)
    torch.manual_seed(0)
    ref = mmseg_layer_decay_reference(_decay_model(), 3, 0.65, 1.0, 0.05)
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name] == pytest.approx(ref[name]), name


@pytest.mark.parametrize('paramwise_cfg, match', [
    (dict(num_layers=12, layer_decay_rate=0.65), r'num_layers=12 .* backbone has 3 blocks: '
     r'set num_layers=3'),
    (dict(num_layers=3, decay_rate=0.65, decay_type='stage_wise'), "decay_type='stage_wise'"),
    (dict(decay_rate=0.65, layer_decay_rate=0.7), 'disagree'),
    (dict(num_layers='12'), 'positive int'),
])
def test_layer_decay_mmseg_keys_wrong_values(paramwise_cfg, match):
    with pytest.raises(ValueError, match=match):
        _groups(paramwise_cfg)


def test_dropin_checks_name_each_leftover():
    from vllama_mm.engine.dropin import check_dropin
    backbone = dict(type='VisionLLaMA', arch='b', out_type='featmap')
    check_dropin(Config(dict(model=dict(type='EncoderDecoder', pretrained=None,
                                        backbone=backbone))))
    with pytest.raises(ConfigError, match=r"model.pretrained='p.pth': .*set model.pretrained=None"):
        check_dropin(Config(dict(model=dict(type='EncoderDecoder', pretrained='p.pth',
                                            backbone=backbone))))
    with pytest.raises(ConfigError, match=r"model.backbone: PyramidVisionLLaMA has no argument\(s\) "
                       r"\['depths', 'mlp_ratio'\].*_delete_=True"):
        check_dropin(Config(dict(model=dict(backbone=dict(
            type='PyramidVisionLLaMA', arch='s', depths=[2, 2, 6, 2], mlp_ratio=4)))))
    # VisionLLaMAMAE's **kwargs reach VisionLLaMA's arguments
    check_dropin(Config(dict(model=dict(backbone=dict(type='VisionLLaMAMAE', mask_ratio=0.75,
                                                      patch_size=16, rope_type='2d')))))
    with pytest.raises(ConfigError, match=r"LayerDecayOptimizerConstructor' handles only.*"
                       r"constructor='LayerDecayOptimWrapperConstructor'"):
        check_dropin(Config(dict(model=dict(backbone=backbone), optim_wrapper=dict(
            constructor='LayerDecayOptimizerConstructor',
            paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65)))))
    # not our backbone: nothing is checked
    check_dropin(Config(dict(model=dict(pretrained='p.pth', backbone=dict(type='MAE', x=1)),
                             optim_wrapper=dict(constructor='LayerDecayOptimizerConstructor'))))


def test_dropin_channels_of_the_neck_and_heads_are_checked():
    from vllama_mm.engine.dropin import check_dropin
    det = dict(backbone=dict(type='PyramidVisionLLaMA', arch='s'),
               neck=dict(type='FPN', in_channels=[96, 192, 384, 768]))
    with pytest.raises(ConfigError, match=r"model.neck.in_channels=\[96, 192, 384, 768\] but "
                       r"PyramidVisionLLaMA\(arch='s'\) gives \[64, 128, 256, 512\]: set "
                       r"model.neck.in_channels=\[64, 128, 256, 512\]"):
        check_dropin(Config(dict(model=det)))
    check_dropin(Config(dict(model=dict(det, backbone=dict(type='PyramidVisionLLaMA',
                                                           arch='b')))))
    seg = dict(backbone=dict(type='PyramidVisionLLaMA', arch='l'),
               decode_head=dict(in_channels=[128, 256, 512, 1024], in_index=[0, 1, 2, 3]),
               auxiliary_head=dict(in_channels=384, in_index=2))
    with pytest.raises(ConfigError, match=r'model.auxiliary_head.in_channels=384 .*set '
                       r'model.auxiliary_head.in_channels=512'):
        check_dropin(Config(dict(model=seg)))
    plain = dict(backbone=dict(type='VisionLLaMA', arch='l', out_type='featmap',
                               out_indices=(7, 11, 15, 23)),
                 neck=dict(type='Feature2Pyramid', embed_dim=768))
    with pytest.raises(ConfigError, match=r'model.neck.embed_dim=768 .*set model.neck.embed_dim=1024'):
        check_dropin(Config(dict(model=plain)))
    vitdet = dict(backbone=dict(type='VisionLLaMA', arch='b', out_type='featmap'),
                  neck=dict(type='SimpleFPN', backbone_channel=768,
                            in_channels=[192, 384, 768, 768]))
    check_dropin(Config(dict(model=vitdet)))  # SimpleFPN's in_channels are its outputs
    vitdet['neck']['backbone_channel'] = 1024
    with pytest.raises(ConfigError, match='model.neck.backbone_channel=1024 .*set '
                       'model.neck.backbone_channel=768'):
        check_dropin(Config(dict(model=vitdet)))
