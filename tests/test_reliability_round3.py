"""Nothing executed, nothing lost, nothing silent (issues 27 items 1-2, 28 items 1-7).

A tiny mmengine Runner (a linear model, 8 samples, 2 iterations per epoch; only mmengine
is imported) runs in a subprocess; faults are injected for real at fixed points: a
SIGKILL half-way through writing a named file, a disk-full error while writing one, a
NaN loss from a given iteration on. The generation tools run in-process on the tiny
SiT-LLaMA config (torch + mmengine only).
"""
import errno
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch

from _tool_loader import load_tool  # noqa: E402  (tests/)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIT = osp.join(REPO, 'configs/generation/sit_llama/sit-llama-tiny-p4_1xb32-300i_synthetic-32px.py')

TOY = textwrap.dedent('''
    """usage: toy.py WORK_DIR HOOK_TYPE MAX_EPOCHS RESUME(0|1|PATH) ; faults by env vars"""
    import errno, math, os, signal, sys, time
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from mmengine.evaluator import BaseMetric
    from mmengine.fileio import LocalBackend
    from mmengine.model import BaseModel
    from mmengine.config import Config
    from mmengine.registry import DATASETS, METRICS, MODELS
    from mmengine.runner import Runner
    import vllama_mm.engine  # noqa: F401  (registers AtomicCheckpointHook)

    work_dir, hook, max_epochs, resume = sys.argv[1:5]
    env = os.environ.get
    put = LocalBackend.put
    def faulty_put(self, obj, filepath):
        name = os.path.basename(str(filepath))
        if env('KILL') and env('KILL') in name:  # SIGKILL half-way through the write
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2]); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        if env('ENOSPC') and env('ENOSPC') in name:  # the disk fills up during the write
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, 'No space left on device')
        return put(self, obj, filepath)
    LocalBackend.put = faulty_put

    @MODELS.register_module()
    class Toy(BaseModel):
        calls = 0
        def __init__(self, width=4):
            super().__init__()
            self.fc = nn.Linear(4, width)
        def forward(self, x, y, mode='loss'):
            if mode != 'loss':
                return [dict(err=(self.fc(x).sum(1, keepdim=True) - y).abs().mean())]
            Toy.calls += 1
            time.sleep(float(env('SLEEP', 0)))
            loss = (self.fc(x).sum(1, keepdim=True) - y).pow(2).mean()
            if env('NAN_AT') and Toy.calls >= int(env('NAN_AT')):
                loss = loss * float('nan')
            return {'loss': loss}

    @METRICS.register_module()
    class Rising(BaseMetric):  # a score that improves every evaluation: a new best each time
        def process(self, data_batch, data_samples):
            self.results.append(0)
        def compute_metrics(self, results):
            return dict(acc=time.time())

    @DATASETS.register_module()
    class Data(Dataset):
        def __len__(self):
            return 8
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(4, generator=g)
            return dict(x=x, y=x.sum(0, keepdim=True))

    loader = dict(dataset=dict(type='Data'), batch_size=4, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    model = dict(type='Toy')
    if env('WIDTH', '4') != 'unset':
        model['width'] = int(env('WIDTH', 4))
    ckpt = dict(type=hook, interval=1, max_keep_ckpts=int(env('KEEP', 1)))
    if env('VAL'):
        ckpt['save_best'] = 'acc'
        ckpt['rule'] = 'greater'
    if env('MAX_NONFINITE') and hook == 'AtomicCheckpointHook':
        ckpt['max_nonfinite_steps'] = int(env('MAX_NONFINITE'))
    cfg = dict(
        model=model, work_dir=work_dir, default_scope='mmengine',
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=float(env('LR', 0.1)))),
        train_cfg=dict(by_epoch=True, max_epochs=int(max_epochs), val_interval=1),
        default_hooks=dict(checkpoint=ckpt),
        resume=resume != '0', randomness=dict(seed=0))
    if resume not in ('0', '1'):
        cfg['load_from'] = resume  # --resume PATH
    if env('LOAD_FROM'):
        cfg['load_from'] = env('LOAD_FROM')
    if env('VAL'):
        cfg.update(val_dataloader=loader, val_cfg=dict(), val_evaluator=dict(type='Rising'))
    runner = Runner.from_cfg(Config(cfg))
    runner.train()
    print('DONE epoch', runner.epoch)
''')


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('toy') / 'toy.py'
    path.write_text(TOY)
    return str(path)


