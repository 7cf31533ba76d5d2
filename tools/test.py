"""Evaluate a checkpoint with any vllama_mm (or stock OpenMMLab) config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # repo checkout

from mmengine.config import Config, DictAction  # noqa: E402

from vllama_mm.engine.runner_utils import build_runner, prepare_cfg  # noqa: E402
from vllama_mm.engine.validate import USER_ERRORS, exit_with_error  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model (MMPretrain/MMSeg/MMDet)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the metrics to this json/pkl file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=8')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    try:  # user errors (bad config, paths, options) -> 'error: ...', exit 2, no traceback
        cfg = Config.fromfile(args.config)
        cfg = prepare_cfg(cfg, args, mode='test')
        cfg.load_from = args.checkpoint
        runner = build_runner(cfg)
    except USER_ERRORS as e:
        exit_with_error(e)
    metrics = runner.test()
    if args.out:
        from mmengine.fileio import dump
        dump(metrics, args.out)


if __name__ == '__main__':
    main()
