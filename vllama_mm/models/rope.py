"""2D rotary position embedding (RoPE) and its auto-scaled variant (AS2DRoPE).

Layout (the released VisionLLaMA weights depend on it, DESIGN.md §2.1):

* the head dim ``Hc`` is split into ``Hc/2`` interleaved pairs ``(2j, 2j+1)``;
* pair ``j`` rotates with the x (column) coordinate when ``j`` is even and with the
  y (row) coordinate when ``j`` is odd, so real dims read ``x x y y x x y y ...``;
* pair ``j`` has frequency ``theta ** (-4 * (j // 2) / Hc)``.

A *table* is the pair ``(cos, sin)``, each ``[N, Hc]`` float32 with the angle of pair
``j`` repeated on dims ``2j`` and ``2j+1``. Tables are derived data: :class:`RoPE2D`
caches them per (grid, scale, device) and never puts them in the state dict. A cached
table is a :class:`RopeTable`: still that 2-tuple, plus the same rotation as one complex
number per pair (``rot = cos + i sin``, ``[N, Hc/2]`` complex64), precomputed once so
that rotating a tensor is a single complex multiply (one pass forward, one backward)
instead of the gather/negate/stack/multiply/add chain of the textbook formula.

AS2DRoPE multiplies positions by ``anchor / grid`` per axis, so any grid is mapped
into the span of the pre-training (anchor) grid; at the anchor size it equals 2D RoPE.
"""
from collections import OrderedDict
from typing import Dict, Hashable, Optional, Tuple, Union

import torch
from torch import Tensor, nn


