"""Export the backbone of a config to ONNX and check onnxruntime against PyTorch.

Usage::

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] \
        [--shape 224 224 --shape 288 320] [--out-dir work_dirs/onnx] [--atol 1e-4]

One ONNX file per ``--shape`` (default: the config's input size and 1.25x it): the RoPE
tables (and the AS2DRoPE scale) depend on the token grid, and are exported as constants
of the traced graph, so each file serves one input size. Every file is run by
onnxruntime on a random input and compared with the PyTorch backbone (max abs error
<= ``--atol``, else exit 1). ``CHECKPOINT``: a ``.pth`` of the whole model (its
``backbone.*`` entries are used) or of the backbone alone. Needs ``onnx`` and
``onnxruntime``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import get_flops  # noqa: E402  (config loading and backbone building)


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load ``path`` (mmengine checkpoint of the full model or of the backbone) strictly."""
    from vllama_mm.engine.checkpoint import allow_mmengine_checkpoints, verify_checkpoint
    verify_checkpoint(path)  # zip CRC: truncated or corrupted files fail here, named
    allow_mmengine_checkpoints()  # safe loading: tensors + mmengine's own checkpoint classes
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{path}: expected a state dict (or a dict with "state_dict")')
    from vllama_mm.engine.checkpoint import check_finite_weights
    check_finite_weights(state, f'checkpoint {path!r}')
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    model.load_state_dict(state, strict=True)


def export(model: nn.Module, size: Tuple[int, int], path: str, opset: int = 17) -> List[str]:
    """Write ``model`` on a [1, 3, H, W] input to ``path``; returns the output names."""
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = model(x)  # fills the RoPE tables for this grid
    names = [f'out{i}' for i in range(len(outs))]
    torch.onnx.export(model, (x, ), path, input_names=['input'], output_names=names,
                      opset_version=opset, dynamo=False)
    return names


def check(model: nn.Module, size: Tuple[int, int], path: str, atol: float) -> float:
    """Max abs difference between onnxruntime and PyTorch outputs on a random input."""
    import onnxruntime as ort
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ref = model(x)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = sess.run(None, {'input': x.numpy()})
    if len(got) != len(ref):
        raise RuntimeError(f'{path}: {len(got)} outputs, PyTorch gives {len(ref)}')
    err = max(float((torch.from_numpy(g) - r).abs().max()) for g, r in zip(got, ref))
    return err


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None)
    p.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                   help='input size; repeat for several (default: the config size, 1.25x)')
    p.add_argument('--out-dir', default='work_dirs/onnx')
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--atol', type=float, default=1e-4)
    args = p.parse_args(argv)
    cfg = get_flops.load_config(args.config)
    model = get_flops.build_backbone(cfg)
    if args.checkpoint:
        import pickle
        try:  # refused / truncated / damaged / non-finite files: one line, no traceback
            load_backbone_weights(model, args.checkpoint)
        except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as e:
            print(f'error: {args.checkpoint}: {" ".join(str(e).split())[:800]}',
                  file=sys.stderr)
            return 2
    elif hasattr(model, 'init_weights'):
        model.init_weights()
    model.eval()
    h, w = get_flops.input_size(cfg)
    sizes = [tuple(s) for s in args.shape] if args.shape else \
        [(h, w), (int(h * 1.25), int(w * 1.25))]
    os.makedirs(args.out_dir, exist_ok=True)
    failed = 0
    for size in sizes:
        path = osp.join(args.out_dir, f'{get_flops.config_name(args.config)}_{size[0]}x{size[1]}'
                        '.onnx')
        export(model, size, path, args.opset)
        err = check(model, size, path, args.atol)
        ok = err <= args.atol
        failed += not ok
        print(f'{path}: max |onnxruntime - pytorch| = {err:.2e} '
              f'({"ok" if ok else f"over --atol {args.atol}"})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
