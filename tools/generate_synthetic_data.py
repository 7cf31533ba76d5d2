"""Generate small synthetic datasets in the standard formats (no downloads needed).

    python tools/generate_synthetic_data.py imagenet data/synthetic_imagenet
    python tools/generate_synthetic_data.py ade20k   data/synthetic_ade20k
    python tools/generate_synthetic_data.py coco     data/synthetic_coco
"""
import argparse
import importlib
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

KINDS = ('imagenet', 'ade20k', 'coco')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kind', choices=KINDS, help='dataset format')
    parser.add_argument('out_dir', help='output folder (the config data_root)')
    parser.add_argument('--num-train', type=int, help='training samples (per class for imagenet)')
    parser.add_argument('--num-val', type=int, help='validation samples (per class for imagenet)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    module = importlib.import_module(f'vllama_mm.datasets.synthetic_{args.kind}')
    kwargs = dict(seed=args.seed)
    if args.num_train is not None:
        kwargs['num_train'] = args.num_train
    if args.num_val is not None:
        kwargs['num_val'] = args.num_val
    try:
        info = module.generate(args.out_dir, **kwargs)
    except (FileExistsError, ValueError, TypeError) as e:
        sys.exit(f'error: {e}')
    print(f'{args.kind}: {info}')


if __name__ == '__main__':
    main()
