"""Issue 14 through the real tools and configs (mmpretrain, the tiny demo config):
every config gets the atomic checkpoint hook and a collective timeout; tools/test.py
refuses checkpoints that do not fit; tools/train.py handles max_epochs=1 and reports a
wrong Pretrained prefix as one line."""
import glob
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from _tool_loader import load_tool  # noqa: E402  (tests/)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs/mmpretrain/vision_llama/'
                'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
# every config family, generation included (the _base_ fragments are not runnable configs)
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in osp.relpath(p, REPO).split(osp.sep))


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_every_config_has_atomic_checkpoints_and_a_timeout(path):
    cfg = Config.fromfile(path)
    # atomic writes, resume honesty and the stop at non-finite losses come with this hook
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    timeout = cfg.env_cfg.dist_cfg.timeout
    assert isinstance(timeout, int) and timeout > 0
    if cfg.default_scope == 'mmpretrain':  # mmpretrain's browse_dataset: visualizer kwargs
        vis = dict(cfg.visualizer)
        assert '_scope_' not in vis, vis
        from mmpretrain.visualization import UniversalVisualizer
        vis.pop('type')
        UniversalVisualizer(**vis, name=f'browse_{osp.basename(path)}')


def _tool(name: str):
    return load_tool(f'tools/{name}.py', f'_rel_tool_{name}')


_RUNS = iter(range(10**6))


def _run_tool(name, argv, monkeypatch, capsys):
    if '--cfg-options' not in argv:
        argv = [*argv, '--cfg-options']
    argv = [*argv, f'experiment_name=rel_tools_{next(_RUNS)}']  # one MMLogger per run
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py', *argv])
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('VLLAMA_MM_DEBUG', raising=False)
    try:
        _tool(name).main()
    except SystemExit as e:
        return e.code, capsys.readouterr()
    return 0, capsys.readouterr()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = tmp_path_factory.mktemp('rel_tools')
    data = str(root / 'data')
    generate(data, num_train=1, num_val=1, img_size=32, num_classes=2)
    cfg = root / 'tiny.py'
    cfg.write_text(f"""
_base_ = [{DEMO!r}]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=1, num_heads=2), img_size=32),
             head=dict(num_classes=2, in_channels=32))
data_preprocessor = dict(num_classes=2)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data!r}))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
""")
    import vllama_mm.mmpretrain  # noqa: F401
    from mmpretrain.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(str(cfg)).model)
    sd = model.state_dict()
    ckpts = {}
    for name, state in [('good', sd), ('empty', {}),
                        ('partial', {k: v for k, v in sd.items() if '.layers.0.' not in k}),
                        ('official', {'patch_embed.proj.weight': torch.zeros(32, 3, 8, 8),
                                      'blocks.0.attn.qkv.weight': torch.zeros(96, 32)})]:
        ckpts[name] = str(root / f'{name}.pth')
        torch.save({'state_dict': state}, ckpts[name])
    return str(cfg), ckpts, root


@pytest.mark.parametrize('case,needle', [
    ('empty', 'holds no weight tensors'),
    ('partial', 'missing (backbone.layers.0.'),
    ('official', 'official plain VisionLLaMA (DeiT3-style) layout: convert it first'),
])
def test_tools_test_refuses_checkpoints_that_do_not_fit(tiny, case, needle, monkeypatch,
                                                         capsys, tmp_path):
    cfg, ckpts, _ = tiny
    status, out = _run_tool('test', [cfg, ckpts[case], '--work-dir', str(tmp_path)],
                            monkeypatch, capsys)
    assert status == 2, out.err
    first = out.err.splitlines()[0]
    assert first.startswith('error: ') and 'model tensors loaded' in first, out.err
    assert needle in first and ckpts[case] in first, out.err
    assert 'Traceback' not in out.err


def test_tools_test_with_a_fitting_checkpoint_and_predictions(tiny, monkeypatch, capsys,
                                                              tmp_path):
    cfg, ckpts, _ = tiny
    preds = tmp_path / 'preds.pkl'
    status, out = _run_tool('test', [cfg, ckpts['good'], '--work-dir', str(tmp_path),
                                     '--out', str(preds)], monkeypatch, capsys)
    assert status == 0, out.err[-3000:]
    n = len(torch.load(ckpts['good'])['state_dict'])
    assert f'{n} of {n} model tensors loaded' in out.out + out.err
    assert preds.exists()
    status, out = _run_tool('test', [cfg, ckpts['partial'], '--work-dir', str(tmp_path),
                                     '--allow-partial-weights'], monkeypatch, capsys)
    assert status == 0 and 'loaded anyway: --allow-partial-weights' in out.out + out.err


def test_train_one_epoch_and_a_wrong_pretrained_prefix(tiny, monkeypatch, capsys, tmp_path):
    cfg, ckpts, _ = tiny
    # max_epochs=1 with the demo's 1-epoch warm-up + cosine schedule: trains
    status, out = _run_tool('train', [cfg, '--work-dir', str(tmp_path / 'one')],
                            monkeypatch, capsys)
    assert status == 0, out.err[-3000:]
    assert 'starts after the last epoch' in out.err
    assert osp.exists(tmp_path / 'one' / 'epoch_1.pth')
    # a full-model checkpoint as the backbone's Pretrained without prefix: one line, rc 1
    status, out = _run_tool('train', [
        cfg, '--work-dir', str(tmp_path / 'pre'), '--cfg-options',
        'model.backbone.init_cfg.type=Pretrained',
        f"model.backbone.init_cfg.checkpoint={ckpts['good']}"], monkeypatch, capsys)
    assert status == 1, out.err[-3000:]
    lines = [ln for ln in out.err.strip().splitlines() if not ln.startswith('[vllama_mm]')]
    assert lines[0].startswith('error: WeightsError: Pretrained') and \
        "add prefix='backbone.'" in lines[0], out.err[-3000:]
    assert lines[1].startswith('(traceback in ') and len(lines) == 2
    assert 'Traceback' in open(lines[1][len('(traceback in '):-1]).read()


