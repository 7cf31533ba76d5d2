"""Plain (ViT-like) VisionLLaMA backbone, with optional ViTDet-style window attention."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .ablations import AbsPosEmbed, build_norm, mlp_hidden, rope_rotary_dim
from .attention import check_heads
from .backbone_utils import cp_mode, resolve_arch, run_block
from .base import (VisionLLaMABackbone, guard_traced_size, need_bool, need_int, need_rate,
                   need_real, need_size, resolve_out_indices, state_keys)
from .backbone_utils import check_no_pretrained
from .blocks import PatchEmbed, VisionLLaMABlock, drop_path_rates, swiglu_hidden
from .rope import PREFIX_MODES, RoPE2D, _pair


def _arch(embed_dims: int, num_layers: int, num_heads: int, ffn_ratio: float = 8 / 3,
          layer_scale_init: float = 1e-4, ffn_bias: bool = False) -> Dict:
    return dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                feedforward_channels=swiglu_hidden(embed_dims, ffn_ratio),
                layer_scale_init=layer_scale_init, ffn_bias=ffn_bias)


class VisionLLaMA(VisionLLaMABackbone):
    """Plain VisionLLaMA: patch embed, optional class token, L pre-norm RoPE/SwiGLU blocks.

    No absolute position embedding: positions enter through 2D RoPE, auto-scaled
    (AS2DRoPE) so that any input maps onto the anchor grid ``img_size / patch_size``.

    Args:
        arch: ``'s'``, ``'b'``, ``'l'`` (paper sizes: SwiGLU ``ceil256(int(8d/3))``,
            bias-free, layer scale 1e-4), ``'mae-b'``, ``'mae-l'`` (the released MAE
            weights: fused biased SwiGLU ``ceil256(int(32d/3))``, no layer scale), or a
            dict with ``embed_dims``, ``num_layers``, ``num_heads`` and optionally
            ``feedforward_channels``, ``layer_scale_init``, ``ffn_bias``.
        img_size: pre-training input size; fixes the AS2DRoPE anchor grid.
        patch_size: patch size of the conv embedding.
        in_channels: input channels.
        out_indices: blocks whose outputs are returned (negative counts from the end).
        out_type: ``'raw'`` [B, N, C] (with class token), ``'cls_token'`` [B, C],
            ``'featmap'`` [B, C, h, w], ``'avg_featmap'`` [B, C] (mean of patch tokens,
            then ``ln2``).
        with_cls_token: prepend a class token.
        cls_token_rope: ``'none'`` (class token unrotated) or ``'official'`` (rotated
            at ``t = -1``: ``x = w-1, y = -1``).
        rope_type: ``'as2d'`` (default), ``'2d'``, ``'1d'``, ``'ntk'``, ``'ntk_fixed'``,
            ``'mixed'`` (learnable frequencies per layer and head, ``rope.freqs``
            ``[num_layers, heads, R/2, 2]``; rope-vit uses ``rope_theta=10``),
            ``'dinov3'`` (normalised coordinates, augmented in training), ``'yarn'``
            (NTK-by-parts above the anchor grid) or ``'none'``; formulas in
            :mod:`vllama_mm.models.rope`.
        rope_cfg: the variant's parameters, e.g. ``dict(jitter_coords=2.0)`` for
            ``'dinov3'`` (keys: :data:`vllama_mm.models.rope.ROPE_CFG`); None: defaults.
        rope_theta: RoPE base.
        rope_anchor: anchor grid ``(h, w)`` overriding ``img_size / patch_size``,
            e.g. the pre-training grid when fine-tuning at another size.
        qkv_bias: bias of the qkv projection.
        drop_rate, attn_drop_rate, drop_path_rate: dropouts.
        drop_path_schedule: ``'linear'`` (default): the drop-path rate rises from 0 in
            the first block to ``drop_path_rate`` in the last; ``'uniform'``: the same
            rate in every block (the authors' DeiT-code plain models).
        drop_path_branches: ``'both'`` (default) or ``'attn'``: drop path on the
            attention branch only (the authors' MAE-layout backbone: fine-tuning,
            UperNet, ViTDet).
        drop_path_per_window: sample the attention drop path per window in window
            blocks (the authors' ViTDet backbone); default per image.
        norm_eps: LayerNorm eps.
        final_norm: LayerNorm ``ln1`` on the last block's output.
        frozen_stages: freeze patch embed, class token and the first N blocks
            (kept frozen after ``train()``).
        window_size: > 0 gives ViTDet window attention in every block not in
            ``global_attn_indexes`` (window-local RoPE there; global blocks use the full,
            auto-scaled grid). Needs ``with_cls_token=False``.
        global_attn_indexes: blocks with global attention when ``window_size > 0``.
        window_pad_mask: mask zero-padded window tokens (default) or not (ViTDet).
        with_cp: activation checkpointing per block when training: ``False`` /
            ``'none'``, ``True`` / ``'full'`` (whole blocks recomputed) or ``'selective'``
            (matmul and attention outputs kept, element-wise work recomputed).
        mlp_type: ``'swiglu'`` (default) or ``'gelu'`` (ViT MLP, hidden 4d, biased;
            ablation 11a; ``feedforward_channels`` then does not apply).
        norm_type: ``'ln'`` (default) or ``'rmsnorm'`` (the authors' RMSNorm, eps
            1e-6) for the block norms and the final norms ``ln1``/``ln2`` (11g).
        rope_ratio: fraction of each head's channels that RoPE rotates, the first
            ``int(ratio * Hc)`` (a multiple of 4; the authors' ``rpe_ratio``, 11b).
        rope_shared: True (default): one RoPE over a head's channels, shared by all
            heads; False: one RoPE over the full embedding width, head h taking its
            slice (the authors' ``share_rpe=False``, 11d).
        rope_ntk_factor: theta multiplier of ``rope_type='ntk_fixed'``.
        abs_pos_embed: None (default), ``'learnable'`` or ``'sincos'``: an absolute
            position embedding ``pos_embed`` added after the patch embedding (class
            token slot included), on top of RoPE (the authors' ``use_abs``/``lr_pe``).
        pretrained: only ``None`` (what mmseg / mmdet pass on); weights come via init_cfg.
    """

    arch_zoo = {
        **dict.fromkeys(['s', 'small'], _arch(384, 12, 6)),
        **dict.fromkeys(['b', 'base'], _arch(768, 12, 12)),
        **dict.fromkeys(['l', 'large'], _arch(1024, 24, 16)),
        **dict.fromkeys(['mae-b', 'mae-base'],
                        _arch(768, 12, 12, 32 / 3, layer_scale_init=0.0, ffn_bias=True)),
        **dict.fromkeys(['mae-l', 'mae-large'],
                        _arch(1024, 24, 16, 32 / 3, layer_scale_init=0.0, ffn_bias=True)),
    }
    essential_keys = ('embed_dims', 'num_layers', 'num_heads')
    arch_defaults = dict(feedforward_channels=None, layer_scale_init=0.0, ffn_bias=False)
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    NEW_TASK_TENSORS = ('ln2.', )  # the output norm after pooling (avg_featmap)
    num_extra_tokens: int

    def __init__(self,
                 arch: Union[str, Dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 cls_token_rope: str = 'none',
                 rope_type: str = 'as2d',
                 rope_theta: float = 10000.0,
                 rope_anchor: Optional[Tuple[int, int]] = None,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 final_norm: bool = True,
                 frozen_stages: int = -1,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 window_pad_mask: bool = True,
                 with_cp: Union[bool, str] = False,
                 mlp_type: str = 'swiglu',
                 norm_type: str = 'ln',
                 rope_ratio: float = 1.0,
                 rope_shared: bool = True,
                 rope_ntk_factor: float = 2.0,
                 rope_cfg: Optional[Dict] = None,
                 abs_pos_embed: Optional[str] = None,
                 drop_path_schedule: str = 'linear',
                 drop_path_branches: str = 'both',
                 drop_path_per_window: bool = False,
                 init_cfg: Optional[Union[Dict, List[Dict]]] = None,
                 pretrained: Optional[str] = None):
        super().__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        check_no_pretrained(owner, pretrained)
        self.arch_settings = a = resolve_arch(arch, self.arch_zoo, self.essential_keys,
                                              self.arch_defaults, owner)
        self.embed_dims, self.num_layers, self.num_heads = (
            need_int(owner, f'arch {k!r}', a[k], 1) for k in self.essential_keys)
        head_dim = check_heads(self.embed_dims, self.num_heads)
        ffn = a['feedforward_channels']
        if ffn is not None and (isinstance(ffn, bool) or not isinstance(ffn, int) or ffn <= 0):
            raise ValueError(f'{owner}: arch feedforward_channels must be None '
                             f'or a positive int, got {ffn!r}')
        ffn_hidden = mlp_hidden(mlp_type, self.embed_dims, ffn or swiglu_hidden(self.embed_dims))
        self.norm_type = norm_type

        self.setup_out_type(out_type)
        self.with_cls_token = need_bool(owner, 'with_cls_token', with_cls_token)
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError('out_type="cls_token" needs with_cls_token=True')
        if cls_token_rope not in PREFIX_MODES:
            raise ValueError(f'cls_token_rope must be one of {PREFIX_MODES}, '
                             f'got {cls_token_rope!r}')
        self.num_extra_tokens = int(with_cls_token)
        self.cls_token_rope = cls_token_rope

        self.img_size = need_size(owner, 'img_size', img_size)
        self.patch_size = need_int(owner, 'patch_size', patch_size, 1)
        if min(self.img_size) < self.patch_size:
            raise ValueError(f'img_size {self.img_size} is smaller than patch_size {patch_size}')
        anchor = rope_anchor or tuple(-(-s // self.patch_size) for s in self.img_size)
        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, self.patch_size)
        self.rope = RoPE2D(head_dim, _pair(anchor), rope_type,
                           need_real(owner, 'rope_theta', rope_theta, positive=True),
                           rotary_dim=rope_rotary_dim(rope_ratio, head_dim),
                           num_heads=self.num_heads,
                           shared=need_bool(owner, 'rope_shared', rope_shared),
                           ntk_factor=rope_ntk_factor, num_layers=self.num_layers,
                           rope_cfg=rope_cfg)

        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))

        self.abs_pos_embed = abs_pos_embed
        if abs_pos_embed is not None:
            self.pos_embed = AbsPosEmbed(abs_pos_embed, self.embed_dims, _pair(anchor),
                                         num_prefix=self.num_extra_tokens)

        self.out_indices = resolve_out_indices(owner, out_indices, self.num_layers, 'layers')

        # windows (ViTDet)
        self.window_size = need_int(owner, 'window_size', window_size, 0)
        if isinstance(global_attn_indexes, str) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in global_attn_indexes):
            raise TypeError(f'global_attn_indexes must be a sequence of ints, '
                            f'got {global_attn_indexes!r}')
        if self.window_size > 0 and with_cls_token:
            raise ValueError('window attention (window_size > 0) needs with_cls_token=False')
        for i in global_attn_indexes:
            if not -self.num_layers <= i < self.num_layers:
                raise ValueError(f'global_attn_indexes {i} is out of range for '
                                 f'{self.num_layers} layers')
        self.global_attn_indexes = [int(i) % self.num_layers for i in global_attn_indexes]

        if drop_path_per_window is True and self.window_size == 0:
            raise ValueError('drop_path_per_window=True samples drop path per attention '
                             'window and needs window attention: set window_size > 0, or '
                             'drop_path_per_window=False')
        dpr = drop_path_rates(need_rate('drop_path_rate', drop_path_rate), self.num_layers,
                              drop_path_schedule)
        norm_eps = need_real(owner, 'norm_eps', norm_eps, positive=True)
        layer_scale_init = need_real(owner, 'arch.layer_scale_init', a['layer_scale_init'])
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            windowed = self.window_size > 0 and i not in self.global_attn_indexes
            self.layers.append(
                VisionLLaMABlock(
                    self.embed_dims, self.num_heads, ffn_hidden,
                    qkv_bias=need_bool(owner, 'qkv_bias', qkv_bias),
                    ffn_bias=need_bool(owner, 'arch.ffn_bias', a['ffn_bias']),
                    layer_scale_init=layer_scale_init, drop_path=dpr[i],
                    attn_drop=need_rate('attn_drop_rate', attn_drop_rate),
                    drop=need_rate('drop_rate', drop_rate),
                    norm_eps=norm_eps, window_size=self.window_size if windowed else 0,
                    window_pad_mask=need_bool(owner, 'window_pad_mask', window_pad_mask),
                    mlp_type=mlp_type, norm_type=norm_type,
                    drop_path_branches=drop_path_branches,
                    drop_path_per_window=drop_path_per_window))
        self.with_cp = cp_mode(with_cp)
        self.drop_after_pos = nn.Dropout(drop_rate)

        self.final_norm = need_bool(owner, 'final_norm', final_norm)
        if final_norm:
            self.ln1 = build_norm(norm_type, self.embed_dims, norm_eps)
        if out_type == 'avg_featmap':
            self.ln2 = build_norm(norm_type, self.embed_dims, norm_eps)
        self.setup_frozen(frozen_stages, self.num_layers)

    # ------------------------------------------------------------------ base hooks
    def init_extra(self) -> None:
        if self.with_cls_token:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def drop_unused(self, state_dict, prefix, logger) -> None:
        """Drop checkpoint entries this backbone has no use for, saying why."""
        key = prefix + 'pos_embed'
        if key in state_dict and self.abs_pos_embed is None:
            del state_dict[key]
            logger.info(f'{key}: dropped. VisionLLaMA encodes positions with RoPE; the '
                        'absolute position embedding of MAE checkpoints is unused.')
        key = prefix + 'cls_token'
        if key in state_dict and not self.with_cls_token:
            del state_dict[key]
            logger.info(f'{key}: dropped. This backbone has with_cls_token=False.')
        if not self.final_norm:
            for name in state_keys(state_dict, prefix, 'ln1.'):
                del state_dict[name]
                logger.info(f'{name}: dropped. This backbone has final_norm=False.')

    def frozen_parts(self) -> list:
        """Patch embed, position embedding, class token, the first N blocks (and the
        final norms when all are frozen)."""
        parts = [self.patch_embed] + list(self.layers[:self.frozen_stages])
        if self.abs_pos_embed is not None:
            parts.append(self.pos_embed)
        if self.with_cls_token:
            parts.append(self.cls_token)
        if self.frozen_stages == self.num_layers:
            parts += [getattr(self, n) for n in ('ln1', 'ln2') if hasattr(self, n)]
        return parts

    @property
    def num_blocks(self) -> int:
        return self.num_layers

    def layer_id(self, name: str) -> Optional[int]:
        """Embeddings (and the mixed-RoPE frequencies ``rope.freqs``, shared by all
        blocks, as the position embedding) -> 0, block i -> i + 1, everything after the
        blocks -> None."""
        if name in ('cls_token', 'rope.freqs') or name.startswith(('pos_embed', 'patch_embed')):
            return 0
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1
        return None

    # ------------------------------------------------------------------ forward
    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Images [B, C, H, W] -> tokens [B, N(+1), D] (class token first) and grid (h, w)."""
        x, hw = self.patch_embed(x)
        if self.with_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.abs_pos_embed is not None:
            x = self.pos_embed(x, hw)  # [B, N(+1), D]
        return self.drop_after_pos(x), hw

    def rope_tables(self, hw: Tuple[int, int], device: torch.device):
        """(global table, window table) for this grid; cached inside :class:`RoPE2D`
        (``'mixed'``: one per layer, see :meth:`RoPE2D.layer_table`; ``'dinov3'`` in
        training: one coordinate draw for both)."""
        aug = self.rope.coords_augmentation(device)
        glob = self.rope.grid(hw[0], hw[1], device, self.num_extra_tokens,
                              self.cls_token_rope, aug=aug)
        win = None
        if self.window_size > 0:  # window-local positions 0..ws-1, never rescaled
            win = self.rope.grid(self.window_size, self.window_size, device, local=True,
                                 aug=aug)
        return glob, win

    def forward_layers(self, x: Tensor, hw: Tuple[int, int], glob, win,
                       out_indices: Sequence[int]) -> List[Tensor]:
        """Run the blocks on tokens x and collect the formatted outputs."""
        outs = []
        for i, layer in enumerate(self.layers):
            table = self.rope.layer_table(win if layer.window_size > 0 else glob, i)
            x = run_block(layer, x, hw, table, with_cp=self.with_cp)
            if i == self.num_layers - 1 and self.final_norm:
                x = self.ln1(x)
            if i in out_indices:
                outs.append(self._format_output(x, hw))
        return outs

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x, hw = self.embed(guard_traced_size(x, type(self).__name__))
        glob, win = self.rope_tables(hw, x.device)
        return tuple(self.forward_layers(x, hw, glob, win, self.out_indices))

    def _format_output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patch_tokens = x[:, self.num_extra_tokens:]  # [B, h*w, C]
        if self.out_type == 'featmap':
            B, _, C = patch_tokens.shape
            return patch_tokens.transpose(1, 2).reshape(B, C, *hw)
        return self.ln2(patch_tokens.mean(dim=1))  # avg_featmap
