"""One attention for every VisionLLaMA variant: global, windowed, or with pooled keys.

All of them run :func:`attend` (``softmax(q k^T / sqrt(Hc)) v``) with 2D RoPE applied to
q and k.
Windowing (ViTDet windows, the pyramid's LSA) is a token re-layout done by
:func:`window_partition` around the same attention; pooled keys/values (the
pyramid's GSA) are built inside :class:`RoPEAttention` when ``sr_ratio > 1``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import Table, apply_rope, check_rope_width


def check_heads(dim: int, num_heads: int) -> int:
    """Head dim for ``dim``/``num_heads``, with errors that name the problem."""
    for name, v in (('embed dims', dim), ('num_heads', num_heads)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f'{name} must be a positive int, got {v!r}')
    if dim % num_heads != 0:
        raise ValueError(f'embed dims {dim} is not divisible by num_heads {num_heads}')
    return check_rope_width(dim // num_heads, f'embed dims {dim} / {num_heads} heads = head dim')


def attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None,
           dropout_p: float = 0.0) -> Tensor:
    """``softmax(q k^T / sqrt(Hc)) v``: q [B, h, N, Hc], k/v [B, h, Nk, Hc] -> [B, h, N, Hc].

    ``attn_mask``: bool, True where a key may be attended. One call of
    ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA, flash
    on CPU), the kernel the peer models (timm / mmpretrain ViT, Twins) run as well.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


