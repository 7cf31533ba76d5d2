"""FID of an ADM-format sample file against a reference batch, Inception from a local file.

    python tools/generation/fid.py SAMPLES.npz REF.npz --inception inception-2015-12-05.pt

* SAMPLES.npz: ``arr_0`` uint8 [N, H, W, 3] (tools/generation/sample_ddp.py writes it).
* REF.npz: ADM's reference batch for ImageNet 256 (``VIRTUAL_imagenet256_labeled.npz``
  from openai/guided-diffusion's evaluations page), or any ``arr_0`` file; with
  ``--ref-stats`` its stored ``mu``/``sigma`` are used instead of recomputing them.
* ``--inception``: the TorchScript port of the TF FID Inception (2015-12-05) that
  StyleGAN2-ADA's metrics use (``inception-2015-12-05.pt``, NVlabs). It is called as
  ``net(uint8 images [B, 3, H, W], return_features=True)`` -> [B, 2048] pool features.
  No download happens here: give the path of a file you fetched once.

The paper's FIDs come from ADM's TensorFlow evaluator on the same ``.npz``; this tool
is the quick PyTorch check (close to, but not bit-identical with, the TF numbers).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='FID of an ADM .npz against a reference')
    p.add_argument('samples', help='.npz with arr_0 uint8 [N, H, W, 3]')
    p.add_argument('reference', help='.npz with arr_0 (and mu/sigma for --ref-stats)')
    p.add_argument('--inception', required=True,
                   help='local TorchScript FID Inception (inception-2015-12-05.pt)')
    p.add_argument('--ref-stats', action='store_true',
                   help="use the reference file's stored mu/sigma")
    p.add_argument('--batch-size', type=int, default=100)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


def load_images(path: str) -> np.ndarray:
    if not osp.isfile(path):
        raise FileNotFoundError(f'not found: {path}')
    with np.load(path) as f:
        if 'arr_0' not in f:
            raise ValueError(f'{path} has no arr_0 (keys: {list(f.keys())})')
        arr = f['arr_0']
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f'{path}: arr_0 must be uint8 [N, H, W, 3], got {arr.dtype} '
                         f'{arr.shape}')
    return arr


@torch.no_grad()
def features(net, images: np.ndarray, batch_size: int, device: str, desc: str) -> np.ndarray:
    from vllama_mm.generation.progress import progress
    out = []
    starts = range(0, len(images), batch_size)
    for s in progress(starts, desc=desc):
        x = torch.from_numpy(images[s:s + batch_size]).permute(0, 3, 1, 2).to(device)
        out.append(net(x, return_features=True).double().cpu().numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vllama_mm.generation.apis import feature_stats, frechet_distance
    try:
        if not osp.isfile(args.inception):
            raise FileNotFoundError(
                f'Inception file not found: {args.inception} (the TorchScript '
                'inception-2015-12-05.pt of StyleGAN2-ADA metrics; see docs/generation.md)')
        net = torch.jit.load(args.inception, map_location=args.device).eval()
        samples = load_images(args.samples)
        mu1, s1 = feature_stats(features(net, samples, args.batch_size, args.device,
                                         'samples'))
        if args.ref_stats:
            with np.load(args.reference) as f:
                if 'mu' not in f or 'sigma' not in f:
                    raise ValueError(f'{args.reference} has no mu/sigma: drop --ref-stats')
                mu2, s2 = f['mu'], f['sigma']
        else:
            ref = load_images(args.reference)
            mu2, s2 = feature_stats(features(net, ref, args.batch_size, args.device,
                                             'reference'))
        fid = frechet_distance(mu1, s1, mu2, s2)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'FID {fid:.4f} ({len(samples)} samples vs {args.reference})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
