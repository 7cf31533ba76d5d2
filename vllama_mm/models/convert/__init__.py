"""Convert the released VisionLLaMA checkpoints into vllama_mm's layout, and back.

Layouts (each a pair of plain key tables, official -> ours and back, beside the functions
that read the backbone config off the shapes):

* ``'mae'`` (:mod:`.plain`): the MAE pre-training weights (VisionLLaMA-Base-MAE 800/1600
  ep, Large-MAE 800 ep), ``{'state_dict': {'backbone.*', 'neck.*', 'head.*'}}``. Names
  already match :class:`VisionLLaMA`; the dead ``pos_embed`` is dropped, the stock MAE
  decoder/head pass through.
* ``'pyramid'`` (:mod:`.pyramid`): Pyramid-VisionLLaMA-S/B/L ImageNet weights,
  ``{'model': {'patch_embeds.*', 'blocks.*', 'norm.*', 'head.*'}}``.
* ``'deit3'`` (:mod:`.plain`): the DeiT3-style plain layout (``patch_embed.proj``,
  ``blocks.i``, ``norm``, ``head``); ``rope='2d'`` or ``'as2d'`` picks which of the
  authors' two RoPE variants the weights were trained with.

The released DiT-LLaMA / SiT-LLaMA dumps have their own table in :mod:`.dit`.

Modules: :mod:`.table` (renaming by a table, fusing and splitting row blocks, the result
type), :mod:`.plain` / :mod:`.pyramid` / :mod:`.dit` (the tables and the model each
implies), :mod:`.detect` (which layout; what a non-convertible file is), :mod:`.check`
(the exact key/shape check against the target model built on the ``meta`` device).
Reading and writing files is the tools' part (``tools/model_converters/official2vllama.py``,
safe loading in :func:`vllama_mm.engine.checkpoint.load_official`).

The result is ``{'state_dict': {...}, 'meta': {'vllama_mm': {...}}}`` with
``backbone.``-prefixed keys plus ``head.fc.*`` or ``neck.*``/``head.*``; the meta holds a
ready-to-use backbone config. Plain torch + mmengine, like the models they describe.
"""
from typing import Any, Mapping, Optional

from torch import Tensor

from .check import build_backbone, check_against_model
from .detect import LAYOUTS, detect_format, layout, register_layout
from .plain import ROPE_CHOICES
from .table import ConversionError, Converted, StateDict

__all__ = [
    'ConversionError', 'Converted', 'LAYOUTS', 'ROPE_CHOICES', 'build_backbone',
    'check_against_model', 'convert_checkpoint', 'detect_format', 'layout',
    'register_layout', 'to_official'
]


def convert_checkpoint(ckpt: Any, head_dim: Optional[int] = None, check: bool = True,
                       **options: Any) -> Converted:
    """Detect the layout of a loaded official checkpoint and convert it.

    Args:
        ckpt: a loaded official checkpoint (as
            :func:`vllama_mm.engine.checkpoint.load_official` returns it).
        head_dim: per-head channels (not stored in the weights); default per layout
            (64 plain, 32 pyramid).
        check: verify the result against the target model built on the meta device.
        options: layout options, e.g. ``rope='2d'|'as2d'`` for ``deit3``; ``None``
            values mean "not given".
    """
    fmt, sd = detect_format(ckpt)
    given = {k: v for k, v in options.items() if v is not None}
    lay = layout(fmt)
    conv = lay.convert(sd, head_dim=head_dim or lay.head_dim, **given)
    if check:
        check_against_model(conv)
    return conv


def to_official(sd: Mapping[str, Tensor], fmt: str) -> StateDict:
    """Inverse of the conversion: a vllama_mm state dict (``backbone.*`` plus
    ``head.fc.*`` or ``neck.*``/``head.*``) in the official ``fmt`` layout, i.e. the
    content of the official ``state_dict`` (mae) or ``model`` (deit3, pyramid). The unused
    ``pos_embed`` is not recreated."""
    return layout(fmt).to_official(sd)
