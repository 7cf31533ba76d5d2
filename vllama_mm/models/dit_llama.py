"""DiT-LLaMA / SiT-LLaMA denoiser: DiT's adaLN-Zero transformer with VisionLLaMA blocks.

Written from the DiT paper (Peebles & Xie 2023, adaLN-Zero conditioning), the SiT paper
(Ma et al. 2024) and VisionLLaMA (2D RoPE, SwiGLU). Plain torch + mmengine.

Layout of one forward (latent ``x`` [B, C, H, W], ``t`` [B], ``y`` [B]):

* patchify: Conv2d(k=s=p) -> tokens [B, N, D], N = (H/p)(W/p), row-major;
* condition ``c`` [B, D] = MLP(sinusoidal(t)) + Embedding(y) (row ``num_classes`` is the
  null class used by classifier-free guidance; labels are dropped in training);
* per block: ``SiLU -> Linear(D, 6D)`` gives shift/scale/gate for the attention and the
  MLP branch; ``x += gate * Attn(LN(x) * (1 + scale) + shift)`` (same for SwiGLU), with
  LayerNorm without affine (eps 1e-6), 2D RoPE on q and k, bias-free SwiGLU;
* final: adaLN ``Linear(D, 2D)`` (shift, scale) then a linear to ``p*p*C_out``, unpatchify.

``learn_sigma=True`` makes ``C_out = 2C`` (noise and the variance interpolation); DiT
returns all of it, SiT (``return_sigma=False``) returns only the first ``C`` channels
(the velocity), exactly as the released networks do.
"""
import math
from typing import Dict, Optional, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from .attention import RoPEAttention, check_heads
from .backbone_utils import cp_mode, run_block
from .blocks import SwiGLU, swiglu_hidden
from .rope import RoPE2D

