"""Cache the VAE posteriors of a class-folder dataset once (the authors encode every
image at every step; training from the cache skips the VAE encoder entirely).

    python tools/generation/extract_latents.py CONFIG --data-root data/imagenet/train \
        --out-dir data/imagenet_latents_256 [--batch-size 64]

Uses the VAE of CONFIG (``model.vae``) and its image size (``image_size`` of the train
dataset, default 256). Writes ``moments.npy`` float16 [N, 2, 2C, h, w] (the image and its
horizontal flip; posterior mean | log variance), ``labels.npy`` [N], ``classes.txt`` and,
when finished, ``complete``. Resumable: ``progress.txt`` counts the images done and a
rerun continues from there. Train with a ``*-latents-*`` config (CachedLatents).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Cache VAE latents of an image folder')
    p.add_argument('config')
    p.add_argument('--data-root', required=True, help='<root>/<class>/<image> folder')
    p.add_argument('--out-dir', required=True)
    p.add_argument('--image-size', type=int, default=None,
                   help='default: the config train dataset image_size (or 256)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--num-workers', type=int, default=4)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


class _Both(torch.utils.data.Dataset):
    """(image, flipped image) pairs of a ClassImageFolder, no random flip."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        x = self.folder[i]['inputs']
        return torch.stack([x, x.flip(-1)]), self.folder.items[i][1]


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config

    from vllama_mm.generation.datasets import ClassImageFolder
    from vllama_mm.generation.progress import progress
    from vllama_mm.generation.vae import LatentCodec
    try:
        cfg = Config.fromfile(args.config)
        size = args.image_size or cfg.get('train_dataloader', {}).get(
            'dataset', {}).get('image_size', 256)
        folder = ClassImageFolder(args.data_root, image_size=size, flip=False)
        codec = LatentCodec(**cfg.model.get('vae', dict(kind='identity'))).to(args.device)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    n = len(folder)
    c, h, w = codec.latent_shape((size, size))
    os.makedirs(args.out_dir, exist_ok=True)
    done = osp.join(args.out_dir, 'complete')
    if osp.exists(done):
        os.remove(done)  # rewritten only when this run finishes
    mpath = osp.join(args.out_dir, 'moments.npy')
    ppath = osp.join(args.out_dir, 'progress.txt')
    shape = (n, 2, 2 * c, h, w)
    start = int(open(ppath).read()) if osp.isfile(ppath) and osp.isfile(mpath) else 0
    if start:
        moments = np.load(mpath, mmap_mode='r+')
        if moments.shape != shape:
            print(f'error: {mpath} has shape {moments.shape}, expected {shape}: another '
                  'dataset or VAE; use a new --out-dir', file=sys.stderr)
            return 1
        print(f'resuming at {start}/{n}')
    else:
        moments = np.lib.format.open_memmap(mpath, mode='w+', dtype=np.float16, shape=shape)
    labels = np.array([label for _, label in folder.items], dtype=np.int64)
    np.save(osp.join(args.out_dir, 'labels.npy'), labels)
    with open(osp.join(args.out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(folder.classes) + '\n')
    subset = torch.utils.data.Subset(_Both(folder), range(start, n))
    loader = torch.utils.data.DataLoader(subset, batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.num_workers)
    pos = start
    for pairs, _ in progress(loader, desc='encode'):
        b = pairs.shape[0]
        m = codec.moments(pairs.flatten(0, 1).to(args.device))  # [2b, 2C, h, w]
        moments[pos:pos + b] = m.view(b, 2, 2 * c, h, w).cpu().numpy().astype(np.float16)
        pos += b
        moments.flush()
        with open(ppath + '.tmp', 'w') as f:
            f.write(str(pos))
        os.replace(ppath + '.tmp', ppath)
    open(done, 'w').close()
    print(f'wrote {mpath}: {shape} float16')
    return 0


if __name__ == '__main__':
    sys.exit(main())
