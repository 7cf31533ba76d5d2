"""The model zoo: our model-index.yml and per-family metafile.yml, looked up by model name.

A model's name is its config file name without ``.py`` (OpenMMLab convention). The index lives
in the source tree (``<repo>/model-index.yml``, config paths relative to ``<repo>``), which an
editable install (``pip install -e .``, what tools/setup_env.sh does) keeps next to the package.

* MMPretrain: importing ``vllama_mm.mmpretrain`` registers the mmpretrain entries with
  ``mmpretrain.apis.ModelHub``, so ``get_model(name)``, ``list_models('*llama*')`` and
  ``ImageClassificationInferencer(name, pretrained=PATH)`` work.
* MMSegmentation / MMDetection: their inferencers (mmengine's ``BaseInferencer``) only search
  the library's own packaged ``.mim/model-index.yml``; there is no registration API. Use
  ``vllama_mm.mmseg.MMSegInferencer`` / ``vllama_mm.mmdet.DetInferencer`` (the stock classes
  with our names added, via :class:`ModelZooInferencerMixin`) or pass
  ``config_path(name)`` to the stock inferencer.

No task library is imported here.
"""
import fnmatch
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_INDEX = osp.join(REPO, 'model-index.yml')
LIBRARIES = ('mmpretrain', 'mmseg', 'mmdet', 'generation')


def _require_index() -> None:
    if not osp.isfile(MODEL_INDEX):
        raise FileNotFoundError(
            f'{MODEL_INDEX} not found: the model zoo is read from the source tree; install '
            'vllama_mm from a clone with `pip install -e .` (tools/setup_env.sh does)')


def metafiles(library: Optional[str] = None) -> List[str]:
    """Absolute paths of the metafiles model-index.yml imports (those under
    ``configs/<library>/`` only, if ``library`` is given)."""
    if library is not None and library not in LIBRARIES:
        raise ValueError(f'library must be one of {LIBRARIES}, got {library!r}')
    _require_index()
    with open(MODEL_INDEX) as f:
        imports = yaml.safe_load(f)['Import']
    if library is not None:
        imports = [p for p in imports if p.startswith(f'configs/{library}/')]
    return [osp.join(REPO, p) for p in imports]


def models(library: Optional[str] = None) -> Dict[str, dict]:
    """``{name: metafile entry}`` for every model (of one library if given); ``Config`` is
    made absolute."""
    out: Dict[str, dict] = {}
    for path in metafiles(library):
        with open(path) as f:
            for entry in yaml.safe_load(f).get('Models', []):
                name = entry['Name']
                if name in out:
                    raise ValueError(f'model name {name!r} appears twice in the model zoo '
                                     f'(second time in {path})')
                out[name] = dict(entry, Config=osp.join(REPO, entry['Config']))
    return out


def list_models(pattern: str = '*', library: Optional[str] = None) -> List[str]:
    """Sorted model names matching a shell-style ``pattern`` (case-insensitive)."""
    return sorted(n for n in models(library) if fnmatch.fnmatch(n.lower(), pattern.lower()))


def lookup(name: str, library: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``(absolute config path, weights URL or None)`` of a model name."""
    found = {n.lower(): e for n, e in models(library).items()}.get(name.lower())
    if found is None:
        raise ValueError(f'no model named {name!r} in {MODEL_INDEX}'
                         + (f' for {library}' if library else '')
                         + '; vllama_mm.model_zoo.list_models() lists them')
    return found['Config'], found.get('Weights')


def config_path(name: str) -> str:
    """Absolute config path of a model name (e.g. for a stock inferencer)."""
    return lookup(name)[0]


class ModelZooInferencerMixin:
    """Lets an mmengine ``BaseInferencer`` subclass resolve our model names: a name from our
    index gives its config (and weights, when the entry has them); any other name goes to
    the library's own model index as before."""

    def _load_model_from_metafile(self, model: str):
        from mmengine.config import Config
        try:
            cfg_path, weights = lookup(model, self.scope)
        except ValueError:
            return super()._load_model_from_metafile(model)
        return Config.fromfile(cfg_path), weights

    def _init_model(self, cfg, weights, device: str = 'cpu'):
        """Verify a local weights file (zip CRC) before the stock loader reads it; without
        a config, read the checkpoint's config as data (mmengine's inferencer would
        execute its ``meta['cfg']`` text with ``Config.fromstring``)."""
        import os.path as osp

        from mmengine.config import Config

        from .engine.checkpoint import verify_checkpoint
        from .engine.resume import stored_config
        if isinstance(weights, str) and '://' not in weights and osp.isfile(weights):
            verify_checkpoint(weights)
        if not cfg and weights is not None:
            from mmengine.runner.checkpoint import _load_checkpoint
            saved, why = stored_config(_load_checkpoint(weights, map_location='cpu'))
            if saved is None or 'model' not in saved:
                raise ValueError(f'{weights}: no config given, and the one stored in the '
                                 f'checkpoint cannot be read as data ({why or "no model"}); '
                                 'pass the config file as model=CONFIG')
            cfg = Config(saved)
        return super()._init_model(cfg, weights, device)

    def _load_weights_to_model(self, model, checkpoint, cfg) -> None:
        """Refuse weights with NaN / inf tensors (a diverged run), naming them."""
        from .engine.checkpoint import check_finite_weights
        if isinstance(checkpoint, dict):
            check_finite_weights(checkpoint.get('state_dict', checkpoint), 'inferencer weights')
        return super()._load_weights_to_model(model, checkpoint, cfg)


class VerifiedPretrainedMixin:
    """For mmpretrain's inferencers, which load ``pretrained`` through ``get_model`` (our
    model names already resolve there, see :mod:`vllama_mm.mmpretrain`): a local weights
    file is CRC-checked and refused when a tensor is NaN / inf, before it is loaded."""

    def __init__(self, model, pretrained=True, *args, **kwargs):
        import os.path as osp

        from .engine.checkpoint import check_finite_file
        if isinstance(pretrained, str) and '://' not in pretrained and osp.isfile(pretrained):
            check_finite_file(pretrained)
        super().__init__(model, pretrained, *args, **kwargs)


def inferencer_class(stock: type, module: str, mixin: type = ModelZooInferencerMixin) -> type:
    """``stock`` (a library's inferencer class) with ``mixin`` (by default: accepts our model
    names), as a class of ``module`` (the thin registration module that exposes it)."""
    return type(stock.__name__, (mixin, stock),
                {'__doc__': stock.__doc__, '__module__': module})


def lazy_inferencer(module: str, names: Union[str, Sequence[str]], stock_module: str,
                    mixin: type = ModelZooInferencerMixin) -> Callable[[str], type]:
    """A module ``__getattr__`` that builds each of ``names`` (``stock_module.<name>`` with
    ``mixin``, see :func:`inferencer_class`) on first use, so that training runs that
    import the registration module do not import the library's apis."""
    import importlib
    import sys
    names = (names,) if isinstance(names, str) else tuple(names)

    def __getattr__(attr: str) -> type:
        if attr not in names:
            raise AttributeError(f'module {module!r} has no attribute {attr!r}')
        cls = inferencer_class(getattr(importlib.import_module(stock_module), attr), module,
                               mixin)
        setattr(sys.modules[module], attr, cls)
        return cls

    return __getattr__
