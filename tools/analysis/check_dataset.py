"""Scan every file of a config's datasets and name the ones that cannot be trained on.

    python tools/analysis/check_dataset.py CONFIG [--mode train|test] [--cfg-options k=v ...]

Zero-byte or undecodable images, empty class folders, train/val class lists that differ,
COCO annotations missing fields, segmentation maps that are not single-channel, of
another size or with labels out of range (see vllama_mm/datasets/data_check.py).
tools/train.py runs the same checks on a few files per dataset before training.
Exit status 0: no problem found; 2: problems (listed on one line, each naming its file).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import Config, DictAction  # noqa: E402

from vllama_mm.datasets.data_check import check_data  # noqa: E402
from vllama_mm.engine.validate import (USER_ERRORS, check_cfg_options,  # noqa: E402
                                       check_data_paths, exit_with_error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--mode', choices=['train', 'test'], default='train',
                        help='the datasets of training (train + val) or of testing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_dataloader.dataset.data_root=X')
    args = parser.parse_args()
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            check_cfg_options(cfg, args.cfg_options)
            cfg.merge_from_dict(args.cfg_options)
        check_data_paths(cfg, args.mode)
        for line in check_data(cfg, args.mode, quick=False):
            print(f'ok  {line}')
    except USER_ERRORS as e:
        exit_with_error(e)
    print('no problem found')


if __name__ == '__main__':
    main()
