"""Train any vllama_mm (or stock OpenMMLab) config with the library named by its default_scope.

    python tools/train.py CONFIG [--work-dir DIR] [--amp | --fp32] [--resume [CKPT]]
        [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [args]        # torchrun, --launcher pytorch
    bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR [args]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # repo checkout

from mmengine.config import DictAction  # noqa: E402

from vllama_mm.engine.runner_utils import (CLI_ERRORS, build_runner, load_config,  # noqa: E402
                                           prepare_cfg, run_or_exit)
from vllama_mm.engine.validate import exit_with_error  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (MMPretrain/MMSeg/MMDet)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the '
                        'work dir when no path is given')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--amp', action='store_true',
                           help='fp16 automatic mixed precision (needs a GPU)')
    precision.add_argument('--fp32', action='store_true',
                           help="train an AMP config in full precision (e.g. on a CPU): "
                           'AmpOptimWrapper -> OptimWrapper without its AMP-only keys')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='skip the quick dataset check before training (the full '
                        'scan: tools/analysis/check_dataset.py)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_dataloader.batch_size=8')
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
        cfg = load_config(args.config)  # syntax / custom_imports errors: one line
        cfg = prepare_cfg(cfg, args, mode='train')
        runner = build_runner(cfg)
    except CLI_ERRORS as e:
        exit_with_error(e)
    run_or_exit(runner, 'train')  # an error: one line here, the traceback in the log


if __name__ == '__main__':
    main()
