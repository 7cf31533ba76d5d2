"""Strict weight loading (issue 14 item 3): ``init_cfg=Pretrained`` into a vllama_mm
backbone and ``tools/test.py``'s ``load_from`` report ``N of M ... tensors loaded`` and
fail, saying what the file looks like, when it does not fit."""
import pytest
import torch
from torch import nn

import vllama_mm.engine  # noqa: F401  (the plugin imported: stock modules must still load leniently)
from vllama_mm.engine.weights import WeightsError, check_checkpoint_fits, describe
from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA

PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2)
PYRAMID = dict(embed_dims=[32] * 4, depths=[1] * 4)


@pytest.fixture
def logged():
    """Messages of mmengine's current logger during the test (not through capsys: the
    current logger may be an earlier test's, writing to a closed capture)."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _plain(**init) -> VisionLLaMA:
    cfg = dict(type='Pretrained', **init) if init else None
    return VisionLLaMA(PLAIN, img_size=32, patch_size=8, init_cfg=cfg)


def _save(path, sd, key='state_dict') -> str:
    torch.save({key: sd} if key else sd, path)
    return str(path)


@pytest.fixture
def full(tmp_path):
    """A classifier-style checkpoint: ``backbone.*`` and ``head.*``."""
    src = _plain()
    sd = {'backbone.' + k: v for k, v in src.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(4, 32)
    return src, sd


def test_fitting_checkpoint_reports_all_tensors_loaded(full, tmp_path, logged):
    src, sd = full
    model = _plain(checkpoint=_save(tmp_path / 'ok.pth', sd), prefix='backbone.')
    model.init_weights()
    n = len(src.state_dict())
    assert any(f'{n} of {n} backbone tensors loaded' in line for line in logged)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                src.state_dict().values()))


@pytest.mark.parametrize('case,match', [
    ('empty', r'0 of 25 backbone tensors loaded; 25 missing.*holds no weight tensors'),
    ('no_prefix', r"0 of 25 .*full model checkpoint.*add prefix='backbone\.'"),
    ('wrong_prefix', r"prefix 'model\.'.*no key starts with prefix 'model\.'"),
    ('missing_block', r'15 of 25 backbone tensors loaded; 10 missing \(layers\.1\..*'
                      r'some are absent: an incomplete save'),
    ('official_plain', r'official plain VisionLLaMA \(DeiT3-style\) layout: convert it '
                       r'first with python tools/model_converters/official2vllama\.py'),
    ('official_pyramid', r'official Pyramid-VisionLLaMA layout: convert'),
    ('mmpretrain_vit', r'missing \(layers\.0\.ffn\.w12\.weight.*mmpretrain ViT checkpoint'),
])
def test_unfit_pretrained_checkpoint_is_an_error(full, tmp_path, case, match):
    src, sd = full
    prefix = 'backbone.'
    if case == 'empty':
        sd = {}
    elif case == 'no_prefix':
        prefix = None
    elif case == 'wrong_prefix':
        prefix = 'model.'
    elif case == 'missing_block':
        sd = {k: v for k, v in sd.items() if not k.startswith('backbone.layers.1.')}
    elif case == 'official_plain':
        sd = {'patch_embed.proj.weight': torch.zeros(32, 3, 8, 8),
              'blocks.0.attn.qkv.weight': torch.zeros(96, 32), 'norm.weight': torch.zeros(32)}
    elif case == 'official_pyramid':
        sd = {'patch_embeds.0.proj.weight': torch.zeros(32, 3, 4, 4),
              'blocks.0.0.attn.q.weight': torch.zeros(32, 32)}
    else:  # an mmpretrain ViT of the same width: same attention names, GELU MLP
        sd = {k: v for k, v in sd.items() if '.ffn.' not in k}
        for i in range(2):
            sd[f'backbone.layers.{i}.ffn.layers.0.0.weight'] = torch.zeros(128, 32)
            sd[f'backbone.layers.{i}.ffn.layers.1.weight'] = torch.zeros(32, 128)
        sd['backbone.pos_embed'] = torch.zeros(1, 17, 32)
    path = _save(tmp_path / f'{case}.pth', sd)
    model = _plain(checkpoint=path, prefix=prefix)
    with pytest.raises(WeightsError, match=match) as err:
        model.init_weights()
    assert path in str(err.value) and 'strict=False' in str(err.value)


def test_strict_false_loads_anyway_and_lists_the_keys(full, tmp_path, logged):
    src, sd = full
    sd = {k: v for k, v in sd.items() if not k.startswith('backbone.layers.1.')}
    model = _plain(checkpoint=_save(tmp_path / 'part.pth', sd), prefix='backbone.',
                   strict=False)
    model.init_weights()
    out = '\n'.join(logged)
    assert '15 of 25 backbone tensors loaded; 10 missing (layers.1.' in out
    assert 'loaded anyway' in out
    assert torch.equal(model.patch_embed.projection.weight, src.patch_embed.projection.weight)


def test_pyramid_backbone_is_strict_too(tmp_path):
    sd = {'backbone.' + k: v for k, v in PyramidVisionLLaMA(PYRAMID).state_dict().items()
          if '.3.' not in k}  # one stage's blocks and norms gone
    model = PyramidVisionLLaMA(PYRAMID, init_cfg=dict(
        type='Pretrained', checkpoint=_save(tmp_path / 'p.pth', sd), prefix='backbone.'))
    with pytest.raises(WeightsError, match=r'backbone tensors loaded; \d+ missing'):
        model.init_weights()


def test_other_modules_load_as_mmengine_does(tmp_path):
    """Stock modules (e.g. a library's ResNet) keep mmengine's lenient Pretrained."""
    from mmengine.model import BaseModule

    class Other(BaseModule):
        def __init__(self, init_cfg=None):
            super().__init__(init_cfg)
            self.fc = nn.Linear(4, 4)
            self.extra = nn.Linear(4, 4)

    src = Other()
    path = _save(tmp_path / 'o.pth', {'fc.weight': src.fc.weight.detach().clone()})
    model = Other(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert torch.equal(model.fc.weight, src.fc.weight)


def test_load_from_check_for_a_whole_model(full, tmp_path):
    src, sd = full

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _plain()
            self.head = nn.Module()
            self.head.fc = nn.Linear(32, 4, bias=False)

    model = Classifier()
    ok = _save(tmp_path / 'ok.pth', sd)
    assert '26 of 26 model tensors loaded' in check_checkpoint_fits(model, ok)
    for name, bad, match in [
            ('empty', {}, r"0 of 26 model tensors loaded.*holds no weight tensors"),
            ('partial', {k: v for k, v in sd.items() if 'layers.0.' not in k},
             r'16 of 26 model tensors loaded; 10 missing \(backbone\.layers\.0\.'),
            ('official', {'patch_embed.proj.weight': torch.zeros(32, 3, 8, 8),
                          'blocks.0.mlp.w12.weight': torch.zeros(8, 32)},
             r'official plain VisionLLaMA.*convert it first')]:
        path = _save(tmp_path / f'{name}.pth', bad, key='model' if name == 'official' else
                     'state_dict')
        with pytest.raises(WeightsError, match=match):
            check_checkpoint_fits(model, path)
    partial = _save(tmp_path / 'p2.pth', {k: v for k, v in sd.items() if 'layers.0.' not in k})
    assert '10 missing' in check_checkpoint_fits(model, partial, strict=False)


def test_describe_timm_vit():
    sd = {'patch_embed.proj.weight': torch.zeros(1), 'blocks.0.mlp.fc1.weight': torch.zeros(1)}
    assert 'ViT checkpoint (timm layout' in describe({'model': sd})


def test_task_output_norms_are_new_not_missing(full, tmp_path, logged):
    """MAE fine-tuning (avg_featmap: a fresh ``ln2``) and dense pyramid models (fresh
    per-stage ``norms``) load encoder-only files; a file with part of them does not."""
    src, sd = full
    path = _save(tmp_path / 'enc.pth', sd)
    model = VisionLLaMA(PLAIN, img_size=32, patch_size=8, out_type='avg_featmap',
                        final_norm=False, init_cfg=dict(type='Pretrained', checkpoint=path,
                                                        prefix='backbone.'))
    model.init_weights()
    out = '\n'.join(logged)
    assert 'ln2.weight, ln2.bias not in the file: task-specific output norm(s)' in out
    assert '23 of 23 backbone tensors loaded; 2 unexpected (ln1.weight, ln1.bias)' in out
    cls_sd = {'backbone.' + k: v for k, v in PyramidVisionLLaMA(
        PYRAMID, out_type='avg_featmap').state_dict().items()}
    dense = PyramidVisionLLaMA(PYRAMID, init_cfg=dict(
        type='Pretrained', checkpoint=_save(tmp_path / 'cls.pth', cls_sd), prefix='backbone.'))
    dense.init_weights()
    assert any(line.startswith(f"Pretrained '{tmp_path / 'cls.pth'}'") and 'norms.0.weight, '
               'norms.0.bias' in line and 'task-specific output norm' in line for line in logged)
    part = {k: v for k, v in {'backbone.' + k: v for k, v in PyramidVisionLLaMA(
        PYRAMID).state_dict().items()}.items() if not k.startswith('backbone.norms.3.')}
    dense = PyramidVisionLLaMA(PYRAMID, init_cfg=dict(
        type='Pretrained', checkpoint=_save(tmp_path / 'part.pth', part), prefix='backbone.'))
    with pytest.raises(WeightsError, match=r'missing \(norms\.3\.weight'):
        dense.init_weights()


def test_backbone_inside_a_stock_model_loads_strictly_by_itself(full, tmp_path, logged):
    """The backbone reads its own ``init_cfg`` in ``init_weights`` (as mmdet's Swin does):
    called from a stock parent's ``init_weights`` it loads strictly and reports, while
    the parent's other children keep mmengine's default behaviour."""
    from mmengine.model import BaseModule
    src, sd = full

    class Classifier(BaseModule):
        def __init__(self, checkpoint):
            super().__init__()
            self.backbone = _plain(checkpoint=checkpoint, prefix='backbone.')
            self.head = nn.Linear(32, 4)

    model = Classifier(_save(tmp_path / 'ok.pth', sd))
    model.init_weights()
    n = len(src.state_dict())
    assert any(f'{n} of {n} backbone tensors loaded' in line for line in logged)
    assert torch.equal(model.backbone.patch_embed.projection.weight,
                       src.patch_embed.projection.weight)
    part = {k: v for k, v in sd.items() if not k.startswith('backbone.layers.1.')}
    with pytest.raises(WeightsError, match='10 missing'):
        Classifier(_save(tmp_path / 'part.pth', part)).init_weights()


@pytest.mark.parametrize('init,err,match', [
    (dict(strict='no'), TypeError, 'strict must be True or False'),
    (dict(revise_keys=[]), ValueError, r"unknown keys \['revise_keys'\]"),
])
def test_bad_pretrained_init_cfg_is_named(full, tmp_path, init, err, match):
    _, sd = full
    model = _plain(checkpoint=_save(tmp_path / 'ok.pth', sd), prefix='backbone.', **init)
    with pytest.raises(err, match=match):
        model.init_weights()


def test_pretrained_in_an_init_cfg_list_is_strict_too(full, tmp_path):
    _, sd = full
    part = {k: v for k, v in sd.items() if not k.startswith('backbone.layers.1.')}
    init = [dict(type='Constant', val=0.0, layer='Linear'),
            dict(type='Pretrained', checkpoint=_save(tmp_path / 'part.pth', part),
                 prefix='backbone.')]
    with pytest.raises(WeightsError, match='10 missing'):
        VisionLLaMA(PLAIN, img_size=32, patch_size=8, init_cfg=init).init_weights()
    src, _ = full
    init[1]['checkpoint'] = _save(tmp_path / 'ok.pth', sd)
    model = VisionLLaMA(PLAIN, img_size=32, patch_size=8, init_cfg=init)
    model.init_weights()  # the checkpoint wins over the constant init
    assert torch.equal(model.layers[0].attn.qkv.weight, src.layers[0].attn.qkv.weight)
