"""ViTDet's simple feature pyramid (SimpleFPN) and the channel LayerNorm it uses (LN2d).

A plain backbone gives one stride-16 map; SimpleFPN builds strides 4, 8, 16, 32 from
it with transposed convs / identity / max-pool (Li et al., "Exploring Plain Vision
Transformer Backbones for Object Detection", 2022), then a 1x1 and a 3x3 conv, each
followed by LN2d, per level, plus extra stride-2 subsampled levels for the RPN.

mmdet's wheel does not ship ``projects/ViTDet``, so the plugin provides both modules.
Plain torch: LN2d is also registered into mmdet's MODELS (by ``vllama_mm.mmdet``) so
that ``norm_cfg=dict(type='LN2d', requires_grad=True)`` works inside mmdet heads, which
build norms through mmcv's ``build_norm_layer`` (it calls ``LN2d(num_features, eps=...)``
with ``eps`` defaulting to 1e-5 and applies ``requires_grad`` itself).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn


class LN2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (each pixel normalised alone).

    Same parameters (``weight``, ``bias`` of shape ``[C]``) as ``nn.LayerNorm(C)``; the
    map is permuted to channels-last for ``F.layer_norm`` (which autocast runs in
    float32) and back.

    Args:
        num_channels: channels ``C``.
        eps: variance epsilon (detectron2's ViTDet uses 1e-6; mmcv's
            ``build_norm_layer`` passes 1e-5 unless the ``norm_cfg`` sets ``eps``).
        requires_grad: trainable affine parameters (mmcv sets this flag itself after
            construction; accepted here too so a direct ``LN2d(C, requires_grad=False)``
            works).
    """

    _abbr_ = 'ln'  # name of the norm submodule when mmcv's ConvModule builds it

    def __init__(self, num_channels: int, eps: float = 1e-6, requires_grad: bool = True,
                 **kwargs) -> None:
        if not isinstance(num_channels, int) or num_channels <= 0:
            raise ValueError(f'LN2d: num_channels must be a positive int, got {num_channels!r}')
        super().__init__(num_channels, eps=eps, **kwargs)
        for p in self.parameters():
            p.requires_grad = requires_grad

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f'LN2d expects a (B, C, H, W) map, got shape {tuple(x.shape)}')
        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # [B, C, H, W]


class ConvNorm(nn.Module):
    """``Conv2d(k, no bias) -> LN2d`` (or a biased conv when ``norm`` is False)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, norm: bool = True,
                 norm_eps: float = 1e-6, norm_requires_grad: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2,
                              bias=not norm)
        self.norm = LN2d(out_ch, norm_eps, norm_requires_grad) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


def _parse_norm_cfg(norm_cfg: Optional[Dict]) -> Tuple[bool, float, bool]:
    """``norm_cfg`` -> (use norm, eps, requires_grad). The neck builds its norms with
    plain torch (no mmcv registry), so only ViTDet's LN2d or None are accepted."""
    if norm_cfg is None:
        return False, 1e-6, True
    if not isinstance(norm_cfg, dict):
        raise TypeError('SimpleFPN: norm_cfg must be a dict or None, '
                        f'got {type(norm_cfg).__name__}')
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', None)
    if kind not in ('LN2d', LN2d):
        raise ValueError(f"SimpleFPN: norm_cfg type must be 'LN2d' (or norm_cfg=None), "
                         f'got {kind!r}')
    eps = float(cfg.pop('eps', 1e-6))
    requires_grad = bool(cfg.pop('requires_grad', True))
    if cfg:
        raise ValueError(f'SimpleFPN: unsupported norm_cfg keys {sorted(cfg)} '
                         "(supported: type, eps, requires_grad)")
    return True, eps, requires_grad


