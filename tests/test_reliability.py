"""Reliability (issue 9): resume after a crash under torch >= 2.6 safe loading, safe loading
still refuses foreign code, bf16 autocast matches fp32, AMP configs exist.

The resume test kills ``tools/train.py`` with SIGKILL right after it wrote ``iter_4.pth``
(a hook in the config, so the moment is exact), resumes with ``--resume`` and compares
the final weights with an uninterrupted run: on CPU with one thread they are identical.
"""
import glob
import os
import os.path as osp
import pickle
import signal
import subprocess
import sys
import textwrap
from typing import Dict, List

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs/mmpretrain/vision_llama/'
                'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
KILL_AT = 4
MAX_ITERS = 8

# A hook that simulates a crash (pre-emption, OOM kill) exactly after iteration
# KILL_AT_ITER: priority LOWEST runs it after CheckpointHook (VERY_LOW) saved iter_N.pth.
KILL_HOOK = '''
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """SIGKILL this process after iteration $KILL_AT_ITER (unset: do nothing)."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        at = int(os.environ.get('KILL_AT_ITER', '0'))
        if at and runner.iter + 1 == at:
            os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture(scope='module')
def resume_setup(tmp_path_factory):
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = tmp_path_factory.mktemp('resume')
    data = str(root / 'data')
    generate(data, num_train=4, num_val=2, img_size=32, num_classes=4)
    (root / 'kill_hook.py').write_text(KILL_HOOK)
    cfg = root / 'tiny_resume.py'
    # deterministic: no random augmentation, no shuffling, no dropout; AdamW + a warm-up
    # scheduler so that optimizer moments and scheduler state must both be resumed
    cfg.write_text(textwrap.dedent(f"""
    _base_ = [{DEMO!r}]
    custom_imports = dict(imports=['vllama_mm.mmpretrain', 'kill_hook'],
                          allow_failed_imports=False)
    model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                               img_size=32),
                 head=dict(num_classes=4, in_channels=32))
    data_preprocessor = dict(num_classes=4)
    _pipe = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            dataset=dict(data_root={data!r}, pipeline=_pipe))
    val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                          dataset=dict(data_root={data!r}))
    test_dataloader = val_dataloader
    optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05))
    param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                            end={MAX_ITERS})]
    train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={MAX_ITERS},
                     val_interval=1000)
    default_hooks = dict(checkpoint=dict(interval={KILL_AT}, by_epoch=False,
                                         max_keep_ckpts=3),
                         logger=dict(interval=1))
    custom_hooks = [dict(type='KillAfterIterHook', priority='LOWEST')]
    log_processor = dict(by_epoch=False)
    randomness = dict(seed=0, deterministic=True)
    """))
    return root, cfg


def _env(cfg_dir, kill_at: int = 0) -> Dict[str, str]:
    """One thread (bit-reproducible CPU math), the kill hook importable, KILL_AT_ITER set."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(cfg_dir), os.environ.get('PYTHONPATH', '')]))
    env.pop('KILL_AT_ITER', None)
    if kill_at:
        env['KILL_AT_ITER'] = str(kill_at)
    return env


def _train(cfg, work_dir, *extra: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
                           str(work_dir), *extra], cwd=REPO, env=_env(cfg.parent, kill_at),
                          capture_output=True, text=True, timeout=600)


def _load(path) -> Dict:
    from vllama_mm.engine import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()  # what `import vllama_mm.<lib>` and build_runner do
    return torch.load(path, map_location='cpu', weights_only=True)


def _max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_killed_run_resumes_to_the_uninterrupted_result(resume_setup):
    root, cfg = resume_setup
    crashed, ref = root / 'crashed', root / 'reference'
    # the reference run in parallel with the crashing one (2 cores)
    ref_proc = subprocess.Popen(
        [sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(ref)], cwd=REPO,
        env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed = _train(cfg, crashed, kill_at=KILL_AT)
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
        assert osp.exists(crashed / f'iter_{KILL_AT}.pth')
        assert not osp.exists(crashed / f'iter_{MAX_ITERS}.pth')
        resumed = _train(cfg, crashed, '--resume')  # latest checkpoint of the work dir
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        log = resumed.stdout + resumed.stderr
        assert f'resumed epoch: 0, iter: {KILL_AT}' in log, log[-3000:]
        out, _ = ref_proc.communicate(timeout=600)
        assert ref_proc.returncode == 0, out[-3000:]
    finally:
        if ref_proc.poll() is None:
            ref_proc.kill()
            ref_proc.wait()
    # the resumed run did the remaining iterations only
    assert f'Iter(train) [{KILL_AT + 1}/{MAX_ITERS}]' in log
    assert 'Iter(train) [1/' not in log and 'Iter(train) [4/' not in log

    a, b = _load(crashed / f'iter_{MAX_ITERS}.pth'), _load(ref / f'iter_{MAX_ITERS}.pth')
    diff = _max_diff(a['state_dict'], b['state_dict'])
    print(f'\n[resume] max |w_resumed - w_uninterrupted| after {MAX_ITERS} iters: {diff:.3g}')
    assert diff == 0.0, diff  # CPU, one thread, same op order: bit-identical
    # optimizer moments and the scheduler were restored, not re-initialised
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and all(int(sa[k]['step']) == MAX_ITERS for k in sa)
    assert max(_max_diff({'m': sa[k]['exp_avg']}, {'m': sb[k]['exp_avg']}) for k in sa) == 0.0
    assert a['param_schedulers'] == b['param_schedulers']
    assert a['meta']['iter'] == b['meta']['iter'] == MAX_ITERS
    # training moved the weights after the crash point (the comparison is not vacuous)
    mid = _load(crashed / f'iter_{KILL_AT}.pth')['state_dict']
    assert _max_diff(mid, a['state_dict']) > 1e-3


def test_safe_loading_needs_the_allow_list_and_refuses_foreign_globals(resume_setup, tmp_path):
    root, cfg = resume_setup
    ckpts = sorted(glob.glob(str(root / '*' / 'iter_*.pth')))
    if not ckpts:  # this test alone: make one (max_iters=1)
        one = _train(cfg, root / 'one', '--cfg-options', 'train_cfg.max_iters=1',
                     'default_hooks.checkpoint.interval=1')
        assert one.returncode == 0, one.stderr[-3000:]
        ckpts = sorted(glob.glob(str(root / 'one' / 'iter_*.pth')))
    ckpt = ckpts[0]
    # in a fresh interpreter: plain torch >= 2.6 refuses mmengine's own checkpoint (message
    # hub objects), and the same call succeeds after `import vllama_mm.mmpretrain`
    script = textwrap.dedent(f"""
        import pickle, torch
        try:
            torch.load({ckpt!r}, weights_only=True)
            print('BARE: loaded')
        except pickle.UnpicklingError as e:
            print('BARE: refused', 'weights_only' in str(e))
        import vllama_mm.mmpretrain
        state = torch.load({ckpt!r}, weights_only=True)
        print('PLUGIN: loaded', sorted(state))
        """)
    proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'BARE: refused True' in proc.stdout, proc.stdout
    assert "PLUGIN: loaded ['message_hub', 'meta', 'optimizer', 'param_schedulers', " \
           "'state_dict']" in proc.stdout, proc.stdout
    state = _load(ckpt)
    assert 'train/lr' in state['message_hub']['log_scalars']

    # a crafted file that would run os.system when unpickled is still refused
    marker = tmp_path / 'pwned'

    class RunsShell:
        def __reduce__(self):
            return os.system, (f'touch {marker}', )

    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': RunsShell()}, evil)
    with pytest.raises(pickle.UnpicklingError, match='system'):
        _load(evil)
    assert not marker.exists()

    # and the getattr that HistoryBuffer needs cannot reach anything else
    from mmengine.logging.history_buffer import HistoryBuffer

    class ReachesOut:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'update')

    sneaky = tmp_path / 'getattr.pth'
    torch.save({'meta': ReachesOut()}, sneaky)
    with pytest.raises(pickle.UnpicklingError, match="refusing getattr"):
        _load(sneaky)


def test_converter_loading_keeps_the_allow_list(tmp_path):
    """Loading an official file with the converter must not un-allow mmengine's classes.

    ``torch.serialization.safe_globals(...)`` removes its entries on exit, including ones
    that were allowed before it was entered; a converter call in the same process (a
    notebook, a test session) would then break every later resume.
    """
    import vllama_mm.mmpretrain  # noqa: F401
    from mmengine.logging import HistoryBuffer

    from vllama_mm.engine.checkpoint import load_official
    buf = HistoryBuffer()
    buf.update(1.0)
    path = tmp_path / 'hub.pth'
    torch.save({'state_dict': {}, 'message_hub': {'log_scalars': {'train/loss': buf}}}, path)
    torch.load(path, weights_only=True)  # allowed after the plugin import ...
    load_official(str(path))
    torch.load(path, weights_only=True)  # ... and still allowed after a converter load


# ---------------------------------------------------------------- mixed precision
def _rel_l2(lo: torch.Tensor, ref: torch.Tensor) -> float:
    return ((lo.float() - ref.float()).norm() / ref.float().norm()).item()


def _bf16_vs_fp32(model, x) -> List[float]:
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    assert all(torch.isfinite(o).all() for o in low)
    return [_rel_l2(a, b) for a, b in zip(low, ref)]


# bf16 has an 8-bit mantissa (relative rounding 2**-9 ~ 2e-3 per op)
BF16_REL_L2 = 2e-2


@pytest.mark.parametrize('name', ['plain', 'pyramid'])
def test_bf16_autocast_matches_fp32(name):
    from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA
    torch.manual_seed(0)
    if name == 'plain':  # 4 blocks, head dim 16, class token; layer scale 1: blocks matter
        model = VisionLLaMA(dict(embed_dims=64, num_layers=4, num_heads=4, layer_scale_init=1.0),
                            img_size=64, patch_size=8, out_type='featmap',
                            out_indices=(1, 3))
    else:  # all 4 stages, LSA + GSA (sr 8, 4, 2, 1) in each
        model = PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2],
                                        layer_scale_init=1.0), img_size=64)
    errs = _bf16_vs_fp32(model.eval(), torch.randn(2, 3, 64, 64))
    print(f'\n[bf16] {name}: relative L2 error per output {["%.2e" % e for e in errs]}')
    # autocast really ran in bf16 (fp32 would give ~1e-7) and stays within tolerance
    assert all(1e-4 < e < BF16_REL_L2 for e in errs), errs


def test_bf16_autocast_training_step_has_finite_grads():
    from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA
    torch.manual_seed(0)
    for model in (VisionLLaMA(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=32,
                              patch_size=8),
                  PyramidVisionLLaMA(dict(embed_dims=[32] * 4, depths=[2] * 4), img_size=32)):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = sum(o.float().square().mean() for o in model(torch.randn(2, 3, 32, 32)))
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('name', ['plain-global', 'plain-vitdet', 'pyramid'])
def test_bf16_1024px_is_finite_and_close(name):
    """1024x1024 (the ViTDet input): 64x64 = 4096 tokens in the plain model's global blocks
    (fast enough on CPU without windows: ~0.1 s at width 32), AS2DRoPE anchored at 14x14."""
    from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA
    torch.manual_seed(0)
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, layer_scale_init=1.0)
    if name == 'plain-global':
        model = VisionLLaMA(arch, img_size=224, patch_size=16, with_cls_token=False,
                            out_type='featmap')
    elif name == 'plain-vitdet':  # 14x14 windows + one global block
        model = VisionLLaMA(arch, img_size=224, patch_size=16, with_cls_token=False,
                            out_type='featmap', window_size=14, global_attn_indexes=(1, ))
    else:
        model = PyramidVisionLLaMA(dict(embed_dims=[32] * 4, depths=[2] * 4,
                                        layer_scale_init=1.0), img_size=224)
    x = torch.randn(1, 3, 1024, 1024)
    errs = _bf16_vs_fp32(model.eval(), x)  # asserts finite bf16 outputs
    print(f'\n[bf16] {name} at 1024 px: relative L2 error {["%.2e" % e for e in errs]}')
    assert all(e < BF16_REL_L2 for e in errs), errs


# ---------------------------------------------------------------- fp16 AMP configs (GPU)
@pytest.mark.parametrize('library', ['mmpretrain', 'mmseg', 'mmdet'])
def test_each_library_ships_amp_configs(library):
    """fp16 AMP (``AmpOptimWrapper``) configs exist for every library (GPU training)."""
    from mmengine.config import Config
    amp = []
    for path in sorted(glob.glob(osp.join(REPO, 'configs', library, '**', '*.py'),
                                 recursive=True)):
        with open(path) as f:  # candidates: named *amp* or naming the wrapper
            if 'amp' not in osp.basename(path) and 'AmpOptimWrapper' not in f.read():
                continue
        if Config.fromfile(path).optim_wrapper.get('type') == 'AmpOptimWrapper':
            amp.append(osp.relpath(path, REPO))
    assert amp, f'no AmpOptimWrapper config under configs/{library}'
