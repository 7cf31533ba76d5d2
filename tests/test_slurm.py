"""tools/slurm_train.sh under a fake SLURM: a stand-in ``srun`` (and ``scontrol``) on PATH
starts the tasks on this host with the environment SLURM gives them. Two CPU tasks train
with gloo and end with the same weights as the torchrun path (tools/dist_train.sh)."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch

from _dist import free_port, gloo_only

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIT = osp.join(REPO, 'configs/generation/dit_llama/dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py')

FAKE_SRUN = textwrap.dedent('''\
    #!{python}
    """Fake srun: record the call, then run --ntasks copies of the command on this host."""
    import json, os, subprocess, sys
    args = sys.argv[1:]
    opts, i = {{}}, 0
    while i < len(args) and args[i].startswith('-'):
        if '=' in args[i]:
            k, v = args[i].split('=', 1)
            opts[k] = v
        else:  # '-p PARTITION'
            opts[args[i]] = args[i + 1]
            i += 1
        i += 1
    command = args[i:]
    with open(os.environ['SRUN_RECORD'], 'w') as f:
        json.dump(dict(args=args, master_port=os.environ.get('MASTER_PORT')), f)
    if os.environ.get('SRUN_DRY') == '1':
        sys.exit(0)
    n = int(opts['--ntasks'])
    procs = [subprocess.Popen(command, env=dict(
        os.environ, SLURM_PROCID=str(r), SLURM_NTASKS=str(n), SLURM_LOCALID=str(r),
        SLURM_NODELIST='node[001]', SLURM_JOB_NODELIST='node[001]')) for r in range(n)]
    sys.exit(max(p.wait() for p in procs))
''')
FAKE_SCONTROL = '#!/bin/sh\n# fake scontrol: "show hostname LIST" -> this host\necho 127.0.0.1\n'

pytestmark = gloo_only


@pytest.fixture()
def fake_slurm(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / 'scontrol').write_text(FAKE_SCONTROL)
    for f in ('srun', 'scontrol'):
        os.chmod(bin_dir / f, 0o755)
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
               PYTHON=sys.executable, OMP_NUM_THREADS='1', SRUN_RECORD=str(tmp_path / 'rec'),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    env.pop('MASTER_ADDR', None)
    env.pop('MASTER_PORT', None)
    return env


def _record(env) -> dict:
    with open(env['SRUN_RECORD']) as f:
        return json.load(f)


def test_gres_and_port_follow_the_environment(fake_slurm):
    env = dict(fake_slurm, SRUN_DRY='1', GPUS='16', GPUS_PER_NODE='4', PORT='29666')
    cmd = ['bash', 'tools/slurm_train.sh', 'part', 'job', DIT, '/tmp/never']
    subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=60)
    rec = _record(env)
    assert '--gres=gpu:4' in rec['args'] and '--ntasks=16' in rec['args']
    assert '--ntasks-per-node=4' in rec['args'] and rec['master_port'] == '29666'
    env = dict(fake_slurm, SRUN_DRY='1', GPUS='2', GPUS_PER_NODE='0', MASTER_PORT='29777')
    subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=60)
    rec = _record(env)
    assert not any(a.startswith('--gres') for a in rec['args']), rec['args']
    assert '--ntasks-per-node=2' in rec['args'] and rec['master_port'] == '29777'
    bad = subprocess.run(cmd, cwd=REPO, env=dict(env, GPUS_PER_NODE='two'),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and 'GPUS_PER_NODE=two' in bad.stderr


def test_two_cpu_slurm_tasks_train_like_torchrun(fake_slurm, tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = [{DIT!r}]
model = dict(denoiser=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2),
                           input_size=16))
train_dataloader = dict(batch_size=2, dataset=dict(num_per_class=4, image_size=16))
train_cfg = dict(max_iters=2)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type='AtomicCheckpointHook', interval=2))
env_cfg = dict(dist_cfg=dict(_delete_=True, backend='nccl', timeout=120))  # as on a cluster
randomness = dict(seed=0, deterministic=True)
""")
    env = dict(fake_slurm, GPUS='2', GPUS_PER_NODE='0', PORT=str(free_port()))
    out = subprocess.run(['bash', 'tools/slurm_train.sh', 'part', 'job', str(cfg),
                          str(tmp_path / 'slurm'), '--skip-data-check'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert 'using the gloo backend' in out.stdout + out.stderr
    import glob
    log = open(glob.glob(str(tmp_path / 'slurm' / '*' / '*.log'))[0]).read()
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log
    env = dict(fake_slurm, PORT=str(free_port()))
    out = subprocess.run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir',
                          str(tmp_path / 'torchrun'), '--skip-data-check'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    from vllama_mm.engine import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    a, b = (torch.load(tmp_path / d / 'iter_2.pth', map_location='cpu',
                       weights_only=True)['state_dict'] for d in ('slurm', 'torchrun'))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_sync_bn_in_a_distributed_cpu_run_is_one_clear_error():
    from mmengine.config import Config

    from vllama_mm.engine.runner_utils import use_gloo_without_cuda
    from vllama_mm.engine.validate import ConfigError
    bn = dict(type='SyncBN', requires_grad=True)
    model = dict(decode_head=dict(norm_cfg=bn),
                 auxiliary_head=[dict(norm_cfg=dict(type='BN')), dict(norm_cfg=bn)])
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')),
                      model=model))
    with pytest.raises(ConfigError) as e:
        use_gloo_without_cuda(cfg)
    msg = str(e.value)
    assert 'model.decode_head.norm_cfg' in msg and 'model.auxiliary_head.1.norm_cfg' in msg
    assert 'model.decode_head.norm_cfg.type=BN model.auxiliary_head.1.norm_cfg.type=BN' in msg
    # the suggested --cfg-options really remove every SyncBN
    cfg.merge_from_dict({'model.decode_head.norm_cfg.type': 'BN',
                         'model.auxiliary_head.1.norm_cfg.type': 'BN'}, allow_list_keys=True)
    use_gloo_without_cuda(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