class SimpleFPN(BaseModule):
    """ViTDet's simple feature pyramid from a single stride-16 map.

    Levels (input ``[B, C, H, W]`` at stride 16, ``C = backbone_channel``)::

        stride 4 : ConvT(C, C/2, 2, s2) -> LN2d -> GELU -> ConvT(C/2, C/4, 2, s2)
        stride 8 : ConvT(C, C/2, 2, s2)
        stride 16: identity
        stride 32: MaxPool(2, s2)

    each then ``lateral_convs[i]`` (1x1 conv, no bias, LN2d) and ``fpn_convs[i]`` (3x3
    conv, no bias, LN2d) to ``out_channels``; levels beyond four (``num_outs`` 5 gives
    stride 64 for the RPN) subsample the last output with a 1x1 stride-2 max-pool.
    The config interface mirrors mmdet's ``projects/ViTDet`` SimpleFPN.

    Args:
        backbone_channel: channels of the backbone map.
        in_channels: channels of the four built levels; must equal
            ``[C/4, C/2, C, C]`` (given for config compatibility; derived when None).
        out_channels: channels of every output level.
        num_outs: number of outputs (>= 4).
        norm_cfg: ``dict(type='LN2d', eps=..., requires_grad=...)`` or None (no norm,
            biased convs).
        init_cfg: mmengine init config; the default initialises the 1x1/3x3 convs as
            detectron2's ``c2_xavier_fill`` (``kaiming_uniform(a=1)``, zero bias).
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: Optional[Sequence[int]] = None,
                 out_channels: int = 256,
                 num_outs: int = 5,
                 norm_cfg: Optional[Dict] = dict(type='LN2d', requires_grad=True),
                 init_cfg: Optional[Union[Dict, List[Dict]]] = dict(
                     type='Kaiming', layer='Conv2d', a=1, mode='fan_in',
                     nonlinearity='leaky_relu', distribution='uniform', bias=0)
                 ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(backbone_channel, int) or backbone_channel <= 0 \
                or backbone_channel % 4 != 0:
            raise ValueError(f'SimpleFPN: backbone_channel must be a positive multiple of 4, '
                             f'got {backbone_channel!r}')
        c = backbone_channel
        expected = [c // 4, c // 2, c, c]
        if in_channels is not None and list(in_channels) != expected:
            raise ValueError(f'SimpleFPN: in_channels must be {expected} for backbone_channel '
                             f'{c} (the levels are C/4, C/2, C, C), got {list(in_channels)}')
        if num_outs < 4:
            raise ValueError(f'SimpleFPN: num_outs must be >= 4, got {num_outs}')
        use_norm, eps, requires_grad = _parse_norm_cfg(norm_cfg)
        self.backbone_channel = c
        self.in_channels = expected
        self.out_channels = out_channels
        self.num_ins = 4
        self.num_outs = num_outs

        mid_norm = LN2d(c // 2, eps, requires_grad) if use_norm else nn.Identity()
        self.fpn1 = nn.Sequential(  # stride 16 -> 4
            nn.ConvTranspose2d(c, c // 2, 2, 2), mid_norm, nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))  # 16 -> 8
        self.fpn3 = nn.Sequential(nn.Identity())  # 16
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))  # 16 -> 32
        self.lateral_convs = nn.ModuleList(
            ConvNorm(ch, out_channels, 1, use_norm, eps, requires_grad) for ch in expected)
        self.fpn_convs = nn.ModuleList(
            ConvNorm(out_channels, out_channels, 3, use_norm, eps, requires_grad)
            for _ in expected)

    def forward(self, inputs: Union[Tensor, Sequence[Tensor]]) -> Tuple[Tensor, ...]:
        """One stride-16 map ``[B, C, H, W]`` (or a 1-tuple of it, as backbones return)
        -> ``num_outs`` maps ``[B, out_channels, H*4/2**i, W*4/2**i]``."""
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 1:
                raise ValueError(f'SimpleFPN takes one backbone map (set the backbone '
                                 f'out_indices to a single index), got {len(inputs)}')
            inputs = inputs[0]
        if not isinstance(inputs, Tensor) or inputs.dim() != 4 \
                or inputs.shape[1] != self.backbone_channel:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f'SimpleFPN expects a [B, {self.backbone_channel}, H, W] map, '
                             f'got {shape}')
        levels = [self.fpn1(inputs), self.fpn2(inputs), self.fpn3(inputs), self.fpn4(inputs)]
        outs = [fpn(lat(x)) for x, lat, fpn in zip(levels, self.lateral_convs, self.fpn_convs)]
        for _ in range(self.num_outs - self.num_ins):  # extra levels for the RPN
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
