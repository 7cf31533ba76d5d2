"""No lost checkpoints (issue 14 item 1) and integrity checks (item 2).

A tiny mmengine Runner (a linear model, 8 samples; only mmengine is imported) runs in a
subprocess; the fault is a SIGKILL in the middle of writing ``epoch_2.pth`` (the write
is patched to put half the bytes on disk, fsync, and kill the process), with
``max_keep_ckpts=1``. With mmengine's ``CheckpointHook`` this loses every checkpoint;
with ``AtomicCheckpointHook`` ``epoch_1.pth`` survives and ``--resume`` continues from it.
"""
import os
import os.path as osp
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

TRAIN = textwrap.dedent('''
    """usage: train.py WORK_DIR HOOK_TYPE MAX_EPOCHS RESUME(0|1) [KILL_WHILE_WRITING]"""
    import os, signal, sys
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from mmengine.fileio import LocalBackend
    from mmengine.model import BaseModel
    from mmengine.config import Config
    from mmengine.registry import DATASETS, MODELS
    from mmengine.runner import Runner
    import vllama_mm.engine  # noqa: F401  (registers AtomicCheckpointHook)

    work_dir, hook, max_epochs, resume = sys.argv[1:5]
    kill = sys.argv[5] if len(sys.argv) > 5 else ''
    if kill:  # SIGKILL half-way through writing the named checkpoint
        put = LocalBackend.put
        def put_and_die(self, obj, filepath):
            if kill in os.path.basename(str(filepath)):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return put(self, obj, filepath)
        LocalBackend.put = put_and_die

    @MODELS.register_module()
    class Toy(BaseModel):
        def __init__(self, width=4):
            super().__init__()
            self.fc = nn.Linear(4, width)
        def forward(self, x, y, mode='loss'):
            return {'loss': (self.fc(x).sum(1, keepdim=True) - y).pow(2).mean()}

    @DATASETS.register_module()
    class Data(Dataset):
        def __len__(self):
            return 8
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(4, generator=g)
            return dict(x=x, y=x.sum(0, keepdim=True))

    runner = Runner.from_cfg(Config(dict(
        model=dict(type='Toy', width=int(os.environ.get('WIDTH', 4))),
        work_dir=work_dir, default_scope='mmengine',
        train_dataloader=dict(dataset=dict(type='Data'), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=float(os.environ.get('LR', 0.1)))),
        train_cfg=dict(by_epoch=True, max_epochs=int(max_epochs)),
        default_hooks=dict(checkpoint=dict(type=hook, interval=1,
                                           max_keep_ckpts=int(os.environ.get('KEEP', 1)))),
        resume=resume == '1', randomness=dict(seed=0))))
    runner.train()
    print('DONE epoch', runner.epoch)
''')


