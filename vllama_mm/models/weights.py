"""Checkpoint facts shared by every loader of the package: what a file is, how its tensors
compare with a model's, and the strict, reported ``Pretrained`` load of our backbones.

mmengine's ``Pretrained`` initializer loads with ``strict=False`` and only logs the
mismatching keys, so an empty state dict, an unconverted official file, a ViT checkpoint
or a wrong ``prefix`` train random weights with exit status 0. Our backbones therefore
read their own ``init_cfg`` (as mmdet's Swin does) and call :func:`load_pretrained`:
it logs ``N of M backbone tensors loaded`` and raises :class:`WeightsError` naming the
file and what it looks like when a tensor is missing or of another shape, or when
unexpected tensors outnumber the matched ones (``strict=False`` in the ``init_cfg``
loads anyway and logs the keys). Nothing here changes how other modules load.

Plain torch + mmengine (the file is read with mmengine's stock checkpoint loader).
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

CONVERTER = 'tools/model_converters/official2vllama.py'
LOAD_DIRECTLY = ("load it directly, e.g. backbone init_cfg=dict(type='Pretrained', "
                 "checkpoint=..., prefix='backbone.') or load_from=...")
#: keys a backbone ``init_cfg`` of type ``Pretrained`` may have
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict')


class WeightsError(ValueError):
    """A checkpoint that does not fit the model it is loaded into; names the file."""


# ---------------------------------------------------------------------------- reading
def checkpoint_state_dict(checkpoint: Any) -> Dict[str, Any]:
    """The weights of a loaded checkpoint, as mmengine picks them, ``module.`` stripped.

    mmengine uses ``checkpoint['state_dict']`` when present, else the whole dict; the
    official pyramid files keep theirs under ``model`` (reported by :func:`describe`).
    """
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else {}
    if not isinstance(sd, Mapping):
        return {}
    return {re.sub(r'^module\.', '', k): v for k, v in sd.items()}


def tensors(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """The tensor entries of a state dict."""
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------- comparing
def compare(own: Mapping[str, Any], given: Mapping[str, Any]
            ) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, mismatched, unexpected)`` keys of ``given`` against ``own``: the one
    checkpoint comparison of the package (loaders, converters, generation tools).

    ``missing``: in ``own`` but not given; ``mismatched``: ``'key (given) vs (own)'`` for
    tensors given with another shape (not loadable either); ``unexpected``: given but not
    in ``own``. Values need only a ``shape`` (meta tensors work).
    """
    missing = [k for k in own if k not in given]
    mismatched = [f'{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}' for k in own
                  if k in given and hasattr(given[k], 'shape')
                  and tuple(given[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in given if k not in own]
    return missing, mismatched, unexpected


def listing(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names and the count."""
    names = list(names)
    return ', '.join(names[:n]) + (f', ... ({len(names)} in all)' if len(names) > n else '')


def check_shapes(module: torch.nn.Module, state_dict: Mapping[str, Any], prefix: str) -> None:
    """Raise ValueError when checkpoint tensors under ``prefix`` have other shapes here.

    Called from the backbones' load pre-hooks: any ``load_state_dict`` (mmengine's
    lenient loaders included) would otherwise warn and keep the random init.
    """
    given = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    own = module.state_dict()
    _, bad, _ = compare(own, {k: v for k, v in given.items() if k in own})
    if bad:
        bad = [b.replace(' vs ', ' in the checkpoint vs ', 1) + ' here' for b in bad]
        raise ValueError(f'{type(module).__name__}: checkpoint does not fit this arch, '
                         f'{len(bad)} tensors differ in shape ({"; ".join(bad[:3])}'
                         f'{"; ..." if len(bad) > 3 else ""}); check `arch` against the '
                         'checkpoint (or convert it first)')


# ---------------------------------------------------------------------------- recognising
def _any(keys, *parts: str) -> bool:
    return any(all(p in k for p in parts) for k in keys)


#: The one file recogniser: ``(name, predicate over the keys with 'backbone.' stripped,
#: what the file is)``, most specific first. ``official-*`` are the converter's inputs.
KINDS: List[Tuple[str, Callable[[set], bool], str]] = [
    ('vllama_mm-pyramid', lambda k: _any(k, 'stages.', '.ffn.w12.') and _any(k, 'patch_embeds.'),
     "a vllama_mm PyramidVisionLLaMA checkpoint (already in this plugin's layout)"),
    ('vllama_mm-plain', lambda k: _any(k, 'layers.', '.ffn.w12.'),
     "a vllama_mm VisionLLaMA checkpoint (already in this plugin's layout, e.g. one of "
     'your training runs)'),
    ('mmpretrain-vit', lambda k: _any(k, 'layers.', '.ffn.layers.0.0.'),
     'an mmpretrain ViT checkpoint (mmpretrain VisionTransformer: ViT/DeiT/MAE-ViT, '
     'ffn.layers.*, a GELU MLP, absolute position embedding): another model, not '
     'VisionLLaMA weights'),
    ('twins', lambda k: _any(k, 'blocks.', '.mlp.fc1.') and _any(k, 'pos_block.'),
     'a Twins (PCPVT/SVT) checkpoint: another model (GELU MLP, PEG position encoding), '
     'not Pyramid-VisionLLaMA weights'),
    ('timm-vit', lambda k: _any(k, 'blocks.', '.mlp.fc1.') and _any(k, 'patch_embed.proj.'),
     'a timm/DeiT ViT checkpoint (timm layout: blocks.i.mlp.fc1, a GELU MLP): another '
     'model, not VisionLLaMA weights'),
    ('swin', lambda k: _any(k, 'relative_position_bias_table'),
     'a Swin-style checkpoint (relative position bias tables): another model, not '
     'VisionLLaMA weights'),
    ('official-pyramid', lambda k: _any(k, 'patch_embeds.') and _any(k, 'blocks.'),
     'in the official Pyramid-VisionLLaMA layout'),
    ('official-plain', lambda k: 'patch_embed.proj.weight' in k and _any(k, 'blocks.0.'),
     'in the official plain VisionLLaMA (DeiT3-style) layout'),
]


def recognise(sd: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """``(kind name, what it is)`` of a state dict (see :data:`KINDS`), or None."""
    keys = {k[len('backbone.'):] if k.startswith('backbone.') else k for k in sd}
    for name, predicate, what in KINDS:
        if predicate(keys):
            return name, what
    return None


def describe(checkpoint: Any, prefix: str = '', own: Sequence[str] = ()) -> str:
    """What a checkpoint looks like and what to do with it, for a loader's error
    (one sentence). ``own``: the keys of the module it is loaded into (compared with the
    file's keys under ``prefix``)."""
    sd = tensors(checkpoint_state_dict(checkpoint))
    if not sd and isinstance(checkpoint, Mapping):
        for key in ('model', 'model_ema', 'module'):
            if isinstance(checkpoint.get(key), Mapping) and tensors(checkpoint[key]):
                sd = tensors(checkpoint[key])
                break
    if not sd:
        top = sorted(checkpoint)[:6] if isinstance(checkpoint, Mapping) else type(checkpoint)
        return f'it holds no weight tensors (top-level keys: {top}); use another file'
    kind = recognise(sd)
    if kind is not None and kind[0].startswith('official-'):
        return f'it is {kind[1]}: convert it first with python {CONVERTER} SRC DST'
    if kind is not None and not kind[0].startswith('vllama_mm-'):
        return f'it is {kind[1]}; VisionLLaMA blocks cannot use it: start from a ' \
               'VisionLLaMA checkpoint'
    keys = set(sd)
    heads = sorted({k.split('.')[0] + '.' for k in keys})
    if prefix and not any(k.startswith(prefix) for k in keys):
        return (f'no key starts with prefix {prefix!r} (the keys start with '
                f'{", ".join(heads[:5])}); set prefix to one of these, or prefix=None for a '
                'bare backbone file')
    if not prefix and 'backbone.' in heads:
        return ("it is a full model checkpoint (keys start with 'backbone.'): add "
                "prefix='backbone.' to the init_cfg")
    inside = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    if own and inside and inside < set(own):
        return ('its tensors all belong to this model but some are absent: an incomplete '
                'save, a shallower arch or a partial export; use the complete file, or a '
                'config whose arch matches the file')
    sample = ', '.join(sorted(keys)[:4])
    return (f'its keys ({sample}, ...) belong to another architecture or arch setting; '
            'check the config against the file')


# ---------------------------------------------------------------------------- fitting
def check_fit(own: Mapping[str, torch.Tensor], given: Mapping[str, Any], what: str,
              source: str, checkpoint: Any, prefix: str = '', strict: bool = True,
              opt_out: str = 'strict=False') -> str:
    """Report ``N of M <what> tensors loaded``; raise :class:`WeightsError` when unfit.

    Unfit: a tensor of ``own`` missing or of another shape, or more unexpected tensors
    than matched ones. ``strict=False`` turns the error into a logged warning.
    Returns the one-line report.
    """
    missing, mismatched, unexpected = compare(own, given)
    loaded = len(own) - len(missing) - len(mismatched)
    report = f'{source}: {loaded} of {len(own)} {what} tensors loaded'
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing ({listing(missing)})')
    if mismatched:
        problems.append(f'{len(mismatched)} differ in shape ({listing(mismatched, 3)}; '
                        'checkpoint vs model)')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected ({listing(unexpected)})')
    if problems:
        report += '; ' + '; '.join(problems)
    unfit = bool(missing or mismatched) or len(unexpected) > loaded
    if not unfit:
        print_log(report, logger='current')
        return report
    if not strict:
        print_log(report + f' (loaded anyway: {opt_out})', logger='current', level=30)
        return report
    raise WeightsError(f'{report}. The file: {describe(checkpoint, prefix, list(own))}. '
                       f'(To load it anyway, with the rest left at their initial values: '
                       f'{opt_out}.)')


def load_pretrained(module: torch.nn.Module, init_cfg: Mapping[str, Any],
                    new_task_tensors: Sequence[str] = ()) -> str:
    """Load ``init_cfg=dict(type='Pretrained', checkpoint, prefix=None, map_location='cpu',
    strict=True)`` into ``module``, strictly and reported (module doc).

    ``new_task_tensors``: key prefixes of tensors the backbone adds for its task (an
    output norm a pre-trained encoder does not have); when the file has none of a group
    they are initialised fresh and reported, a file with some of them must have all.
    """
    from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
    unknown = sorted(set(init_cfg) - set(PRETRAINED_KEYS))
    if unknown:
        raise ValueError(f'init_cfg Pretrained: unknown keys {unknown}; allowed: '
                         f'{list(PRETRAINED_KEYS)}')
    strict = init_cfg.get('strict', True)
    if not isinstance(strict, bool):
        raise TypeError(f'init_cfg Pretrained: strict must be True or False, got {strict!r}')
    path, prefix = init_cfg['checkpoint'], init_cfg.get('prefix') or ''
    checkpoint = _load_checkpoint(path, map_location=init_cfg.get('map_location', 'cpu'))
    sd = checkpoint_state_dict(checkpoint)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    given = tensors(sd)
    source = f'Pretrained {path!r}' + (f' (prefix {prefix!r})' if prefix else '')
    own = module.state_dict()
    absent = tuple(p for p in new_task_tensors if not any(k.startswith(p) for k in given))
    fresh = [k for k in own if absent and k.startswith(absent)]
    if fresh:
        print_log(f'{source}: {", ".join(fresh)} not in the file: task-specific output '
                  'norm(s), initialised fresh', logger='current')
        own = {k: v for k, v in own.items() if k not in fresh}
    report = check_fit(own, given, 'backbone', source, checkpoint, prefix, strict,
                       opt_out="strict=False in the backbone's init_cfg")
    load_state_dict(module, sd, strict=False, logger='current')
    return report
