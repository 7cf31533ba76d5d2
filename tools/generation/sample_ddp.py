"""Generate N samples as an ADM-format ``.npz`` (``arr_0``: uint8 [N, H, W, 3]) for FID-50K.

    torchrun --nproc_per_node 8 tools/generation/sample_ddp.py CONFIG CKPT \
        --num-samples 50000 --batch-size 64 --out-dir work_dirs/samples [--cfg-scale 1.0]
    python tools/generation/sample_ddp.py ...   # one process

Batch ``b`` (global index) uses labels and noise drawn from seed ``seed * 10**6 + b`` on
the CPU, so the result does not depend on the number of processes. Every finished batch
is written to ``OUT_DIR/shards/<b>.npz`` (atomically); a rerun skips them (resumable).
Process 0 then merges the first N samples into ``OUT_DIR/samples_<N>.npz``, the file
ADM's evaluator and tools/generation/fid.py read.
"""
import argparse
import pickle
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Distributed sampling to an ADM .npz')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--num-samples', type=int, default=50000)
    p.add_argument('--batch-size', type=int, default=64, help='samples per batch')
    p.add_argument('--out-dir', required=True)
    p.add_argument('--sampler', default=None)
    p.add_argument('--steps', type=int, default=None,
                   help="sampling steps as the references count them (config default): "
                        "DiT ddim N = DiT's ddimN spacing; SiT euler/heun N = N time "
                        "points, N - 1 steps; SiT sde N = N evaluations")
    p.add_argument('--cfg-scale', type=float, default=1.0)
    p.add_argument('--weights', choices=['ema', 'raw'], default='ema')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def _setup():
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = f'cuda:{local}'
    else:
        device = 'cpu'
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    return rank, world, device


def shard_path(out_dir: str, b: int) -> str:
    return osp.join(out_dir, 'shards', f'{b:06d}.npz')


def main(argv=None) -> int:
    args = parse_args(argv)
    from vllama_mm.generation.apis import load_generator, to_uint8
    from vllama_mm.generation.progress import progress
    rank, world, device = _setup()
    if args.num_samples <= 0 or args.batch_size <= 0:
        print('error: --num-samples and --batch-size must be positive', file=sys.stderr)
        return 1
    try:
        model, _ = load_generator(args.config, args.checkpoint, args.weights, device)
    except (ValueError, OSError, ImportError, SyntaxError, RuntimeError,
            pickle.UnpicklingError) as e:  # refused, truncated, damaged, non-finite files
        print(f'error: {" ".join(str(e).split())[:800]}', file=sys.stderr)
        return 1
    os.makedirs(osp.join(args.out_dir, 'shards'), exist_ok=True)
    num_batches = -(-args.num_samples // args.batch_size)
    mine = [b for b in range(rank, num_batches, world)
            if not osp.isfile(shard_path(args.out_dir, b))]
    if rank == 0:
        print(f'{num_batches} batches of {args.batch_size}; process 0 has {len(mine)} left')
    sampler = {}
    if args.sampler:
        sampler['type'] = args.sampler
    if args.steps:
        sampler['num_steps'] = args.steps
    n_cls = model.denoiser.num_classes
    for b in progress(mine, desc=f'rank {rank}', enable=rank == 0):
        gen = torch.Generator().manual_seed(args.seed * 10**6 + b)
        labels = torch.randint(0, n_cls, (args.batch_size,), generator=gen)
        images = model.sample(labels.to(device), cfg_scale=args.cfg_scale, generator=gen,
                              **sampler)
        path = shard_path(args.out_dir, b)
        tmp = path + f'.tmp{rank}.npz'
        np.savez(tmp, images=to_uint8(images), labels=labels.numpy())
        os.replace(tmp, path)
    if world > 1:
        dist.barrier()
    if rank == 0:
        parts = [np.load(shard_path(args.out_dir, b))['images'] for b in range(num_batches)]
        arr = np.concatenate(parts)[:args.num_samples]
        out = osp.join(args.out_dir, f'samples_{args.num_samples}.npz')
        np.savez(out, arr_0=arr)
        print(f'wrote {out}: {arr.shape}')
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