class RoPEAttention(nn.Module):
    """Multi-head self-attention with 2D RoPE on queries and keys.

    Args:
        dim: channels.
        num_heads: heads; ``dim / num_heads`` must be divisible by 4.
        qkv_bias: bias of the q/k/v projections.
        proj_bias: bias of the output projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
        sr_ratio: > 1 makes keys/values come from a ``Conv(k=s=sr) + LN`` sub-sampled
            map (the pyramid's GSA); then ``forward`` needs ``hw`` and a key table.
        norm_eps: eps of the sub-sampling LayerNorm.
        sr_pad: with pooled keys on a grid that is not a multiple of ``sr_ratio``, zero
            pad the map bottom/right to a multiple before the conv, giving a
            ``ceil(H/sr) x ceil(W/sr)`` key grid (default; also works when H or W < sr).
            ``False`` lets the conv floor (``floor(H/sr) x floor(W/sr)``, trailing rows and
            columns unseen by keys), as the official pyramid code does (the pyramid's
            ``gsa_pool='floor'``); not a parameter.

    Parameters: ``qkv`` [3C, C] (rows q|k|v, head-major) when ``sr_ratio == 1``;
    otherwise ``q`` [C, C], ``kv`` [2C, C] (rows k|v), ``sr`` and ``norm``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 sr_ratio: int = 1, norm_eps: float = 1e-5, sr_pad: bool = True):
        super().__init__()
        self.head_dim = check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.sr_ratio = int(sr_ratio)
        self.sr_pad = bool(sr_pad)
        if self.sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        if self.sr_ratio == 1:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.sr = nn.Conv2d(dim, dim, kernel_size=self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _subsample(self, x: Tensor, H: int, W: int) -> Tensor:
        """The ``sr`` conv (k = s = sr) + flatten on the token grid: [B, H*W, C] -> [B, Nk, C]
        (Nk = ceil or floor of H/sr x W/sr, see ``sr_pad``)."""
        B, _, C = x.shape
        sr = self.sr_ratio
        x_map = x.transpose(1, 2).reshape(B, C, H, W)
        if self.sr_pad:
            x_map = F.pad(x_map, (0, (-W) % sr, 0, (-H) % sr))  # bottom/right zeros
        elif H < sr or W < sr:
            raise ValueError(f'token grid {H}x{W} is smaller than sr_ratio {sr}; '
                             'use sr_pad=True to pad it before sub-sampling')
        return self.sr(x_map).flatten(2).transpose(1, 2)

    def forward(self, x: Tensor, rope_q: Optional[Table] = None,
                rope_k: Optional[Table] = None, hw: Optional[Tuple[int, int]] = None,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        """x: [B, N, C] -> [B, N, C].

        ``rope_q`` rotates queries and (when ``rope_k`` is None) keys; ``rope_k`` rotates
        pooled keys. ``attn_mask``: bool, True where a key may be attended,
        broadcastable to [B, heads, N, N_k].
        """
        B, N, C = x.shape
        h, hc = self.num_heads, self.head_dim
        if self.sr_ratio == 1:
            qkv = self.qkv(x).view(B, N, 3, h, hc)  # rows q|k|v, head-major
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, N, Hc]
        else:
            if hw is None or rope_q is not None and rope_k is None:
                raise ValueError('pooled-key attention needs hw and a key RoPE table')
            q = self.q(x).view(B, N, h, hc).transpose(1, 2)  # [B, h, N, Hc]
            pooled = self.norm(self._subsample(x, *hw))  # [B, Nk, C]
            kv = self.kv(pooled).view(B, -1, 2, h, hc)  # rows k|v
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, Nk, Hc]
        q = apply_rope(q, rope_q)
        k = apply_rope(k, rope_q if rope_k is None else rope_k)
        x = attend(q, k, v, attn_mask, self.attn_drop if self.training else 0.0)  # [B, h, N, Hc]
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


# ----------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------
def window_partition(x: Tensor, hw: Tuple[int, int], window_size: int
                     ) -> Tuple[Tensor, Tuple[int, int]]:
    """[B, H*W, C] -> [B*nW, ws*ws, C] windows (zero padded to multiples of ws).

    Windows are ordered batch-major, then row-major over the padded grid; returns the
    padded grid ``(Hp, Wp)``.
    """
    B, _, C = x.shape
    H, W = hw
    ws = window_size
    x = x.view(B, H, W, C)
    pad_h, pad_w = (-H) % ws, (-W) % ws
    # compiled: always pad (a no-op pad when it fits), so one graph serves every size
    if torch.compiler.is_compiling() or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).transpose(2, 3)
    return x.reshape(-1, ws * ws, C), (Hp, Wp)


def window_unpartition(windows: Tensor, hw: Tuple[int, int], padded_hw: Tuple[int, int],
                       window_size: int) -> Tensor:
    """Inverse of :func:`window_partition`: [B*nW, ws*ws, C] -> [B, H*W, C]."""
    H, W = hw
    Hp, Wp = padded_hw
    ws = window_size
    C = windows.shape[-1]
    x = windows.view(-1, Hp // ws, Wp // ws, ws, ws, C).transpose(2, 3)
    x = x.reshape(-1, Hp, Wp, C)
    if torch.compiler.is_compiling() or Hp != H or Wp != W:
        # copy out the real tokens; compiled: always (an explicit copy), so that the graph
        # has no size-dependent "is the slice contiguous" branch
        x = x[:, :H, :W].clone(memory_format=torch.contiguous_format)
    return x.reshape(-1, H * W, C)


def window_key_mask(hw: Tuple[int, int], window_size: int, batch: int,
                    device: torch.device) -> Optional[Tensor]:
    """Bool mask [B*nW, 1, 1, ws*ws] hiding zero-padded keys (True: a real token), or
    None when the grid is a multiple of the window (eager only: compiled, the mask is
    always built, all True when nothing is padded, so that the graph does not depend on
    whether the size is a multiple of the window)."""
    H, W = hw
    ws = window_size
    if not torch.compiler.is_compiling() and H % ws == 0 and W % ws == 0:
        return None
    Hp, Wp = H + (-H) % ws, W + (-W) % ws
    valid = torch.zeros(Hp, Wp, dtype=torch.bool, device=device)
    valid[:H, :W] = True
    valid = valid.view(Hp // ws, ws, Wp // ws, ws).transpose(1, 2).reshape(-1, ws * ws)
    return valid[:, None, None, :].repeat(batch, 1, 1, 1)  # windows are batch-major
