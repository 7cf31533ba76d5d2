"""SwiGLU, layer scale, drop path and the pre-norm VisionLLaMA block."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .attention import RoPEAttention, window_key_mask, window_partition, window_unpartition
from .rope import RopeTable


def swiglu_hidden(dim: int, ratio: float = 8 / 3, multiple_of: int = 256) -> int:
    """LLaMA hidden size: ``ceil(int(ratio * dim) / multiple_of) * multiple_of``.

    ``ratio=8/3`` gives the paper sizes (S 1024, B 2048, L 2816); ``ratio=32/3``
    (= 4 * 8/3) the released MAE weights (B 8192, L 11008).
    """
    return multiple_of * math.ceil(int(ratio * dim) / multiple_of)


class _SiLUGate(torch.autograd.Function):
    """``silu(gate) * up`` of the fused projection ``gu`` [..., 2h] (gate | up).

    Saves only ``gu`` (autograd would also keep ``silu(gate)``: a third less SwiGLU
    activation memory) and writes both halves of the gradient straight into one
    [..., 2h] buffer (autograd would build them apart and concatenate them).
    """

    @staticmethod
    def forward(ctx, gu: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(gu)
        gate, up = gu.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)  # [..., h]

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # noqa: D102
        gu, = ctx.saved_tensors
        gate, up = gu.chunk(2, dim=-1)
        grad = torch.empty_like(gu)
        d_gate, d_up = grad.chunk(2, dim=-1)  # views into the one buffer
        # no temporaries: every op writes into the buffer (the stage-1 maps are large
        # enough for these passes to be memory-bound)
        torch.ops.aten.silu.out(gate, out=d_up)
        d_up.mul_(g)  # d/d up = g * silu(gate)
        torch.mul(g, up, out=d_gate)
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)
        return grad


class _SwiGLUIn(torch.autograd.Function):
    """``silu(x Wg^T + bg) * (x Wu^T + bu)`` with ``W = [Wg; Wu]`` the fused ``w12``.

    Two GEMMs (gate and up) instead of one over [..., 2h]: every element-wise pass then
    reads and writes contiguous [M, h] tensors (writing into the halves of a [M, 2h]
    buffer is ~2x slower on CPU), and the backward computes the weight gradient
    straight into the two row blocks of one [2h, d] buffer. Saves x, gate and up (as
    autograd would: x for the weight gradient, gate | up for the gate).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # noqa
        h = weight.shape[0] // 2
        x2 = x.reshape(-1, x.shape[-1])  # [M, d]
        if bias is None:
            gate, up = torch.mm(x2, weight[:h].t()), torch.mm(x2, weight[h:].t())
        else:
            gate = torch.addmm(bias[:h], x2, weight[:h].t())
            up = torch.addmm(bias[h:], x2, weight[h:].t())
        ctx.save_for_backward(x2, weight, gate, up)
        ctx.has_bias, ctx.x_shape = bias is not None, x.shape
        return F.silu(gate).mul_(up).view(*x.shape[:-1], h)  # [..., h]

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D102
        x2, weight, gate, up = ctx.saved_tensors
        h = weight.shape[0] // 2
        g2 = g.reshape(-1, h)
        d_up = F.silu(gate).mul_(g2)  # [M, h]
        d_gate = g2 * up
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(d_gate, weight[:h]).addmm_(d_up, weight[h:])
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            torch.mm(d_gate.t(), x2, out=grad_w[:h])
            torch.mm(d_up.t(), x2, out=grad_w[h:])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = torch.cat([d_gate.sum(0), d_up.sum(0)])
        return grad_x, grad_w, grad_b


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (e.g. 'meta')
        return False


def swiglu_in(x: Tensor, w12: nn.Linear) -> Tensor:
    """``silu(gate) * up`` of the fused projection ``w12`` (rows gate | up): [..., h]."""
    fused = (not torch.compiler.is_compiling() and torch.is_grad_enabled()
             and (x.requires_grad or w12.weight.requires_grad)
             and x.dtype == w12.weight.dtype
             and not _autocast_enabled(x.device.type))
    if fused:
        return _SwiGLUIn.apply(x, w12.weight, w12.bias)
    return silu_gate(w12(x))  # inference, torch.compile, autocast: the plain route


