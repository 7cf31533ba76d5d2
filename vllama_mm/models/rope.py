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

Variants beyond the paper (``rope_cfg`` holds their parameters, see :data:`ROPE_CFG`); all
of them make ``(cos, sin)`` tables for the one rotation :func:`apply_rope`:

* ``'mixed'`` (RoPE-Mixed, Heo et al. 2024, naver-ai rope-vit; timm
  ``RotaryEmbeddingMixed``): every pair ``j`` of head ``h`` in layer ``l`` has a learnable
  2D frequency ``F[l, h, j] = (f_x, f_y)``, angle ``x f_x + y f_y`` (the axes mix). The
  parameter ``freqs`` is ``[layers, heads, R/2, 2]`` (last axis: x, y), initialised as
  rope-vit: magnitude ``theta ** (-4 (j // 2) / R)``, direction ``a_{l,h} + (pi/2 if j
  odd)`` with ``a ~ U[0, 2 pi)`` per layer and head (``rotate=False``: ``a = 0``, which is
  exactly 2D RoPE). Layout mapping: rope-vit's pair ``k < R/4`` (angle ``a``) is our pair
  ``2k``, its pair ``R/4 + k`` (angle ``a + pi/2``) our pair ``2k + 1``. Tables carry a
  layer axis, ``[layers, heads, N, R]``; :meth:`RoPE2D.layer_table` gives layer ``l``'s
  ``[1, heads, N, R]``. They are computed in the graph on every call (never cached:
  they carry gradients to ``freqs``). rope-vit uses ``theta = 10`` for mixed.
* ``'dinov3'`` (DINOv3 ``RopePositionEmbedding``, Simeoni et al. 2025): token centres
  ``(t + 0.5)`` divided by the grid extent (``normalize_coords``: ``'separate'`` per
  axis, ``'max'`` / ``'min'`` by the longer / shorter side), mapped to ``[-1, 1]``; angle
  ``2 pi c / period``, periods ``base ** (4k / R)`` or geometric from ``min_period`` to
  ``max_period`` (``k = 0 .. R/4-1``); ``base`` defaults to ``theta`` (the backbones'
  ``rope_theta``; DINOv3's own default is 100, so set one of them to 100 to match it).
  Tokens outside the grid (an ``'official'`` class-token position, pooled GSA keys,
  window-local positions) are normalised with the same formula; unrotated prefix
  tokens stay unrotated, as DINOv3's class and register tokens. In training mode only, one draw per forward for the
  whole batch (as DINOv3): ``c <- (c + shift) * jitter * rescale`` with shift
  ``~ U[-shift_coords, shift_coords]`` per axis, jitter ``exp(U[-ln j, ln j])`` per axis,
  rescale ``exp(U[-ln r, ln r])`` shared by both axes. Layout mapping: DINOv3's
  rotate-half pair ``k`` (y, ``k < R/4``) is our pair ``2k + 1``, its pair ``R/4 + k``
  (x) our pair ``2k``: our pair ``j`` has period index ``j // 2``, axis ``j % 2``.
* ``'yarn'`` (YaRN / NTK-by-parts, Peng et al. 2023): per axis ``a`` the scale
  ``s_a = max(1, grid_a / anchor_a)``; the "original context length" of axis ``a`` is
  the anchor (pre-training) grid side ``L_a``. Pair ``j`` (axis ``a``, frequency ``f``,
  wavelength ``2 pi / f``) has ``r = L_a f / (2 pi)`` turns over the anchor, ramp
  ``g = clip((r - beta_slow) / (beta_fast - beta_slow), 0, 1)`` and frequency
  ``(1 - g) f / s_a + g f`` (long wavelengths interpolate, short ones extrapolate);
  ``cos`` and ``sin`` are multiplied by ``mscale = 0.1 ln s_a + 1`` (the attention
  temperature, applied to the tables as the reference implementation does, so logits
  scale by ``mscale**2``; unrotated prefix rows keep amplitude 1). At or below the
  anchor it is 2D RoPE. The ramp is the paper's (linear in ``r``), not the reference
  code's index-space version (floor/ceil of the correction dims); with vision anchors
  (``L`` ~ 14) every pair has ``r <= L / (2 pi) ~ 2.2``, so the default betas make YaRN
  nearly pure interpolation there (``g <= 0.04``).
"""
from typing import Callable, Dict, Hashable, Optional, Tuple

import math

import torch
from torch import Tensor, nn

# (cos, sin), [N, R], [B, N, R] or [1|B, heads, N, R] float32 (mixed: [layers, heads, N, R])
Table = Tuple[Tensor, Tensor]
ROPE_TYPES = ('none', '1d', '2d', 'as2d', 'ntk', 'ntk_fixed', 'mixed', 'dinov3', 'yarn')
PREFIX_MODES = ('none', 'official')
#: ``rope_cfg`` keys (and defaults) of each variant, named as in the reference code
ROPE_CFG: Dict[str, Dict] = {
    'mixed': dict(rotate=True),
    'dinov3': dict(base=None, min_period=None, max_period=None, normalize_coords='separate',
                   shift_coords=None, jitter_coords=None, rescale_coords=None),
    'yarn': dict(beta_fast=32.0, beta_slow=1.0),
}
NORMALIZE_COORDS = ('min', 'max', 'separate')


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


def rope_table(pos: Tensor, freqs: Tensor, rope_type: str = '2d',
               amplitude: Optional[Tensor] = None) -> Table:
    """cos/sin table ``[N, Hc]`` for positions ``pos`` ``[N, 2]`` (x, y) or ``[N]`` (1D).

    ``freqs`` ``[Hc/2]``: pair j rotates with axis ``j % 2`` (2D) or the flat index (1D).
    ``freqs`` ``[..., Hc/2, 2]`` (mixed): pair j's angle is ``x f_x + y f_y``, giving
    ``[..., N, Hc]`` (e.g. ``[layers, heads, N, Hc]``), differentiable in ``freqs``.
    ``amplitude`` ``[Hc/2]`` multiplies both cos and sin of pair j (YaRN's mscale).
    Angles in float64, tables float32.
    """
    if rope_type == '1d':
        angles = pos.reshape(-1, 1).double() * freqs.double()  # [N, Hc/2]
    elif freqs.dim() > 1:  # mixed: [..., Hc/2, 2] -> [..., N, Hc/2]
        angles = torch.einsum('nc,...jc->...nj', pos.double(), freqs.double())
    else:
        axis = torch.arange(freqs.numel(), device=pos.device) % 2  # 0 -> x, 1 -> y
        angles = pos.double()[:, axis] * freqs.double()  # [N, Hc/2]
    # [..., N, Hc]: pair angle on dims 2j, 2j+1 (stack + flatten: repeat_interleave of a
    # 4-D tensor computed in the graph, as mixed is, exports to a broken ONNX Expand)
    angles = torch.stack([angles, angles], dim=-1).flatten(-2)
    cos, sin = angles.cos(), angles.sin()
    if amplitude is not None:
        amp = amplitude.double().repeat_interleave(2)  # [Hc] (a constant)
        cos, sin = cos * amp, sin * amp
    return cos.float(), sin.float()


def mixed_init(num_layers: int, num_heads: int, width: int, theta: float,
               rotate: bool = True) -> Tensor:
    """rope-vit's RoPE-Mixed init in our pair layout: ``[layers, heads, width/2, 2]``.

    Pair j: magnitude ``theta ** (-4 (j // 2) / width)``, direction ``a + (pi/2 if j odd)``
    with ``a ~ U[0, 2 pi)`` per (layer, head) (``rotate=False``: ``a = 0``, 2D RoPE)."""
    j = torch.arange(width // 2, dtype=torch.float64)
    mag = theta ** (-4 * torch.div(j, 2, rounding_mode='floor') / width)  # [R/2]
    a = torch.rand(num_layers, num_heads, 1, dtype=torch.float64) * 2 * math.pi \
        if rotate else torch.zeros(num_layers, num_heads, 1, dtype=torch.float64)
    phi = a + (j % 2) * (math.pi / 2)  # [L, heads, R/2]
    return torch.stack([mag * phi.cos(), mag * phi.sin()], dim=-1).float()


def dinov3_periods(width: int, base: Optional[float], min_period: Optional[float],
                   max_period: Optional[float]) -> Tensor:
    """DINOv3 periods ``[width/4]`` float64: ``base ** (4k / width)``, or geometric from
    ``min_period`` to ``max_period``."""
    n = width // 4
    if base is not None:
        return base ** (4 * torch.arange(n, dtype=torch.float64) / width)
    ratio = max_period / min_period
    return max_period * ratio ** (torch.linspace(0, 1, n, dtype=torch.float64) - 1)


def yarn_frequencies(freqs: Tensor, scale: Tuple[float, float],
                     context: Tuple[float, float], beta_fast: float = 32.0,
                     beta_slow: float = 1.0) -> Tuple[Tensor, Tensor]:
    """NTK-by-parts frequencies and mscale per pair (``[R/2]`` each, float64).

    ``freqs`` ``[R/2]`` 2D frequencies (pair j on axis ``j % 2``); ``scale`` and
    ``context`` are (x, y): ``s_a >= 1`` and the anchor side ``L_a`` (module doc)."""
    f = freqs.double()
    axis = torch.arange(f.numel()) % 2
    s = torch.tensor(scale, dtype=torch.float64)[axis]
    length = torch.tensor(context, dtype=torch.float64)[axis]
    turns = length * f / (2 * math.pi)  # r = L / wavelength
    ramp = ((turns - beta_slow) / (beta_fast - beta_slow)).clamp(0.0, 1.0)
    return (1 - ramp) * f / s + ramp * f, 0.1 * torch.log(s) + 1.0


def swap_pairs(x: Tensor) -> Tensor:
    """Swap the two members of every interleaved pair: ``(a, b) -> (b, a)`` on [..., Hc]
    (one copy; with :func:`pair_signs` it gives the 90 degree turn ``(-b, a)``).

    A roll by one on the pair axis of ``[..., Hc/2, 2]``: the same values as ``flip``,
    whose CPU kernel is 1.4x (bf16) to 2.7x (float32) slower on q/k sized tensors
    (docs/benchmark.md); one element-wise copy on every device and in inductor."""
    return x.unflatten(-1, (-1, 2)).roll(1, -1).flatten(-2)


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


def _real(name: str, value, low: float, strict: bool, cond: str) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and \
        math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f'rope_cfg {name} must be a finite number {cond}, got {value!r}')
    return float(value)


def check_rope_cfg(rope_type: str, rope_cfg: Optional[Dict]) -> Dict:
    """``rope_cfg`` of ``rope_type`` -> the full parameter dict (defaults filled in), with
    one named error for a key the variant does not have or a bad value."""
    cfg = {} if rope_cfg is None else rope_cfg
    if not isinstance(cfg, dict):
        raise ValueError(f'rope_cfg must be a dict or None, got {type(cfg).__name__}')
    if rope_type not in ROPE_CFG:
        if cfg:
            raise ValueError(f'rope_type={rope_type!r} takes no rope_cfg, got keys '
                             f'{sorted(cfg)}; rope_cfg is for {sorted(ROPE_CFG)}')
        return {}
    allowed = ROPE_CFG[rope_type]
    for key in cfg:
        if key not in allowed:
            owner = [t for t, keys in ROPE_CFG.items() if key in keys]
            hint = f" (a key of rope_type={owner[0]!r})" if owner else ''
            raise ValueError(f'rope_cfg key {key!r} is not a parameter of '
                             f'rope_type={rope_type!r}{hint}; allowed: {sorted(allowed)}')
    out = {**allowed, **cfg}
    if rope_type == 'mixed':
        if not isinstance(out['rotate'], bool):
            raise ValueError(f"rope_cfg rotate must be True or False, got {out['rotate']!r}")
    elif rope_type == 'yarn':
        fast = _real('beta_fast', out['beta_fast'], 0.0, True, '> 0')
        slow = _real('beta_slow', out['beta_slow'], 0.0, False, '>= 0')
        if not fast > slow:
            raise ValueError(f'rope_cfg beta_fast ({fast}) must be > beta_slow ({slow}): '
                             'the ramp runs from beta_slow to beta_fast turns')
        out.update(beta_fast=fast, beta_slow=slow)
    else:  # dinov3
        if out['normalize_coords'] not in NORMALIZE_COORDS:
            raise ValueError(f'rope_cfg normalize_coords must be one of {NORMALIZE_COORDS}, '
                             f"got {out['normalize_coords']!r}")
        periods = [out['min_period'], out['max_period']]
        if (periods[0] is None) != (periods[1] is None):
            raise ValueError('rope_cfg min_period and max_period go together: give both '
                             '(geometric periods) or neither (periods from base)')
        if periods[0] is not None:
            if out['base'] is not None:
                raise ValueError('rope_cfg: give either base or min_period + max_period, '
                                 'not both')
            lo = _real('min_period', periods[0], 0.0, True, '> 0')
            hi = _real('max_period', periods[1], 0.0, True, '> 0')
            if hi < lo:
                raise ValueError(f'rope_cfg max_period ({hi}) must be >= min_period ({lo})')
            out.update(min_period=lo, max_period=hi)
        elif out['base'] is not None:
            out['base'] = _real('base', out['base'], 0.0, True, '> 0')
        for key, low, cond in (('shift_coords', 0.0, '>= 0 (a shift range [-s, s])'),
                               ('jitter_coords', 1.0, '>= 1 (a factor in [1/j, j])'),
                               ('rescale_coords', 1.0, '>= 1 (a factor in [1/r, r])')):
            if out[key] is not None:
                out[key] = _real(key, out[key], low, False, cond)
    return out


class RoPE2D(nn.Module):
    """2D RoPE tables for one head dim: AS2DRoPE, the paper's ablations and the variants
    of the module doc (shared by all heads and layers, except ``'mixed'``).

    Args:
        head_dim: per-head channels, divisible by 4.
        anchor_hw: the pre-training grid ``(h, w)`` that AS2DRoPE maps every grid
            onto. Required for ``rope_type='as2d'``, ``'ntk'`` and ``'yarn'``.
        rope_type: ``'as2d'`` (auto-scaled, default), ``'2d'`` (plain), ``'1d'``
            (LLaMA over the flattened index), ``'ntk'`` (2D with NTK-aware theta
            scaling by the grid/anchor ratio), ``'ntk_fixed'`` (the authors' pyramid
            ``use_ntk``: unscaled 2D positions, base ``theta * ntk_factor`` for every
            table but window-local ones), ``'mixed'`` (learnable 2D frequencies per
            layer and head), ``'dinov3'`` (normalised, augmented coordinates),
            ``'yarn'`` (NTK-by-parts above the anchor) or ``'none'`` (no rotation).
        theta: RoPE base (``'dinov3'``: the default of its ``base``).
        max_cached: tables kept per module (the store is emptied when full), bounding
            memory when detection inputs vary in size.
        rotary_dim: channels of each head that rotate (the first ones; default all,
            the authors' ``int(rpe_ratio * Hc)``); divisible by 4.
        num_heads, shared: ``shared=False`` (the authors' ``share_rpe=False``) spreads
            one RoPE over ``num_heads * rotary_dim`` channels, head h taking its slice.
        ntk_factor: theta multiplier of ``'ntk_fixed'`` (> 0).
        num_layers: layers that own a slice of the ``'mixed'`` frequencies (required
            there).
        rope_cfg: the variant's parameters (:data:`ROPE_CFG`): ``'mixed'``: ``rotate``;
            ``'dinov3'``: ``base`` (None: ``theta``), ``min_period``, ``max_period``,
            ``normalize_coords``, ``shift_coords``, ``jitter_coords``,
            ``rescale_coords`` (None: off); ``'yarn'``: ``beta_fast``, ``beta_slow``.

    Parameters: only ``freqs`` ``[num_layers, num_heads, rotary_dim/2, 2]`` under
    ``'mixed'`` (pair j's (x, y) frequency per layer and head; no weight decay).
    """

    def __init__(self, head_dim: int, anchor_hw: Optional[Tuple[int, int]] = None,
                 rope_type: str = 'as2d', theta: float = 10000.0, max_cached: int = 32,
                 rotary_dim: Optional[int] = None, num_heads: int = 1, shared: bool = True,
                 ntk_factor: float = 2.0, num_layers: Optional[int] = None,
                 rope_cfg: Optional[Dict] = None):
        super().__init__()
        check_rope_width(head_dim)
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
        self.theta = float(theta)
        self.max_cached = max_cached
        self.num_layers = num_layers
        self._cache: Dict[Hashable, Table] = {}
        if rope_type == 'mixed':
            if isinstance(num_layers, bool) or not isinstance(num_layers, int) or \
                    num_layers < 1 or self.num_heads < 1:
                raise ValueError("rope_type='mixed' learns frequencies per layer and head: "
                                 f'it needs num_layers >= 1 and num_heads >= 1, got '
                                 f'num_layers={num_layers!r}, num_heads={num_heads!r}')
            if not self.shared:
                raise ValueError("rope_type='mixed' has its own frequencies per head already; "
                                 'rope_shared=False does not apply to it')
            rotate = check_rope_cfg('mixed', rope_cfg)['rotate']
            self.freqs = nn.Parameter(mixed_init(num_layers, self.num_heads, rotary_dim,
                                                 self.theta, rotate))
        self.configure(rope_type, rope_cfg)

    def configure(self, rope_type: str, rope_cfg: Optional[Dict] = None) -> None:
        """Set ``rope_type`` and its ``rope_cfg`` (checked) and drop the cached tables; used
        by the constructor and by test-time switches (resolution studies)."""
        if rope_type not in ROPE_TYPES:
            raise ValueError(f'rope_type must be one of {ROPE_TYPES}, got {rope_type!r}')
        if rope_type in ('as2d', 'ntk', 'yarn') and self.anchor_hw is None:
            raise ValueError(f"rope_type={rope_type!r} needs the anchor (pre-training) grid")
        if rope_type == 'mixed' and not hasattr(self, 'freqs'):
            raise ValueError("rope_type='mixed' has learnable frequencies: build the model "
                             "with rope_type='mixed' (and train it) instead of switching")
        self.rope_cfg = check_rope_cfg(rope_type, rope_cfg)
        self.rope_type = rope_type
        self._cache.clear()

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, rope_type={self.rope_type}, '
                f'anchor_hw={self.anchor_hw}, theta={self.theta}, '
                f'rotary_dim={self.rotary_dim}, shared={self.shared}'
                + (f', rope_cfg={self.rope_cfg}' if self.rope_cfg else ''))

    def __getstate__(self) -> Dict:  # copies and pickles carry no tables
        return {**self.__dict__, '_cache': {}}

    def _apply(self, fn, recurse=True):  # .to()/.cuda(): tables are rebuilt on demand
        self._cache.clear()
        return super()._apply(fn, recurse)

    def _cfg(self, key: str):
        """A parameter of the current variant (its default when switched to without one)."""
        return self.rope_cfg.get(key, ROPE_CFG[self.rope_type][key])

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

    def _frequencies(self, h: int, w: int, local: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """(frequencies, amplitude or None) of the table for an h×w (query) grid:
        ``[width/2]`` per pair, or the ``'mixed'`` parameter ``[L, heads, R/2, 2]``."""
        if self.rope_type == 'mixed':
            return self.freqs, None
        if self.rope_type == 'dinov3':
            base = self._cfg('base')
            periods = dinov3_periods(self.width, self.theta if base is None and
                                     self._cfg('min_period') is None else base,
                                     self._cfg('min_period'), self._cfg('max_period'))
            return (2 * math.pi / periods).repeat_interleave(2), None  # pair j: j // 2
        if self.rope_type == 'yarn':
            freqs = rope_frequencies(self.width, self.theta)
            ah, aw = self.anchor_hw
            scale = (1.0, 1.0) if local else (max(1.0, w / aw), max(1.0, h / ah))
            return yarn_frequencies(freqs, scale, (aw, ah), self._cfg('beta_fast'),
                                    self._cfg('beta_slow'))
        return rope_frequencies(self.width, self._theta_for(h, w, local), self.rope_type), None

    def coords_augmentation(self, device=None) -> Optional[Tuple[Tensor, Tensor]]:
        """DINOv3's training-time coordinate draw, one per forward for the whole batch:
        ``(shift, scale)``, each ``[2]`` (x, y) float64, applied as ``(c + shift) * scale``
        to normalised coordinates; None in eval mode or when all three are off.

        Drawn as DINOv3 (float32 on ``device``, in the order shift, jitter, rescale, their
        per-axis draws in (y, x) order): shift ``U[-s, s]``; jitter ``exp(U[-ln j, ln j])``
        per axis; rescale ``exp(U[-ln r, ln r])``, one for both axes.
        """
        if self.rope_type != 'dinov3' or not self.training:
            return None
        shift_r, jitter, rescale = (self._cfg(k) for k in
                                    ('shift_coords', 'jitter_coords', 'rescale_coords'))
        if shift_r is None and jitter is None and rescale is None:
            return None
        shift = torch.zeros(2, dtype=torch.float64, device=device)
        scale = torch.ones(2, dtype=torch.float64, device=device)
        if shift_r is not None:
            shift = torch.empty(2, device=device).uniform_(-shift_r, shift_r).flip(0).double()
        if jitter is not None:
            lj = math.log(jitter)
            scale = scale * torch.empty(2, device=device).uniform_(-lj, lj).exp().flip(0).double()
        if rescale is not None:
            lr = math.log(rescale)
            scale = scale * torch.empty(1, device=device).uniform_(-lr, lr).exp().double()
        return shift, scale

    def _cached(self, key: Hashable, build: Callable[[], Table]) -> Optional[Table]:
        """The table for ``key``, built once: a Pyramid-S forward needs 11 tables, and
        rebuilding them every forward measured 6.3 ms of a 237 ms forward (2.7 %; batch
        1, 224², one CPU thread). ``'mixed'`` tables (learnable frequencies) are built on
        every call, in the graph."""
        if self.rope_type == 'none':
            return None
        if self.rope_type == 'mixed' or torch.compiler.is_compiling():
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

    def _from_positions(self, pos: Tensor, hw: Tuple[int, int], local: bool, device,
                        num_unrotated: int = 0,
                        aug: Optional[Tuple[Tensor, Tensor]] = None) -> Table:
        """Table for token-unit positions ``pos`` ``[N, 2]`` on an ``hw`` (query) grid,
        with ``num_unrotated`` identity rows first."""
        freqs, amplitude = self._frequencies(hw[0], hw[1], local)
        if self.rope_type == 'dinov3':  # token centres -> [-1, 1], then the draw
            mode = self._cfg('normalize_coords')
            h, w = hw
            extent = {'separate': (w, h), 'max': (max(h, w),) * 2,
                      'min': (min(h, w),) * 2}[mode]
            pos = 2 * (pos + 0.5) / torch.tensor(extent, dtype=torch.float64) - 1
            if aug is not None:
                pos = (pos.to(aug[0].device) + aug[0]) * aug[1]
                freqs = freqs.to(aug[0].device)
        if self.rope_type == 'mixed':
            pos = pos.to(freqs.device)
        cos, sin = rope_table(pos, freqs, self.rope_type, amplitude)  # [..., N, width]
        if num_unrotated:  # unrotated prefix rows: cos 1, sin 0
            ones = cos.new_ones(*cos.shape[:-2], num_unrotated, cos.shape[-1])
            cos, sin = torch.cat([ones, cos], -2), torch.cat([torch.zeros_like(ones), sin], -2)
        if not self.shared:  # [N, heads*R] -> [1, heads, N, R]: head h gets its slice
            cos, sin = (t.unflatten(-1, (self.num_heads, self.rotary_dim)).transpose(0, 1)
                        .unsqueeze(0) for t in (cos, sin))
        return cos.to(device), sin.to(device)

    def layer_table(self, table: Optional[Table], layer: int) -> Optional[Table]:
        """Layer ``layer``'s table: ``'mixed'`` tables ``[L, heads, N, R]`` give
        ``[1, heads, N, R]``; the tables of every other type are shared by all layers."""
        if table is None or self.rope_type != 'mixed':
            return table
        return table[0][layer:layer + 1], table[1][layer:layer + 1]

    def grid(self, h: int, w: int, device=None, num_prefix: int = 0,
             prefix_mode: str = 'none',
             scale: Optional[Tuple[float, float]] = None,
             local: bool = False,
             aug: Optional[Tuple[Tensor, Tensor]] = None) -> Optional[Table]:
        """Table ``[num_prefix + h*w, Hc]`` for a row-major h×w grid of tokens.

        Prefix tokens (e.g. the class token) come first; ``prefix_mode='none'`` leaves
        them unrotated, ``'official'`` puts them at ``t = -1`` (``x = w-1, y = -1``,
        scaled like the grid). ``scale`` overrides the AS2DRoPE scale (e.g. anchoring
        at another grid). ``local=True``: window-local positions (LSA, ViTDet windows),
        never rescaled and with the base theta under ``'ntk_fixed'`` / no YaRN scaling.
        ``aug``: this forward's :meth:`coords_augmentation` (``'dinov3'`` training).
        ``'mixed'``: ``[L, heads, num_prefix + h*w, R]`` (see :meth:`layer_table`).
        Returns ``None`` when ``rope_type='none'``.
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
            return self._from_positions(pos, (h, w), local, device,
                                        num_prefix - rotated_prefix, aug)

        if aug is not None:  # this forward's coordinate draw: built fresh, in the graph
            return build()
        return self._cached(('grid', h, w, sc, num_prefix, prefix_mode, local, str(device)),
                            build)

    def positions(self, key: Hashable, pos_fn: Callable[[], Tensor], h: int, w: int,
                  device=None, aug: Optional[Tuple[Tensor, Tensor]] = None
                  ) -> Optional[Table]:
        """Table for custom positions: ``pos_fn()`` returns ``[N, 2]`` (x, y) in token
        units of the h×w query grid.

        ``key`` must identify the geometry (used by pooled keys of the pyramid's GSA);
        ``h, w`` are the query grid (NTK / YaRN scaling, DINOv3 normalisation).
        """
        if self.rope_type == '1d':
            raise ValueError("rope_type='1d' is defined on a flat token index only; "
                             'use 2d/as2d/ntk/none for pooled or windowed positions')
        def build() -> Table:
            return self._from_positions(pos_fn(), (h, w), False, device, 0, aug)
        return build() if aug is not None else self._cached(('pos', key, str(device)), build)
