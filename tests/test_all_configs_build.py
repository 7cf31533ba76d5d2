"""Every config under ``configs/`` loads and builds its model, with consistent channels.

Configs are globbed at test time (all libraries). Each one is loaded with
``Config.fromfile`` (which resolves ``mmpretrain::`` / ``mmseg::`` / ``mmdet::`` bases),
stripped of pre-trained weights (``init_cfg`` of type Pretrained anywhere, ``pretrained``,
``load_from``), and built through ``<default_scope>.registry.MODELS`` after importing
``vllama_mm.<default_scope>``. The build happens on the meta device (no memory, no init
cost even for L models); a meta forward pass then checks that every neck / head consumes
what the stage before it produces (a wrong ``in_channels`` fails the shape checks of the
meta kernels) and that the declared channel attributes agree with the real outputs.
"""
import importlib
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

ROOT = Path(__file__).resolve().parents[1]
# configs/generation (vllama_mm's own scope) are checked by tests/test_generation_configs.py
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and 'generation' not in p.parts)
SCOPES = ('mmpretrain', 'mmseg', 'mmdet')

# Parameter counts of the paper-size classifiers (docs/design.md, Plain and Pyramid: the official code's
# counts with a 1000-class head), keyed by config file name.
PAPER_PARAMS = {
    'vision-llama-s-p16_8xb256-lamb-800e_in1k.py': 22.0e6,
    'vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py': 86.4e6,
    'vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py': 86.4e6,
    'vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py': 310.3e6,
    'vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py': 310.3e6,
    'vision-llama-l-p16_fsdp-8xb256-lamb-800e_in1k-128px.py': 310.3e6,  # FSDP2 variants
    'vision-llama-l-p16_fsdp-8xb64-20e_in1k-128px-ft-224px.py': 310.3e6,
    'pyramid-vision-llama-s_8xb128_in1k.py': 25.9e6,
    'pyramid-vision-llama-b_8xb128_in1k.py': 56.0e6,
    'pyramid-vision-llama-l_8xb128_in1k.py': 104.7e6,
}


