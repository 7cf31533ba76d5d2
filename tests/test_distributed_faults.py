"""Distributed faults (issue 14 item 5), gloo on CPU, two ranks, a few seconds each.

* a frozen rank (SIGSTOP): the other rank's collective fails after the configured
  ``env_cfg.dist_cfg.timeout`` instead of waiting forever;
* a killed torchrun agent: the ranks exit (``exit_with_launcher``) instead of running
  on as orphans.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _dist import free_port, gloo_only

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

RANK = textwrap.dedent('''
    import os, sys, time
    import torch
    import torch.distributed as dist
    from mmengine.config import Config
    from vllama_mm.engine.runner_utils import _init_cpu_process_group, exit_with_launcher
    if os.environ.get('ARM', '1') == '1':
        exit_with_launcher()
    cfg = Config(dict(launcher='pytorch',
                      env_cfg=dict(dist_cfg=dict(backend='gloo', timeout=int(sys.argv[1])))))
    _init_cpu_process_group(cfg)
    with open(os.path.join(sys.argv[2], f'rank{dist.get_rank()}'), 'w') as f:
        f.write(str(os.getpid()))
    t = torch.ones(1)
    while True:
        dist.all_reduce(t)
        time.sleep(0.05)
''')

pytestmark = gloo_only


def _env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1',
                PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]), **extra)


def _wait_for(paths, procs, seconds: float = 120) -> None:
    end = time.time() + seconds
    while not all(osp.exists(p) for p in paths):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(p.communicate()[1][-3000:])
        assert time.time() < end, 'ranks did not start'
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_a_stopped_rank_ends_the_job_after_the_timeout(tmp_path):
    script = tmp_path / 'rank.py'
    script.write_text(RANK)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(script), '3', str(tmp_path)], cwd=REPO,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE='2',
                                       MASTER_PORT=port, ARM='0'),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        _wait_for([tmp_path / 'rank0', tmp_path / 'rank1'], procs)
        os.kill(procs[1].pid, signal.SIGSTOP)  # frozen: alive, never answers
        t0 = time.time()
        _, err = procs[0].communicate(timeout=120)
        waited = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode != 0
    assert 'timed out' in err.lower() or 'timeout' in err.lower(), err[-2000:]
    print(f'\n[dist] rank 0 gave up {waited:.1f} s after rank 1 froze (timeout 3 s)')


@pytest.mark.parametrize('armed', [True, False])
def test_ranks_exit_when_the_torchrun_agent_is_killed(tmp_path, armed):
    script = tmp_path / 'rank.py'
    script.write_text(RANK)
    agent = subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={free_port()}', str(script), '600', str(tmp_path)], cwd=REPO,
        env=_env(ARM='1' if armed else '0'), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids = []
    try:
        _wait_for([tmp_path / 'rank0', tmp_path / 'rank1'], [agent])
        pids = [int((tmp_path / f'rank{r}').read_text()) for r in range(2)]
        agent.kill()  # SIGKILL: the agent cannot pass anything on to its children
        agent.wait()
        end = time.time() + (30 if armed else 3)
        while time.time() < end and any(_alive(p) for p in pids):
            time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
        if armed:
            assert not alive, f'ranks {alive} kept running after the launcher died'
        else:  # the fault without the fix: orphans
            assert alive == pids
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