@pytest.fixture(scope='module')
def script(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('ckpt') / 'train_toy.py'
    path.write_text(TRAIN)
    return str(path)


def _flip_weight_byte(src, dst) -> None:
    """Copy ``src`` to ``dst`` with one byte of its largest member (a tensor) inverted."""
    data = bytearray(open(src, 'rb').read())
    with zipfile.ZipFile(src) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    # local file header: 30 fixed bytes, then name and extra field (lengths at 26 and 28)
    name_len, extra_len = struct.unpack_from('<HH', data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    open(dst, 'wb').write(bytes(data))


def _run(script: str, work_dir, hook: str, max_epochs: int, resume: bool,
         kill: str = '', keep: int = 1, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', KEEP=str(keep), **env_vars,
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, script, str(work_dir), hook, str(max_epochs), str(int(resume))]
    return subprocess.run(cmd + ([kill] if kill else []), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _last(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_stock_hook_loses_everything_when_killed_mid_write(script, tmp_path):
    """The fault this hook exists for (mmengine 0.10.7's CheckpointHook)."""
    killed = _run(script, tmp_path, 'CheckpointHook', 3, False, kill='epoch_2.pth')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / 'epoch_1.pth').exists()  # deleted before the new one was written
    assert not zipfile.is_zipfile(tmp_path / 'epoch_2.pth')  # truncated
    assert _last(tmp_path) == str(tmp_path / 'epoch_1.pth')  # dangling


def test_atomic_hook_keeps_the_previous_checkpoint_and_resumes(script, tmp_path):
    killed = _run(script, tmp_path, 'AtomicCheckpointHook', 3, False, kill='epoch_2.pth')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # the half-written file is the temporary one; the previous checkpoint is intact
    assert (tmp_path / 'epoch_2.pth.tmp').exists() and not (tmp_path / 'epoch_2.pth').exists()
    assert zipfile.ZipFile(tmp_path / 'epoch_1.pth').testzip() is None
    assert _last(tmp_path) == str(tmp_path / 'epoch_1.pth')

    resumed = _run(script, tmp_path, 'AtomicCheckpointHook', 3, True)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert 'resumed epoch: 1' in log and 'DONE epoch 3' in log, log[-3000:]
    assert 'incomplete checkpoint of an interrupted save' in log  # the .tmp was cleaned up
    # max_keep_ckpts=1 still holds, and last_checkpoint names the surviving file
    assert sorted(p.name for p in tmp_path.glob('*.pth*')) == ['epoch_3.pth']
    assert _last(tmp_path) == str(tmp_path / 'epoch_3.pth')


@pytest.fixture(scope='module')
def two_epochs(script, tmp_path_factory):
    """A work dir with epoch_1.pth (older) and epoch_2.pth (newest), both intact."""
    work = tmp_path_factory.mktemp('two_epochs')
    done = _run(script, work, 'AtomicCheckpointHook', 2, False, keep=2)
    assert done.returncode == 0, done.stderr[-3000:]
    os.utime(work / 'epoch_1.pth', (1e9, 1e9))
    return work


def _damage(work, fault: str) -> str:
    """Apply ``fault`` to a copy of :func:`two_epochs`; returns the file to resume from."""
    record = work / 'last_checkpoint'
    record.write_text(str(work / 'epoch_2.pth'))
    if fault == 'missing':
        record.unlink()
    elif fault == 'empty':
        record.write_text('')
    elif fault == 'garbage':
        record.write_bytes(b'\x00\xff\xfe garbage')
    elif fault == 'dangling':
        record.write_text(str(work / 'epoch_9.pth'))
    elif fault == 'truncated':
        data = (work / 'epoch_2.pth').read_bytes()
        (work / 'epoch_2.pth').write_bytes(data[:len(data) // 2])
        return 'epoch_1.pth'
    elif fault == 'flipped':  # one flipped byte inside the weights: the CRC does not match
        _flip_weight_byte(work / 'epoch_2.pth', work / 'epoch_2.pth')
        return 'epoch_1.pth'
    return 'epoch_2.pth'


@pytest.mark.parametrize('fault', ['missing', 'empty', 'garbage', 'dangling', 'truncated',
                                   'flipped'])
def test_auto_resume_picks_the_newest_intact_checkpoint(two_epochs, tmp_path, fault):
    from vllama_mm.engine import find_resumable_checkpoint
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    expect = _damage(work, fault)
    path, note = find_resumable_checkpoint(str(work))
    assert path == str(work / expect)
    assert f'resuming from the newest intact checkpoint {work / expect} instead' in note
    reason = {'missing': 'does not exist', 'empty': 'is empty', 'garbage': 'not a file name',
              'dangling': "epoch_9.pth', which does not exist",
              'truncated': 'truncated or corrupted', 'flipped': 'the CRC of'}[fault]
    assert reason in note, note


def test_auto_resume_fallback_end_to_end(script, two_epochs, tmp_path):
    """--resume with a truncated newest checkpoint continues from the previous one."""
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    _damage(work, 'truncated')
    resumed = _run(script, work, 'AtomicCheckpointHook', 3, True, keep=2)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f'resuming from the newest intact checkpoint {work / "epoch_1.pth"} instead' in log
    assert 'resumed epoch: 1' in log and 'DONE epoch 3' in log, log[-3000:]


def test_no_intact_checkpoint_is_an_error_naming_the_files(tmp_path):
    from vllama_mm.engine import CheckpointError, find_resumable_checkpoint
    assert find_resumable_checkpoint(str(tmp_path)) == (None, '')  # fresh work dir
    (tmp_path / 'epoch_1.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    with pytest.raises(CheckpointError, match=r'epoch_1\.pth.*is empty.*--resume PATH'):
        find_resumable_checkpoint(str(tmp_path))


# ---------------------------------------------------------------- integrity (item 2)
def test_flipped_byte_is_refused_by_our_checks_and_mmengine_stays_stock(tmp_path):
    """torch.load accepts the damaged file; our checks (tools' load_from / Pretrained file
    check, auto-resume) refuse it naming the file, while mmengine's own loader stays
    stock for everyone else's models after the plugin is imported."""
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_from_local

    import vllama_mm.engine  # noqa: F401
    from vllama_mm.engine import CheckpointError, verify_checkpoint
    from vllama_mm.engine.validate import ConfigError, check_checkpoint_file
    good, bad = tmp_path / 'good.pth', tmp_path / 'bad.pth'
    torch.save({'state_dict': {'fc.weight': torch.randn(64, 64)}}, good)
    _flip_weight_byte(good, bad)
    torch.load(bad, weights_only=True)  # the fault: silently wrong weights
    verify_checkpoint(str(good))
    with pytest.raises(CheckpointError, match=r"bad\.pth' is corrupted: the CRC of"):
        verify_checkpoint(str(bad))
    with pytest.raises(ConfigError, match=r"load_from: .*bad\.pth' is corrupted"):
        check_checkpoint_file(str(bad), 'load_from')
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r'cut\.pth.*truncated or corrupted'):
        verify_checkpoint(str(cut))
    assert CheckpointLoader._schemes[''] is load_from_local  # not patched
    _load_checkpoint(str(bad))  # mmengine's behaviour, unchanged by the plugin


def test_converter_checks_crc_and_refuses_to_overwrite_its_source(tmp_path, capsys):
    sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
    try:
        import official2vllama
    finally:
        sys.path.pop(0)
    good, bad = tmp_path / 'official.pth', tmp_path / 'flipped.pth'
    torch.save({'model': {'patch_embed.proj.weight': torch.randn(64, 3, 16, 16)}}, good)
    _flip_weight_byte(good, bad)
    assert official2vllama.main([str(bad), str(tmp_path / 'out.pth')]) == 1
    assert "flipped.pth' is corrupted: the CRC" in capsys.readouterr().err
    before = good.read_bytes()
    assert official2vllama.main([str(good), str(good)]) == 1
    assert 'is SRC' in capsys.readouterr().err
    assert good.read_bytes() == before


def test_tools_check_names_a_flipped_load_from(tmp_path):
    from vllama_mm.engine.validate import ConfigError, check_checkpoint_file
    good, bad = tmp_path / 'good.pth', tmp_path / 'bad.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, good)
    _flip_weight_byte(good, bad)
    check_checkpoint_file(str(good), 'load_from')
    with pytest.raises(ConfigError, match=r"load_from: checkpoint file .*bad\.pth' is corrupted"):
        check_checkpoint_file(str(bad), 'load_from')


# ---------------------------------------------------------------- resume honesty (item 4)
def test_resume_with_another_model_is_an_error_and_new_lr_is_reported(script, two_epochs,
                                                                      tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    _damage(work, 'none')  # last_checkpoint -> this copy's epoch_2.pth
    other = _run(script, work, 'AtomicCheckpointHook', 3, True, keep=2, WIDTH='8')
    assert other.returncode != 0
    assert 'resume: the model config differs from the one the checkpoint was trained with ' \
           '(model.width: 4 -> 8)' in other.stderr, other.stderr[-3000:]
    lr = _run(script, work, 'AtomicCheckpointHook', 3, True, keep=2, LR='0.05')
    log = lr.stdout + lr.stderr
    assert lr.returncode == 0, log[-3000:]
    assert 'resume: optim_wrapper changed since the checkpoint was written ' \
           '(optim_wrapper.optimizer.lr: 0.1 -> 0.05)' in log, log[-3000:]
    assert "the optimizer state (lr, momentum, ...) is the checkpoint's" in log
    assert 'train_cfg.max_epochs: 2 -> 3' in log and 'the new values apply' in log
