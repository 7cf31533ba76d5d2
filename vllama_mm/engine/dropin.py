"""Checks for a VisionLLaMA backbone swapped into a library's own config (a "drop-in").

A stock mmseg / mmdet / mmpretrain config written for ViT, MAE-ViT or Swin keeps a few
things that only its original backbone understands. Each fails late and obscurely when
the model or the optimizer is built (``unexpected keyword argument 'pretrained'``, an
empty ``NotImplementedError`` from mmseg's layer-decay constructor, ``unexpected keyword
argument 'depths'``); here each one is a :class:`ConfigError` line naming the key and the
edit, before anything is built. README section "Drop-in into the libraries' own configs"
lists the edits.
"""
import inspect
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from mmengine.config import Config

from .validate import ConfigError

#: our backbone classes (registry names), by the module that defines them
OUR_BACKBONES = ('VisionLLaMA', 'VisionLLaMAMAE', 'PyramidVisionLLaMA')

#: layer-decay constructors of the libraries that accept only their own backbones
#: (by class-name substring: BEiT / MAE / ConvNeXt) and what to use instead
FOREIGN_DECAY_CONSTRUCTORS = ('LayerDecayOptimizerConstructor',
                              'LearningRateDecayOptimizerConstructor')


def _type_name(node: Dict) -> str:
    t = node.get('type')
    return t.split('.')[-1] if isinstance(t, str) else ''