def silu_gate(gu: Tensor) -> Tensor:
    """``silu(gate) * up`` for ``gu = cat([gate, up], -1)`` [..., 2h] -> [..., h]."""
    if torch.compiler.is_compiling():
        gate, up = gu.chunk(2, dim=-1)
        return F.silu(gate) * up  # torch.compile fuses this itself
    if not (torch.is_grad_enabled() and gu.requires_grad):
        gate, up = gu.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)  # inference: one buffer
    return _SiLUGate.apply(gu)


class SwiGLU(nn.Module):
    """``w3(silu(gate) * up)`` with gate and up computed by one fused GEMM ``w12``.

    ``w12.weight`` is [2h, d]: rows ``0..h-1`` the gate, ``h..2h-1`` the up projection
    (the released MAE layout); ``w3`` [d, h] projects down.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = False, drop: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(self.drop(swiglu_in(x, self.w12)))  # [..., h] -> [..., d]


class _ScaledResidual(torch.autograd.Function):
    """``x + y * scale`` (``scale`` broadcast over y, e.g. [C] or [B, 1, C]) in one pass,
    with a backward of three passes (``g``, ``g * scale``, ``sum(g * y)``); autograd's
    ``addcmul`` backward adds two more (it also multiplies by its ``value``)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, scale: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(y, scale)
        return torch.addcmul(x, y, scale)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D102
        y, scale = ctx.saved_tensors
        grad_y = (g * scale).to(y.dtype) if ctx.needs_input_grad[1] else None
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = (g * y).sum_to_size(scale.shape).to(scale.dtype)
        return g, grad_y, grad_scale


def scaled_residual(x: Tensor, y: Tensor, scale: Tensor) -> Tensor:
    """``x + y * scale`` (layer scale, drop-path keep mask) as one fused multiply-add."""
    if torch.compiler.is_compiling():
        return x + y * scale  # torch.compile fuses this itself
    if torch.is_grad_enabled() and x.dtype == y.dtype == scale.dtype and (
            x.requires_grad or y.requires_grad or scale.requires_grad):
        return _ScaledResidual.apply(x, y, scale)
    return torch.addcmul(x, y, scale)


