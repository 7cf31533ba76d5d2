"""The model zoo: model-index.yml and every family's metafile.yml validate with the
`model-index` package, cover every config under configs/ exactly once, point at configs that
load, and the mmpretrain entries load by name through mmpretrain's own API."""
import os.path as osp
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from modelindex.load_model_index import load

from vllama_mm import model_zoo

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ("converted from the authors' weights", 'trained here', 'not reproduced')
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
TINY_CLS = 'vision-llama-tiny-p8_1xb32-10e_synthetic-64px'


@pytest.fixture(scope='module')
def index():
    mi = load(str(ROOT / 'model-index.yml'))
    mi.build_models_with_collections()
    return mi


@pytest.fixture(scope='module')
def entries():
    return model_zoo.models()


def test_model_index_validates(index):
    errors = index.check(silent=True)
    assert errors == [], errors
    assert len(index.models) == len(model_zoo.models())


def test_every_config_has_exactly_one_entry(entries):
    """A config added under configs/ without a metafile entry fails here (see README:
    'Model zoo' for how to add one)."""
    listed = sorted(osp.relpath(e['Config'], ROOT) for e in entries.values())
    assert len(listed) == len(set(listed)), 'a config is listed twice'
    missing = sorted(set(CONFIGS) - set(listed))
    assert not missing, f'configs without a metafile entry: {missing}'
    assert not set(listed) - set(CONFIGS), 'metafile entries whose config does not exist'


def test_every_config_folder_with_configs_has_metafile_and_readme():
    folders = {osp.dirname(c) for c in CONFIGS}
    imported = {osp.dirname(osp.relpath(p, ROOT)) for p in model_zoo.metafiles()}
    assert folders == imported, (folders ^ imported)
    for folder in folders:
        readme = (ROOT / folder / 'README.md').read_text()
        with open(ROOT / folder / 'metafile.yml') as f:
            meta = yaml.safe_load(f)
        for m in meta['Models']:  # the README table names every model of its family
            assert f"`{m['Name']}`" in readme or m['Name'] in readme, (folder, m['Name'])


@pytest.mark.parametrize('name', sorted(model_zoo.models()))
def test_entry_fields_and_config_loads(name, entries):
    e = entries[name]
    assert Path(e['Config']).name == f'{name}.py', 'Name must be the config file name'
    assert e['Status'] in STATUSES, e['Status']
    meta = e['Metadata']
    assert meta['Parameters'] > 0 and isinstance(meta['Parameters'], int)
    assert isinstance(meta.get('FLOPs', 0), int)
    for res in e.get('Results', []):
        assert res['Task'] and res['Dataset']
        assert all(0 < v < 100 for v in res['Metrics'].values())
    if e['Status'].startswith('converted'):
        assert e['Authors Weights'].startswith('https://huggingface.co/mtgv/'), e
        assert e['Converter'] == 'tools/model_converters/official2vllama.py'
    if e['Status'] == 'trained here':
        assert 'Results' not in e or e.get('Weights'), 'a result here needs its weights'
    cfg = Config.fromfile(e['Config'])
    library = osp.relpath(e['Config'], ROOT).split('/')[1]
    assert library in model_zoo.LIBRARIES, library
    if library != 'generation':  # generation configs run outside the OpenMMLab Runners
        assert cfg.get('default_scope') == library, (cfg.get('default_scope'), library)


def test_tiny_configs_state_their_parameter_counts(entries):
    import importlib

    from mmengine.registry import DefaultScope
    tiny = [n for n in entries if 'tiny' in n]
    assert len(tiny) == 8  # 6 OpenMMLab libraries' + 2 generation (DiT-LLaMA, SiT-LLaMA)
    for name in tiny:
        cfg = Config.fromfile(entries[name]['Config'])
        # generation configs: default_scope 'vllama_mm', models from vllama_mm.generation
        plugin = 'generation' if cfg.default_scope == 'vllama_mm' else cfg.default_scope
        importlib.import_module(f'vllama_mm.{plugin}')
        registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = registry.build(cfg.model)
        n = sum(p.numel() for p in model.parameters())
        assert entries[name]['Metadata']['Parameters'] == n, name


def test_lookup_errors_name_the_model():
    with pytest.raises(ValueError, match="no model named 'nope'"):
        model_zoo.lookup('nope')
    with pytest.raises(ValueError, match='library must be one of'):
        model_zoo.metafiles('mmfoo')


# ----------------------------------------------------------------------------- by name
def test_mmpretrain_lists_and_builds_our_models_by_name():
    import mmpretrain

    import vllama_mm.mmpretrain  # noqa: F401  (registers the index with ModelHub)
    ours = set(model_zoo.list_models(library='mmpretrain'))
    listed = set(mmpretrain.list_models('*llama*'))
    assert ours <= listed, ours - listed
    assert not set(model_zoo.list_models(library='mmseg')) & listed  # only mmpretrain's
    assert 'pyramid-vision-llama-b_8xb128_in1k' in mmpretrain.list_models(
        '*llama*', task='Image Classification')
    model = mmpretrain.get_model(TINY_CLS)
    assert type(model.backbone).__name__ == 'VisionLLaMA'
    with pytest.warns(UserWarning, match='Unable to find pre-defined checkpoint'):
        mmpretrain.get_model(TINY_CLS, pretrained=True)  # no published weights


