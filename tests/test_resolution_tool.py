"""tools/analysis/resolution_robustness.py: pipeline resizing, RoPE switching, end to end."""
import json
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from _tool_loader import load_tool  # noqa: E402  (tests/)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools/analysis/resolution_robustness.py')
CONFIG = osp.join(REPO, 'configs/mmpretrain/vision_llama/'
                  'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')


tool = load_tool(osp.relpath(TOOL, REPO), 'resolution_robustness')


# ---------------------------------------------------------------------------- pipeline
def test_resize_edge_center_crop_keeps_ratio():
    pipe = [dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
            dict(type='CenterCrop', crop_size=224),
            dict(type='PackInputs')]
    assert tool.pipeline_size(pipe) == 224
    out = tool.resize_pipeline(pipe, 448)
    assert out[1]['scale'] == 512 and out[1]['edge'] == 'short'
    assert out[2]['crop_size'] == 448
    assert tool.pipeline_size(out) == 448
    assert pipe[1]['scale'] == 256 and pipe[2]['crop_size'] == 224  # input untouched
    assert tool.resize_pipeline(pipe, 112)[1]['scale'] == 128


def test_resize_without_crop_and_no_resize():
    resized = tool.resize_pipeline(
        [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(224, 224)),
         dict(type='PackInputs')], 160)
    assert resized[1]['scale'] == (160, 160) and resized[1]['keep_ratio'] is False
    # the demo config feeds images as stored: a Resize is inserted after loading
    plain = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    assert tool.pipeline_size(plain) is None
    out = tool.resize_pipeline(plain, 96)
    assert [tool._type_name(t) for t in out] == ['LoadImageFromFile', 'Resize', 'PackInputs']
    assert out[1]['scale'] == (96, 96)
    # ResizeEdge alone only fixes the short edge: a centre crop makes it square
    edge = tool.resize_pipeline([dict(type='ResizeEdge', scale=224)], 64)
    assert [tool._type_name(t) for t in edge] == ['ResizeEdge', 'CenterCrop']
    assert tool.pipeline_size(edge) == 64


def test_resize_pipeline_rejects_bad_input():
    with pytest.raises(ValueError, match='positive int'):
        tool.resize_pipeline([dict(type='LoadImageFromFile')], 0)
    with pytest.raises(TypeError, match='list of transform dicts'):
        tool.resize_pipeline('LoadImageFromFile', 64)
    with pytest.raises(ValueError, match='not a square size'):
        tool.pipeline_size([dict(type='CenterCrop', crop_size=(224, 160))])


def test_default_sizes_and_base_size():
    assert tool.default_sizes(224) == [112, 168, 224, 336, 448]
    assert tool.default_sizes(64) == [32, 48, 64, 96, 128]
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    assert tool.base_test_size(cfg) == 64  # no resize in the pipeline: backbone img_size


# ---------------------------------------------------------------------------- RoPE switch
def test_switching_rope_in_place_equals_building_with_it():
    """The tool's in-place switch gives exactly the model built with that rope_type."""
    from vllama_mm.models import VisionLLaMA
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, layer_scale_init=0.1)
    torch.manual_seed(0)
    trained = VisionLLaMA(arch, img_size=32, patch_size=8, rope_type='as2d').eval()
    x = torch.randn(2, 3, 48, 48)  # 6x6 grid, anchor 4x4: the variants differ here
    outs = {}
    for rope in ('1d', '2d', 'ntk', 'yarn', 'none', 'as2d'):
        reference = VisionLLaMA(arch, img_size=32, patch_size=8, rope_type=rope).eval()
        reference.load_state_dict(trained.state_dict())
        tool.set_rope_type(trained, rope)
        with torch.no_grad():
            outs[rope] = trained(x)[0]
            torch.testing.assert_close(outs[rope], reference(x)[0], rtol=0, atol=0)
    assert not torch.allclose(outs['as2d'], outs['2d'])  # off the anchor size they differ
    assert not torch.allclose(outs['1d'], outs['2d'])
    assert not torch.allclose(outs['yarn'], outs['2d'])  # 6x6 > 4x4 anchor: YaRN acts
    with pytest.raises(ValueError, match='rope_type must be one of'):
        tool.set_rope_type(trained, 'alibi')
    with pytest.raises(TypeError, match='no RoPE2D'):
        tool.rope_modules(torch.nn.Linear(2, 2))


def test_applicability_of_the_variants():
    """Training-changing variants only on their own checkpoints; YaRN on 2D-trained ones."""
    assert tool.not_applicable('as2d', 'yarn') is None
    assert tool.not_applicable('2d', 'ntk_fixed') is None
    assert 'changes training' in tool.not_applicable('as2d', 'mixed')
    assert 'changes training' in tool.not_applicable('2d', 'dinov3')
    assert tool.not_applicable('mixed', 'mixed') is None
    assert tool.not_applicable('mixed', 'none') is None  # RoPE off: always defined
    assert 'learned' in tool.not_applicable('mixed', 'as2d')
    assert 'normalised' in tool.not_applicable('dinov3', 'yarn')
    assert 'YaRN' in tool.not_applicable('1d', 'yarn')