class LayerScale(nn.Module):
    """Per-channel learnable scale (CaiT/DeiT3), initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop whole residual branches per sample."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f'p={self.p}'


class VisionLLaMABlock(BaseModule):
    """Pre-norm block: ``x += DropPath(LS(Attn(LN(x))))``; ``x += DropPath(LS(SwiGLU(LN(x))))``.

    Args:
        dim, num_heads: width and heads (head dim divisible by 4).
        ffn_hidden: SwiGLU hidden size.
        qkv_bias, ffn_bias: biases of the attention projections / SwiGLU.
        layer_scale_init: initial layer-scale value; 0 disables layer scale.
        drop_path: stochastic-depth rate on both branches.
        norm_eps: LayerNorm eps.
        window_size: > 0 runs attention inside non-overlapping windows (ViTDet windows,
            the pyramid's LSA); the RoPE table passed in is then window-local.
        window_pad_mask: with windows on a grid that is not a multiple of the window,
            mask the zero-padded keys (default) or let them take part unmasked (the
            official pyramid LSA and ViTDet behaviour).
        sr_ratio: > 1 gives pooled keys/values (the pyramid's GSA).
        sr_pad: pad the map to a multiple of ``sr_ratio`` before pooling (see
            :class:`RoPEAttention`).
    """

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, qkv_bias: bool = True,
                 ffn_bias: bool = False, layer_scale_init: float = 0.0,
                 drop_path: float = 0.0, attn_drop: float = 0.0, drop: float = 0.0,
                 norm_eps: float = 1e-6, window_size: int = 0, window_pad_mask: bool = True,
                 sr_ratio: int = 1, sr_pad: bool = True, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.window_size = int(window_size)
        self.window_pad_mask = window_pad_mask
        self.ln1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                  proj_drop=drop, sr_ratio=sr_ratio, norm_eps=norm_eps,
                                  sr_pad=sr_pad)
        self.ln2 = nn.LayerNorm(dim, eps=norm_eps)
        self.ffn = SwiGLU(dim, ffn_hidden, bias=ffn_bias, drop=drop)
        if layer_scale_init > 0:
            self.ls1 = LayerScale(dim, layer_scale_init)
            self.ls2 = LayerScale(dim, layer_scale_init)
        else:
            self.ls1 = self.ls2 = nn.Identity()
        self.drop_path = DropPath(drop_path)

    def _attention(self, x: Tensor, hw: Optional[Tuple[int, int]], rope: Optional[RopeTable],
                   rope_k: Optional[RopeTable]) -> Tensor:
        if self.window_size <= 0:
            return self.attn(x, rope, rope_k, hw)
        ws = self.window_size
        windows, padded_hw = window_partition(x, hw, ws)  # [B*nW, ws*ws, C]
        mask = window_key_mask(hw, ws, x.shape[0], x.device) if self.window_pad_mask else None
        out = self.attn(windows, rope, attn_mask=mask)
        return window_unpartition(out, hw, padded_hw, ws)

    def _residual(self, x: Tensor, y: Tensor, ls: nn.Module) -> Tensor:
        """``x + DropPath(LS(y))`` as one fused multiply-add ``x + y * scale``.

        ``scale`` is the layer-scale weight [C], times (training with drop path) the
        per-sample keep mask / keep probability [B, 1, 1]; the same random draw as
        :func:`drop_path`, without the two extra passes over [B, N, C].
        """
        scale = ls.weight if isinstance(ls, LayerScale) else None
        p = self.drop_path.p
        if self.drop_path.training and p > 0:
            keep = 1.0 - p
            mask = y.new_empty((y.shape[0],) + (1,) * (y.dim() - 1)).bernoulli_(keep)
            mask = mask.div_(keep)
            scale = mask if scale is None else mask * scale
        if scale is None:
            return x + y
        return scaled_residual(x, y, scale)

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]] = None,
                rope: Optional[RopeTable] = None,
                rope_k: Optional[RopeTable] = None) -> Tensor:
        """x: [B, N, C]; ``hw`` the token grid (needed by windows and pooled keys)."""
        x = self._residual(x, self._attention(self.ln1(x), hw, rope, rope_k), self.ls1)
        return self._residual(x, self.ffn(self.ln2(x)), self.ls2)


class PatchEmbed(nn.Module):
    """Conv(k=s=patch) patch embedding with optional LayerNorm: [B, C, H, W] -> [B, N, D].

    Inputs whose sides are not multiples of ``patch_size`` are zero padded at the
    bottom/right first (mmpretrain's ``AdaptivePadding(padding='corner')``). Returns the
    tokens (row-major) and the token grid ``(h, w)``.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 norm: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        self.in_channels = in_channels
        self.patch_size = int(patch_size)
        self.projection = nn.Conv2d(in_channels, embed_dims, self.patch_size, self.patch_size)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if norm else None

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        if not isinstance(x, Tensor):
            raise TypeError(f'expected a torch.Tensor [B, {self.in_channels}, H, W], '
                            f'got {type(x).__name__}')
        if not x.is_floating_point():
            raise TypeError(f'expected a floating-point (normalised) image tensor, got {x.dtype}')
        if x.dim() == 4 and 0 in x.shape[2:]:
            raise ValueError(f'empty image: input shape {tuple(x.shape)}')
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'expected input [B, {self.in_channels}, H, W], '
                             f'got shape {tuple(x.shape)}')
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.projection(x)  # [B, D, h, w]
        # plain ints (not traced sizes under torch.jit.trace): the RoPE cache keys on them
        hw = (int(x.shape[2]), int(x.shape[3]))
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        if self.norm is not None:
            x = self.norm(x)
        return x, hw