# d, depth, heads (DiT sizes; SwiGLU hidden ceil256(int(8d/3)))
DIT_ARCHS: Dict[str, Tuple[int, int, int]] = {
    's': (384, 12, 6),
    'b': (768, 12, 12),
    'l': (1024, 24, 16),
    'xl': (1152, 28, 16),
}
CFG_CHANNELS = ('first3', 'all')


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps ``t`` [B]:
    ``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period ** (-k / (dim/2))``."""
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32  # float32 as DiT
    k = torch.arange(half, dtype=dtype, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)  # [half]
    args = t.to(dtype)[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample [B, D] shift/scale on [B, N, D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """t [B] -> [B, D]: 256-dim sinusoidal features through Linear-SiLU-Linear."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """y [B] -> [B, D]; row ``num_classes`` is the null (unconditional) label.

    In training each label is replaced by the null label with probability
    ``dropout_prob`` (classifier-free guidance training); ``force_drop`` [B] bool does it
    deterministically (True -> null)."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)

    def forward(self, y: Tensor, force_drop: Optional[Tensor] = None) -> Tensor:
        if force_drop is not None or (self.training and self.dropout_prob > 0):
            if self.embedding_table.num_embeddings == self.num_classes:
                raise ValueError('label dropout / the null class needs class_dropout_prob > 0')
            drop = force_drop if force_drop is not None else \
                torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class DiTLLaMABlock(nn.Module):
    """adaLN-Zero block with RoPE attention and SwiGLU (no layer scale, no drop path)."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=True, proj_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(dim, hidden, bias=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope) -> Tensor:
        # each [B, D]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_a, scale_a),
                                                rope_q=rope)
        x = x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm without affine + linear to p*p*C_out per token."""

    def __init__(self, dim: int, patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PatchEmbedder(nn.Module):
    """[B, C, H, W] -> tokens [B, (H/p)(W/p), D] (row-major) by Conv2d(k=s=p)."""

    def __init__(self, patch: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DiTLLaMA(BaseModule):
    """Class-conditional DiT-LLaMA / SiT-LLaMA denoiser.

    Args:
        arch: ``'S'``, ``'B'``, ``'L'``, ``'XL'`` or a dict ``embed_dims, num_layers,
            num_heads`` (optionally ``mlp_hidden``).
        patch_size: 2, 4 or 8 (any positive int dividing the latent size).
        in_channels: latent channels (4 for the SD VAE).
        input_size: training latent size (int or (h, w)); anchors AS2DRoPE and is the
            default sampling size. Any size divisible by ``patch_size`` is accepted.
        num_classes: classes (the label table has one extra null row).
        class_dropout_prob: label dropout in training (0.1 as the authors).
        learn_sigma: output ``2C`` channels (noise + variance interpolation).
        return_sigma: ``True`` (DiT) returns all ``2C`` channels, ``False`` (SiT)
            returns the first ``C`` (the released SiT has the 2C layer and drops half).
        rope_type: ``'2d'`` (the authors') or ``'as2d'`` (positions scaled onto the
            ``input_size`` grid, so one model can sample another latent size), or any
            other :data:`vllama_mm.models.rope.ROPE_TYPES` entry: ``'mixed'`` (learnable
            frequencies per block and head, ``rope.freqs`` ``[num_layers, heads, R/2,
            2]``), ``'dinov3'``, ``'yarn'``, ``'ntk'``, ``'none'``, ...
        theta: RoPE base.
        rope_cfg: the variant's parameters (:data:`vllama_mm.models.rope.ROPE_CFG`).
        cfg_channels: channels guided by :meth:`forward_with_cfg`: ``'first3'`` (the
            authors': only the first 3 channels) or ``'all'`` (all ``in_channels``).
        with_cp: activation checkpointing per block when training: ``False`` /
            ``'none'``, ``True`` / ``'full'`` (whole blocks recomputed) or ``'selective'``
            (matmul and attention outputs kept, element-wise work recomputed); the
            XL/2 rows are where activations fill the memory.
    """

    def __init__(self, arch: Union[str, Dict] = 'XL', patch_size: int = 2,
                 in_channels: int = 4, input_size: Union[int, Tuple[int, int]] = 32,
                 num_classes: int = 1000, class_dropout_prob: float = 0.1,
                 learn_sigma: bool = True, return_sigma: bool = True,
                 rope_type: str = '2d', theta: float = 10000.0,
                 cfg_channels: str = 'first3', with_cp: Union[bool, str] = False,
                 rope_cfg: Optional[Dict] = None, init_cfg: Optional[Dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in DIT_ARCHS:
                raise ValueError(f'DiTLLaMA: unknown arch {arch!r}; choose one of '
                                 f'{sorted(DIT_ARCHS)} or a dict with embed_dims, num_layers, '
                                 'num_heads')
            dim, depth, heads = DIT_ARCHS[arch.lower()]
            hidden = swiglu_hidden(dim)
        else:
            unknown = set(arch) - {'embed_dims', 'num_layers', 'num_heads', 'mlp_hidden'}
            if unknown:
                raise ValueError(f'DiTLLaMA: unknown arch keys {sorted(unknown)}')
            dim, depth, heads = arch['embed_dims'], arch['num_layers'], arch['num_heads']
            hidden = arch.get('mlp_hidden') or swiglu_hidden(dim)
        if cfg_channels not in CFG_CHANNELS:
            raise ValueError(f'cfg_channels must be one of {CFG_CHANNELS}, got {cfg_channels!r}')
        if not 0.0 <= class_dropout_prob < 1.0:
            raise ValueError(f'class_dropout_prob must be in [0, 1), got {class_dropout_prob}')
        if not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f'patch_size must be a positive int, got {patch_size!r}')
        for key, v in (('embed_dims', dim), ('num_layers', depth), ('num_heads', heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f'DiTLLaMA: {key} must be a positive int, got {v!r}')
        head_dim = check_heads(dim, heads)
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f'input_size {size} is not divisible by patch_size {patch_size}')
        self.embed_dims, self.num_layers, self.num_heads = dim, depth, heads
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.learn_sigma, self.return_sigma = learn_sigma, return_sigma
        self.input_size = size
        self.num_classes = num_classes
        self.cfg_channels = cfg_channels
        self.with_cp = cp_mode(with_cp)
        grid = (size[0] // patch_size, size[1] // patch_size)
        self.rope = RoPE2D(head_dim, anchor_hw=grid, rope_type=rope_type, theta=theta,
                           num_heads=heads, num_layers=depth, rope_cfg=rope_cfg)

        self.x_embedder = PatchEmbedder(patch_size, in_channels, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.y_embedder = LabelEmbedder(num_classes, dim, class_dropout_prob)
        self.blocks = nn.ModuleList([DiTLLaMABlock(dim, heads, hidden) for _ in range(depth)])
        self.final_layer = FinalLayer(dim, patch_size, self.out_channels)
        self._reset_parameters()

    # ------------------------------------------------------------------------------
    def _reset_parameters(self) -> None:
        """DiT initialisation: xavier-uniform linears (zero bias), patch conv as a linear,
        label table N(0, 0.02), timestep MLP N(0, 0.02), every adaLN and the output
        projection zero (adaLN-Zero: each block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for lin in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def init_weights(self) -> None:
        """Keep the DiT initialisation unless an ``init_cfg`` (e.g. Pretrained) is given."""
        if self.init_cfg:
            super().init_weights()

    # ------------------------------------------------------------------------------
    def unpatchify(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, h*w, p*p*C] -> [B, C, h*p, w*p] (per-token channel order p, p, C)."""
        p, c = self.patch_size, self.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor,
                force_drop: Optional[Tensor] = None) -> Tensor:
        """x [B, C, H, W] latents, t [B] timesteps (DiT: 0..999, SiT: [0, 1]), y [B]
        labels (``num_classes`` = null) -> [B, 2C or C, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'DiTLLaMA expects latents [B, {self.in_channels}, H, W], '
                             f'got {tuple(x.shape)}')
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f'latent size {H}x{W} is not divisible by patch_size {p}')
        h, w = H // p, W // p
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        tokens = self.x_embedder(x)  # [B, N, D]
        c = self.t_embedder(t) + self.y_embedder(y, force_drop)  # [B, D]
        rope = self.rope.grid(h, w, device=x.device,
                              aug=self.rope.coords_augmentation(x.device))
        for i, block in enumerate(self.blocks):
            tokens = run_block(block, tokens, c, self.rope.layer_table(rope, i),
                               with_cp=self.with_cp)
        out = self.unpatchify(self.final_layer(tokens, c), h, w)  # [B, C_out, H, W]
        if self.learn_sigma and not self.return_sigma:
            out = out[:, :self.in_channels]
        return out

    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float) -> Tensor:
        """Classifier-free guidance on a doubled batch: ``x`` [2B, ...] whose first half is
        used for both halves, ``y`` = (labels, null labels). Guided channels per
        ``cfg_channels``; returns [2B, ...] with the guided result in both halves."""
        half = x[:len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        n = 3 if self.cfg_channels == 'first3' else self.in_channels
        guided, rest = out[:, :n], out[:, n:]
        cond, uncond = guided.chunk(2, dim=0)
        mixed = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([mixed, mixed]), rest], dim=1)