def test_image_classification_inferencer_by_name(tmp_path):
    import numpy as np
    from mmengine.registry import DefaultScope
    from mmpretrain import ImageClassificationInferencer, get_model

    import vllama_mm.mmpretrain  # noqa: F401
    torch.manual_seed(0)
    trained = get_model(TINY_CLS)
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'state_dict': trained.state_dict(),
                'meta': {'dataset_meta': {'classes': [f'c{i}' for i in range(10)]}}}, ckpt)
    # mmpretrain's inferencer builds its pipeline in the current default scope, which
    # earlier tests may have set to another library
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(TINY_CLS, pretrained=str(ckpt),
                                                   device='cpu')
        img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        out = inferencer(img)[0]
    loaded = inferencer.model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in trained.state_dict().items())
    assert out['pred_class'] in [f'c{i}' for i in range(10)]
    assert out['pred_scores'].shape == (10, )


def test_mmpretrain_inferencer_refuses_nonfinite_and_damaged_weights(tmp_path):
    """vllama_mm.mmpretrain's ImageClassificationInferencer: a NaN tensor is named, a flipped
    byte fails the CRC check, before mmpretrain's get_model loads the file; intact weights
    load as with mmpretrain's own class."""
    from mmengine.registry import DefaultScope
    from mmpretrain import get_model

    from vllama_mm.engine.checkpoint import CheckpointError
    from vllama_mm.mmpretrain import ImageClassificationInferencer
    torch.manual_seed(0)
    sd = get_model(TINY_CLS).state_dict()
    key = sorted(k for k in sd if sd[k].is_floating_point())[0]
    bad = dict(sd)
    bad[key] = sd[key].clone().fill_(float('nan'))
    torch.save({'state_dict': bad}, tmp_path / 'nan.pth')
    torch.save({'state_dict': sd}, tmp_path / 'ok.pth')
    data = bytearray((tmp_path / 'ok.pth').read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor record
    (tmp_path / 'flipped.pth').write_bytes(bytes(data))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(CheckpointError, match=f'NaN or inf .*{key}'):
            ImageClassificationInferencer(TINY_CLS, pretrained=str(tmp_path / 'nan.pth'),
                                          device='cpu')
        with pytest.raises(CheckpointError):
            ImageClassificationInferencer(TINY_CLS, pretrained=str(tmp_path / 'flipped.pth'),
                                          device='cpu')
        inferencer = ImageClassificationInferencer(TINY_CLS, pretrained=str(tmp_path / 'ok.pth'),
                                                   device='cpu')
    loaded = inferencer.model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in sd.items())


def test_mmseg_inferencer_by_name(tmp_path):
    import numpy as np

    from vllama_mm.mmseg import MMSegInferencer
    name = 'upernet_pvllama-tiny_1xb2-20i_synthetic-ade20k-64x64'
    inferencer = MMSegInferencer(name, device='cpu')
    assert type(inferencer.model.backbone).__name__ == 'PyramidVisionLLaMA'
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = inferencer(img, show=False)
    assert out['predictions'].shape == (64, 64)
    with pytest.raises(ValueError, match='Cannot find model'):  # others go to mmseg's index
        MMSegInferencer('no-such-model', device='cpu')


def test_det_inferencer_by_name():
    import numpy as np

    from vllama_mm.mmdet import DetInferencer
    name = 'mask-rcnn_pvllama-tiny_fpn_1xb2-2e_synthetic-coco'
    inferencer = DetInferencer(name, device='cpu', show_progress=False)
    assert type(inferencer.model.backbone).__name__ == 'PyramidVisionLLaMA'
    img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = inferencer(img, return_vis=False, no_save_vis=True, no_save_pred=True)
    assert set(out['predictions'][0]) >= {'labels', 'scores', 'bboxes', 'masks'}


def test_mmseg_inferencer_refuses_nonfinite_weights_and_executes_no_checkpoint_config(
        tmp_path):
    """Weights with a NaN are named; weights without a config: the checkpoint's config is
    read as data (mmengine's inferencer would execute its meta['cfg'] text)."""
    from vllama_mm.engine.checkpoint import CheckpointError
    from vllama_mm.mmseg import MMSegInferencer
    name = 'upernet_pvllama-tiny_1xb2-20i_synthetic-ade20k-64x64'
    sd = MMSegInferencer(name, device='cpu').model.state_dict()
    bad = dict(sd)
    key = sorted(k for k in sd if sd[k].is_floating_point())[0]
    bad[key] = sd[key].clone().fill_(float('nan'))
    torch.save({'state_dict': bad}, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError, match=f'NaN or inf .*{key}'):
        MMSegInferencer(name, weights=str(tmp_path / 'nan.pth'), device='cpu')
    marker = tmp_path / 'marker'
    torch.save({'state_dict': sd, 'meta': {'cfg': f"open(r'{marker}', 'w').write('ran')\n"}},
               tmp_path / 'evil.pth')
    with pytest.raises(ValueError, match='cannot be read as data'):
        MMSegInferencer(None, weights=str(tmp_path / 'evil.pth'), device='cpu')
    assert not marker.exists()
