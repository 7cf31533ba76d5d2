"""2D rotary position embedding (RoPE) and its auto-scaled variant (AS2DRoPE).

Layout (the released VisionLLaMA weights depend on it, see docs/design.md):

* the head dim ``Hc`` is split into ``Hc/2`` interleaved pairs ``(2j, 2j+1)``;
* pair ``j`` rotates with the x (column) coordinate when ``j`` is even and with the
  y (row) coordinate when ``j`` is odd, so real dims read ``x x y y x x y y ...``;
* pair ``j`` has frequency ``theta ** (-4 * (j // 2) / Hc)``.

A *table* is the plain tuple ``(cos, sin)``, each ``[N, Hc]`` (or per sample
``[B, N, Hc]``) float32 with the angle of pair ``j`` on dims ``2j`` and ``2j+1``; the
rotation is ``(a cos - b sin, a sin + b cos)`` per pair (:func:`apply_rope`). Tables are derived data:
:class:`RoPE2D` keeps them per (grid, scale, device), never in the state dict.

AS2DRoPE multiplies positions by ``anchor / grid`` per axis, so any grid is mapped
into the span of the pre-training (anchor) grid; at the anchor size it equals 2D RoPE.

Ablations of the paper (table 11b/d, the authors' ``rpe_ratio`` / ``share_rpe``):
``rotary_dim < head_dim`` rotates only the first ``rotary_dim`` channels of each head
(frequencies over those channels), the rest pass through; ``shared=False`` builds one
RoPE over ``num_heads * rotary_dim`` channels (frequencies over the full width) and
gives head ``h`` its slice ``h*rotary_dim .. (h+1)*rotary_dim``: the table is then
``[1, heads, N, rotary_dim]`` (per sample ``[B, heads, N, rotary_dim]``).
"""
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
from torch import Tensor, nn

Table = Tuple[Tensor, Tensor]  # (cos, sin), [N, R], [B, N, R] or [1|B, heads, N, R] float32
ROPE_TYPES = ('none', '1d', '2d', 'as2d', 'ntk', 'ntk_fixed')
PREFIX_MODES = ('none', 'official')


def _pair(x) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def check_rope_width(width: int, what: str = 'head dim') -> int:
    """The one check of the RoPE width: ``x x y y`` pairing needs a multiple of 4 (head
    dims, partial rotary widths, converter ``--head-dim`` all come here)."""
    if width <= 0:
        raise ValueError(f'{what} {width} is not positive; 2D RoPE needs a multiple of 4')
    if width % 4 != 0:
        raise ValueError(f'{what} {width} is not divisible by 4, which 2D RoPE needs')
    return width


def rope_frequencies(head_dim: int, theta: float = 10000.0, rope_type: str = '2d') -> Tensor:
    """Per-pair frequencies ``[Hc/2]`` in the interleaved layout (``head_dim``: the
    rotated width).

    2D: pair j -> ``theta ** (-4 * (j // 2) / Hc)`` (x and y pairs share frequencies).
    1D: pair j -> ``theta ** (-2 * j / Hc)`` (LLaMA, over the flattened token index).
    """
    check_rope_width(head_dim)
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    exponent = 2 * j if rope_type == '1d' else 4 * torch.div(j, 2, rounding_mode='floor')
    return (theta ** (-exponent / head_dim)).float()


def grid_positions(h: int, w: int, scale: Tuple[float, float] = (1.0, 1.0),
                   offset: Tuple[float, float] = (0.0, 0.0),
                   stride: Tuple[float, float] = (1.0, 1.0),
                   row_length: Optional[int] = None,
                   num_prefix: int = 0) -> Tensor:
    """(x, y) positions ``[num_prefix + h*w, 2]`` float64 of a row-major h×w token grid.

    Token ``t`` sits at ``x = offset_x + stride_x * (t mod L)``,
    ``y = offset_y + stride_y * (t div L)`` with ``L = row_length or w``, then each axis is
    multiplied by ``scale``. ``num_prefix`` extra tokens get ``t = -num_prefix .. -1``
    (the official class-token position: ``x = L-1, y = -1``).
    """
    length = w if row_length is None else row_length
    t = torch.arange(-num_prefix, h * w, dtype=torch.float64)
    x = offset[0] + stride[0] * torch.remainder(t, length)
    y = offset[1] + stride[1] * torch.div(t, length, rounding_mode='floor')
    return torch.stack([x * scale[0], y * scale[1]], dim=-1)