class RopeTable(tuple):
    """A rotation table: the 2-tuple ``(cos, sin)`` (each ``[N, Hc]`` or ``[B, N, Hc]``
    float32) that also carries ``rot``, the rotation as one complex number per pair.

    ``rot = cos[..., 0::2] + i sin[..., 0::2]`` (``[N, Hc/2]`` or ``[B, N, Hc/2]``
    complex64) is computed once, on first use; :func:`apply_rope` multiplies
    interleaved pairs ``(a, b) = a + ib`` by it. Unpacking, indexing and ``len`` behave
    exactly like the plain ``(cos, sin)`` tuple, and a plain tuple is accepted
    wherever a table is (its complex form is then made per call).
    """

    def __new__(cls, cos: Tensor, sin: Tensor, rot: Optional[Tensor] = None) -> 'RopeTable':
        if cos.shape != sin.shape or cos.shape[-1] % 2:
            raise ValueError(f'a RoPE table needs cos and sin of one shape [..., Hc] with '
                             f'Hc even, got {tuple(cos.shape)} and {tuple(sin.shape)}')
        self = super().__new__(cls, (cos, sin))
        self._rot = rot
        return self

    @property
    def rot(self) -> Tensor:
        """``cos + i sin`` per pair, made on first use and kept (the eager fast path;
        code traced by torch.compile uses cos and sin and never makes it)."""
        if self._rot is None:
            # never an inference tensor: a table first used under torch.inference_mode()
            # is cached and must stay usable by a later training step
            with torch.inference_mode(False):
                self._rot = _complex_rotation(self[0], self[1])
        return self._rot

    def __getnewargs__(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:  # copy / pickle
        return (self[0], self[1], self._rot)

    def select(self, ids: Tensor) -> 'RopeTable':
        """Per-sample rows: ``ids`` ``[B, n]`` token indices -> table ``[B, n, Hc]``
        (the MAE encoder: each kept token keeps its own position)."""
        if self[0].dim() != 2:
            raise ValueError('select() needs a shared [N, Hc] table, got a per-sample one')
        rot = None if self._rot is None or torch.compiler.is_compiling() else self._rot[ids]
        return RopeTable(self[0][ids], self[1][ids], rot)


def _complex_rotation(cos: Tensor, sin: Tensor) -> Tensor:
    """``cos + i sin`` of each pair (dims 2j and 2j+1 hold the same angle): [..., Hc/2]."""
    return torch.complex(cos[..., 0::2].float(), sin[..., 0::2].float())


def _rotation_of(table: Union[RopeTable, Tuple[Tensor, Tensor]]) -> Tensor:
    if isinstance(table, RopeTable):
        return table.rot
    return _complex_rotation(table[0], table[1])


ROPE_TYPES = ('none', '1d', '2d', 'as2d', 'ntk')
PREFIX_MODES = ('none', 'official')


def _pair(x) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def rope_frequencies(head_dim: int, theta: float = 10000.0, rope_type: str = '2d') -> Tensor:
    """Per-pair frequencies ``[Hc/2]`` in the interleaved layout.

    2D: pair j -> ``theta ** (-4 * (j // 2) / Hc)`` (x and y pairs share frequencies).
    1D: pair j -> ``theta ** (-2 * j / Hc)`` (LLaMA, over the flattened token index).
    """
    if head_dim % 4 != 0:
        raise ValueError(f'2D RoPE needs a head dim divisible by 4, got {head_dim}')
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    if rope_type == '1d':
        exponent = 2 * j / head_dim
    else:
        exponent = 4 * torch.div(j, 2, rounding_mode='floor') / head_dim
    return (theta ** (-exponent)).float()


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


def rope_table(pos: Tensor, freqs: Tensor, rope_type: str = '2d') -> RopeTable:
    """cos/sin table ``[N, Hc]`` for positions ``pos`` ``[N, 2]`` (x, y) or ``[N]`` (1D)."""
    if rope_type == '1d':
        angles = pos.reshape(-1, 1).double() * freqs.double()  # [N, Hc/2]
    else:
        axis = torch.arange(freqs.numel(), device=pos.device) % 2  # 0 -> x, 1 -> y
        angles = pos.double()[:, axis] * freqs.double()  # [N, Hc/2]
    angles = angles.repeat_interleave(2, dim=-1)  # [N, Hc]: pair angle on dims 2j, 2j+1
    return RopeTable(angles.cos().float(), angles.sin().float())


def identity_table(n: int, head_dim: int, device=None) -> RopeTable:
    """A table that rotates nothing (cos 1, sin 0), for unrotated prefix tokens."""
    return RopeTable(torch.ones(n, head_dim, device=device),
                     torch.zeros(n, head_dim, device=device))


def _pairs_as_complex(x: Tensor) -> Tensor:
    """[..., Hc] float32 -> complex view [..., Hc/2] of the interleaved pairs (no copy
    when the pairs are adjacent in memory, e.g. a slice of a fused qkv output)."""
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(st % 2 for st in x.stride()[:-1]):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def _rotate_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Textbook interleaved rotation in float32: ``x cos + rot90(x) sin`` with
    ``rot90(a, b) = (-b, a)``; element-wise only, so torch.compile fuses it into one
    kernel (it cannot generate code for complex numbers)."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))  # [..., Hc/2, 2]
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)


def _rotate(x: Tensor, table: Union[RopeTable, Tuple[Tensor, Tensor]],
            cos_sin_shape: Tuple[int, ...], rot_shape: Tuple[int, ...]) -> Tensor:
    """Rotate ``x`` [..., Hc] with the table viewed as ``cos_sin_shape`` / ``rot_shape``
    (the same table dims, broadcast against x)."""
    if torch.compiler.is_compiling():
        return _rotate_reference(x, table[0].view(cos_sin_shape), table[1].view(cos_sin_shape))
    rot = _rotation_of(table).view(rot_shape)  # complex64 [..., Hc/2]
    out = torch.view_as_real(_pairs_as_complex(x.float()) * rot)  # [..., Hc/2, 2] float32
    return out.flatten(-2).to(x.dtype)


