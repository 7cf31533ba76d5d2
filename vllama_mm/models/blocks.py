"""SwiGLU, layer scale, drop path, patch embedding and the pre-norm VisionLLaMA block.

The paper's ablation alternatives (GELU MLP, RMSNorm, absolute PE, PEG) live in
:mod:`.ablations`.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .ablations import MLP_TYPES, GeluMLP, build_norm, check_choice
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


DROP_PATH_SCHEDULES = ('linear', 'uniform')
DROP_PATH_BRANCHES = ('both', 'attn')


def drop_path_rates(rate: float, num_blocks: int, schedule: str = 'linear') -> List[float]:
    """Per-block stochastic-depth rates.

    ``'linear'``: ``rate * i / (n - 1)``, rising from 0 in the first block to ``rate`` in
    the last (timm/mmpretrain ViT, Twins, ViTDet). ``'uniform'``: ``rate`` in every block
    (DeiT III's ``stochastic_depth_decay=False``, the authors' plain DeiT-code models).
    """
    check_choice('drop_path_schedule', schedule, DROP_PATH_SCHEDULES)
    if schedule == 'uniform':
        return [float(rate)] * num_blocks
    return [rate * i / max(1, num_blocks - 1) for i in range(num_blocks)]


class VisionLLaMABlock(BaseModule):
    """Pre-norm block: ``x += DropPath(LS(Attn(LN(x))))``; ``x += DropPath(LS(SwiGLU(LN(x))))``.

    Args:
        dim, num_heads: width and heads (head dim divisible by 4).
        ffn_hidden: MLP hidden size.
        mlp_type: ``'swiglu'`` (default) or ``'gelu'`` (the ViT MLP, ablation 11a).
        norm_type: ``'ln'`` (default, eps ``norm_eps``) or ``'rmsnorm'`` (ablation 11g).
        qkv_bias, ffn_bias: biases of the attention projections / SwiGLU.
        layer_scale_init: initial layer-scale value; 0 disables layer scale.
        drop_path: stochastic-depth rate.
        drop_path_branches: ``'both'`` (default): drop path on the attention and the MLP
            residual branch; ``'attn'``: attention branch only (the authors' mmpretrain
            MAE-layout block, whose LLaMA MLP has no drop path).
        drop_path_per_window: with ``window_size > 0``, sample the attention branch's
            drop path per window instead of per image (the authors' ViTDet backbone
            applies it to the windowed tensor [B*nW, ws*ws, C]).
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
                 norm_type: str = 'ln', drop_path_branches: str = 'both',
                 drop_path_per_window: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        check_choice('drop_path_branches', drop_path_branches, DROP_PATH_BRANCHES)
        if not isinstance(drop_path_per_window, bool):
            raise ValueError(f'drop_path_per_window must be True or False, '
                             f'got {drop_path_per_window!r}')
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
        self.drop_path = DropPath(drop_path)  # attention branch
        self.drop_path_ffn = DropPath(drop_path if drop_path_branches == 'both' else 0.0)
        self.drop_path_per_window = drop_path_per_window and self.window_size > 0

    def _attention(self, x: Tensor, hw: Optional[Tuple[int, int]], rope: Optional[Table],
                   rope_k: Optional[Table]) -> Tensor:
        """Attention branch after layer scale and drop path: [B, N, C]."""
        if self.window_size <= 0:
            return self.drop_path(self.ls1(self.attn(x, rope, rope_k, hw)))
        ws = self.window_size
        windows, padded_hw = window_partition(x, hw, ws)  # [B*nW, ws*ws, C]
        mask = window_key_mask(hw, ws, x.shape[0], x.device) if self.window_pad_mask else None
        out = self.ls1(self.attn(windows, rope, attn_mask=mask))  # [B*nW, ws*ws, C]
        if self.drop_path_per_window:  # one keep/drop draw per window
            return window_unpartition(self.drop_path(out), hw, padded_hw, ws)
        return self.drop_path(window_unpartition(out, hw, padded_hw, ws))

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]] = None,
                rope: Optional[Table] = None, rope_k: Optional[Table] = None) -> Tensor:
        """x: [B, N, C]; ``hw`` the token grid (needed by windows and pooled keys)."""
        x = x + self._attention(self.ln1(x), hw, rope, rope_k)
        return x + self.drop_path_ffn(self.ls2(self.ffn(self.ln2(x))))


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