def our_backbones(node: Any, key: str = 'model') -> Iterator[Tuple[str, Dict]]:
    """``(config key, dict)`` of every VisionLLaMA-family model dict under ``node``."""
    if isinstance(node, dict):
        if _type_name(node) in OUR_BACKBONES:
            yield key, node
        for k, v in node.items():
            yield from our_backbones(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from our_backbones(v, f'{key}.{i}')


def constructor_args(name: str) -> Set[str]:
    """Keyword arguments the backbone class ``name`` takes (through its ``**kwargs`` too)."""
    from .. import models
    names: Set[str] = set()
    for cls in getattr(models, name).__mro__:
        init = cls.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {p for p, v in params.items() if p != 'self' and v.kind not in (
            inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
        if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
            break  # no **kwargs: the parents' arguments are not reachable
    return names


def check_dropin(cfg: Config) -> None:
    """Raise :class:`ConfigError` for what a stock config keeps that our backbones reject."""
    model = cfg.get('model')
    found = list(our_backbones(model))
    if not found:
        return
    # 1. EncoderDecoder / the detectors pass model.pretrained on to the backbone
    pretrained = model.get('pretrained') if isinstance(model, dict) else None
    if pretrained is not None:
        raise ConfigError(
            f'model.pretrained={pretrained!r}: the library passes it on to the backbone, and '
            f'{_type_name(found[0][1])} loads weights only through init_cfg: set '
            "model.pretrained=None (and, for your weights, backbone init_cfg=dict("
            "type='Pretrained', checkpoint=FILE))")
    # 2. arguments left from the backbone the config replaced (a dict merged without
    #    _delete_=True keeps every key of the base's Swin / ViT backbone)
    for key, node in found:
        name = _type_name(node)
        unknown = sorted(k for k in node if not k.startswith('_') and k != 'type'
                         and k not in constructor_args(name))
        if unknown:
            raise ConfigError(
                f'{key}: {name} has no argument(s) {unknown} (left from the backbone this '
                "config replaces?): write the backbone dict with _delete_=True, so that only "
                f"{name}'s own arguments remain (README: drop-in into the libraries' configs)")
    check_channels(cfg)
    # 3. the libraries' layer-decay constructors accept only BEiT / MAE / ConvNeXt classes
    wrapper = cfg.get('optim_wrapper')
    constructor = wrapper.get('constructor') if isinstance(wrapper, dict) else None
    if isinstance(constructor, str) and constructor.split('.')[-1] in \
            FOREIGN_DECAY_CONSTRUCTORS:
        raise ConfigError(
            f'optim_wrapper.constructor={constructor!r} handles only the library\'s BEiT / '
            f'MAE / ConvNeXt backbones (it raises an empty NotImplementedError for '
            f"{_type_name(found[0][1])}): use constructor='LayerDecayOptimWrapperConstructor' "
            '(vllama_mm; it reads the same paramwise_cfg keys num_layers, layer_decay_rate, '
            'decay_rate, decay_type)')


def backbone_channels(node: Dict) -> Optional[List[int]]:
    """Channels of each feature map a dense (``featmap``) backbone dict gives, from its
    ``arch`` and ``out_indices`` alone (nothing is built); None when not simple to tell."""
    from .. import models
    name = _type_name(node)
    cls = getattr(models, name, None)
    arch = node.get('arch', 'b')
    if cls is None or node.get('out_type', 'featmap' if name == 'PyramidVisionLLaMA'
                                  else 'cls_token') != 'featmap':
        return None
    if isinstance(arch, str):
        preset = cls.arch_zoo.get(arch.lower())
        dims = preset.get('embed_dims') if preset else None
    else:
        dims = arch.get('embed_dims') if isinstance(arch, dict) else None
    out_indices = node.get('out_indices')
    if name == 'PyramidVisionLLaMA':
        if not (isinstance(dims, (list, tuple)) and len(dims) == 4):
            return None
        idx = list(range(4)) if out_indices is None else out_indices
        idx = [idx] if isinstance(idx, int) else idx
        try:
            return [int(dims[i]) for i in idx]
        except (TypeError, IndexError):
            return None
    if isinstance(dims, bool) or not isinstance(dims, int):
        return None
    idx = -1 if out_indices is None else out_indices
    return [dims] * (1 if isinstance(idx, int) else len(idx))


def check_channels(cfg: Config) -> None:
    """The neck (or, without one, the decode / auxiliary heads) must take the channels the
    swapped-in backbone gives; otherwise the first forward fails with a conv shape error
    that does not say which key to change."""
    model = cfg.get('model')
    if not isinstance(model, dict) or not isinstance(model.get('backbone'), dict) or \
            _type_name(model['backbone']) not in OUR_BACKBONES:
        return
    channels = backbone_channels(model['backbone'])
    if not channels:
        return
    name = _type_name(model['backbone'])
    arch = model['backbone'].get('arch', 'b')
    gives = f"{name}(arch={arch!r}) gives {channels}"
    neck = model.get('neck')
    if isinstance(neck, dict):
        if 'backbone_channel' in neck:  # ViTDet's SimpleFPN: in_channels are its outputs
            dim = neck['backbone_channel']
            if isinstance(dim, int) and any(c != dim for c in channels):
                raise ConfigError(f'model.neck.backbone_channel={dim} but {gives}: set '
                                  f'model.neck.backbone_channel={channels[-1]}')
            return
        want = neck.get('in_channels')
        if isinstance(want, (list, tuple)) and list(want) != channels:
            raise ConfigError(f'model.neck.in_channels={list(want)} but {gives}: set '
                              f'model.neck.in_channels={channels}')
        dim = neck.get('embed_dim')
        if isinstance(dim, int) and 'in_channels' not in neck and \
                any(c != dim for c in channels):
            raise ConfigError(f'model.neck.embed_dim={dim} but {gives}: set '
                              f'model.neck.embed_dim={channels[0]}')
        return
    for head_key in ('decode_head', 'auxiliary_head'):
        heads = model.get(head_key)
        for i, head in enumerate(heads if isinstance(heads, (list, tuple)) else [heads]):
            if not isinstance(head, dict) or 'in_channels' not in head:
                continue
            key = f'model.{head_key}' + (f'.{i}' if isinstance(heads, (list, tuple)) else '')
            want, index = head['in_channels'], head.get('in_index', -1)
            try:
                expected = [channels[j] for j in index] if isinstance(index, (list, tuple)) \
                    else channels[index]
            except (TypeError, IndexError):
                continue
            got = list(want) if isinstance(want, (list, tuple)) else want
            if got != expected:
                raise ConfigError(f'{key}.in_channels={got} but {gives} (in_index='
                                  f'{index}): set {key}.in_channels={expected}')