def test_train_checks_the_data_first(tiny, monkeypatch, capsys, tmp_path):
    """A zero-byte image: named before the Runner is built (exit 2); the full scan and
    the check's rules are tested in test_data_checks.py."""
    import shutil
    cfg, _, root = tiny
    data = tmp_path / 'data'
    shutil.copytree(root / 'data', data)
    bad = data / 'train' / 'class_00' / 'train_00_00000.JPEG'
    bad.write_bytes(b'')
    status, out = _run_tool('train', [cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                                      f'train_dataloader.dataset.data_root={data}',
                                      f'val_dataloader.dataset.data_root={data}'],
                            monkeypatch, capsys)
    assert status == 2, out.err[-2000:]
    assert f'error: dataset check failed: {bad}: empty file (0 bytes)' in out.err


# ---------------------------------------------------------------- round 3 (issues 27, 28)
def test_tools_test_refuses_nonfinite_weights_and_executes_nothing(tiny, monkeypatch, capsys,
                                                                   tmp_path):
    cfg, ckpts, _ = tiny
    sd = torch.load(ckpts['good'])['state_dict']
    name = sorted(sd)[-1]
    nan = {k: v.clone() for k, v in sd.items()}
    nan[name].view(-1)[0] = float('inf')
    torch.save({'state_dict': nan}, tmp_path / 'nan.pth')
    status, out = _run_tool('test', [cfg, str(tmp_path / 'nan.pth'), '--work-dir',
                                     str(tmp_path / 'w')], monkeypatch, capsys)
    assert status == 2 and 'NaN or inf' in out.err and name in out.err, out.err[-2000:]
    marker = tmp_path / 'marker'
    evil = {'state_dict': sd, 'meta': {'cfg': f"a = 1\nopen(r'{marker}', 'w').write('ran')\n"}}
    torch.save(evil, tmp_path / 'evil.pth')
    status, out = _run_tool('test', [cfg, str(tmp_path / 'evil.pth'), '--work-dir',
                                     str(tmp_path / 'w')], monkeypatch, capsys)
    assert status == 0, out.err[-2000:]
    assert not marker.exists()


def test_a_bad_image_met_in_a_worker_is_one_line_naming_it(tiny, monkeypatch, capsys, tmp_path):
    import shutil
    cfg, _, root = tiny
    data = tmp_path / 'data'
    shutil.copytree(root / 'data', data)
    bad = data / 'train' / 'class_01' / 'train_01_00000.JPEG'
    bad.write_bytes(b'not a jpeg at all' * 10)
    status, out = _run_tool('train', [cfg, '--work-dir', str(tmp_path / 'w'),
                                      '--skip-data-check', '--no-validate', '--cfg-options',
                                      f'train_dataloader.dataset.data_root={data}',
                                      'train_dataloader.num_workers=1'],
                            monkeypatch, capsys)
    assert status == 1, out.err[-2000:]
    line = [ln for ln in out.err.splitlines() if ln.startswith('error:')]
    assert len(line) == 1 and f'{bad}: cannot load sample' in line[0], out.err[-2000:]


def test_export_tool_on_refused_and_truncated_files_is_one_line(tiny, tmp_path, capsys):
    import pickle
    import os
    cfg, ckpts, _ = tiny
    export = load_tool('tools/deployment/pytorch2onnx.py', '_rel_tool_export')
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(open(ckpts['good'], 'rb').read()[:-300])

    class Boom:
        def __reduce__(self):
            return (os.system, ('true', ))
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': Boom()}, evil, pickle_module=pickle)
    for path, needle in ((cut, 'truncated or corrupted'), (evil, 'error:')):
        assert export.main([cfg, str(path), '--out-dir', str(tmp_path / 'onnx')]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
        assert len(lines) == 1 and needle in lines[0] and 'Traceback' not in err, err


def test_resume_fills_defaults_from_the_library_registry(tiny):
    """An explicit rope_type='as2d' (the default) is the same model on resume."""
    from mmengine.registry import init_default_scope

    from vllama_mm.engine.resume import class_defaults, config_diff
    init_default_scope('mmpretrain')
    assert class_defaults('VisionLLaMA')['rope_type'] == 'as2d'
    old = dict(type='ImageClassifier', backbone=dict(type='VisionLLaMA', arch='tiny'))
    new = dict(type='ImageClassifier',
               backbone=dict(type='VisionLLaMA', arch='tiny', rope_type='as2d'))
    assert config_diff(old, new, 'model', class_defaults) == []
    new['backbone']['rope_type'] = '2d'
    assert config_diff(old, new, 'model', class_defaults) == \
        ["model.backbone.rope_type: 'as2d' -> '2d'"]
