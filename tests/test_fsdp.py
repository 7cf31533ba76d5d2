"""FSDP2 (``FSDP2ModelWrapper``) on 2 CPU ranks (gloo) against DDP and one process.

Each run is ``tools/dist_train.sh`` on a tiny config for a few iterations with a checkpoint
every iteration; the checkpoints' weights and the logged per-step losses are compared.
Equality figures are printed with ``-s`` ('[fsdp] ...').
"""
import json
import re
import os
import os.path as osp
import glob
import subprocess
import sys
import textwrap

import pytest
import torch

from _dist import free_port, gloo_only


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLS = osp.join(REPO, 'configs/mmpretrain/vision_llama',
               'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
MAE = osp.join(REPO, 'configs/mmpretrain/mae',
               'mae_vision-llama-tiny-p8_1xb16-5e_synthetic-64px.py')
DIT = osp.join(REPO, 'configs/generation/dit_llama',
               'dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py')
FSDP = "model_wrapper_cfg = dict(type='FSDP2ModelWrapper')\n"

# the runs: the CPU (gloo) path on Linux


def _train(cfg_text: str, work: str, gpus: int, *args, expect_ok: bool = True,
           env_extra=None) -> subprocess.CompletedProcess:
    os.makedirs(work, exist_ok=True)
    cfg = osp.join(work, 'cfg.py')
    with open(cfg, 'w') as f:
        f.write(cfg_text)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    env.update(env_extra or {})
    if gpus > 1:
        cmd = ['bash', 'tools/dist_train.sh', cfg, str(gpus)]
    else:
        cmd = [sys.executable, 'tools/train.py', cfg]
    out = subprocess.run(cmd + ['--work-dir', work, '--skip-data-check', *args], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    if expect_ok:
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-4000:])
    return out


def _ckpt(work: str, it: int) -> dict:
    from vllama_mm.engine import allow_mmengine_checkpoints, verify_checkpoint
    path = osp.join(work, f'iter_{it}.pth')
    verify_checkpoint(path)
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True)


