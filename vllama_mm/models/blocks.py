"""SwiGLU, layer scale, drop path, patch embedding and the pre-norm VisionLLaMA block.

Also the paper's ablation parts (its table 11), each a constructor option of both
backbones: the GELU MLP of ViT (``mlp_type='gelu'``), the authors' RMSNorm
(``norm_type='rmsnorm'``), absolute position embeddings (:class:`AbsPosEmbed`) and the
PEG of CPVT/Twins (:class:`PEG`).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .attention import RoPEAttention, window_key_mask, window_partition, window_unpartition
from .rope import Table


def swiglu_hidden(dim: int, ratio: float = 8 / 3, multiple_of: int = 256) -> int:
    """LLaMA hidden size: ``ceil(int(ratio * dim) / multiple_of) * multiple_of``.

    ``ratio=8/3`` gives the paper sizes (S 1024, B 2048, L 2816); ``ratio=32/3``
    (= 4 * 8/3) the released MAE weights (B 8192, L 11008).
    """
    return multiple_of * math.ceil(int(ratio * dim) / multiple_of)


class SwiGLU(nn.Module):
    """``w3(silu(gate) * up)`` with gate and up computed by one fused projection ``w12``.

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
        gate, up = self.w12(x).chunk(2, dim=-1)  # each [..., h]
        return self.w3(self.drop(F.silu(gate) * up))  # [..., d]


class GeluMLP(nn.Module):
    """The ViT MLP: ``fc2(gelu(fc1(x)))`` with biases (ablation 11a; hidden 4d)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, drop: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))  # [..., d]


class RMSNorm(nn.Module):
    """The authors' RMSNorm (ablation 11g): ``x / rms(x) * weight``, computed in float32.

    eps 1e-6 and a learnable weight (no bias), as in their DeiT code. Written out
    rather than ``torch.nn.RMSNorm`` for the float32 computation under autocast.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight.to(x.dtype)  # stays in x's dtype

    def extra_repr(self) -> str:
        return f'{self.weight.numel()}, eps={self.eps}'


MLP_TYPES = ('swiglu', 'gelu')
NORM_TYPES = ('ln', 'rmsnorm')
ABS_POS_TYPES = (None, 'learnable', 'sincos')


def check_choice(name: str, value, allowed: Tuple) -> None:
    """ValueError naming the option when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """LayerNorm(eps) for ``'ln'``; the authors' RMSNorm (eps 1e-6, always) for
    ``'rmsnorm'``."""
    check_choice('norm_type', norm_type, NORM_TYPES)
    return nn.LayerNorm(dim, eps=eps) if norm_type == 'ln' else RMSNorm(dim)


def mlp_hidden(mlp_type: str, dim: int, swiglu: int) -> int:
    """Hidden width: ``swiglu`` (the arch's SwiGLU size) or 4d for the GELU MLP."""
    check_choice('mlp_type', mlp_type, MLP_TYPES)
    return swiglu if mlp_type == 'swiglu' else 4 * dim


def rope_rotary_dim(rope_ratio: float, head_dim: int) -> int:
    """Channels per head that RoPE rotates: ``int(rope_ratio * head_dim)`` (the authors'
    ``rpe_ratio``), checked to keep the ``x x y y`` pairing (a multiple of 4)."""
    if isinstance(rope_ratio, bool) or not isinstance(rope_ratio, (int, float)) \
            or not 0 < rope_ratio <= 1:
        raise ValueError(f'rope_ratio must be in (0, 1] (use rope_type="none" for no '
                         f'RoPE), got {rope_ratio!r}')
    dim = int(rope_ratio * head_dim)
    if dim == 0 or dim % 4:
        raise ValueError(f'rope_ratio {rope_ratio} rotates int({rope_ratio} * {head_dim}) = '
                         f'{dim} channels per head; 2D RoPE needs a positive multiple of 4')
    return dim


def sincos_2d(dim: int, h: int, w: int) -> Tensor:
    """Fixed 2D sin-cos embedding ``[h*w, dim]`` (MAE's): the first half encodes x
    (column), the second y (row), each ``[sin(p*w_i), cos(p*w_i)]``,
    ``w_i = 10000^(-i/(dim/4))``."""
    if dim % 4:
        raise ValueError(f'2D sin-cos position embedding needs dims divisible by 4, got {dim}')
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing='ij')

    def one(pos: Tensor) -> Tensor:
        ang = pos.reshape(-1, 1) * omega  # [h*w, dim/4]
        return torch.cat([ang.sin(), ang.cos()], dim=1)

    return torch.cat([one(xs), one(ys)], dim=1).float()  # [h*w, dim]


