"""Tools a user trips on (issue 14 item 8), checked without a training run: errors in
train/test as one line with the traceback in the log, 1-epoch schedules, --amp on CPU,
a dense model fed class tokens, tools/test.py's --out/--show-dir/--tta, dist_train.sh's
PYTHON."""
import argparse
import logging
import os
import os.path as osp
import subprocess

import pytest
import torch
from mmengine.config import Config

from vllama_mm.engine.runner_utils import fit_schedulers, prepare_test_cfg, run_or_exit
from vllama_mm.engine.validate import ConfigError, check_model_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class _FailingRunner:
    def __init__(self, log_file: str):
        self.logger = logging.getLogger(f'fake_runner_{id(self)}')
        self.logger.propagate = False
        self.logger.addHandler(logging.FileHandler(log_file))

    def train(self):
        def deep():
            raise RuntimeError('mat1 and mat2 shapes cannot be multiplied\n(64x10 and 32x4)')
        deep()


def test_errors_in_training_are_one_line_with_the_traceback_in_the_log(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.delenv('VLLAMA_MM_DEBUG', raising=False)
    log = tmp_path / 'run.log'
    runner = _FailingRunner(str(log))
    with pytest.raises(SystemExit) as exc:
        run_or_exit(runner, 'train')
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == ('error: RuntimeError: mat1 and mat2 shapes cannot be multiplied '
                      '(64x10 and 32x4)')
    assert err[1] == f'(traceback in {log})' and len(err) == 2
    text = log.read_text()
    assert 'Traceback (most recent call last)' in text and 'in deep' in text
    monkeypatch.setenv('VLLAMA_MM_DEBUG', '1')
    with pytest.raises(RuntimeError):
        run_or_exit(runner, 'train')
    monkeypatch.delenv('VLLAMA_MM_DEBUG')

    def stalled():  # what gloo/NCCL raise when a rank stops answering
        raise RuntimeError('[gloo] Timed out waiting 3000ms for recv operation to complete')
    runner.test = stalled
    with pytest.raises(SystemExit):
        run_or_exit(runner, 'test')
    assert 'longer than env_cfg.dist_cfg.timeout: a rank stalled or died' in \
        capsys.readouterr().err


def _demo_schedule(max_epochs: int) -> Config:
    return Config(dict(train_cfg=dict(by_epoch=True, max_epochs=max_epochs), param_scheduler=[
        dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1)]))


def test_one_epoch_schedule_drops_the_phase_that_never_starts(capsys):
    cfg = fit_schedulers(_demo_schedule(1))
    assert [s['type'] for s in cfg.param_scheduler] == ['LinearLR']
    assert 'param_scheduler[1] (CosineAnnealingLR, begin=1) starts after the last epoch' \
        in capsys.readouterr().err
    assert len(fit_schedulers(_demo_schedule(2)).param_scheduler) == 2
    # the schedulers that remain build and step without mmengine's "end > begin" error
    from mmengine.optim.scheduler import LinearLR
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    LinearLR(opt, start_factor=0.01, begin=0, end=1)


def test_dense_scope_with_class_token_output_is_named():
    cfg = Config(dict(default_scope='mmseg', model=dict(
        type='EncoderDecoder', backbone=dict(type='VisionLLaMA', arch='b'))))
    with pytest.raises(ConfigError, match=r"model\.backbone\.out_type: 'cls_token' \(the "
                                          r"default\).*out_type='featmap'"):
        check_model_cfg(cfg, 'test')
    cfg.model.backbone.out_type = 'featmap'
    check_model_cfg(cfg, 'test')
    cfg.default_scope = 'mmpretrain'  # classification: the class token is right
    cfg.model.backbone.out_type = 'cls_token'
    check_model_cfg(cfg, 'test')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only case')
def test_fp16_amp_on_cpu_is_named():
    cfg = Config(dict(default_scope='mmpretrain', optim_wrapper=dict(type='AmpOptimWrapper')))
    with pytest.raises(ConfigError, match=r"optim_wrapper\.type: 'AmpOptimWrapper'.*needs a GPU"):
        check_model_cfg(cfg, 'train')
    check_model_cfg(cfg, 'test')  # testing does not use the optimizer wrapper


def _test_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**dict(dict(out=None, out_item='pred', show_dir=None,
                                          tta=False), **kw))


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_tools_test_options(scope, tmp_path):
    vis = {'mmpretrain': dict(type='VisualizationHook', enable=False),
           'mmseg': dict(type='SegVisualizationHook'),
           'mmdet': dict(type='DetVisualizationHook')}[scope]
    base = dict(default_scope=scope, model=dict(type='M'), test_evaluator=dict(type='E'),
                default_hooks=dict(visualization=vis), visualizer=dict(type='V'),
                test_dataloader=dict(dataset=dict(pipeline=['test'])))
    cfg = prepare_test_cfg(Config(base), _test_args(out=str(tmp_path / 'p.pkl'),
                                                    show_dir='shows'))
    assert cfg.test_evaluator[-1] == dict(type='DumpResults',
                                          out_file_path=str(tmp_path / 'p.pkl'))
    hook = cfg.default_hooks.visualization
    if scope == 'mmpretrain':
        assert hook.enable and hook.out_dir == 'shows'
    elif scope == 'mmseg':
        assert hook.draw and cfg.visualizer.save_dir == 'shows'
    else:
        assert hook.draw and hook.test_out_dir == 'shows'
    with pytest.raises(ConfigError, match='--out .*give a .pkl file name'):
        prepare_test_cfg(Config(base), _test_args(out='p.json'))
    if scope == 'mmpretrain':  # AverageClsScoreTTA by default, like mmpretrain's test.py
        tta = prepare_test_cfg(Config(dict(base, tta_pipeline=['tta'])), _test_args(tta=True))
        assert tta.model == dict(type='AverageClsScoreTTA', module=dict(type='M'))
        assert tta.test_dataloader.dataset.pipeline == ['tta']
    else:
        with pytest.raises(ConfigError, match='--tta: the config defines no tta_model'):
            prepare_test_cfg(Config(dict(base, tta_pipeline=['tta'])), _test_args(tta=True))
    with pytest.raises(ConfigError, match='--tta: the config defines no tta_pipeline'):
        prepare_test_cfg(Config(base), _test_args(tta=True))


def test_dist_train_honours_python(tmp_path):
    """dist_train.sh runs "$PYTHON" (default python): a venv not activated still works."""
    fake = tmp_path / 'mypython'
    fake.write_text('#!/bin/sh\necho "ran with: $*"\n')
    fake.chmod(0o755)
    out = subprocess.run(['bash', 'tools/dist_train.sh', 'cfg.py', '2', '--amp'], cwd=REPO,
                         env=dict(os.environ, PYTHON=str(fake)), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'ran with: -m torch.distributed.run' in out.stdout
    assert 'tools/train.py cfg.py --launcher pytorch --amp' in out.stdout
