"""Pyramid VisionLLaMA: the Twins-SVT layout with RoPE/SwiGLU blocks (docs/design.md).

Four stages; each starts with a Conv(k=s=4, then 2) + LN patch embedding and alternates
locally-grouped attention (LSA: 7×7 windows, window-local RoPE) with global
sub-sampled attention (GSA: keys/values from a Conv(k=s=sr) + LN map, sr = 8, 4, 2, 1).
There is no conditional position encoding: positions enter through 2D RoPE only.
"""
import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .ablations import PEG, AbsPosEmbed, build_norm, check_choice, mlp_hidden, rope_rotary_dim
from .attention import check_heads
from .backbone_utils import resolve_arch, run_block, stage_cp_modes
from .base import (VisionLLaMABackbone, guard_traced_size, need_bool, need_int, need_rate,
                   need_real, need_size, resolve_out_indices, state_keys)
from .blocks import PatchEmbed, VisionLLaMABlock, drop_path_rates, swiglu_hidden
from .backbone_utils import check_no_pretrained
from .rope import RoPE2D, Table, _pair, grid_positions

NUM_STAGES = 4
HEAD_DIM = 32


def _arch(embed_dims: Sequence[int], depths: Sequence[int]) -> Dict:
    return dict(embed_dims=list(embed_dims), depths=list(depths),
                num_heads=[d // HEAD_DIM for d in embed_dims])


class PyramidVisionLLaMA(VisionLLaMABackbone):
    """Pyramid VisionLLaMA backbone (Twins-SVT layout, no conditional position encoding).

    Args:
        arch: ``'s'``/``'small'``, ``'b'``/``'base'``, ``'l'``/``'large'`` or a dict with
            ``embed_dims`` and ``depths`` (4 ints each) and optionally ``num_heads``
            (default ``embed_dims / 32``), ``sr_ratios`` (default ``[8, 4, 2, 1]``),
            ``feedforward_channels`` (default ``ceil256(int(8d/3))`` per stage),
            ``layer_scale_init`` (default 1e-4), ``ffn_bias`` (default False).
        img_size: pre-training input size; fixes each stage's AS2DRoPE anchor grid
            (224 -> 56, 28, 14, 7).
        in_channels: input channels.
        out_type: ``'featmap'`` (dense, the authors' seg/det backbone and mmseg/mmdet's
            Twins-SVT): every stage ends with its LayerNorm ``norms.{s}``, whose output is
            both the returned [B, C_s, H_s, W_s] map (at ``out_indices``) and the input of
            the next stage's patch embedding; all four norms exist whatever
            ``out_indices`` is. ``'avg_featmap'`` (classification): no inter-stage norm,
            ``norm(mean(x))`` of the last stage, [B, C_4].
        out_indices: stages returned; default (0, 1, 2, 3) for ``featmap`` and (3,) for
            ``avg_featmap`` (which only supports the last stage).
        window_size: LSA window (7).
        compat: ``'correct'`` (default) or ``'official'``, the geometry preset.
            ``'correct'``: GSA keys at the centres of the sr×sr cells they pool
            (``sr*i + (sr-1)/2``), masked zero-padded LSA windows, GSA maps zero padded
            to a multiple of sr (any input size), GSA positions scaled by ``rope_type``
            (AS2DRoPE anchored at the stage's pre-training grid), classifier feature
            ``norm(mean(x))``. ``'official'``: what the authors' code computes, and so
            what their released weights were trained with: GSA key m at
            ``x = o + sr*(m mod W)``, ``y = o + sr*(m div W)``, ``o = 1 - 1/sr`` (row
            length W), unmasked zero-padded LSA windows, a flooring GSA sub-sampling
            conv, and per output mode: ``avg_featmap`` unscaled GSA positions and the
            classifier feature ``norm(mean(norm(x)))``; ``featmap`` GSA positions
            (queries and keys) scaled by ``14 / H_stage`` on both axes (the authors'
            seg/det ``auto_scale``). LSA positions are window-local 0..6 in both.
            ``compat`` only sets the defaults of the five switches below; each one given
            explicitly overrides its preset value (an ablation of one detail).
        rope_compat: GSA key positions, ``'correct'`` (cell centres) or ``'official'``.
        rope_scale: GSA position scale: None (from ``rope_type``), ``'official'``
            (``14 / H_stage``) or a number; ``'preset'`` (default) takes ``compat``'s.
        window_pad_mask: mask the zero-padded keys of LSA windows (True) or not.
        gsa_pool: ``'pad'`` (zero pad to a multiple of sr, ceil key grid) or ``'floor'``.
        double_final_norm: ``avg_featmap`` feature ``norm(mean(norm(x)))`` (True) or
            ``norm(mean(x))``.
        rope_type: ``'as2d'`` (default), ``'2d'``, ``'ntk'``, ``'ntk_fixed'``, ``'mixed'``
            (learnable frequencies per block and head: ``ropes.{s}.freqs``
            ``[depths[s], heads_s, R/2, 2]``), ``'dinov3'`` (coordinates normalised by the
            stage grid, LSA windows by the window; augmented in training, one draw per
            stage and forward shared by its LSA, GSA query and key tables; needs
            ``rope_scale=None``), ``'yarn'`` (NTK-by-parts above the stage anchor; LSA
            windows stay 2D) or ``'none'``; formulas in :mod:`vllama_mm.models.rope`.
        rope_cfg: the variant's parameters (:data:`vllama_mm.models.rope.ROPE_CFG`),
            the same for every stage.
        rope_theta: RoPE base.
        rope_anchor: stage-1 anchor grid ``(h, w)`` overriding ``img_size / 4`` (later
            stages halve it, rounding up).
        qkv_bias: bias of the q/k/v projections.
        drop_rate, attn_drop_rate, drop_path_rate: dropouts.
        drop_path_schedule: ``'linear'`` (default; the authors' Twins-based code): the
            rate rises from 0 to ``drop_path_rate`` over all blocks of all stages;
            ``'uniform'``: the same rate in every block.
        drop_path_branches: ``'both'`` (default) or ``'attn'`` (attention branch only).
        norm_eps: LayerNorm eps.
        frozen_stages: freeze the patch embedding, blocks and output norm of stages
            ``0..frozen_stages-1`` (and ``norm`` when all 4 are frozen); kept after
            ``train()``. -1 or 0 freezes nothing.
        with_cp: activation checkpointing per block when training: ``False`` /
            ``'none'``, ``True`` / ``'full'`` (whole blocks recomputed) or ``'selective'``
            (matmul and attention outputs kept, element-wise work recomputed); or one such
            value per stage, e.g. ``('full', 'none', 'none', 'none')``: only stage 1, which
            holds the most activation bytes per MAC (3136 tokens of width 64 at 224²), is
            recomputed.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
        pretrained: only ``None`` (what mmseg / mmdet pass on); weights come via init_cfg.
        mlp_type, norm_type, rope_ratio, rope_shared, rope_ntk_factor: the paper's
            ablations (11a, 11g, 11b, 11d; ``'ntk_fixed'``), as in :class:`VisionLLaMA`;
            ``norm_type`` covers the block norms and the output norms (``norm``,
            ``norms``), not the patch-embedding and GSA sub-sampling LNs (as the
            authors' code).
        abs_pos_embed: None (default) or ``'learnable'``: a learnable absolute
            position embedding ``pos_embeds.{s}`` per stage, added after the stage's
            patch embedding (PVT style; ablation 11f). The authors' released pyramid
            code builds but never adds its ``pos_embed``; this is our reading.
        use_peg: a PEG (``pegs.{s}``: depth-wise 3×3 conv, ``x + conv(x)``) after the
            first block of each stage (the authors' ``use_peg``, ablation 11f).

    Parameters: ``patch_embeds.{s}``, ``stages.{s}.{j}`` (blocks: ``ln1``, ``attn``,
    ``ls1``, ``ln2``, ``ffn``, ``ls2``), ``norms.{s}`` (``featmap``) or ``norm``
    (``avg_featmap``). The key table from the authors' ``model`` dict is
    ``vllama_mm/models/convert/pyramid.py``.

    ``norms.{s}.*`` (the stage norms of ``featmap`` mode) have no counterpart in the
    classification weights. RoPE tables live in ``ropes.{s}``
    (one :class:`RoPE2D` per stage), never in the state dict (only the learnable
    ``ropes.{s}.freqs`` of ``rope_type='mixed'`` are parameters).
    """

    arch_zoo = {
        **dict.fromkeys(['s', 'small'], _arch([64, 128, 256, 512], [2, 2, 10, 4])),
        **dict.fromkeys(['b', 'base'], _arch([96, 192, 384, 768], [2, 2, 18, 2])),
        **dict.fromkeys(['l', 'large'], _arch([128, 256, 512, 1024], [2, 2, 18, 2])),
    }
    essential_keys = ('embed_dims', 'depths')
    arch_defaults = dict(num_heads=None, sr_ratios=[8, 4, 2, 1], feedforward_channels=None,
                         layer_scale_init=1e-4, ffn_bias=False)
    OUT_TYPES = ('featmap', 'avg_featmap')
    NEW_TASK_TENSORS = ('norms.', )  # per-stage output norms: none in classification weights
    ROPE_TYPES = ('as2d', '2d', 'ntk', 'ntk_fixed', 'mixed', 'dinov3', 'yarn', 'none')
    OFFICIAL_SPAN = 14.0  # official seg/det GSA scale: 14 / H_stage
    # compat preset -> out_type -> defaults of the geometry switches (constructor
    # arguments of the same names). rope_scale None: from rope_type (AS2DRoPE);
    # 'official': 14 / H_stage on both axes; a number: that scale on both axes.
    _CORRECT = dict(rope_compat='correct', window_pad_mask=True, gsa_pool='pad',
                    double_final_norm=False, rope_scale=None)
    _OFFICIAL = dict(rope_compat='official', window_pad_mask=False, gsa_pool='floor')
    COMPAT = {
        'correct': dict(featmap=_CORRECT, avg_featmap=_CORRECT),
        'official': dict(featmap=dict(_OFFICIAL, double_final_norm=False, rope_scale='official'),
                         avg_featmap=dict(_OFFICIAL, double_final_norm=True, rope_scale=1.0)),
    }

    def __init__(self,
                 arch: Union[str, Dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 in_channels: int = 3,
                 out_type: str = 'featmap',
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 window_size: int = 7,
                 compat: str = 'correct',
                 rope_compat: Optional[str] = None,
                 rope_scale: Union[None, str, float] = 'preset',
                 window_pad_mask: Optional[bool] = None,
                 gsa_pool: Optional[str] = None,
                 double_final_norm: Optional[bool] = None,
                 rope_type: str = 'as2d',
                 rope_theta: float = 10000.0,
                 rope_anchor: Optional[Tuple[int, int]] = None,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-5,
                 frozen_stages: int = -1,
                 with_cp: Union[bool, str, Sequence[Union[bool, str]]] = False,
                 mlp_type: str = 'swiglu',
                 norm_type: str = 'ln',
                 rope_ratio: float = 1.0,
                 rope_shared: bool = True,
                 rope_ntk_factor: float = 2.0,
                 rope_cfg: Optional[Dict] = None,
                 abs_pos_embed: Optional[str] = None,
                 use_peg: bool = False,
                 drop_path_schedule: str = 'linear',
                 drop_path_branches: str = 'both',
                 init_cfg: Optional[Union[Dict, List[Dict]]] = None,
                 pretrained: Optional[str] = None):
        super().__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        check_no_pretrained(owner, pretrained)
        self.arch_settings = a = self._resolve_arch(arch)
        self.embed_dims: List[int] = a['embed_dims']
        self.depths: List[int] = a['depths']
        self.num_heads: List[int] = a['num_heads']
        self.sr_ratios: List[int] = a['sr_ratios']
        ffn_hidden: List[int] = [mlp_hidden(mlp_type, d, h) for d, h in
                                 zip(self.embed_dims, a['feedforward_channels'])]
        check_choice('abs_pos_embed', abs_pos_embed, (None, 'learnable'))
        rotary_dim = rope_rotary_dim(rope_ratio, HEAD_DIM)
        self.abs_pos_embed = abs_pos_embed
        self.use_peg = need_bool(owner, 'use_peg', use_peg)

        # -- options ---------------------------------------------------------------
        self.setup_out_type(out_type)
        for name, value, allowed in (('rope_type', rope_type, self.ROPE_TYPES),
                                     ('compat', compat, tuple(self.COMPAT))):
            if value not in allowed:
                raise ValueError(f'{name} must be one of {allowed}, got {value!r}')
        self.window_size = need_int(owner, 'window_size', window_size, 1)
        self.compat = compat
        # the geometry switches: given, else the preset's (fixed for the model's life)
        preset = self.COMPAT[compat][out_type]
        self.rope_compat: str = preset['rope_compat'] if rope_compat is None else rope_compat
        check_choice('rope_compat', self.rope_compat, ('correct', 'official'))
        self.rope_scale: Union[None, str, float] = \
            preset['rope_scale'] if rope_scale == 'preset' else rope_scale
        if self.rope_scale not in (None, 'official'):
            need_real(owner, 'rope_scale', self.rope_scale, positive=True)
        if rope_type == 'dinov3' and self.rope_scale is not None:
            raise ValueError(f"{owner}: rope_type='dinov3' normalises coordinates by the grid "
                             f'itself; a GSA position scale (rope_scale={self.rope_scale!r}, '
                             f"from compat={compat!r}) does not apply: set rope_scale=None")
        self.window_pad_mask: bool = need_bool(owner, 'window_pad_mask', preset[
            'window_pad_mask'] if window_pad_mask is None else window_pad_mask)
        self.gsa_pool: str = preset['gsa_pool'] if gsa_pool is None else gsa_pool
        check_choice('gsa_pool', self.gsa_pool, ('pad', 'floor'))
        self.double_final_norm: bool = need_bool(owner, 'double_final_norm', preset[
            'double_final_norm'] if double_final_norm is None else double_final_norm)
        self.out_indices = self._resolve_out_indices(out_indices, out_type)

        # -- RoPE, one per stage, anchored at the stage's pre-training grid ----------
        self.img_size = need_size(owner, 'img_size', img_size)
        if min(self.img_size) < 4:
            raise ValueError(f'img_size {self.img_size} is smaller than the stem stride 4')
        anchor = _pair(rope_anchor) if rope_anchor is not None else \
            tuple(math.ceil(s / 4) for s in self.img_size)
        rope_theta = need_real(owner, 'rope_theta', rope_theta, positive=True)
        rope_shared = need_bool(owner, 'rope_shared', rope_shared)
        self.ropes = nn.ModuleList()
        stage_grids = []
        for s in range(NUM_STAGES):
            self.ropes.append(RoPE2D(HEAD_DIM, anchor, rope_type, rope_theta,
                                     rotary_dim=rotary_dim, num_heads=self.num_heads[s],
                                     shared=rope_shared, ntk_factor=rope_ntk_factor,
                                     num_layers=self.depths[s], rope_cfg=rope_cfg))
            stage_grids.append(anchor)
            anchor = tuple(math.ceil(s / 2) for s in anchor)

        # -- stages ------------------------------------------------------------------
        drop_path_rate = need_rate('drop_path_rate', drop_path_rate)
        attn_drop_rate, drop_rate = need_rate('attn_drop_rate', attn_drop_rate), \
            need_rate('drop_rate', drop_rate)
        norm_eps = need_real(owner, 'norm_eps', norm_eps, positive=True)
        qkv_bias = need_bool(owner, 'qkv_bias', qkv_bias)
        total = sum(self.depths)
        dpr = drop_path_rates(drop_path_rate, total, drop_path_schedule)
        self.patch_embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev, cursor = in_channels, 0
        for s in range(NUM_STAGES):
            dim = self.embed_dims[s]
            self.patch_embeds.append(
                PatchEmbed(prev, dim, 4 if s == 0 else 2, norm=True, norm_eps=norm_eps))
            blocks = nn.ModuleList()
            for j in range(self.depths[s]):
                lsa = j % 2 == 0
                blk = VisionLLaMABlock(
                    dim, self.num_heads[s], ffn_hidden[s], qkv_bias=qkv_bias,
                    ffn_bias=a['ffn_bias'], layer_scale_init=a['layer_scale_init'],
                    drop_path=dpr[cursor + j], attn_drop=attn_drop_rate, drop=drop_rate,
                    norm_eps=norm_eps, window_size=self.window_size if lsa else 0,
                    window_pad_mask=self.window_pad_mask,
                    sr_ratio=1 if lsa else self.sr_ratios[s], sr_pad=self.gsa_pool == 'pad',
                    mlp_type=mlp_type, norm_type=norm_type,
                    drop_path_branches=drop_path_branches)
                blocks.append(blk)
            self.stages.append(blocks)
            prev, cursor = dim, cursor + self.depths[s]
        stage_cp_modes(with_cp, NUM_STAGES)  # a bad value fails here, not in training
        self.with_cp = tuple(with_cp) if isinstance(with_cp, (list, tuple)) else with_cp
        if abs_pos_embed is not None:  # [1, H_s*W_s, C_s] at the stage's pre-training grid
            self.pos_embeds = nn.ModuleList(
                AbsPosEmbed(abs_pos_embed, d, g) for d, g in zip(self.embed_dims, stage_grids))
        if use_peg:
            self.pegs = nn.ModuleList(PEG(d) for d in self.embed_dims)

        # -- norms -------------------------------------------------------------------
        if out_type == 'featmap':
            # one norm per stage, in the main path (stage s output -> norms.s -> stage s+1)
            self.norms = nn.ModuleList(
                build_norm(norm_type, d, norm_eps) for d in self.embed_dims)
        else:
            self.norm = build_norm(norm_type, self.embed_dims[-1], norm_eps)

        self.setup_frozen(frozen_stages, NUM_STAGES)

    # ------------------------------------------------------------------ arguments
    def _resolve_arch(self, arch: Union[str, Dict]) -> Dict:
        owner = type(self).__name__
        a = resolve_arch(arch, self.arch_zoo, self.essential_keys, self.arch_defaults, owner)
        for key, value in self.arch_defaults.items():  # zoo presets carry only the sizes
            a.setdefault(key, copy.deepcopy(value))
        need_real(owner, 'arch.layer_scale_init', a['layer_scale_init'])
        need_bool(owner, 'arch.ffn_bias', a['ffn_bias'])
        for key in ('embed_dims', 'depths', 'num_heads', 'sr_ratios', 'feedforward_channels'):
            if a[key] is None:
                continue
            v = a[key]
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or \
                    len(v) != NUM_STAGES:
                raise ValueError(f'{owner}: arch {key!r} must be a list of {NUM_STAGES} '
                                 f'ints (one per stage), got {v!r}')
            if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v):
                raise ValueError(f'{owner}: arch {key!r} must hold positive ints, got {v!r}')
            a[key] = list(v)
        if a['num_heads'] is None:
            for d in a['embed_dims']:
                if d % HEAD_DIM:
                    raise ValueError(f'{owner}: embed dims {d} is not a multiple of the head '
                                     f'dim {HEAD_DIM}; pass num_heads explicitly')
            a['num_heads'] = [d // HEAD_DIM for d in a['embed_dims']]
        for d, h in zip(a['embed_dims'], a['num_heads']):
            if check_heads(d, h) != HEAD_DIM:
                raise ValueError(f'{owner}: head dim must be {HEAD_DIM} in every stage '
                                 f'(one RoPE table per stage), got {d}/{h} = {d // h}')
        if a['feedforward_channels'] is None:
            a['feedforward_channels'] = [swiglu_hidden(d) for d in a['embed_dims']]
        return a

    @staticmethod
    def _resolve_out_indices(out_indices, out_type: str) -> List[int]:
        if out_indices is None:
            out_indices = (0, 1, 2, 3) if out_type == 'featmap' else (NUM_STAGES - 1,)
        result = resolve_out_indices('PyramidVisionLLaMA', out_indices, NUM_STAGES, 'stages')
        if out_type == 'avg_featmap' and result != [NUM_STAGES - 1]:
            raise ValueError('out_type="avg_featmap" pools the last stage only; '
                             f'out_indices must be (3,), got {tuple(out_indices)}')
        return result

    # ------------------------------------------------------------------ base hooks
    def drop_unused(self, state_dict, prefix, logger) -> None:
        """Classification weights into a dense backbone: drop ``norm``, explain ``norms``."""
        if hasattr(self, 'norm'):
            return
        for name in state_keys(state_dict, prefix, 'norm.'):
            del state_dict[name]
            logger.info(f'{name}: dropped. out_type="featmap" uses per-stage `norms` '
                        'instead of the classification `norm`.')
        is_backbone = bool(state_keys(state_dict, prefix, 'stages.'))
        absent = [f'norms.{s}' for s in range(NUM_STAGES)
                  if prefix + f'norms.{s}.weight' not in state_dict]
        if is_backbone and absent:
            logger.info(f'{prefix}{{{",".join(absent)}}}: not in the checkpoint (classification '
                        'weights have no inter-stage norm); they keep weight 1, bias 0, as in '
                        "the authors' seg/det fine-tuning, and are trained from there.")

    def frozen_parts(self) -> list:
        """Patch embedding, blocks, position embedding / PEG and output norm of the first
        ``frozen_stages`` stages (and ``norm`` when all 4 are frozen)."""
        parts = []
        for s in range(self.frozen_stages):
            parts += [self.patch_embeds[s], self.stages[s]]
            parts += [getattr(self, n)[s] for n in ('pos_embeds', 'pegs', 'norms')
                      if hasattr(self, n)]
            if s == NUM_STAGES - 1 and hasattr(self, 'norm'):
                parts.append(self.norm)
        return parts

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def layer_id(self, name: str) -> Optional[int]:
        """Blocks are numbered globally ``1..sum(depths)``; ``patch_embeds.{s}`` (and
        ``pos_embeds.{s}``) get the depth just before the stage's first block, ``pegs.{s}``
        the one after it; output norms (``norms``, ``norm``) come after the blocks. The
        mixed-RoPE frequencies ``ropes.{s}.freqs`` (all blocks of stage s) sit with the
        stage's patch embedding."""
        parts = name.split('.')
        if parts[0] in ('patch_embeds', 'pos_embeds', 'ropes'):
            return sum(self.depths[:int(parts[1])])
        if parts[0] == 'pegs':
            return sum(self.depths[:int(parts[1])]) + 1
        if parts[0] == 'stages':
            return sum(self.depths[:int(parts[1])]) + int(parts[2]) + 1
        return None

    # ------------------------------------------------------------------ RoPE geometry
    def gsa_scale(self, stage: int, hw: Tuple[int, int]) -> Tuple[float, float]:
        """(x, y) scale of GSA query and key positions on an ``hw`` stage grid."""
        H, W = hw
        if self.rope_scale is None:
            return self.ropes[stage].grid_scale(H, W)
        if self.rope_scale == 'official':
            return (self.OFFICIAL_SPAN / H, self.OFFICIAL_SPAN / H)
        return (self.rope_scale, self.rope_scale)

    def pooled_grid(self, stage: int, hw: Tuple[int, int]) -> Tuple[int, int]:
        """Key grid of the GSA sub-sampling conv: ceil (``gsa_pool='pad'``) or floor."""
        sr = self.sr_ratios[stage]
        if self.gsa_pool == 'pad':
            return (math.ceil(hw[0] / sr), math.ceil(hw[1] / sr))
        return (hw[0] // sr, hw[1] // sr)

    def gsa_key_positions(self, stage: int, hw: Tuple[int, int]) -> Tensor:
        """Scaled (x, y) positions ``[Nk, 2]`` float64 of the pooled GSA keys.

        ``'correct'``: cell centres ``sr*i + (sr-1)/2``; ``'official'``: row length W
        (not W/sr) and offset ``1 - 1/sr``, as the released weights were trained.
        """
        sr = self.sr_ratios[stage]
        hk, wk = self.pooled_grid(stage, hw)
        scale = self.gsa_scale(stage, hw)
        if self.rope_compat == 'correct':
            c = (sr - 1) / 2
            return grid_positions(hk, wk, scale, offset=(c, c), stride=(sr, sr))
        o = 1 - 1 / sr
        return grid_positions(hk, wk, scale, offset=(o, o), stride=(sr, sr), row_length=hw[1])

    def rope_tables(self, stage: int, hw: Tuple[int, int], device: torch.device
                    ) -> Tuple[Optional[Table], Optional[Table], Optional[Table]]:
        """(LSA window table, GSA query table, GSA key table or None) for one stage grid.

        All three are cached inside the stage's :class:`RoPE2D` and shared by its blocks
        (``'mixed'``: one per block, :meth:`RoPE2D.layer_table`; ``'dinov3'`` in
        training: one coordinate draw for all three). With sr = 1 the keys are the
        queries (None).
        """
        rope = self.ropes[stage]
        ws = self.window_size
        aug = rope.coords_augmentation(device)
        lsa = rope.grid(ws, ws, device, local=True, aug=aug)  # window-local 0..ws-1
        scale = self.gsa_scale(stage, hw)
        gsa_q = rope.grid(hw[0], hw[1], device, scale=scale, aug=aug)
        sr = self.sr_ratios[stage]
        if sr == 1 or self.ropes[stage].rope_type == 'none':
            return lsa, gsa_q, None
        key = ('gsa_keys', hw[0], hw[1], sr, self.rope_compat, self.gsa_pool, scale)
        gsa_k = rope.positions(key, lambda: self.gsa_key_positions(stage, hw),
                               hw[0], hw[1], device, aug=aug)
        return lsa, gsa_q, gsa_k

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Images [B, C_in, H, W] -> tuple of [B, C_s, H_s, W_s] maps or ([B, C_4],)."""
        outs = []
        x = guard_traced_size(x, type(self).__name__)
        B = x.shape[0]
        cp = stage_cp_modes(self.with_cp, NUM_STAGES)
        for s in range(NUM_STAGES):
            x, hw = self.patch_embeds[s](x)  # [B, H_s*W_s, C_s], row-major
            if self.abs_pos_embed is not None:
                x = self.pos_embeds[s](x, hw)
            lsa, gsa_q, gsa_k = self.rope_tables(s, hw, x.device)
            layer = self.ropes[s].layer_table  # mixed: block j's slice; else the table
            for j, blk in enumerate(self.stages[s]):
                if j % 2 == 0:
                    x = run_block(blk, x, hw, layer(lsa, j), None, with_cp=cp[s])
                else:
                    x = run_block(blk, x, hw, layer(gsa_q, j), layer(gsa_k, j),
                                  with_cp=cp[s])
                if j == 0 and self.use_peg:
                    x = self.pegs[s](x, hw)  # [B, H_s*W_s, C_s]
            C = x.shape[-1]
            if self.out_type == 'featmap':
                x = self.norms[s](x)  # [B, N_s, C_s]: the output and the next stage's input
                if s in self.out_indices:
                    outs.append(x.transpose(1, 2).reshape(B, C, *hw).contiguous())
            elif s == NUM_STAGES - 1:
                if self.double_final_norm:
                    x = self.norm(x)
                outs.append(self.norm(x.mean(dim=1)))  # [B, C_4]
            # [B, C_s, H_s, W_s] for the next embed, as a channels-last view of the tokens
            # (no copy; the strided conv then returns tokens that need no transpose copy)
            x = x.reshape(B, hw[0], hw[1], C).permute(0, 3, 1, 2)
        return tuple(outs)
