"""Layer-wise learning-rate decay for any model whose backbone has ``get_layer_depth``.

Works unchanged in MMPretrain, MMSegmentation and MMDetection (their own constructors
either need ``get_layer_depth`` on the whole model or accept only a few backbone
class names). Register it through ``vllama_mm.<lib>`` and use::

    optim_wrapper = dict(
        constructor='LayerDecayOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(layer_decay_rate=0.65, flat_decay_mult=0.0,
                           custom_keys={'.cls_token': dict(decay_mult=0.0)}))

mmseg's keys (``num_layers``, ``decay_rate``, ``decay_type='layer_wise'``) are understood
as mmseg's ``LayerDecayOptimizerConstructor`` means them (same scales, no weight decay on
1-D parameters), so an mmseg layer-decay config only needs its ``constructor`` renamed.

Parameter ``p`` at depth ``d`` of ``L`` gets ``lr * rate ** (L - 1 - d)`` (head and
neck: depth ``L - 1``, scale 1). ``flat_decay_mult`` multiplies the weight decay of
1-D parameters (norms, biases, layer scale) and ``custom_keys`` (substring ->
``lr_mult`` / ``decay_mult``, longest key wins) act as in mmengine. The learnable RoPE
frequencies (``freqs`` of a :class:`~vllama_mm.models.rope.RoPE2D`, ``rope_type='mixed'``)
get no weight decay, as rope-vit's ``no_weight_decay()`` (a custom key still overrides).
"""
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ..models.rope import RoPE2D


#: paramwise_cfg keys of mmseg's ``LayerDecayOptimizerConstructor`` /
#: ``LearningRateDecayOptimizerConstructor`` that this constructor understands too
MMSEG_KEYS = ('num_layers', 'decay_rate', 'decay_type')


def mmseg_layer_decay_keys(paramwise_cfg: dict) -> Optional[int]:
    """Translate mmseg's layer-decay keys in ``paramwise_cfg`` (in place); returns
    ``num_layers`` (the backbone's block count, checked in ``add_params``) or None.

    ``decay_rate`` is ``layer_decay_rate``; ``decay_type`` must be ``'layer_wise'`` (mmseg's
    ``'stage_wise'`` is a ConvNeXt rule). With any mmseg key, ``flat_decay_mult`` defaults
    to 0: mmseg gives every 1-D parameter and bias no weight decay.
    """
    if not any(k in paramwise_cfg for k in MMSEG_KEYS):
        return None
    decay_type = paramwise_cfg.pop('decay_type', 'layer_wise')
    if decay_type != 'layer_wise':
        raise ValueError(f"paramwise_cfg.decay_type={decay_type!r}: mmseg's stage-wise decay "
                         "is for ConvNeXt; VisionLLaMA decays per block: use 'layer_wise' "
                         'or leave decay_type out')
    if 'decay_rate' in paramwise_cfg:
        rate = paramwise_cfg.pop('decay_rate')
        if paramwise_cfg.setdefault('layer_decay_rate', rate) != rate:
            raise ValueError(f'paramwise_cfg: decay_rate={rate} and layer_decay_rate='
                             f"{paramwise_cfg['layer_decay_rate']} disagree; keep one")
    num_layers = paramwise_cfg.pop('num_layers', None)
    if num_layers is not None and (isinstance(num_layers, bool) or
                                   not isinstance(num_layers, int) or num_layers < 1):
        raise ValueError(f'paramwise_cfg.num_layers must be a positive int, got {num_layers!r}')
    paramwise_cfg.setdefault('flat_decay_mult', 0.0)
    return num_layers


def find_layer_depth_fn(model: nn.Module) -> Callable[[str], Tuple[int, int]]:
    """``name -> (depth, num_layers)`` from the model or its ``backbone``."""
    model = getattr(model, 'module', model)  # DDP / model wrappers
    if hasattr(model, 'get_layer_depth'):
        return model.get_layer_depth
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'get_layer_depth'):
        return lambda name: backbone.get_layer_depth(name, prefix='backbone.')
    raise TypeError(f'layer-wise lr decay needs get_layer_depth() on {type(model).__name__} '
                    'or on its backbone (VisionLLaMA and PyramidVisionLLaMA have it)')


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` plus ``paramwise_cfg.layer_decay_rate``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # kept in paramwise_cfg (never empty here): the parent only calls add_params
        # when paramwise_cfg is truthy
        paramwise_cfg = dict(paramwise_cfg or {})
        self.num_layers = mmseg_layer_decay_keys(paramwise_cfg)
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)
        self.layer_decay_rate = float(paramwise_cfg['layer_decay_rate'])
        self.flat_decay_mult = paramwise_cfg.get('flat_decay_mult', None)
        allowed = {'layer_decay_rate', 'flat_decay_mult', 'custom_keys'}
        unknown = set(paramwise_cfg) - allowed
        if unknown:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: unknown paramwise_cfg keys '
                             f'{sorted(unknown)}; supported: {sorted(allowed | set(MMSEG_KEYS))}')
        if not 0.0 < self.layer_decay_rate <= 1.0:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got {self.layer_decay_rate}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: List[Dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        depth_of = find_layer_depth_fn(module)
        if self.num_layers is not None:  # mmseg's paramwise_cfg.num_layers: the block count
            blocks = depth_of('')[1] - 2  # depths: embeddings 0, blocks, then the rest
            if self.num_layers != blocks:
                raise ValueError(
                    f'paramwise_cfg.num_layers={self.num_layers} (mmseg layer decay) but the '
                    f'backbone has {blocks} blocks: set num_layers={blocks} or leave it out '
                    '(LayerDecayOptimWrapperConstructor reads the depth from the backbone)')
        custom_keys: Dict = self.paramwise_cfg.get('custom_keys', {})
        keys = sorted(custom_keys, key=len, reverse=True)
        summary = defaultdict(int)
        model = getattr(module, 'module', module)
        no_decay = {f'{n}.freqs'.lstrip('.') for n, m in model.named_modules()
                    if isinstance(m, RoPE2D)}  # mixed-RoPE frequencies (rope-vit)
        for name, param in model.named_parameters():
            group: Dict = dict(params=[param])
            if not param.requires_grad:
                params.append(group)
                continue
            depth, num_layers = depth_of(name)
            lr_scale = self.layer_decay_rate ** (num_layers - 1 - depth)
            decay_mult = 1.0
            if self.flat_decay_mult is not None and param.ndim <= 1:
                decay_mult = float(self.flat_decay_mult)
            if name in no_decay:
                decay_mult = 0.0
            lr_mult = 1.0
            for key in keys:
                if key in name:
                    lr_mult = custom_keys[key].get('lr_mult', 1.0)
                    decay_mult = custom_keys[key].get('decay_mult', decay_mult)
                    break
            group['lr'] = self.base_lr * lr_scale * lr_mult
            if self.base_wd is not None:
                group['weight_decay'] = self.base_wd * decay_mult
            group['lr_scale'] = lr_scale  # kept for inspection and tests
            group['param_name'] = name
            params.append(group)
            summary[(depth, round(lr_scale, 6))] += 1
        MMLogger.get_current_instance().info(
            'layer-wise lr decay {:.3g}: '.format(self.layer_decay_rate) + ', '.join(
                f'depth {d}: x{s:.4g} ({n} params)' for (d, s), n in sorted(summary.items())))