class AbsPosEmbed(nn.Module):
    """Absolute position embedding added to tokens (ablations: the authors' ``use_abs``
    with ``lr_pe`` True/False on the plain model, learnable PE on the pyramid).

    ``'learnable'``: a parameter ``weight`` [1, P + h*w, C] (P prefix tokens, e.g. the
    class token), trunc-normal(0.02) init. ``'sincos'``: fixed 2D sin-cos for the grid
    (zeros for prefix tokens), a non-persistent buffer (derived data, not in the state
    dict). On another grid the grid part is resized bicubically (learnable) or
    recomputed (sin-cos).
    """

    def __init__(self, kind: str, dim: int, grid_hw: Tuple[int, int], num_prefix: int = 0):
        super().__init__()
        check_choice('abs_pos_embed', kind, ABS_POS_TYPES[1:])
        self.kind = kind
        self.grid_hw = tuple(int(g) for g in grid_hw)
        self.num_prefix = int(num_prefix)
        n = self.num_prefix + self.grid_hw[0] * self.grid_hw[1]
        if kind == 'learnable':
            self.weight = nn.Parameter(torch.zeros(1, n, dim))
            nn.init.trunc_normal_(self.weight, std=0.02)
        else:
            self.register_buffer('weight', self._sincos(dim, *self.grid_hw), persistent=False)

    def _sincos(self, dim: int, h: int, w: int) -> Tensor:
        return torch.cat([torch.zeros(self.num_prefix, dim), sincos_2d(dim, h, w)])[None]

    def table(self, hw: Tuple[int, int]) -> Tensor:
        """The embedding [1, P + h*w, C] for an h×w grid."""
        if tuple(hw) == self.grid_hw:
            return self.weight
        C = self.weight.shape[-1]
        if self.kind == 'sincos':
            return self._sincos(C, *hw).to(self.weight)
        prefix, grid = self.weight[:, :self.num_prefix], self.weight[:, self.num_prefix:]
        grid = grid.reshape(1, *self.grid_hw, C).permute(0, 3, 1, 2)  # [1, C, h0, w0]
        grid = F.interpolate(grid, size=tuple(hw), mode='bicubic', align_corners=False)
        return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """x: [B, P + h*w, C] -> x + embedding."""
        return x + self.table(hw)


class PEG(nn.Module):
    """Positional encoding generator (CPVT; Twins' PosCNN), ablation 11f on the pyramid:
    ``x + dwconv3x3(x)`` on the token map (depth-wise 3×3 conv with bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=True)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """x: [B, h*w, C] (row-major) -> [B, h*w, C]."""
        B, N, C = x.shape
        fmap = x.transpose(1, 2).reshape(B, C, *hw)  # [B, C, h, w]
        return x + self.proj(fmap).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel learnable scale (CaiT/DeiT3), initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability ``p``
    (and scale the kept ones by ``1/(1-p)``) while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f'p={self.p}'


class VisionLLaMABlock(BaseModule):
    """Pre-norm block: ``x += DropPath(LS(Attn(LN(x))))``; ``x += DropPath(LS(SwiGLU(LN(x))))``.

    Args:
        dim, num_heads: width and heads (head dim divisible by 4).
        ffn_hidden: MLP hidden size.
        mlp_type: ``'swiglu'`` (default) or ``'gelu'`` (the ViT MLP, ablation 11a).
        norm_type: ``'ln'`` (default, eps ``norm_eps``) or ``'rmsnorm'`` (ablation 11g).
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
                 sr_ratio: int = 1, sr_pad: bool = True, mlp_type: str = 'swiglu',
                 norm_type: str = 'ln', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.window_size = int(window_size)
        self.window_pad_mask = window_pad_mask
        self.ln1 = build_norm(norm_type, dim, norm_eps)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                  proj_drop=drop, sr_ratio=sr_ratio, norm_eps=norm_eps,
                                  sr_pad=sr_pad)
        self.ln2 = build_norm(norm_type, dim, norm_eps)
        check_choice('mlp_type', mlp_type, MLP_TYPES)
        if mlp_type == 'swiglu':
            self.ffn = SwiGLU(dim, ffn_hidden, bias=ffn_bias, drop=drop)
        else:  # the ViT MLP has biases
            self.ffn = GeluMLP(dim, ffn_hidden, drop=drop)
        if layer_scale_init > 0:
            self.ls1 = LayerScale(dim, layer_scale_init)
            self.ls2 = LayerScale(dim, layer_scale_init)
        else:
            self.ls1 = self.ls2 = nn.Identity()
        self.drop_path = DropPath(drop_path)

    def _attention(self, x: Tensor, hw: Optional[Tuple[int, int]], rope: Optional[Table],
                   rope_k: Optional[Table]) -> Tensor:
        if self.window_size <= 0:
            return self.attn(x, rope, rope_k, hw)
        ws = self.window_size
        windows, padded_hw = window_partition(x, hw, ws)  # [B*nW, ws*ws, C]
        mask = window_key_mask(hw, ws, x.shape[0], x.device) if self.window_pad_mask else None
        out = self.attn(windows, rope, attn_mask=mask)
        return window_unpartition(out, hw, padded_hw, ws)

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]] = None,
                rope: Optional[Table] = None, rope_k: Optional[Table] = None) -> Tensor:
        """x: [B, N, C]; ``hw`` the token grid (needed by windows and pooled keys)."""
        x = x + self.drop_path(self.ls1(self._attention(self.ln1(x), hw, rope, rope_k)))
        return x + self.drop_path(self.ls2(self.ffn(self.ln2(x))))


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