def _losses(work: str, key: str = 'loss') -> list:
    files = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))
    rows = [json.loads(line) for f in files for line in open(f) if line.strip()]
    return [r[key] for r in sorted(rows, key=lambda r: r['step']) if key in r]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), set(a) ^ set(b)
    return max(((a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0)
               for k in a)


def _optim_diff(a: dict, b: dict) -> float:
    assert a['state'].keys() == b['state'].keys()
    diffs = [0.0]
    for i in a['state']:
        for k, v in a['state'][i].items():
            w = b['state'][i][k]
            assert torch.is_tensor(v) == torch.is_tensor(w)
            if torch.is_tensor(v):
                assert v.shape == w.shape, (i, k, v.shape, w.shape)
                diffs.append((v.float() - w.float()).abs().max().item())
    return max(diffs)


def _moved(work: str, first: int, last: int) -> float:
    return _max_diff(_ckpt(work, first)['state_dict'], _ckpt(work, last)['state_dict'])


def test_fsdp_config_checks_name_the_setting():
    from mmengine.config import Config

    from vllama_mm.engine.fsdp import check_fsdp_cfg
    from vllama_mm.engine.validate import ConfigError
    ok = dict(model_wrapper_cfg=dict(type='FSDP2ModelWrapper'),
              optim_wrapper=dict(type='OptimWrapper'),
              default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook')),
              custom_hooks=[dict(type='EMAHook', ema_type='FSDP2ExponentialMovingAverage')])
    check_fsdp_cfg(Config(ok))
    bad = [(dict(optim_wrapper=dict(type='AmpOptimWrapper')), 'AmpOptimWrapper'),
           (dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook'))),
            "default_hooks.checkpoint.type='CheckpointHook'"),
           (dict(custom_hooks=[dict(type='EMAHook')]), "custom_hooks[0] EMAHook"),
           (dict(val_cfg=dict(), val_dataloader=dict(batch_size=1)), 'validation loop')]
    for change, words in bad:
        with pytest.raises(ConfigError, match=re.escape(words)):
            check_fsdp_cfg(Config(dict(ok, **change)))
    check_fsdp_cfg(Config(dict(bad[0][0])))  # no FSDP2: nothing to check


def test_wrapper_in_one_process_shards_blocks_and_root(tmp_path):
    """In-process, world size 1 (gloo): after the first step every parameter is a DTensor
    under its original name, the optimizer holds exactly those, blocks compute in bf16 and
    hand fp32 on, the root unit (embeddings, final layer, loss) stays fp32."""
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from torch.distributed.tensor import DTensor

    import vllama_mm.generation  # noqa: F401
    from vllama_mm.engine.fsdp import FSDP2ModelWrapper
    from vllama_mm.generation.registry import MODELS
    cfg = Config.fromfile(DIT)
    cfg.model.denoiser.arch = dict(embed_dims=32, num_layers=2, num_heads=2)
    cfg.model.denoiser.input_size = 16
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = MODELS.build(cfg.model)
        names = [n for n, _ in model.named_parameters()]
        with pytest.raises(ValueError, match='block_types'):
            FSDP2ModelWrapper(model, block_types=['NoSuchBlock'])
        with pytest.raises(ValueError, match='mp_policy.param_dtype'):
            FSDP2ModelWrapper(model, mp_policy=dict(param_dtype='bf8'))
        wrapper = FSDP2ModelWrapper(model, mp_policy=dict(param_dtype='bfloat16'))
        optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
        seen = {}
        model.denoiser.blocks[0].attn.register_forward_hook(
            lambda m, i, o: seen.setdefault('block', (i[0].dtype, o.dtype)) and None)
        model.denoiser.final_layer.register_forward_hook(
            lambda m, i, o: seen.setdefault('final', (i[0].dtype, o.dtype)) and None)
        batch = dict(inputs=torch.rand(2, 3, 16, 16) * 2 - 1, labels=torch.tensor([0, 1]))
        log = wrapper.train_step(batch, optim)
        assert torch.isfinite(log['loss'])
        assert [n for n, _ in model.named_parameters()] == names
        assert all(isinstance(p, DTensor) for p in model.parameters())
        held = [p for g in optim.optimizer.param_groups for p in g['params']]
        assert {id(p) for p in held} == {id(p) for p in model.parameters()}
        assert len(optim.optimizer.state) == len(held)  # AdamW stepped every shard
        assert seen['block'] == (torch.bfloat16, torch.bfloat16)
        assert seen['final'] == (torch.float32, torch.float32)  # blocks handed fp32 on
        assert len(wrapper.full_state_dict()) == len(model.state_dict())
    finally:
        dist.destroy_process_group()


STEPS = textwrap.dedent("""
    # 2 ranks, no Runner: a VisionLLaMA classifier (frozen_stages=1) with layer-wise lr decay,
    # clipping and accumulation, wrapped by FSDP2ModelWrapper or DDP; writes losses + weights
    import sys
    import torch
    import torch.distributed as dist
    from mmengine.model import BaseModel, MMDistributedDataParallel
    from vllama_mm.engine.fsdp import FSDP2ModelWrapper
    from vllama_mm.engine.layer_decay import LayerDecayOptimWrapperConstructor
    from vllama_mm.models import VisionLLaMA

    class Classifier(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = VisionLLaMA(arch=dict(embed_dims=32, num_layers=3, num_heads=1),
                                        img_size=32, patch_size=8, frozen_stages=1)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, inputs, labels=None, mode='loss'):
            logits = self.head(self.backbone(inputs)[-1])
            return dict(loss=torch.nn.functional.cross_entropy(logits, labels))

    kind, out = sys.argv[1], sys.argv[2]
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = Classifier()
    model.init_weights()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = (FSDP2ModelWrapper(model) if kind == 'fsdp'
               else MMDistributedDataParallel(module=model, device_ids=None))
    optim = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
             clip_grad=dict(max_norm=1.0), accumulative_counts=2),
        dict(layer_decay_rate=0.75, flat_decay_mult=0.0))(wrapped)
    optim.initialize_count_status(wrapped, 0, 6)
    losses = []
    for step in range(6):
        g = torch.Generator().manual_seed(100 * step + rank)
        batch = dict(inputs=torch.randn(2, 3, 32, 32, generator=g),
                     labels=torch.randint(0, 4, (2,), generator=g))
        losses.append(float(wrapped.train_step(batch, optim)['loss']))
    state = (wrapped.full_state_dict() if kind == 'fsdp'
             else {k: v.clone() for k, v in model.state_dict().items()})
    names = [g.get('param_name') for g in optim.optimizer.param_groups]
    lrs = [g['lr'] for g in optim.optimizer.param_groups]
    if rank == 0:
        torch.save(dict(losses=losses, state=state, init=init, names=names, lrs=lrs), out)
    dist.destroy_process_group()
""")


@gloo_only
def test_fsdp2_layer_decay_frozen_stages_accumulation_equal_ddp(tmp_path):
    """Without the Runner (no task library needed): FSDP2ModelWrapper.train_step with our
    layer-decay constructor, frozen_stages, clipping and accumulation == DDP on 2 ranks."""
    script = tmp_path / 'steps.py'
    script.write_text(STEPS)
    res = {}
    for kind in ('fsdp', 'ddp'):
        out = tmp_path / f'{kind}.pt'
        env = dict(os.environ, OMP_NUM_THREADS='1',
                   PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
        run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                              f'--master_port={free_port()}', str(script), kind, str(out)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        res[kind] = torch.load(out, weights_only=True)
    a, b = res['fsdp'], res['ddp']
    loss = max(abs(x - y) for x, y in zip(a['losses'], b['losses']))
    w = _max_diff(a['state'], b['state'])
    print(f'\n[fsdp] layer decay + frozen_stages=1 + clip + accumulate 2, no Runner, 2 ranks '
          f'FSDP2 vs DDP: loss {loss:.2e}, weights {w:.2e}')
    assert loss < 1e-5 and w < 5e-5  # AdamW at lr 1e-2 on 6 steps amplifies rounding
    assert a['names'] == b['names'] and a['lrs'] == b['lrs']  # original names, same groups
    assert len(set(a['lrs'])) > 2  # the decay gave different lrs per depth
    frozen = [k for k in a['state'] if k.startswith(('backbone.patch_embed', 'backbone.layers.0.'))]
    assert frozen and all(torch.equal(a['state'][k], a['init'][k]) for k in frozen)
    assert _max_diff(a['state'], a['init']) > 1e-3  # the rest trained


# ---------------------------------------------------------------------------- generation
def _dit_cfg(extra: str = '') -> str:
    return f"""
_base_ = [{DIT!r}]
model = dict(denoiser=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2),
                           input_size=16))
train_dataloader = dict(batch_size=2, dataset=dict(num_per_class=4, image_size=16),
                        sampler=dict(type='InfiniteSampler', shuffle=True))
train_cfg = dict(max_iters=3)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=5))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
{extra}"""


EMA_FSDP = ("custom_hooks = [dict(type='EMAHook', momentum=0.02, update_buffers=False, "
            "priority='ABOVE_NORMAL', ema_type='FSDP2ExponentialMovingAverage')]\n")
CLIP_ACC = ("optim_wrapper = dict(clip_grad=dict(max_norm=0.5), accumulative_counts=2)\n"
            "train_cfg = dict(max_iters=4)\n")


@gloo_only
@pytest.mark.parametrize('variant', ['plain', 'clip-accumulate'])
def test_fsdp2_dit_with_ema_equals_ddp(tmp_path, variant):
    """DiT-LLaMA with EMA: FSDP2 (sharded EMA source) == DDP, per-step losses, raw and EMA
    weights, optimizer state (2 ranks each: the per-rank diffusion noise is the same);
    'clip-accumulate' adds gradient clipping (norm of DTensor gradients) and accumulation."""
    extra = CLIP_ACC if variant == 'clip-accumulate' else ''
    last = 4 if extra else 3
    out = _train(_dit_cfg(FSDP + EMA_FSDP + extra), str(tmp_path / 'fsdp'), 2)
    assert 'FSDP2: 2 blocks and the root sharded over 2 ranks' in out.stdout + out.stderr
    _train(_dit_cfg(extra), str(tmp_path / 'ddp'), 2)
    a, b = _ckpt(str(tmp_path / 'fsdp'), last), _ckpt(str(tmp_path / 'ddp'), last)
    ema = _max_diff(a['state_dict'], b['state_dict'])  # the EMA weights (see EMAHook)
    raw = _max_diff(a['ema_state_dict'], b['ema_state_dict'])
    opt = _optim_diff(a['optimizer'], b['optimizer'])
    la, lb = _losses(str(tmp_path / 'fsdp')), _losses(str(tmp_path / 'ddp'))
    assert len(la) == len(lb) == last, (la, lb)
    loss = max(abs(x - y) for x, y in zip(la, lb))
    msg = ''
    if extra:
        ga, gb = _losses(str(tmp_path / 'fsdp'), 'grad_norm'), _losses(str(tmp_path / 'ddp'),
                                                                        'grad_norm')
        assert ga and len(ga) == len(gb)
        gn = max(abs(x - y) for x, y in zip(ga, gb))
        msg = f', logged grad norms {gn:.2e}'
        assert gn < 1e-5
    print(f'\n[fsdp] DiT ({variant}) 2 ranks FSDP2 vs DDP: loss {loss:.2e}, EMA weights '
          f'{ema:.2e}, raw weights {raw:.2e}, optimizer state {opt:.2e}{msg}')
    assert loss < 1e-5 and ema < 1e-5 and raw < 1e-5 and opt < 1e-5
    assert _moved(str(tmp_path / 'ddp'), 1, last) > 1e-4  # training moved the weights


KILLER = '''
import os, signal, time
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
@HOOKS.register_module()
class KillRank1(Hook):
    """SIGKILL rank 1 before iteration KILL_AT + 1 (when KILL=1), once rank 0 has recorded
    iter_KILL_AT.pth (rank 0 writes alone: without the wait the kill may cut that write)."""
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.rank == 1 and os.environ.get('KILL') == '1' and \\
                runner.iter == int(os.environ['KILL_AT']):
            record = os.path.join(runner.work_dir, 'last_checkpoint')
            for _ in range(600):
                if os.path.exists(record) and open(record).read().strip().endswith(
                        f'iter_{runner.iter}.pth'):
                    break
                time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGKILL)
'''


def _write_killer(folder) -> None:
    (folder / 'killer.py').write_text(KILLER)


@gloo_only
def test_fsdp2_dit_resume_after_a_killed_rank_equals_ddp_resume(tmp_path):
    """DiT with EMA, rank 1 killed before iteration 3, --resume from iter_2: FSDP2 and DDP
    continue identically (weights, EMA, optimizer state, losses). (mmengine restores the seed,
    not the generators' state, so a resumed noisy run is not the uninterrupted one.)"""
    _write_killer(tmp_path)
    env = dict(PYTHONPATH=os.pathsep.join([str(tmp_path), REPO,
                                           os.environ.get('PYTHONPATH', '')]), KILL_AT='2')
    extra = ("custom_imports = dict(imports=['vllama_mm.generation', 'killer'], "
             "allow_failed_imports=False)\ntrain_cfg = dict(max_iters=4)\n"
             "env_cfg = dict(dist_cfg=dict(timeout=20))\n")
    ema = ("dict(type='EMAHook', momentum=0.02, update_buffers=False, priority='ABOVE_NORMAL'"
           "{})")
    works = {}
    for kind, text in (('fsdp', FSDP), ('ddp', '')):
        ema_type = ", ema_type='FSDP2ExponentialMovingAverage'" if text else ''
        text += f"custom_hooks = [dict(type='KillRank1'), {ema.format(ema_type)}]\n"
        work = works[kind] = str(tmp_path / kind)
        out = _train(_dit_cfg(text + extra), work, 2, expect_ok=False,
                     env_extra=dict(env, KILL='1'))
        assert out.returncode != 0
        assert osp.exists(osp.join(work, 'iter_2.pth'))
        assert not osp.exists(osp.join(work, 'iter_3.pth'))
        _train(_dit_cfg(text + extra), work, 2, '--resume', env_extra=dict(env, KILL='0'))
    a, b = _ckpt(works['fsdp'], 4), _ckpt(works['ddp'], 4)
    w = _max_diff(a['state_dict'], b['state_dict'])
    raw = _max_diff(a['ema_state_dict'], b['ema_state_dict'])
    o = _optim_diff(a['optimizer'], b['optimizer'])
    la, lb = _losses(works['fsdp'])[-2:], _losses(works['ddp'])[-2:]
    loss = max(abs(x - y) for x, y in zip(la, lb))
    print(f'\n[fsdp] DiT resume after killed rank, FSDP2 vs DDP: EMA weights {w:.2e}, raw '
          f'weights {raw:.2e}, optimizer {o:.2e}, losses of iters 3-4 {loss:.2e}')
    assert len(la) == 2 and w < 1e-6 and raw < 1e-6 and o < 1e-6 and loss < 1e-6
    assert a['meta']['iter'] == 4


# ---------------------------------------------------------------------------- classification
@pytest.fixture(scope='module')
def cls_setup(tmp_path_factory):
    pytest.importorskip('mmpretrain')
    from vllama_mm.datasets.synthetic_imagenet import generate
    root = tmp_path_factory.mktemp('fsdp_cls')
    data = str(root / 'data')
    generate(data, num_train=4, num_val=2, img_size=32, num_classes=4)

    def cfg(batch: int, extra: str = '') -> str:
        # deterministic: no random augmentation or shuffling; layer decay, frozen patch
        # embed + first block, gradient clipping and accumulation over 2 steps
        return f"""
_base_ = [{CLS!r}]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=3, num_heads=1), img_size=32,
                           frozen_stages=1),
             head=dict(num_classes=4, in_channels=32))
data_preprocessor = dict(num_classes=4)
_pipe = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        sampler=dict(type='DefaultSampler', shuffle=False),
                        dataset=dict(data_root={data!r}, pipeline=_pipe))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data!r}))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, constructor='LayerDecayOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
                     paramwise_cfg=dict(layer_decay_rate=0.75, flat_decay_mult=0.0),
                     clip_grad=dict(max_norm=1.0), accumulative_counts=2)
param_scheduler = []
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=2, by_epoch=False, max_keep_ckpts=5),
                     logger=dict(interval=1))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
{extra}"""
    runs = {}
    runs['fsdp'] = str(root / 'fsdp')
    _train(cfg(2, FSDP), runs['fsdp'], 2)
    runs['ddp'] = str(root / 'ddp')
    _train(cfg(2), runs['ddp'], 2)
    runs['one'] = str(root / 'one')
    _train(cfg(4), runs['one'], 1)
    return root, cfg, runs


@gloo_only
def test_fsdp2_classification_equals_ddp_and_one_process(cls_setup):
    root, cfg, runs = cls_setup
    la, lb = _losses(runs['fsdp']), _losses(runs['ddp'])
    assert len(la) == len(lb) == 6
    loss = max(abs(x - y) for x, y in zip(la, lb))
    figures = {}
    for it in (2, 6):
        a, b, c = (_ckpt(runs[k], it) for k in ('fsdp', 'ddp', 'one'))
        figures[it] = (_max_diff(a['state_dict'], b['state_dict']),
                       _max_diff(a['state_dict'], c['state_dict']),
                       _optim_diff(a['optimizer'], b['optimizer']))
    print(f'\n[fsdp] classification (layer decay, frozen_stages=1, clip, accumulate 2) '
          f'2 ranks FSDP2 vs DDP: loss {loss:.2e}; weights/optimizer per checkpoint '
          + ', '.join(f'iter {it}: vs DDP {d:.2e}, vs 1 process {o:.2e}, optim vs DDP {p:.2e}'
                      for it, (d, o, p) in figures.items()))
    assert loss < 1e-5
    for d, o, p in figures.values():  # AdamW lr 1e-2: rounding grows over the steps
        assert d < 2e-5 and o < 5e-5 and p < 1e-6
    last = _ckpt(runs['fsdp'], 6)
    first = _ckpt(runs['fsdp'], 2)
    # frozen: patch embed and block 0 unchanged; trained: the rest moved
    frozen = [k for k in last['state_dict'] if k.startswith(('backbone.patch_embed',
                                                             'backbone.layers.0.'))]
    assert frozen
    assert max((last['state_dict'][k] - first['state_dict'][k]).abs().max().item()
               for k in frozen) == 0.0
    assert _moved(runs['fsdp'], 2, 6) > 1e-4
    # the checkpoint has the layer-decay parameter groups with their original names
    names = [g.get('param_name') for g in last['optimizer']['param_groups']]
    assert any(n and n.startswith('backbone.layers.2.') for n in names), names


@gloo_only
def test_fsdp2_resume_after_a_killed_rank_continues_exactly(cls_setup, tmp_path):
    """Rank 1 is killed (SIGKILL) during iteration 5; the job dies; --resume from the work
    dir (iter_4) reaches the same iter_6 as the uninterrupted run."""
    root, cfg, runs = cls_setup
    _write_killer(tmp_path)
    extra = (FSDP + "custom_imports = dict(imports=['vllama_mm.mmpretrain', 'killer'], "
             "allow_failed_imports=False)\ncustom_hooks = [dict(type='KillRank1')]\n"
             "env_cfg = dict(dist_cfg=dict(timeout=20))\n")
    work = str(tmp_path / 'w')
    env = dict(PYTHONPATH=os.pathsep.join([str(tmp_path), REPO,
                                           os.environ.get('PYTHONPATH', '')]), KILL_AT='4')
    out = _train(cfg(2, extra), work, 2, expect_ok=False, env_extra=dict(env, KILL='1'))
    assert out.returncode != 0
    assert osp.exists(osp.join(work, 'iter_4.pth')) and not osp.exists(osp.join(work,
                                                                            'iter_6.pth'))
    _train(cfg(2, extra), work, 2, '--resume', env_extra=dict(env, KILL='0'))
    a, b = _ckpt(work, 6), _ckpt(runs['fsdp'], 6)
    w, o = _max_diff(a['state_dict'], b['state_dict']), _optim_diff(a['optimizer'],
                                                                    b['optimizer'])
    lr = _losses(work)[-2:]
    lu = _losses(runs['fsdp'])[-2:]
    print(f'\n[fsdp] resume after killed rank vs uninterrupted FSDP2: weights {w:.2e}, '
          f'optimizer {o:.2e}, losses of iters 5-6 {max(abs(x - y) for x, y in zip(lr, lu)):.2e}')
    assert w == 0.0 and o == 0.0 and lr == lu


@gloo_only
def test_fsdp2_bf16_mixed_precision_trains(cls_setup, tmp_path):
    """param_dtype bf16 / reduce fp32: trains, checkpoints keep fp32 weights, loss close to
    the fp32 run (not equal: bf16 compute)."""
    root, cfg, runs = cls_setup
    extra = ("model_wrapper_cfg = dict(type='FSDP2ModelWrapper', mp_policy=dict("
             "param_dtype='bfloat16', reduce_dtype='float32'))\n"
             "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, "
             "val_interval=100)\n")
    work = str(tmp_path / 'bf16')
    _train(cfg(2, extra), work, 2)
    sd = _ckpt(work, 2)['state_dict']
    assert all(v.dtype == torch.float32 for k, v in sd.items() if v.is_floating_point())
    lb, lf = _losses(work), _losses(runs['fsdp'])[:2]
    diff = max(abs(x - y) for x, y in zip(lb, lf))
    print(f'\n[fsdp] bf16 params vs fp32 FSDP2: loss {diff:.2e}, weights '
          f'{_max_diff(sd, _ckpt(runs["fsdp"], 2)["state_dict"]):.2e}')
    assert 0 < diff < 5e-2


# ---------------------------------------------------------------------------- MAE
@gloo_only
def test_fsdp2_mae_equals_ddp(tmp_path):
    """MAE pre-training (random masks per rank): FSDP2 == DDP on 2 ranks."""
    pytest.importorskip('mmpretrain')
    from vllama_mm.datasets.synthetic_imagenet import generate
    data = str(tmp_path / 'data')
    generate(data, num_train=4, num_val=1, img_size=32, num_classes=2)

    def cfg(extra=''):
        return f"""
_base_ = [{MAE!r}]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=2, num_heads=1,
                                     feedforward_channels=64), img_size=32),
             neck=dict(num_patches=16, embed_dim=32, decoder_embed_dim=16, decoder_depth=1,
                       decoder_num_heads=1))
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='Resize', scale=32), dict(type='PackInputs')]
train_dataloader = dict(batch_size=2, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=False),
                        dataset=dict(data_root={data!r}, pipeline=train_pipeline))
param_scheduler = []
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=3)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, by_epoch=False,
                                     max_keep_ckpts=5), logger=dict(interval=1))
log_processor = dict(window_size=1)
randomness = dict(seed=0, diff_rank_seed=True, deterministic=True)
{extra}"""
    _train(cfg(FSDP), str(tmp_path / 'fsdp'), 2)
    _train(cfg(), str(tmp_path / 'ddp'), 2)
    a, b = _ckpt(str(tmp_path / 'fsdp'), 3), _ckpt(str(tmp_path / 'ddp'), 3)
    w, o = _max_diff(a['state_dict'], b['state_dict']), _optim_diff(a['optimizer'],
                                                                    b['optimizer'])
    la, lb = _losses(str(tmp_path / 'fsdp')), _losses(str(tmp_path / 'ddp'))
    assert len(la) == len(lb) == 3
    loss = max(abs(x - y) for x, y in zip(la, lb))
    print(f'\n[fsdp] MAE 2 ranks FSDP2 vs DDP: loss {loss:.2e}, weights {w:.2e}, '
          f'optimizer {o:.2e}')
    assert loss < 1e-5 and w < 1e-5 and o < 1e-5
    assert _moved(str(tmp_path / 'ddp'), 1, 3) > 1e-5


# ---------------------------------------------------------------------------- memory estimate
def test_fsdp_memory_tool_measures_saved_activations():
    """tools/analysis/fsdp_memory.py: the saved-tensor count is exact on a known graph, and
    activation memory is linear in depth (the basis of its scaling)."""
    from torch import nn

    from _tool_loader import load_tool  # tests/
    tool = load_tool('tools/analysis/fsdp_memory.py')
    lin = nn.Linear(8, 16)
    x = torch.randn(4, 8)
    # Linear saves its input (weight excluded: a parameter); relu saves its output
    assert tool.saved_bytes(lin, lambda m: torch.relu(m(x)).sum()) == 4 * 8 * 4 + 4 * 16 * 4
    from vllama_mm.models import VisionLLaMA

    def build(n):
        return VisionLLaMA(arch=dict(embed_dims=32, num_layers=n, num_heads=2), img_size=32)

    def run(m):
        return m(torch.randn(2, 3, 32, 32))[-1].sum()

    one, two, three = (tool.saved_bytes(build(n), run) for n in (1, 2, 3))
    assert two - one == three - two > 0
    fixed, blk = tool.per_block(build, run)
    assert fixed + 3 * blk == three