def rope_table(pos: Tensor, freqs: Tensor, rope_type: str = '2d') -> Table:
    """cos/sin table ``[N, Hc]`` for positions ``pos`` ``[N, 2]`` (x, y) or ``[N]`` (1D)."""
    if rope_type == '1d':
        angles = pos.reshape(-1, 1).double() * freqs.double()  # [N, Hc/2]
    else:
        axis = torch.arange(freqs.numel(), device=pos.device) % 2  # 0 -> x, 1 -> y
        angles = pos.double()[:, axis] * freqs.double()  # [N, Hc/2]
    angles = angles.repeat_interleave(2, dim=-1)  # [N, Hc]: pair angle on dims 2j, 2j+1
    return angles.cos().float(), angles.sin().float()


def swap_pairs(x: Tensor) -> Tensor:
    """Swap the two members of every interleaved pair: ``(a, b) -> (b, a)`` on [..., Hc]
    (one copy; with :func:`pair_signs` it gives the 90 degree turn ``(-b, a)``)."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def pair_signs(sin: Tensor) -> Tensor:
    """``sin`` with the first member of every pair negated: ``(s, s) -> (-s, s)``.
    Applied to the table (``[N, R]``, small), not to the activations."""
    sign = torch.tensor([-1.0, 1.0], dtype=sin.dtype, device=sin.device)
    return (sin.unflatten(-1, (-1, 2)) * sign).flatten(-2)


def apply_rope(x: Tensor, table: Optional[Table]) -> Tensor:
    """Rotate ``x`` ``[B, heads, N, Hc]`` by ``table``.

    For the pair ``(a, b)`` the result is ``(a cos - b sin, a sin + b cos)``, computed as
    ``x * cos + swap_pairs(x) * pair_signs(sin)`` in the dtype of ``x``: the float32
    tables are cast to it (a no-op in float32, so float32 results are unchanged bit for
    bit). Table layouts: ``[N, R]`` (all heads), ``[B, N, R]`` (per sample),
    ``[1|B, heads, N, R]`` (per head). With ``R < Hc`` (partial RoPE) only the first
    ``R`` channels rotate, the rest pass through.

    Why this form: the sign goes on the small table, so the activations see one pair
    swap (a single copy) instead of ``unbind`` + negation + ``stack`` (three passes).
    ``x`` is made contiguous first: element-wise kernels on the strided q/k views of
    the qkv projection, whose contiguous runs are one head dim long, are several times
    slower than one copy plus the same kernels on contiguous memory (measured in
    docs/benchmark.md).
    Why the dtype of ``x``: under bf16 autocast q/k leave the projection in bf16; float32
    tables would promote every product to float32, and on CPU each mixed-dtype op first
    copies its bf16 input to float32 (two extra passes per tensor plus the cast back).
    The bf16 tables add less error than q/k already carry from being bf16, and leave the
    backbones' outputs unchanged to 4 digits against a float64 reference (measured in
    docs/benchmark.md; the authors rotate in float32, see docs/fidelity.md).
    """
    if table is None:
        return x
    cos, sin = table
    if cos.dim() == 3:  # per-sample table [B, N, R] -> [B, 1, N, R]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    r = cos.shape[-1]
    if r < x.shape[-1]:  # partial RoPE: rotate x[..., :R], keep the rest
        return torch.cat([apply_rope(x[..., :r], (cos, sin)), x[..., r:]], dim=-1)
    # q/k arrive as strided views of the qkv projection ([B, N, 3, heads, Hc] permuted):
    # one copy to [B, heads, N, R] order lets every op below run over long contiguous
    # rows (N * R) instead of Hc-long ones, 1.3-4.8x faster at head dim 32 (no-op when
    # x is contiguous already)
    x = x.contiguous()
    # [.., N, R] tables in x's dtype (tiny casts); all three ops then run in that dtype
    cos, sin = cos.to(x.dtype), pair_signs(sin).to(x.dtype)
    return torch.addcmul(x * cos, swap_pairs(x), sin)


def gather_tokens(table: Optional[Table], ids: Tensor) -> Optional[Table]:
    """Rows ``ids`` ``[B, n]`` of a grid table, per sample (MAE's kept tokens):
    ``[N, R] -> [B, n, R]``; ``[1, heads, N, R] -> [B, heads, n, R]``."""
    if table is None:
        return None
    if table[0].dim() == 2:
        return table[0][ids], table[1][ids]
    return tuple(t[0][:, ids].transpose(0, 1) for t in table)  # [heads,B,n,R] -> [B,heads,n,R]


class RoPE2D(nn.Module):
    """2D RoPE / AS2DRoPE tables for one head dim (shared by all heads and layers).

    Args:
        head_dim: per-head channels, divisible by 4.
        anchor_hw: the pre-training grid ``(h, w)`` that AS2DRoPE maps every grid
            onto. Required for ``rope_type='as2d'`` and ``'ntk'``.
        rope_type: ``'as2d'`` (auto-scaled, default), ``'2d'`` (plain), ``'1d'``
            (LLaMA over the flattened index), ``'ntk'`` (2D with NTK-aware theta
            scaling by the grid/anchor ratio), ``'ntk_fixed'`` (the authors' pyramid
            ``use_ntk``: unscaled 2D positions, base ``theta * ntk_factor`` for every
            table but window-local ones) or ``'none'`` (no rotation).
        theta: RoPE base.
        max_cached: tables kept per module (the store is emptied when full), bounding
            memory when detection inputs vary in size.
        rotary_dim: channels of each head that rotate (the first ones; default all,
            the authors' ``int(rpe_ratio * Hc)``); divisible by 4.
        num_heads, shared: ``shared=False`` (the authors' ``share_rpe=False``) spreads
            one RoPE over ``num_heads * rotary_dim`` channels, head h taking its slice.
        ntk_factor: theta multiplier of ``'ntk_fixed'`` (> 0).
    """

    def __init__(self, head_dim: int, anchor_hw: Optional[Tuple[int, int]] = None,
                 rope_type: str = 'as2d', theta: float = 10000.0, max_cached: int = 32,
                 rotary_dim: Optional[int] = None, num_heads: int = 1, shared: bool = True,
                 ntk_factor: float = 2.0):
        super().__init__()
        if rope_type not in ROPE_TYPES:
            raise ValueError(f'rope_type must be one of {ROPE_TYPES}, got {rope_type!r}')
        check_rope_width(head_dim)
        if rope_type in ('as2d', 'ntk') and anchor_hw is None:
            raise ValueError(f"rope_type={rope_type!r} needs the anchor (pre-training) grid")
        if not theta > 0:  # theta 0 gives NaN angles, negative ones complex frequencies
            raise ValueError(f'RoPE theta must be > 0, got {theta}')
        if anchor_hw is not None and min(_pair(anchor_hw)) <= 0:
            raise ValueError(f'RoPE anchor grid must be positive, got {anchor_hw}')
        rotary_dim = head_dim if rotary_dim is None else int(rotary_dim)
        if rotary_dim > head_dim:
            raise ValueError(f'RoPE rotary_dim must be in (0, {head_dim}], got {rotary_dim}')
        check_rope_width(rotary_dim, 'rotary_dim')
        if not ntk_factor > 0:
            raise ValueError(f'RoPE ntk_factor must be > 0, got {ntk_factor}')
        self.rotary_dim = rotary_dim
        self.num_heads = int(num_heads)
        self.shared = bool(shared)
        self.ntk_factor = float(ntk_factor)
        self.head_dim = head_dim
        self.anchor_hw = None if anchor_hw is None else _pair(anchor_hw)
        self.rope_type = rope_type
        self.theta = float(theta)
        self.max_cached = max_cached
        self._cache: Dict[Hashable, Table] = {}

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, rope_type={self.rope_type}, '
                f'anchor_hw={self.anchor_hw}, theta={self.theta}, '
                f'rotary_dim={self.rotary_dim}, shared={self.shared}')

    def __getstate__(self) -> Dict:  # copies and pickles carry no tables
        return {**self.__dict__, '_cache': {}}

    def _apply(self, fn, recurse=True):  # .to()/.cuda(): tables are rebuilt on demand
        self._cache.clear()
        return super()._apply(fn, recurse)

    def grid_scale(self, h: int, w: int) -> Tuple[float, float]:
        """Per-axis position scale for an h×w grid: ``anchor/grid`` for AS2DRoPE, else 1."""
        if self.rope_type == 'as2d':
            return (self.anchor_hw[1] / w, self.anchor_hw[0] / h)
        return (1.0, 1.0)

    def _theta_for(self, h: int, w: int, local: bool = False) -> float:
        if self.rope_type == 'ntk_fixed':  # authors' pyramid use_ntk: GSA only, not LSA
            return self.theta if local else self.theta * self.ntk_factor
        if self.rope_type != 'ntk':
            return self.theta
        # NTK-aware: stretch the base by the extrapolation factor (>= 1) so that the
        # lowest frequency covers the larger grid; d/(d-2) on the per-axis pair count.
        ratio = max(h / self.anchor_hw[0], w / self.anchor_hw[1], 1.0)
        d = self.width // 2  # the rotated width (partial / full-width RoPE)
        if d <= 2:
            raise ValueError(f"rope_type='ntk' needs more than 4 rotated channels "
                             f'(theta * ratio^(d/(d-2))), got {self.width}')
        return self.theta * ratio ** (d / (d - 2))

    def _cached(self, key: Hashable, build: Callable[[], Table]) -> Optional[Table]:
        """The table for ``key``, built once: a Pyramid-S forward needs 11 tables, and
        rebuilding them every forward measured 6.3 ms of a 237 ms forward (2.7 %; batch
        1, 224², one CPU thread)."""
        if self.rope_type == 'none':
            return None
        if torch.compiler.is_compiling():
            # traced into the graph, not cached: a lookup keyed by the grid size would
            # make torch.compile guard on the cache's contents and recompile for every
            # new input size; in the graph the table follows the (dynamic) size
            return build()
        table = self._cache.get(key)
        if table is None:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            # outside inference mode: a table first made under torch.inference_mode()
            # would otherwise be unusable by a later training step
            with torch.inference_mode(False):
                table = self._cache[key] = build()
        return table

    @property
    def width(self) -> int:
        """Channels one RoPE spans: ``rotary_dim``, or all heads' when not shared."""
        return self.rotary_dim if self.shared else self.rotary_dim * self.num_heads

    def _from_positions(self, pos: Tensor, theta: float, device,
                        num_unrotated: int = 0) -> Table:
        """Table for positions ``pos``, with ``num_unrotated`` identity rows first."""
        cos, sin = rope_table(pos, rope_frequencies(self.width, theta, self.rope_type),
                              self.rope_type)  # each [N, width]
        if num_unrotated:  # unrotated prefix rows: cos 1, sin 0
            cos = torch.cat([cos.new_ones(num_unrotated, self.width), cos])
            sin = torch.cat([sin.new_zeros(num_unrotated, self.width), sin])
        if not self.shared:  # [N, heads*R] -> [1, heads, N, R]: head h gets its slice
            cos, sin = (t.unflatten(-1, (self.num_heads, self.rotary_dim)).transpose(0, 1)
                        .unsqueeze(0) for t in (cos, sin))
        return cos.to(device), sin.to(device)

    def grid(self, h: int, w: int, device=None, num_prefix: int = 0,
             prefix_mode: str = 'none',
             scale: Optional[Tuple[float, float]] = None,
             local: bool = False) -> Optional[Table]:
        """Table ``[num_prefix + h*w, Hc]`` for a row-major h×w grid of tokens.

        Prefix tokens (e.g. the class token) come first; ``prefix_mode='none'`` leaves
        them unrotated, ``'official'`` puts them at ``t = -1`` (``x = w-1, y = -1``,
        scaled like the grid). ``scale`` overrides the AS2DRoPE scale (e.g. anchoring
        at another grid). ``local=True``: window-local positions (LSA, ViTDet windows),
        never rescaled and with the base theta under ``'ntk_fixed'``. Returns ``None``
        when ``rope_type='none'``.
        """
        if prefix_mode not in PREFIX_MODES:
            raise ValueError(f'prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}')
        if local:
            scale = (1.0, 1.0)
        sc = self.grid_scale(h, w) if scale is None else tuple(scale)
        rotated_prefix = num_prefix if prefix_mode == 'official' else 0

        def build() -> Table:
            if self.rope_type == '1d':
                pos = torch.arange(-rotated_prefix, h * w, dtype=torch.float64)
            else:
                pos = grid_positions(h, w, sc, num_prefix=rotated_prefix)
            return self._from_positions(pos, self._theta_for(h, w, local), device,
                                        num_prefix - rotated_prefix)

        return self._cached(('grid', h, w, sc, num_prefix, prefix_mode, local, str(device)),
                            build)

    def positions(self, key: Hashable, pos_fn: Callable[[], Tensor], h: int, w: int,
                  device=None) -> Optional[Table]:
        """Table for custom positions: ``pos_fn()`` returns ``[N, 2]`` (x, y).

        ``key`` must identify the geometry (used by pooled keys of the pyramid's GSA);
        ``h, w`` are the query grid, used only for NTK theta scaling.
        """
        if self.rope_type == '1d':
            raise ValueError("rope_type='1d' is defined on a flat token index only; "
                             'use 2d/as2d/ntk/none for pooled or windowed positions')
        return self._cached(('pos', key, str(device)),
                            lambda: self._from_positions(pos_fn(), self._theta_for(h, w), device))
