"""Per-GPU memory of the large rows under FSDP2, estimated from small CPU measurements.

    python tools/analysis/fsdp_memory.py [--gpus 8]

How (the numbers in the FSDP configs' READMEs come from this script):

* Activations: the backbone/denoiser at the row's real width, token count and block type,
  but with 1 and 2 blocks and batch 2, runs one forward on the CPU in fp32; the bytes of the
  tensors autograd saves for backward are summed exactly (``saved_tensors_hooks``, each
  storage once, parameters excluded). The difference between 2 and 1 blocks is one block;
  the rest (embeddings, head) is fixed. Scaled linearly to the row's depth and per-GPU
  batch (activation memory is linear in both). Reported for fp32 compute; with
  ``mp_policy.param_dtype='bfloat16'`` most saved tensors take 2 bytes: about half.
* Model state, sharded by FSDP2 over ``--gpus``: fp32 parameters (4 B), fp32 gradients (4 B),
  AdamW moments (8 B) = 16 B per parameter / GPUs; plus the full EMA copy (4 B per parameter
  on every GPU) for the generation rows; plus the gathered parameters of the two blocks in
  flight (one computing, one prefetched).
* Not counted: the CUDA context and allocator slack (typically 1-3 GB), the MAE decoder's
  mmpretrain layers (counted as blocks of ours of the decoder's width: a close stand-in).
"""
import argparse
import os.path as osp
import sys
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from vllama_mm.models import VisionLLaMA, VisionLLaMAMAE  # noqa: E402
from vllama_mm.models.dit_llama import DIT_ARCHS, DiTLLaMA  # noqa: E402

GB = 1024 ** 3


def saved_bytes(model: nn.Module, run: Callable[[nn.Module], torch.Tensor]) -> int:
    """Bytes autograd saves for backward in ``run(model)`` (each storage once, no params)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(model)
    return sum(seen.values())


def per_block(build: Callable[[int], nn.Module], run: Callable[[nn.Module], torch.Tensor]):
    """(fixed bytes, bytes per block) at the measuring batch."""
    torch.manual_seed(0)
    one, two = (saved_bytes(build(n), run) for n in (1, 2))
    return one - (two - one), two - one


def vision(arch: dict, img: int, mae: bool = False) -> Callable[[int], nn.Module]:
    cls = VisionLLaMAMAE if mae else VisionLLaMA
    return lambda n: cls(arch=dict(arch, num_layers=n), img_size=img, patch_size=16)


def rows(gpus: int) -> List[Dict]:
    b = 2  # measuring batch
    l_arch = dict(VisionLLaMA.arch_zoo['l'])
    mae_arch = dict(VisionLLaMA.arch_zoo['mae-l'])
    dec_arch = dict(embed_dims=512, num_heads=16, feedforward_channels=2048)

    def img_run(size):
        return lambda m: m(torch.randn(b, 3, size, size))[-1].float().sum()

    d, depth, heads = DIT_ARCHS['xl']

    def dit_build(n):
        return DiTLLaMA(arch=dict(embed_dims=d, num_layers=n, num_heads=heads), patch_size=2,
                        in_channels=4, input_size=32, num_classes=1000, learn_sigma=True)

    def dit_run(m):
        return m(torch.randn(b, 4, 32, 32), torch.randint(0, 1000, (b,)),
                 torch.randint(0, 1000, (b,))).float().sum()

    specs = [
        ('VisionLLaMA-L 128 px (pre-train)', vision(l_arch, 128), img_run(128), 24, 256,
         VisionLLaMA(arch='l', img_size=128), [], False, 65 * 1024),
        ('VisionLLaMA-L 224 px (fine-tune)', vision(l_arch, 224), img_run(224), 24, 64,
         VisionLLaMA(arch='l', img_size=224), [], False, 197 * 1024),
        ('MAE VisionLLaMA-L pre-train (encoder, 25 % of 196 tokens)', vision(mae_arch, 224, True),
         lambda m: m(torch.randn(b, 3, 224, 224))[0].float().sum(), 24, 256,
         VisionLLaMAMAE(arch='mae-l'),
         [('decoder (8 blocks, 512 wide, 197 tokens)', vision(dec_arch, 224), img_run(224), 8)],
         False, 49 * 1024),
        ('MAE VisionLLaMA-L fine-tune 224 px', vision(mae_arch, 224), img_run(224), 24, 128,
         VisionLLaMA(arch='mae-l', img_size=224), [], False, 196 * 1024),
        ('DiT-LLaMA-XL/2 / SiT-LLaMA-XL/2 (256 latent tokens)', dit_build, dit_run, depth, 32,
         dit_build(depth), [], True, 256 * d),
    ]
    out = []
    for name, build, run, depth_, batch, full, extra, ema, width in specs:
        fixed, blk = per_block(build, run)
        act = (fixed + depth_ * blk) * batch / b
        # activation checkpointing of every block: its fp32 input [B, N, D] is kept, one
        # block's activations exist again while it is recomputed in backward
        act_cp = (fixed + blk) * batch / b + depth_ * batch * width * 4
        for _, xb, xr, xd in extra:
            xf, xblk = per_block(xb, xr)
            act += (xd * xblk) * batch / b  # decoder: blocks only (its embed/head are small)
        n_params = sum(p.numel() for p in full.parameters())
        n_block = max(sum(p.numel() for p in m.parameters()) for m in full.modules()
                      if type(m).__name__ in ('VisionLLaMABlock', 'DiTLLaMABlock'))
        state = 16 * n_params / gpus + (4 * n_params if ema else 0) + 2 * 4 * n_block
        out.append(dict(name=name, params=n_params, batch=batch, act_fp32=act, act_cp=act_cp,
                        state=state, total_fp32=act + state, total_bf16=act / 2 + state))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--gpus', type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    print(f'| row | params (M) | batch / GPU | activations fp32 (GB) | model state / GPU, '
          f'{args.gpus} GPUs (GB) | total fp32 (GB) | total bf16 compute (GB) | '
          'total fp32, every block checkpointed (GB) |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows(args.gpus):
        print(f"| {r['name']} | {r['params'] / 1e6:.1f} | {r['batch']} | {r['act_fp32'] / GB:.1f}"
              f" | {r['state'] / GB:.2f} | {r['total_fp32'] / GB:.1f} | {r['total_bf16'] / GB:.1f}"
              f" | {(r['act_cp'] + r['state']) / GB:.1f} |")


if __name__ == '__main__':
    main()
