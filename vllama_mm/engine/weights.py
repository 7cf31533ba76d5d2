"""Strict weight loading: say how many tensors a checkpoint filled, fail when it does not fit.

mmengine loads pretrained weights (``init_cfg=dict(type='Pretrained', ...)``) and
``load_from`` with ``strict=False`` and only logs the mismatching keys, so an empty
state dict, an unconverted official file, a ViT checkpoint or a wrong ``prefix`` train
(or evaluate) random weights with exit status 0. Here:

* :class:`StrictPretrainedInit` replaces mmengine's ``Pretrained`` initializer (same
  arguments plus ``strict=True``). For the vllama_mm backbones it logs
  ``N of M backbone tensors loaded`` (M without the task output norms a pre-trained
  encoder does not have, :data:`NEW_TASK_TENSORS`) and raises :class:`WeightsError` when a backbone
  tensor is missing (or has another shape) or unexpected tensors outnumber the matched
  ones; other modules load exactly as mmengine does. ``strict=False`` in the
  ``init_cfg`` loads anyway and logs the missing / unexpected keys.
* :func:`check_checkpoint_fits` is the same check for a whole model and a
  ``load_from`` file (``tools/test.py``).

Error messages say what the file looks like (empty, a full model saved with another
prefix, an official VisionLLaMA layout to convert, a ViT, another arch) and what to do.
"""
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import WEIGHT_INITIALIZERS

CONVERTER = 'tools/model_converters/official2vllama.py'


class WeightsError(ValueError):
    """A checkpoint that does not fit the model it is loaded into; names the file."""


def checkpoint_state_dict(checkpoint: Any) -> Dict[str, Any]:
    """The weights of a loaded checkpoint, as mmengine picks them, ``module.`` stripped.

    mmengine uses ``checkpoint['state_dict']`` when present, else the whole dict; the
    official pyramid files keep theirs under ``model`` (reported by :func:`describe`).
    """
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else {}
    if not isinstance(sd, Mapping):
        return {}
    return {re.sub(r'^module\.', '', k): v for k, v in sd.items()}