def test_checkpoint_rope_must_match_the_config():
    """Learned RoPE frequencies are in the checkpoint exactly when the config has them."""
    from vllama_mm.models import VisionLLaMA
    arch = dict(embed_dims=32, num_layers=2, num_heads=2)
    mixed = VisionLLaMA(arch, img_size=32, patch_size=8, rope_type='mixed', rope_theta=10.0)
    plain = VisionLLaMA(arch, img_size=32, patch_size=8, rope_type='as2d')
    mixed_keys = ['backbone.' + k for k in mixed.state_dict()]
    plain_keys = ['backbone.' + k for k in plain.state_dict()]
    assert tool.rope_state_keys(mixed) == ['backbone.rope.freqs']
    assert tool.rope_state_keys(plain) == []
    tool.check_trained_rope(mixed, mixed_keys, 'mixed', 'm.pth')
    tool.check_trained_rope(plain, plain_keys, 'as2d', 'p.pth')
    with pytest.raises(ValueError, match=r"p\.pth has no backbone\.rope\.freqs"):
        tool.check_trained_rope(mixed, plain_keys, 'mixed', 'p.pth')
    with pytest.raises(ValueError, match=r"m\.pth holds learned RoPE parameters"):
        tool.check_trained_rope(plain, mixed_keys, 'as2d', 'm.pth')
    # switching a mixed model's RoPE off and back keeps its learned frequencies in use
    x = torch.randn(1, 3, 48, 48)
    mixed.eval()
    with torch.no_grad():
        ref = mixed(x)[0]
        state = tool.rope_state(mixed)
        tool.set_rope_type(mixed, 'none')
        assert not torch.allclose(mixed(x)[0], ref)
        tool.restore_rope(mixed, state)
        torch.testing.assert_close(mixed(x)[0], ref, rtol=0, atol=0)


def test_pyramid_switches_every_stage_and_has_no_1d():
    from vllama_mm.models import PyramidVisionLLaMA
    model = PyramidVisionLLaMA(dict(embed_dims=[32, 32, 32, 32], depths=[2, 2, 2, 2]),
                               img_size=32, out_type='avg_featmap')
    assert len(tool.rope_modules(model)) == 4
    tool.set_rope_type(model, '2d')
    assert {m.rope_type for m in model.ropes} == {'2d'}
    with pytest.raises(ValueError, match="not '1d'"):
        tool.set_rope_type(model, '1d')


# ---------------------------------------------------------------------------- end to end
def _parse_table(md: str):
    rows = [line for line in md.splitlines() if line.startswith('|')]
    sizes = [int(re.match(r'\s*(\d+)', c).group(1)) for c in rows[0].strip('|').split('|')[1:]]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        table[cells[0]] = dict(zip(sizes, (None if c == 'n/a' else float(c)
                                           for c in cells[1:])))
    return sizes, table


def test_tool_end_to_end(tmp_path):
    """Train the demo config one epoch, then evaluate it at 2 sizes x 3 RoPE variants."""
    from mmengine.config import Config

    from vllama_mm.datasets.synthetic_imagenet import generate
    from vllama_mm.engine.runner_utils import build_runner, import_plugin

    data = str(tmp_path / 'data')
    generate(data, num_train=8, num_val=4, img_size=64)
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = str(tmp_path / 'train')
    cfg.launcher = 'none'
    cfg.log_level = 'WARNING'
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data
        cfg[loader].num_workers = 0
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = cfg.param_scheduler[:1]  # the warm-up epoch only
    import_plugin(cfg)
    build_runner(cfg).train()  # 80 images, batch 32: 3 iterations
    trained = tmp_path / 'train' / 'epoch_1.pth'
    assert trained.is_file()
    # Keep meta + weights (the layout of released checkpoints). The training state
    # (message hub, optimizer) is not needed to evaluate and its HistoryBuffer pickles
    # `getattr`, which torch>=2.6 safe loading refuses; our own file, so trusted here.
    full = torch.load(trained, map_location='cpu', weights_only=False)
    ckpt = tmp_path / 'epoch_1_weights.pth'
    torch.save(dict(meta=full['meta'], state_dict=full['state_dict']), ckpt)

    out_dir = tmp_path / 'res'
    cmd = [sys.executable, TOOL, CONFIG, str(ckpt), '--sizes', '32', '64',
           '--rope', 'none', '2d', 'as2d', 'yarn', 'mixed', 'dinov3', '--out-dir', str(out_dir),
           '--cfg-options',
           f'test_dataloader.dataset.data_root={data}', 'test_dataloader.num_workers=0']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(re.findall(r'\[resolution\] \d/8 size', proc.stdout)) == 8  # progress

    md = (out_dir / 'resolution_robustness.md').read_text()
    assert md.strip().splitlines()[-1] in proc.stdout  # the table is printed too
    sizes, table = _parse_table(md)
    assert sizes == [32, 64] and '64 (train)' in md
    assert set(table) == {'none', '2d', 'as2d', 'yarn', 'mixed', 'dinov3'}
    for rope, row in table.items():
        if rope in ('mixed', 'dinov3'):  # change training: n/a on an as2d checkpoint
            assert all(row[s] is None for s in sizes)
            assert f"n/a for {rope}: '{rope}' changes training" in md
        else:
            assert all(0.0 <= row[s] <= 100.0 for s in sizes)
    # at or below the anchor (the 64 px training grid) YaRN is plain 2D RoPE
    assert table['yarn'][64] == table['2d'][64] and table['yarn'][32] == table['2d'][32]
    # AS2DRoPE is plain 2D RoPE at the training (anchor) size: identical predictions
    assert table['as2d'][64] == table['2d'][64]

    summary = json.loads((out_dir / 'resolution_robustness.json').read_text())
    assert summary['base_size'] == 64 and summary['trained_rope_type'] == 'as2d'
    assert summary['top1']['as2d']['64'] == pytest.approx(table['as2d'][64], abs=0.006)

    png = (out_dir / 'resolution_robustness.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