def _run(script: str, work_dir, hook: str, max_epochs: int, resume='0', wait: bool = True,
         **env_vars: str):
    env = dict(os.environ, OMP_NUM_THREADS='1', **env_vars,
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, script, str(work_dir), hook, str(max_epochs), str(resume)]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _log(proc) -> str:
    return proc.stdout + proc.stderr


def _load(path):
    from vllama_mm.engine.checkpoint import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True)


def _flip_weight_byte(src, dst) -> None:
    """Copy ``src`` to ``dst`` with one byte of its largest member (a tensor) inverted."""
    import struct
    data = bytearray(open(src, 'rb').read())
    with zipfile.ZipFile(src) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack_from('<HH', data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    open(dst, 'wb').write(bytes(data))


@pytest.fixture(scope='module')
def two_epochs(toy, tmp_path_factory):
    """A work dir with epoch_1.pth and epoch_2.pth (intact), written by the atomic hook."""
    work = tmp_path_factory.mktemp('r3_two_epochs')
    done = _run(toy, work, 'AtomicCheckpointHook', 2, KEEP='2')
    assert done.returncode == 0, _log(done)[-3000:]
    return work


# ------------------------------------------------------------ 27.1 nothing executed
EVIL = "\nopen(r'{marker}', 'w').write('this line ran')\n"


def _evil_copy(src, dst, marker, keep_json: bool) -> None:
    """A genuine checkpoint whose meta cfg text carries one extra line of Python."""
    ckpt = _load(src)
    ckpt['meta']['cfg'] += EVIL.format(marker=marker)
    if not keep_json:  # as a checkpoint written before the JSON copy existed
        ckpt['meta'].pop('vllama_mm_cfg_json', None)
    torch.save(ckpt, dst)


def test_the_attack_line_runs_under_config_fromstring(tmp_path):
    """Control: the edited text really executes when parsed as mmengine did."""
    from mmengine.config import Config
    marker = tmp_path / 'marker'
    Config.fromstring('a = 1' + EVIL.format(marker=marker), file_format='.py')
    assert marker.exists()


@pytest.mark.parametrize('keep_json', [True, False], ids=['json-copy', 'text-only'])
def test_checkpoint_config_is_never_executed(toy, two_epochs, tmp_path, keep_json,
                                             monkeypatch, capsys):
    marker = tmp_path / 'marker'
    evil = tmp_path / 'evil.pth'
    _evil_copy(two_epochs / 'epoch_2.pth', evil, marker, keep_json)
    # --resume PATH
    explicit = _run(toy, tmp_path / 'w1', 'AtomicCheckpointHook', 3, resume=str(evil))
    assert explicit.returncode == 0, _log(explicit)[-3000:]
    assert 'resumed epoch: 2' in _log(explicit)
    if not keep_json:
        assert 'cannot read the config stored in the checkpoint' in _log(explicit)
        assert 'not executed' in _log(explicit)
    # auto-resume from a work dir holding it
    work = tmp_path / 'w2'
    work.mkdir()
    shutil.copy(evil, work / 'epoch_2.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    auto = _run(toy, work, 'AtomicCheckpointHook', 3, resume='1')
    assert auto.returncode == 0 and 'resumed epoch: 2' in _log(auto), _log(auto)[-3000:]
    # load_from (weights only)
    load = _run(toy, tmp_path / 'w3', 'AtomicCheckpointHook', 1, LOAD_FROM=str(evil))
    assert load.returncode == 0, _log(load)[-3000:]
    # the converter (not a layout it converts: refused, nothing run)
    conv = load_tool('tools/model_converters/official2vllama.py', '_r3_conv')
    assert conv.main([str(evil), str(tmp_path / 'out.pth')]) == 1
    # the generation sampler with a generator checkpoint edited the same way
    gen = _generator_ckpt(tmp_path / 'gen.pth')
    ckpt = torch.load(gen, weights_only=True)
    ckpt['meta'] = {'cfg': 'a = 1' + EVIL.format(marker=marker)}
    torch.save(ckpt, gen)
    rc, out = _sample(gen, tmp_path / "s.png", monkeypatch, capsys)
    assert rc == 0, out.err
    assert not marker.exists(), 'a line of the checkpoint was executed'


def test_parse_config_text_takes_data_and_refuses_code():
    from vllama_mm.engine.resume import parse_config_text
    got = parse_config_text("model = dict(type='Toy', width=4, sizes=(1, 2), x=-1.5)\n"
                            "work_dir = './w'\nflags = [True, None, {'a': 1}]\n")
    assert got == {'model': {'type': 'Toy', 'width': 4, 'sizes': (1, 2), 'x': -1.5},
                   'work_dir': './w', 'flags': [True, None, {'a': 1}]}
    for code in ("import os\n", "x = open('f')\n", "print(1)\n", "x = dict(**y)\n",
                 "x = __import__('os')\n", "x = (lambda: 1)()\n"):
        with pytest.raises(ValueError, match='line 1'):
            parse_config_text(code)


# ------------------------------------------------------------ 27.2 non-finite is loud
def test_stock_hook_trains_through_nan_and_saves_it(toy, tmp_path):
    """The fault: rc 0, NaN weights as the latest checkpoint."""
    done = _run(toy, tmp_path, 'CheckpointHook', 4, NAN_AT='6')
    assert done.returncode == 0, _log(done)[-3000:]
    assert not torch.isfinite(_load(tmp_path / 'epoch_4.pth')['state_dict']['fc.weight']).all()


def test_nonfinite_loss_stops_training_and_keeps_the_last_finite_checkpoint(toy, tmp_path):
    stopped = _run(toy, tmp_path, 'AtomicCheckpointHook', 6, NAN_AT='6', VAL='1')
    log = _log(stopped)
    assert stopped.returncode != 0
    assert 'NonFiniteLossError: training stopped at iteration 8 (epoch 4): the loss was nan ' \
           'for 3 consecutive iterations (default_hooks.checkpoint.max_nonfinite_steps=3)' \
           in log, log[-3000:]
    assert 'too high a learning rate' in log and 'epoch_2.pth' in log
    assert 'not saving epoch_3.pth: the loss is non-finite' in log
    names = sorted(p.name for p in tmp_path.glob('*.pth'))
    assert names == ['best_acc_epoch_2.pth', 'epoch_2.pth'], names
    for name in names:
        assert torch.isfinite(_load(tmp_path / name)['state_dict']['fc.weight']).all()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('epoch_2.pth')
    # configurable: 1 stops at the first NaN iteration
    one = _run(toy, tmp_path / 'one', 'AtomicCheckpointHook', 6, NAN_AT='6', MAX_NONFINITE='1')
    assert 'training stopped at iteration 6 (epoch 3)' in _log(one), _log(one)[-2000:]


def test_tools_refuse_nonfinite_weights_naming_the_tensor(tmp_path, monkeypatch, capsys):
    from vllama_mm.engine.checkpoint import CheckpointError, check_finite_file
    gen = _generator_ckpt(tmp_path / 'gen.pth')
    ckpt = torch.load(gen, weights_only=True)
    name = sorted(k for k, v in ckpt['state_dict'].items() if v.is_floating_point())[0]
    ckpt['state_dict'][name][0] = float('nan')
    torch.save(ckpt, gen)
    with pytest.raises(CheckpointError, match=f'1 weight tensor.*NaN or inf .*{name}'):
        check_finite_file(str(gen))  # what tools/test.py calls before evaluating
    rc, out = _sample(gen, tmp_path / 's.png', monkeypatch, capsys)
    assert rc == 1 and name in out.err and 'NaN or inf' in out.err, out.err
    assert not (tmp_path / 's.png').exists()


# ------------------------------------------------------------ 28.1 the best checkpoint
@pytest.mark.parametrize('hook', ['CheckpointHook', 'AtomicCheckpointHook'])
def test_kill_while_the_new_best_is_written(toy, tmp_path, hook):
    killed = _run(toy, tmp_path, hook, 3, VAL='1', KILL='best_acc_epoch_2')
    assert killed.returncode == -signal.SIGKILL, _log(killed)[-3000:]
    best = sorted(p.name for p in tmp_path.glob('best_*.pth'))
    if hook == 'CheckpointHook':  # the fault: the previous best was removed first
        assert best == [] or not zipfile.is_zipfile(tmp_path / best[0]), best
        return
    assert best == ['best_acc_epoch_1.pth'], best
    assert zipfile.ZipFile(tmp_path / best[0]).testzip() is None
    resumed = _run(toy, tmp_path, hook, 3, resume='1', VAL='1')
    assert resumed.returncode == 0, _log(resumed)[-3000:]
    assert sorted(p.name for p in tmp_path.glob('best_*.pth*')) == ['best_acc_epoch_3.pth']


# ------------------------------------------------------------ 28.2 one run per work dir
def test_second_run_in_a_work_dir_is_refused_and_a_stale_lock_replaced(toy, tmp_path):
    first = _run(toy, tmp_path, 'AtomicCheckpointHook', 50, wait=False, SLEEP='0.2')
    try:
        lock = tmp_path / 'train.lock'
        for _ in range(600):
            if lock.exists() and lock.read_text():
                break
            time.sleep(0.1)
        assert json.loads(lock.read_text())['pid'] == first.pid
        second = _run(toy, tmp_path, 'AtomicCheckpointHook', 1)
        assert second.returncode != 0
        assert f'is in use by another training run: pid {first.pid}' in second.stderr, \
            second.stderr[-2000:]
    finally:
        first.kill()
        first.communicate()
    third = _run(toy, tmp_path, 'AtomicCheckpointHook', 1)  # the first is dead: stale lock
    assert third.returncode == 0, _log(third)[-3000:]
    assert 'removing a stale lock' in third.stderr and f'pid {first.pid}' in third.stderr
    assert not lock.exists()  # released at the end


# ------------------------------------------------------------ 28.3 the resume choice
def test_resume_choice_by_meta_not_mtime_record_or_foreign_files(toy, two_epochs, tmp_path):
    from vllama_mm.engine import find_resumable_checkpoint
    work, outside = tmp_path / 'work', tmp_path / 'outside'
    shutil.copytree(two_epochs, work)
    outside.mkdir()
    os.utime(work / 'epoch_2.pth', (1e9, 1e9))  # as after a plain `cp`: times say nothing
    shutil.copy(work / 'epoch_1.pth', outside / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(str(outside / 'epoch_1.pth'))
    torch.save({'w': torch.zeros(2)}, work / 'foreign.pth')  # not a training checkpoint
    path, note = find_resumable_checkpoint(str(work))
    assert path == str(work / 'epoch_2.pth'), note
    assert f'names {outside / "epoch_1.pth"} (epoch 1, iter 2, outside {work}), older than' \
           in note, note
    assert 'by the epoch / iter in its meta' in note and 'foreign.pth' in note, note
    resumed = _run(toy, work, 'AtomicCheckpointHook', 3, resume='1', KEEP='2')
    assert resumed.returncode == 0 and 'resumed epoch: 2' in _log(resumed), \
        _log(resumed)[-3000:]
    assert 'ignored' in _log(resumed) and 'foreign.pth' in _log(resumed)


def test_resume_compares_configs_after_filling_defaults(toy, two_epochs, tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    same = _run(toy, work, 'AtomicCheckpointHook', 3, resume='1', KEEP='2', WIDTH='unset')
    assert same.returncode == 0, _log(same)[-3000:]  # width=4 explicit == the default
    other = _run(toy, work, 'AtomicCheckpointHook', 4, resume='1', KEEP='2', WIDTH='8')
    assert 'model.width: 4 -> 8' in other.stderr, other.stderr[-3000:]


def test_config_diff_fills_the_vision_llama_defaults():
    from vllama_mm.engine.resume import config_diff
    from vllama_mm.models import VisionLLaMA  # noqa: F401
    import inspect

    def defaults(name):
        return {p.name: p.default for p in inspect.signature(VisionLLaMA).parameters.values()
                if p.default is not inspect.Parameter.empty} if name == 'VisionLLaMA' else {}
    old = dict(type='VisionLLaMA', arch='tiny')
    assert config_diff(old, dict(old, rope_type='as2d'), 'model', defaults) == []
    assert config_diff(old, dict(old, rope_type='2d'), 'model', defaults) == \
        ["model.rope_type: 'as2d' -> '2d'"]


# ------------------------------------------------------------ 28.4 integrity everywhere
def _generator_ckpt(path) -> str:
    from vllama_mm.generation.apis import build_generator
    torch.manual_seed(0)
    model, _ = build_generator(SIT)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _sample(ckpt, out, monkeypatch, capsys):
    import mmengine.utils
    from mmengine.utils.progressbar import ProgressBar as real  # default stream: at import
    monkeypatch.setattr(mmengine.utils, 'ProgressBar', lambda n: real(n, file=sys.stdout))
    tool = load_tool('tools/generation/sample.py', '_r3_sample')
    rc = tool.main([SIT, str(ckpt), '--classes', '0', '--n-per-class', '1', '--steps', '2',
                    '--out', str(out), '--device', 'cpu'])
    return rc, capsys.readouterr()


def test_sample_verifies_the_checkpoint_and_names_legacy_files(tmp_path, monkeypatch, capsys):
    good = _generator_ckpt(tmp_path / 'gen.pth')
    bad = tmp_path / 'flipped.pth'
    _flip_weight_byte(good, bad)
    rc, out = _sample(bad, tmp_path / 'bad.png', monkeypatch, capsys)
    assert rc == 1 and "flipped.pth' is corrupted: the CRC" in out.err, out.err
    assert not (tmp_path / 'bad.png').exists()
    legacy = tmp_path / 'legacy.pth'
    torch.save(torch.load(good, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    rc, out = _sample(legacy, tmp_path / 'legacy.png', monkeypatch, capsys)
    assert rc == 0, out.err
    assert 'legacy (non-zip' in out.err and 'cannot be verified' in out.err, out.err


# ------------------------------------------------------------ 28.5 disk full
def test_disk_full_write_removes_its_temporary_and_says_why(toy, tmp_path):
    full = _run(toy, tmp_path, 'AtomicCheckpointHook', 3, ENOSPC='epoch_2.pth')
    log = _log(full)
    assert full.returncode != 0
    assert 'writing checkpoint' in log and 'needs room for two checkpoints' in log, log[-3000:]
    assert not list(tmp_path.glob('*.tmp'))
    assert zipfile.ZipFile(tmp_path / 'epoch_1.pth').testzip() is None
    resumed = _run(toy, tmp_path, 'AtomicCheckpointHook', 3, resume='1')
    assert resumed.returncode == 0 and 'resumed epoch: 1' in _log(resumed)


def test_stale_temporaries_go_before_the_runner_writes(tmp_path, monkeypatch, capsys):
    from mmengine.runner import Runner
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_2.pth.tmp').write_bytes(b'x' * 1000)
    seen = []
    real = Runner.from_cfg.__func__

    def from_cfg(cls, cfg):
        seen.append(sorted(os.listdir(work)))
        return real(cls, cfg)
    monkeypatch.setattr(Runner, 'from_cfg', classmethod(from_cfg))
    rc, out = _train([SIT, '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=1',
                      'train_dataloader.batch_size=2'], monkeypatch, capsys)
    assert rc == 0, out.err[-3000:]
    assert seen and 'iter_2.pth.tmp' not in seen[0] and 'train.lock' in seen[0], seen
    assert 'removed' in out.err and 'iter_2.pth.tmp' in out.err


# ------------------------------------------------------------ 28.7 one line, no traceback
_N = iter(range(10**6))


def _train(argv, monkeypatch, capsys):
    tool = load_tool('tools/train.py', f'_r3_train_{next(_N)}')
    if '--cfg-options' not in argv:
        argv = [*argv, '--cfg-options']
    argv = [*argv, f'experiment_name=r3_{next(_N)}', 'default_hooks.logger.interval=1']
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', *argv])
    monkeypatch.delenv('VLLAMA_MM_DEBUG', raising=False)
    try:
        tool.main()
    except SystemExit as e:
        return e.code, capsys.readouterr()
    return 0, capsys.readouterr()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    return lines[0]


def test_one_line_errors_of_tools_train(tmp_path, monkeypatch, capsys):
    syntax = tmp_path / 'syntax.py'
    syntax.write_text(f"_base_ = [{SIT!r}]\nmodel = dict(\n")
    rc, out = _train([str(syntax)], monkeypatch, capsys)
    assert rc == 2 and f'syntax error in config {syntax}' in _one_line(out.err)
    imports = tmp_path / 'imports.py'
    imports.write_text(f"_base_ = [{SIT!r}]\ncustom_imports = dict(imports=['no_such_module_r3'],"
                       " allow_failed_imports=False)\n")
    rc, out = _train([str(imports)], monkeypatch, capsys)
    assert rc == 2 and "custom_imports: cannot import 'no_such_module_r3'" in _one_line(out.err)
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    rc, out = _train([SIT, '--work-dir', str(a_file)], monkeypatch, capsys)
    assert rc == 2 and 'is a file, not a directory' in _one_line(out.err)
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr(tempfile, 'mkstemp', read_only)  # (root ignores chmod)
    rc, out = _train([SIT, '--work-dir', str(tmp_path / 'ro')], monkeypatch, capsys)
    assert rc == 2 and 'is not writable (Read-only file system)' in _one_line(out.err)


def test_sample_on_refused_and_truncated_files_is_one_line(tmp_path, monkeypatch, capsys):
    good = _generator_ckpt(tmp_path / 'gen.pth')
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(open(good, 'rb').read()[:-200])
    rc, out = _sample(cut, tmp_path / 'cut.png', monkeypatch, capsys)
    assert rc == 1 and 'truncated or corrupted' in _one_line(out.err)
    evil = tmp_path / 'evil.pth'
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ('true', ))
    with open(evil, 'wb') as f:
        torch.save({'state_dict': {}, 'x': Boom()}, f, pickle_module=pickle)
    rc, out = _sample(evil, tmp_path / 'evil.png', monkeypatch, capsys)
    assert rc == 1 and 'error:' in _one_line(out.err)


# ------------------------------------------------------------ 28.6 a data worker's crash
class _Files(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, i):
        return dict(img_path=self.paths[i])

    def __getitem__(self, i):
        if 'bad' in self.paths[i]:
            raise OSError('image file is truncated (5 bytes not processed)')
        return torch.zeros(1)


@pytest.mark.parametrize('workers', [0, 1])
def test_a_failing_sample_names_its_file(workers):
    from vllama_mm.datasets.named_samples import name_failing_samples
    from vllama_mm.engine.runner_utils import _worker_error
    ds = name_failing_samples(_Files(['a.jpg', 'sub/bad.jpg']))
    assert isinstance(ds, _Files) and ds[0].shape == (1, )
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers)
    with pytest.raises(Exception) as info:
        list(loader)
    text = str(info.value)
    line = _worker_error(text) or text
    assert 'sub/bad.jpg: cannot load sample 1 (OSError: image file is truncated' in line, text


# ------------------------------------------------------------ 28.6 the quick data check
def _cls_cfg(root: str):
    from mmengine.config import Config
    loader = lambda split: dict(dataset=dict(type='CustomDataset', data_root=root,  # noqa
                                             data_prefix=split))
    return Config(dict(default_scope='mmpretrain', train_dataloader=loader('train'),
                       val_dataloader=loader('val'), val_cfg=dict()))


def test_quick_data_check_looks_at_every_class_and_knows_webp(tmp_path):
    from PIL import Image

    from vllama_mm.datasets import synthetic_imagenet
    from vllama_mm.datasets.data_check import DataError, check_data
    root = str(tmp_path / 'imnet')
    synthetic_imagenet.generate(root, num_train=2, num_val=1, img_size=16, num_classes=7)
    check_data(_cls_cfg(root), quick=True)
    last = osp.join(root, 'train', 'class_06')
    bad = osp.join(last, sorted(os.listdir(last))[1])
    open(bad, 'wb').write(b'not an image' * 10)
    with pytest.raises(DataError, match=f'{bad}: cannot be decoded'):
        check_data(_cls_cfg(root), quick=True)  # class index 6: looked at
    open(bad, 'wb').write(open(osp.join(last, sorted(os.listdir(last))[0]), 'rb').read())
    webp = osp.join(root, 'train', 'class_05')
    for name in os.listdir(webp):
        with Image.open(osp.join(webp, name)) as im:
            im.convert('RGB').save(osp.join(webp, osp.splitext(name)[0] + '.webp'))
        os.remove(osp.join(webp, name))
    with pytest.raises(DataError, match=r'class_05: only \.webp images, which the dataset '
                                        r'skips'):
        check_data(_cls_cfg(root), quick=True)


def _coco(tmp_path):
    from mmengine.config import Config

    from vllama_mm.datasets import synthetic_coco
    root = str(tmp_path / 'coco')
    synthetic_coco.generate(root, num_train=1, num_val=3)
    ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
    ds = dict(type='CocoDataset', data_root=root, ann_file='annotations/instances_val2017.json',
              data_prefix=dict(img='val2017/'),
              pipeline=[dict(type='LoadImageFromFile'),
                        dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    return ann_file, Config(dict(default_scope='mmdet', test_dataloader=dict(dataset=ds)))


@pytest.mark.parametrize('fault,match', [
    ('zero_boxes', r'all \d+ annotations have boxes of zero size'),
    ('two_point_polygons', r'all \d+ annotations have segmentations whose polygons have '
                           r'fewer than 3 points'),
    ('image_size', r'val2017/\S+: the image is \d+x\d+ \(w x h\) but \S+ says 999x7'),
])
def test_coco_that_would_train_on_nothing_is_reported(tmp_path, fault, match, capsys):
    from vllama_mm.datasets.data_check import DataError, check_data
    ann_file, cfg = _coco(tmp_path)
    check_data(cfg, mode='test', quick=True)
    coco = json.load(open(ann_file))
    anns = coco['annotations']
    for ann in anns if fault != 'image_size' else []:
        if fault == 'zero_boxes':
            ann['bbox'][2] = 0
        else:
            ann['segmentation'] = [[1, 1, 5, 5]]
    if fault == 'image_size':
        coco['images'][0].update(width=999, height=7)
    json.dump(coco, open(ann_file, 'w'))
    with pytest.raises(DataError, match=match):
        check_data(cfg, mode='test', quick=True)
    if fault == 'zero_boxes':  # only some: said, not fatal
        anns[0]['bbox'][2] = 3
        json.dump(coco, open(ann_file, 'w'))
        check_data(cfg, mode='test', quick=True)
        assert f'{len(anns) - 1} of {len(anns)} annotations have boxes of zero size' in \
            capsys.readouterr().err


# ------------------------------------------------------------ 27.2 generation configs
def test_generation_resume_with_another_model_is_refused(tmp_path, monkeypatch, capsys):
    work = str(tmp_path / 'sit')
    opts = ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
            'train_dataloader.batch_size=2']
    rc, out = _train([SIT, '--work-dir', work, '--cfg-options', *opts], monkeypatch, capsys)
    assert rc == 0, out.err[-3000:]
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    assert not osp.exists(osp.join(work, 'train.lock'))  # released at the end
    rc, out = _train([SIT, '--work-dir', work, '--resume', '--cfg-options', *opts,
                      'train_cfg.max_iters=3', 'model.denoiser.arch.num_layers=2'],
                     monkeypatch, capsys)
    assert rc == 1, out.err[-3000:]
    line = _one_line(out.err)
    assert 'the model config differs' in line and 'num_layers: 4 -> 2' in line, line
