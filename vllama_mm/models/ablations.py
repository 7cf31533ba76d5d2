"""The paper's ablation parts (its table 11), each a constructor option of both
backbones: the GELU MLP of ViT (``mlp_type='gelu'``), the authors' RMSNorm
(``norm_type='rmsnorm'``), partial / per-head RoPE widths (``rope_ratio``), absolute
position embeddings (:class:`AbsPosEmbed`) and the PEG of CPVT/Twins (:class:`PEG`).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import check_rope_width


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
    check_rope_width(dim, f'rope_ratio {rope_ratio} rotates int({rope_ratio} * {head_dim}) =')
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
