"""Evaluate a checkpoint with any vllama_mm (or stock OpenMMLab) config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl]
        [--show-dir DIR] [--tta] [--allow-partial-weights] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]

The checkpoint is verified (zip CRC) and must fill every tensor of the model ("N of M
model tensors loaded"); see docs/reliability.md.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # repo checkout

from mmengine.config import DictAction  # noqa: E402

from vllama_mm.engine.runner_utils import (CLI_ERRORS, build_runner, check_test_loop,  # noqa: E402
                                           load_config, prepare_cfg, prepare_test_cfg,
                                           run_or_exit)
from vllama_mm.engine.checkpoint import check_finite_file  # noqa: E402
from vllama_mm.engine.validate import exit_with_error  # noqa: E402
from vllama_mm.engine.weights import check_checkpoint_fits  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model (MMPretrain/MMSeg/MMDet)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the predictions (or, with --out-item metrics, '
                        'the metrics) to this file (.pkl for predictions)')
    parser.add_argument('--out-item', choices=['pred', 'metrics'], default='pred',
                        help='what --out holds (default: the predictions)')
    parser.add_argument('--show-dir', help='draw the predictions into images in this '
                        'directory (the library\'s visualization hook)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation: the '
                        "config's tta_pipeline and tta_model")
    parser.add_argument('--allow-partial-weights', action='store_true',
                        help='evaluate even when the checkpoint leaves model tensors '
                        'missing (they are listed; the result is not the model\'s)')
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
    try:  # user errors (bad config, paths, options, weights) -> 'error: ...', exit 2
        cfg = load_config(args.config)  # syntax / custom_imports errors: one line
        check_test_loop(cfg, args.config)  # before anything is built or loaded
        cfg = prepare_cfg(cfg, args, mode='test')
        prepare_test_cfg(cfg, args)
        cfg.load_from = args.checkpoint
        runner = build_runner(cfg, mode='test')
        check_finite_file(args.checkpoint)  # NaN / inf weights of a diverged run: named
        check_checkpoint_fits(runner.model, args.checkpoint,
                              strict=not args.allow_partial_weights)
    except CLI_ERRORS as e:
        exit_with_error(e)
    metrics = run_or_exit(runner, 'test')
    if args.out and args.out_item == 'metrics':
        from mmengine.fileio import dump
        dump(metrics, args.out)


if __name__ == '__main__':
    main()