def _tensors(sd: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def describe(checkpoint: Any, prefix: str = '', own: Sequence[str] = ()) -> str:
    """What a checkpoint looks like and what to do with it (one sentence).

    ``own``: the keys of the module it is loaded into (with ``prefix`` they are compared
    with the file's keys under the prefix).
    """
    sd = _tensors(checkpoint_state_dict(checkpoint))
    if not sd and isinstance(checkpoint, Mapping):
        for key in ('model', 'model_ema', 'module'):
            if isinstance(checkpoint.get(key), Mapping) and _tensors(checkpoint[key]):
                sd = _tensors(checkpoint[key])
                break
    if not sd:
        top = sorted(checkpoint)[:6] if isinstance(checkpoint, Mapping) else type(checkpoint)
        return f'it holds no weight tensors (top-level keys: {top}); use another file'
    keys = set(sd)
    bare = {k[len('backbone.'):] if k.startswith('backbone.') else k for k in keys}
    if 'patch_embed.proj.weight' in bare and any(k.startswith('blocks.0.mlp.fc1.') for k in bare):
        return ('it is a ViT checkpoint (timm layout: blocks.i.mlp.fc1, a GELU MLP); '
                'VisionLLaMA blocks (RoPE attention, SwiGLU) cannot use ViT weights: start '
                'from a VisionLLaMA checkpoint')
    if any('.ffn.layers.0.0.' in k for k in bare) and not any('.w12.' in k for k in bare):
        return ('it is an mmpretrain ViT checkpoint (ffn.layers.*, a GELU MLP); VisionLLaMA '
                'blocks (RoPE attention, SwiGLU w12/w3, layer scale) cannot use ViT weights: '
                'start from a VisionLLaMA checkpoint')
    if any(k.startswith('patch_embeds.') for k in bare) and \
            any(k.startswith('blocks.') for k in bare):
        return (f'it is in the official Pyramid-VisionLLaMA layout: convert it first with '
                f'python {CONVERTER} SRC DST')
    if 'patch_embed.proj.weight' in bare and any(k.startswith('blocks.0.') for k in bare):
        return (f'it is in the official plain VisionLLaMA (DeiT3-style) layout: convert it '
                f'first with python {CONVERTER} SRC DST')
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


def _listing(names: Sequence[str], n: int = 5) -> str:
    return ', '.join(names[:n]) + (f', ... ({len(names)} in all)' if len(names) > n else '')


def compare(own: Mapping[str, torch.Tensor], given: Mapping[str, Any]
            ) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, mismatched, unexpected)`` keys of ``given`` against ``own``.

    ``missing``: in ``own`` but not given; ``mismatched``: given with another shape (a
    tensor that is not loaded either); ``unexpected``: given but not in ``own``.
    """
    missing = [k for k in own if k not in given]
    mismatched = [f'{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}' for k in own
                  if k in given and hasattr(given[k], 'shape')
                  and tuple(given[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in given if k not in own]
    return missing, mismatched, unexpected


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
        problems.append(f'{len(missing)} missing ({_listing(missing)})')
    if mismatched:
        problems.append(f'{len(mismatched)} differ in shape ({_listing(mismatched, 3)}; '
                        'checkpoint vs model)')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected ({_listing(unexpected)})')
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
                       f'(To load it '
                       f'anyway, with the rest left at their initial values: {opt_out}.)')


#: Backbone tensors a pre-trained encoder does not have because the backbone adds them
#: for its task: the output LayerNorm after average pooling (``ln2``, ``out_type=
#: 'avg_featmap'``, as mmpretrain's ViT after MAE) and the pyramid's per-stage output
#: norms of ``featmap`` mode (the classification weights have none). When a file has
#: none of a group they are initialised fresh (and reported); a file with some of them
#: must have all.
NEW_TASK_TENSORS = {'VisionLLaMA': ('ln2.', ), 'PyramidVisionLLaMA': ('norms.', )}


def new_task_tensors(module: Any, given: Mapping[str, Any]) -> List[str]:
    """Keys of ``module`` in :data:`NEW_TASK_TENSORS` groups that ``given`` lacks entirely."""
    prefixes = ()
    for cls in type(module).__mro__:
        prefixes += NEW_TASK_TENSORS.get(cls.__name__, ())
    absent = tuple(p for p in prefixes if not any(k.startswith(p) for k in given))
    return [k for k in module.state_dict() if absent and k.startswith(absent)]


def _is_vllama_backbone(module: Any) -> bool:
    from ..models import PyramidVisionLLaMA, VisionLLaMA
    return isinstance(module, (VisionLLaMA, PyramidVisionLLaMA))


@WEIGHT_INITIALIZERS.register_module(name='Pretrained', force=True)
class StrictPretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` init, strict for the vllama_mm backbones (module doc).

    Args:
        checkpoint, prefix, map_location: as ``mmengine``'s ``PretrainedInit``.
        strict: ``False`` loads a backbone checkpoint that does not fit anyway (the
            missing / unexpected keys are logged); only for a deliberate partial load.
    """

    def __init__(self, checkpoint: str, prefix: Optional[str] = None,
                 map_location: str = 'cpu', strict: bool = True):
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        if not isinstance(strict, bool):
            raise TypeError(f"init_cfg Pretrained: strict must be True or False, got {strict!r}")
        self.strict = strict

    def __call__(self, module) -> None:
        if not _is_vllama_backbone(module):
            return super().__call__(module)
        from mmengine.model.weight_init import update_init_info
        from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
        checkpoint = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        sd = checkpoint_state_dict(checkpoint)
        prefix = self.prefix or ''
        if prefix:
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        given = _tensors(sd)
        source = f'Pretrained {self.checkpoint!r}' + (f' (prefix {prefix!r})' if prefix else '')
        own = module.state_dict()
        fresh = new_task_tensors(module, given)
        if fresh:
            print_log(f'{source}: {", ".join(fresh)} not in the file: task-specific output '
                      'norm(s), initialised fresh', logger='current')
            own = {k: v for k, v in own.items() if k not in fresh}
        check_fit(own, given, 'backbone', source, checkpoint, prefix,
                  self.strict, opt_out="strict=False in the backbone's init_cfg")
        load_state_dict(module, sd, strict=False, logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())


def check_checkpoint_fits(model: torch.nn.Module, path: str, strict: bool = True) -> str:
    """``load_from`` check (tools/test.py): the file must fill every tensor of ``model``.

    Reads ``path`` through mmengine's (verified) loader and compares its weights with
    ``model.state_dict()``; see :func:`check_fit`. Returns the report line.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    checkpoint = _load_checkpoint(path, map_location='cpu')
    given = _tensors(checkpoint_state_dict(checkpoint))
    own = model.state_dict()
    report = check_fit(own, given, 'model', f'checkpoint {path!r}', checkpoint,
                       strict=strict, opt_out='--allow-partial-weights')
    n_bb = sum(k.startswith('backbone.') for k in own)
    if n_bb:
        got = sum(k.startswith('backbone.') and k in given for k in own)
        print_log(f'{path}: {got} of {n_bb} backbone tensors in the file', logger='current')
    return report