def apply_rope(x: Tensor, table: Optional[Union[RopeTable, Tuple[Tensor, Tensor]]]) -> Tensor:
    """Rotate ``x`` ``[B, heads, N, Hc]`` by ``table`` (``[N, Hc]`` or ``[B, N, Hc]``).

    Computed in float32 and cast back to ``x.dtype``. Interleaved pairs: for pair
    ``(a, b)`` the result is ``(a cos - b sin, a sin + b cos)``, i.e. the complex
    product ``(a + ib)(cos + i sin)`` (see :class:`RopeTable`).
    """
    if table is None:
        return x
    cos = table[0]
    shape = tuple(cos.shape)
    if cos.dim() == 3:  # per-sample table [B, N, Hc] -> [B, 1, N, Hc]
        shape = (shape[0], 1) + shape[1:]
    return _rotate(x, table, shape, shape[:-1] + (shape[-1] // 2,))


def apply_rope_tokens(x: Tensor,
                      table: Optional[Union[RopeTable, Tuple[Tensor, Tensor]]]) -> Tensor:
    """Rotate token-major ``x`` ``[B, N, *, Hc]`` (e.g. q and k together as the slice
    ``[B, N, 2, heads, Hc]`` of a fused qkv output) by ``table`` ``[N, Hc]`` or
    ``[B, N, Hc]``. Same rotation as :func:`apply_rope`, in the layout the projections
    produce, so q and k are rotated by one call before the head transpose."""
    if table is None:
        return x
    cos = table[0]
    ones = (1,) * (x.dim() - 3)  # the dims between tokens and channels
    shape = tuple(cos.shape[:-1]) + ones + (cos.shape[-1],)
    return _rotate(x, table, shape, shape[:-1] + (shape[-1] // 2,))


class _RotateSplitHeads(torch.autograd.Function):
    """Token-major projections -> rotated q/k and plain v heads, with one gradient buffer.

    Forward: ``t`` [B, N, k, heads, Hc] -> k tensors [B, heads, N, Hc]; slots
    ``0..r-1`` are rotated by ``rot`` (complex, broadcast as [(B,) N, 1, 1, Hc/2]),
    the others are views of ``t``. Backward writes every slot's gradient straight into
    one [B, N, k, heads, Hc] buffer (rotated back by ``conj(rot)``), instead of the
    stack + zero-filled slice/select gradients + sum that autograd would build.
    """

    @staticmethod
    def forward(ctx, t: Tensor, rot: Tensor, r: int):  # noqa: D102
        ctx.save_for_backward(rot)
        ctx.r = r
        z = _pairs_as_complex(t[:, :, :r].float()) * rot  # [B, N, r, h, Hc/2] complex
        rotated = torch.view_as_real(z).flatten(-2).to(t.dtype)  # [B, N, r, h, Hc]
        outs = rotated.permute(2, 0, 3, 1, 4).unbind(0)
        return outs + t[:, :, r:].permute(2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):  # noqa: D102
        rot, = ctx.saved_tensors
        r = ctx.r
        B, h, N, hc = next(g for g in grads if g is not None).shape
        grad = grads[0].new_empty(B, N, len(grads), h, hc)  # [B, N, k, h, Hc]
        back = rot.conj().squeeze(-2)  # [(B,) N, 1, Hc/2]: inverse rotation per slot
        for i, g in enumerate(grads):
            dest = grad[:, :, i]  # [B, N, h, Hc]
            if g is None:
                dest.zero_()
            elif i >= r:
                dest.copy_(g.transpose(1, 2))
            elif dest.dtype == torch.float32:
                out = torch.view_as_complex(dest.unflatten(-1, (-1, 2)))
                torch.mul(_pairs_as_complex(g.transpose(1, 2)), back, out=out)
            else:  # low precision: rotate in float32, cast on the copy
                z = _pairs_as_complex(g.transpose(1, 2).float()) * back
                dest.copy_(torch.view_as_real(z).flatten(-2))
        return grad, None, None


def rope_split_heads(t: Tensor, table: Optional[Union[RopeTable, Tuple[Tensor, Tensor]]],
                     num_rotated: int) -> Tuple[Tensor, ...]:
    """Split token-major projections ``t`` [B, N, k, heads, Hc] (e.g. a fused qkv output
    viewed with k = 3) into k head-major tensors [B, heads, N, Hc], rotating the first
    ``num_rotated`` (q and k) by ``table`` ([N, Hc] or per-sample [B, N, Hc]).

    Same result as :func:`apply_rope_tokens` on the slice then a permute; when a
    gradient is needed (eager) it is one autograd function with a single gradient
    buffer (see :class:`_RotateSplitHeads`); otherwise, and while torch.compile traces,
    it is plain element-wise code (for the compiler to fuse).
    """
    if t.dim() != 5:
        raise ValueError(f'expected projections [B, N, k, heads, Hc], got {tuple(t.shape)}')
    r = int(num_rotated)
    if table is None or r == 0:
        return t.permute(2, 0, 3, 1, 4).unbind(0)
    if torch.compiler.is_compiling() or not (torch.is_grad_enabled() and t.requires_grad):
        # compile: plain element-wise code to fuse; inference: no gradient buffer to
        # share (and torch.jit.trace, used by the FLOP counter, sees the ops)
        rotated = apply_rope_tokens(t[:, :, :r], table)
        return (rotated.permute(2, 0, 3, 1, 4).unbind(0)
                + t[:, :, r:].permute(2, 0, 3, 1, 4).unbind(0))
    rot = _rotation_of(table)
    rot = rot.view(rot.shape[:-1] + (1, 1, rot.shape[-1]))  # [(B,) N, 1, 1, Hc/2]
    return _RotateSplitHeads.apply(t, rot, r)


class RoPE2D(nn.Module):
    """Cached 2D RoPE / AS2DRoPE tables for one head dim (shared by all heads and layers).

    Args:
        head_dim: per-head channels, divisible by 4.
        anchor_hw: the pre-training grid ``(h, w)`` that AS2DRoPE maps every grid
            onto. Required for ``rope_type='as2d'`` and ``'ntk'``.
        rope_type: ``'as2d'`` (auto-scaled, default), ``'2d'`` (plain), ``'1d'``
            (LLaMA over the flattened index), ``'ntk'`` (2D with NTK-aware theta
            scaling by the grid/anchor ratio) or ``'none'`` (no rotation).
        theta: RoPE base.
        max_cached: tables kept per module (least recently used are dropped),
            bounding memory when detection inputs vary in size.
    """

    def __init__(self, head_dim: int, anchor_hw: Optional[Tuple[int, int]] = None,
                 rope_type: str = 'as2d', theta: float = 10000.0, max_cached: int = 32):
        super().__init__()
        if rope_type not in ROPE_TYPES:
            raise ValueError(f'rope_type must be one of {ROPE_TYPES}, got {rope_type!r}')
        if head_dim % 4 != 0:
            raise ValueError(f'2D RoPE needs a head dim divisible by 4, got head dim {head_dim}')
        if rope_type in ('as2d', 'ntk') and anchor_hw is None:
            raise ValueError(f"rope_type={rope_type!r} needs the anchor (pre-training) grid")
        if not theta > 0:  # theta 0 gives NaN angles, negative ones complex frequencies
            raise ValueError(f'RoPE theta must be > 0, got {theta}')
        if anchor_hw is not None and min(_pair(anchor_hw)) <= 0:
            raise ValueError(f'RoPE anchor grid must be positive, got {anchor_hw}')
        self.head_dim = head_dim
        self.anchor_hw = None if anchor_hw is None else _pair(anchor_hw)
        self.rope_type = rope_type
        self.theta = float(theta)
        self.max_cached = max_cached
        self._cache: 'OrderedDict[Hashable, RopeTable]' = OrderedDict()

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, rope_type={self.rope_type}, '
                f'anchor_hw={self.anchor_hw}, theta={self.theta}')

    # -- state that must not travel with the module ----------------------------------
    def __getstate__(self) -> Dict:
        state = self.__dict__.copy()
        state['_cache'] = OrderedDict()
        return state

    def _apply(self, fn, recurse=True):  # .to()/.cuda(): tables are rebuilt on demand
        self._cache.clear()
        return super()._apply(fn, recurse)

    # -- scaling ----------------------------------------------------------------------
    def grid_scale(self, h: int, w: int) -> Tuple[float, float]:
        """Per-axis position scale for an h×w grid: ``anchor/grid`` for AS2DRoPE, else 1."""
        if self.rope_type == 'as2d':
            return (self.anchor_hw[1] / w, self.anchor_hw[0] / h)
        return (1.0, 1.0)

    def _theta_for(self, h: int, w: int) -> float:
        if self.rope_type != 'ntk':
            return self.theta
        # NTK-aware: stretch the base by the extrapolation factor (>= 1) so that the
        # lowest frequency covers the larger grid; d/(d-2) on the per-axis pair count.
        ratio = max(h / self.anchor_hw[0], w / self.anchor_hw[1], 1.0)
        d = self.head_dim // 2
        return self.theta * ratio ** (d / (d - 2))

    # -- tables -----------------------------------------------------------------------
    def _cached(self, key: Hashable, build) -> Optional[RopeTable]:
        if self.rope_type == 'none':
            return None
        table = self._cache.get(key)
        if table is None:
            # built outside inference mode: a table first made under torch.inference_mode()
            # would otherwise be an inference tensor, unusable by a later training step
            with torch.inference_mode(False):
                table = build()
            self._cache[key] = table
            if len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        elif not torch.compiler.is_compiling():
            # least-recently-used order (skipped while torch.compile traces, where the
            # lookup stays a plain dict read)
            self._cache.move_to_end(key)
        return table

    def _from_positions(self, pos: Tensor, theta: float, device) -> RopeTable:
        freqs = rope_frequencies(self.head_dim, theta, self.rope_type)
        cos, sin = rope_table(pos, freqs, self.rope_type)
        return RopeTable(cos.to(device), sin.to(device))

    def grid(self, h: int, w: int, device=None, num_prefix: int = 0,
             prefix_mode: str = 'none',
             scale: Optional[Tuple[float, float]] = None) -> Optional[RopeTable]:
        """Table ``[num_prefix + h*w, Hc]`` for a row-major h×w grid of tokens.

        Prefix tokens (e.g. the class token) come first; ``prefix_mode='none'`` leaves
        them unrotated, ``'official'`` puts them at ``t = -1`` (``x = w-1, y = -1``,
        scaled like the grid). ``scale`` overrides the AS2DRoPE scale (e.g. anchoring
        at another grid). Returns ``None`` when ``rope_type='none'``.
        """
        if prefix_mode not in PREFIX_MODES:
            raise ValueError(f'prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}')
        sc = self.grid_scale(h, w) if scale is None else tuple(scale)
        key = ('grid', h, w, sc, num_prefix, prefix_mode, str(device))

        def build() -> RopeTable:
            theta = self._theta_for(h, w)
            if self.rope_type == '1d':
                t = torch.arange(-num_prefix, h * w, dtype=torch.float64)
                cos, sin = self._from_positions(t, theta, device)
            else:
                official = prefix_mode == 'official'
                pos = grid_positions(h, w, sc, num_prefix=num_prefix if official else 0)
                cos, sin = self._from_positions(pos, theta, device)
            if num_prefix and prefix_mode == 'none':
                # prefix rows get the identity rotation (cos 1, sin 0)
                if self.rope_type == '1d':
                    cos, sin = cos[num_prefix:], sin[num_prefix:]
                one, zero = identity_table(num_prefix, self.head_dim, device)
                cos, sin = torch.cat([one, cos]), torch.cat([zero, sin])
            return RopeTable(cos.contiguous(), sin.contiguous())

        return self._cached(key, build)

    def positions(self, key: Hashable, pos_fn, h: int, w: int,
                  device=None) -> Optional[RopeTable]:
        """Cached table for custom positions: ``pos_fn()`` returns ``[N, 2]`` (x, y).

        ``key`` must identify the geometry (used by pooled keys of the pyramid's GSA);
        ``h, w`` are the query grid, used only for NTK theta scaling.
        """
        if self.rope_type == '1d':
            raise ValueError("rope_type='1d' is defined on a flat token index only; "
                             'use 2d/as2d/ntk/none for pooled or windowed positions')
        full_key = ('pos', key, str(device))
        return self._cached(full_key,
                            lambda: self._from_positions(pos_fn(), self._theta_for(h, w), device))