def strip_pretrained(node: Any) -> Any:
    """Remove every ``init_cfg`` of type Pretrained (and ``pretrained=``) recursively."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == 'pretrained':
                continue
            if key == 'init_cfg':
                if isinstance(value, dict) and value.get('type') == 'Pretrained':
                    continue
                if isinstance(value, (list, tuple)):
                    value = [v for v in value
                             if not (isinstance(v, dict) and v.get('type') == 'Pretrained')]
                    if not value:
                        continue
            out[key] = strip_pretrained(value)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(strip_pretrained(v) for v in node)
    return node


def has_pretrained(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' or node.get('pretrained'):
            return True
        return any(has_pretrained(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(has_pretrained(v) for v in node)
    return False


def load(path: Path) -> Tuple[Config, str, ConfigDict]:
    """Config, its scope, and the plain-dict model config without pre-trained weights."""
    cfg = Config.fromfile(str(path))
    scope = cfg.get('default_scope')
    assert scope in SCOPES, f'{path.name}: default_scope {scope!r} (inherit a library base)'
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    assert f'vllama_mm.{scope}' in imports, \
        f'{path.name}: custom_imports must import vllama_mm.{scope}'
    model = strip_pretrained(cfg.model.to_dict())
    if cfg.get('data_preprocessor') is not None:  # what the Runner does
        model.setdefault('data_preprocessor', cfg.data_preprocessor.to_dict())
    assert not has_pretrained(model)
    return cfg, scope, ConfigDict(model)  # attribute access, as the libraries expect


def build(scope: str, model_cfg: ConfigDict, device: str) -> torch.nn.Module:
    importlib.import_module(f'vllama_mm.{scope}')
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with torch.device(device):
        model = registry.build(model_cfg)
    return model.eval()


def channels(feats: Sequence[torch.Tensor]) -> List[int]:
    return [f.shape[1] for f in feats]


# ---------------------------------------------------------------- per-library checks
def check_mmpretrain(cfg: Config, model, x: torch.Tensor) -> None:
    name = type(model).__name__
    if name == 'MAE':
        latent, mask, ids_restore = model.backbone(x)
        n = mask.shape[1]
        assert latent.shape[-1] == model.backbone.embed_dims
        assert model.neck.decoder_embed.in_features == model.backbone.embed_dims
        pred = model.neck(latent, ids_restore)
        p = model.head.patch_size
        assert pred.shape == (x.shape[0], n, p * p * 3), pred.shape
        assert model.neck.decoder_pred.out_features == p * p * 3
        return
    assert name == 'ImageClassifier', name
    feats = model.backbone(x)
    dims = channels(feats)
    if model.with_neck:
        if hasattr(model.neck, 'bn'):  # ClsBatchNormNeck
            assert model.neck.bn.num_features == dims[-1]
        feats = model.neck(feats)
    assert model.head.in_channels == feats[-1].shape[1], (model.head.in_channels, dims)
    logits = model.head(feats)
    assert logits.shape == (x.shape[0], model.head.num_classes)


def check_mmseg(cfg: Config, model, x: torch.Tensor) -> None:
    feats = model.extract_feat(x)
    heads = [model.decode_head]
    if getattr(model, 'with_auxiliary_head', False):
        aux = model.auxiliary_head
        heads += list(aux) if isinstance(aux, torch.nn.ModuleList) else [aux]
    for head in heads:
        idx = head.in_index if isinstance(head.in_index, (list, tuple)) else [head.in_index]
        got = [feats[i].shape[1] for i in idx]
        want = head.in_channels if isinstance(head.in_channels, (list, tuple)) \
            else [head.in_channels]
        assert list(want) == got, (type(head).__name__, want, got)
        out = head(feats)
        assert out.shape[:2] == (x.shape[0], head.num_classes), out.shape


def check_mmdet(cfg: Config, model, x: torch.Tensor) -> None:
    feats = model.extract_feat(x)
    c = channels(feats)
    assert len(set(c)) == 1, c
    c = c[0]
    rpn = model.rpn_head
    assert rpn.in_channels == c
    cls_scores, bbox_preds = rpn(feats)[:2]
    assert len(cls_scores) == len(feats) == len(rpn.prior_generator.strides)
    roi = model.roi_head
    assert roi.bbox_roi_extractor.out_channels == c
    assert roi.bbox_head.in_channels == c
    k = roi.bbox_roi_extractor.roi_layers[0].output_size
    cls, reg = roi.bbox_head(torch.empty(3, c, *k, device=x.device))
    assert cls.shape == (3, roi.bbox_head.num_classes + 1)
    if getattr(roi, 'with_mask', False):
        extractor = roi.mask_roi_extractor if not roi.share_roi_extractor \
            else roi.bbox_roi_extractor
        assert extractor.out_channels == c and roi.mask_head.in_channels == c
        k = extractor.roi_layers[0].output_size
        masks = roi.mask_head(torch.empty(3, c, *k, device=x.device))
        assert masks.shape[:2] == (3, roi.mask_head.num_classes)


CHECKS = dict(mmpretrain=check_mmpretrain, mmseg=check_mmseg, mmdet=check_mmdet)


def input_size(cfg: Config, scope: str) -> int:
    """A legitimate input size for the forward check."""
    if scope == 'mmpretrain':
        if cfg.model.type == 'MAE':  # the decoder's position table fixes the training grid
            return int(cfg.model.backbone.get('img_size', 224))
        return 224
    if scope == 'mmseg':
        return int(cfg.get('crop_size', (512, 512))[0])
    return 512


def test_configs_found():
    libs = {p.relative_to(ROOT / 'configs').parts[0] for p in CONFIGS}
    assert 'mmpretrain' in libs and len(CONFIGS) >= 10, CONFIGS


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(ROOT / 'configs'))
                                               for p in CONFIGS])
def test_config_builds(path: Path):
    cfg, scope, model_cfg = load(path)
    model = build(scope, model_cfg, 'meta')
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 0
    if path.name in PAPER_PARAMS:
        want = PAPER_PARAMS[path.name]
        assert abs(n_params - want) / want < 3e-3, f'{n_params / 1e6:.2f} M vs {want / 1e6} M'
    s = input_size(cfg, scope)
    x = torch.empty(2, 3, s, s, device='meta')
    with torch.no_grad():
        CHECKS[scope](cfg, model, x)
