"""The paper's ablation options (tables 11a-g, 12) on both backbones: shapes, gradients,
parameter counts, equivalences, errors, and the ablation configs."""
from pathlib import Path

import pytest
import torch
from torch import nn

from vllama_mm.models import PyramidVisionLLaMA, RoPE2D, VisionLLaMA, apply_rope
from vllama_mm.models.ablations import PEG, AbsPosEmbed, GeluMLP, RMSNorm, sincos_2d
from vllama_mm.models.mae import VisionLLaMAMAE
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = Path(__file__).resolve().parents[1]
PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2, layer_scale_init=0.1)
PYR = dict(embed_dims=[32, 32, 32, 32], depths=[2, 2, 2, 2])
OPTIONS = [
    dict(mlp_type='gelu'),
    dict(norm_type='rmsnorm'),
    dict(rope_ratio=0.5),
    dict(rope_shared=False),
    dict(rope_type='ntk_fixed', rope_ntk_factor=3.0),
    dict(abs_pos_embed='learnable'),
    dict(rope_ratio=0.25, rope_shared=False, norm_type='rmsnorm', mlp_type='gelu'),
]


def plain(**kw) -> VisionLLaMA:
    kw.setdefault('out_type', 'cls_token')
    return VisionLLaMA(PLAIN, img_size=32, patch_size=8, **kw)


def pyramid(**kw) -> PyramidVisionLLaMA:
    return PyramidVisionLLaMA(PYR, img_size=32, out_type='avg_featmap', **kw)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _check_shapes_and_grads(model: nn.Module, x: torch.Tensor, shape) -> None:
    model.init_weights()
    out = model(x)[-1]
    assert out.shape == shape and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


@pytest.mark.parametrize('opts', OPTIONS + [
    dict(abs_pos_embed='sincos'),
    dict(window_size=2, global_attn_indexes=[1], with_cls_token=False, out_type='avg_featmap',
         rope_shared=False, rope_ratio=0.5, rope_type='ntk_fixed', abs_pos_embed='learnable'),
], ids=str)
def test_plain_options_shapes_and_gradients(opts):
    torch.manual_seed(0)
    _check_shapes_and_grads(plain(**opts), torch.randn(2, 3, 40, 48), (2, 32))


@pytest.mark.parametrize('opts', OPTIONS + [dict(use_peg=True)], ids=str)
def test_pyramid_options_shapes_and_gradients(opts):
    torch.manual_seed(0)
    _check_shapes_and_grads(pyramid(**opts), torch.randn(2, 3, 36, 44), (2, 32))


def test_parameter_counts():
    d, L = 32, 2
    base = n_params(plain())
    # GELU MLP: 4d hidden with biases vs bias-free SwiGLU (hidden 256 for d = 32)
    assert n_params(plain(mlp_type='gelu')) - base == L * ((8 * d * d + 5 * d) - 3 * d * 256)
    # RMSNorm has no bias: 2 block norms per layer and the final ln1
    assert base - n_params(plain(norm_type='rmsnorm')) == (2 * L + 1) * d
    for opts in (dict(rope_ratio=0.5), dict(rope_shared=False), dict(rope_type='ntk_fixed'),
                 dict(abs_pos_embed='sincos')):  # no parameters (sin-cos: a buffer)
        assert n_params(plain(**opts)) == base
    assert 'pos_embed.weight' not in plain(abs_pos_embed='sincos').state_dict()
    assert n_params(plain(abs_pos_embed='learnable')) - base == (1 + 4 * 4) * d  # cls + 4x4
    pbase = n_params(pyramid())
    assert n_params(pyramid(abs_pos_embed='learnable')) - pbase == d * (64 + 16 + 4 + 1)
    assert n_params(pyramid(use_peg=True)) - pbase == 4 * (9 * d + d)  # dw 3x3 + bias
    assert pbase - n_params(pyramid(norm_type='rmsnorm')) == (2 * 8 + 1) * d
    assert isinstance(plain(mlp_type='gelu').layers[0].ffn, GeluMLP)
    assert plain(mlp_type='gelu').layers[0].ffn.hidden == 4 * d


# ---------------------------------------------------------------------------- equivalences
def _same_output(a: nn.Module, b: nn.Module, x: torch.Tensor, strict: bool = True) -> bool:
    a.init_weights()
    b.load_state_dict(a.state_dict(), strict=strict)
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x)[-1], b(x)[-1])


def test_ratio_one_is_the_default():
    x = torch.randn(2, 3, 40, 40)
    assert _same_output(plain(), plain(rope_ratio=1.0), x)
    assert _same_output(pyramid(), pyramid(rope_ratio=1.0), x)
    assert not _same_output(plain(), plain(rope_ratio=0.5), x)


def test_unshared_equals_shared_with_one_head():
    arch = dict(embed_dims=16, num_layers=2, num_heads=1)
    x = torch.randn(2, 3, 40, 48)
    a = VisionLLaMA(arch, img_size=32, patch_size=8)
    b = VisionLLaMA(arch, img_size=32, patch_size=8, rope_shared=False)
    assert _same_output(a, b, x)
    assert not _same_output(plain(), plain(rope_shared=False), x)  # two heads differ


def test_unshared_table_is_the_full_width_rope_sliced_per_head():
    heads, hc = 3, 8
    per_head = RoPE2D(hc, (4, 4), '2d', rotary_dim=4, num_heads=heads, shared=False)
    full = RoPE2D(heads * 4, (4, 4), '2d')  # one RoPE over all rotated channels
    cos, sin = per_head.grid(3, 5)
    assert cos.shape == (1, heads, 15, 4)
    fc, fs = full.grid(3, 5)  # [15, heads*4]
    for h in range(heads):
        torch.testing.assert_close(cos[0, h], fc[:, 4 * h:4 * h + 4], rtol=0, atol=0)
        torch.testing.assert_close(sin[0, h], fs[:, 4 * h:4 * h + 4], rtol=0, atol=0)


def test_partial_rope_rotates_the_first_channels_only():
    x = torch.randn(2, 3, 12, 16)
    rope = RoPE2D(16, (3, 4), '2d', rotary_dim=8)
    table = rope.grid(3, 4)
    out = apply_rope(x, table)
    assert torch.equal(out[..., 8:], x[..., 8:])  # pass-through channels
    ref = apply_rope(x[..., :8], RoPE2D(8, (3, 4), '2d').grid(3, 4))  # freqs over 8 dims
    torch.testing.assert_close(out[..., :8], ref, rtol=0, atol=0)


def test_peg_with_zero_weights_is_no_peg():
    x = torch.randn(2, 3, 40, 40)
    a, b = pyramid(), pyramid(use_peg=True)
    a.init_weights()
    b.init_weights()
    b.load_state_dict(a.state_dict(), strict=False)  # everything but the pegs
    for peg in b.pegs:
        nn.init.zeros_(peg.proj.weight)
        nn.init.zeros_(peg.proj.bias)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x)[0], b(x)[0])
        nn.init.ones_(b.pegs[1].proj.bias)
        assert not torch.equal(a(x)[0], b(x)[0])


def test_peg_is_x_plus_depthwise_conv():
    peg = PEG(4)
    x = torch.randn(2, 6, 4)  # a 2x3 map
    fmap = x.transpose(1, 2).reshape(2, 4, 2, 3)
    ref = fmap + nn.functional.conv2d(fmap, peg.proj.weight, peg.proj.bias, padding=1, groups=4)
    torch.testing.assert_close(peg(x, (2, 3)), ref.flatten(2).transpose(1, 2))


def test_rmsnorm_differs_from_layernorm_on_non_centred_input():
    torch.manual_seed(0)
    rms, ln = RMSNorm(16), nn.LayerNorm(16, eps=1e-6)
    assert rms.eps == 1e-6 and rms.weight.shape == (16,) and not hasattr(rms, 'bias')
    x = torch.randn(4, 16) + 3.0  # mean far from 0
    assert not torch.allclose(rms(x), ln(x), atol=1e-2)
    centred = x - x.mean(-1, keepdim=True)  # zero mean: LN == RMSNorm (weight 1, bias 0)
    torch.testing.assert_close(rms(centred), ln(centred), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rms(x), nn.RMSNorm(16, eps=1e-6)(x), rtol=1e-6, atol=1e-6)
    assert rms(x.bfloat16()).dtype == torch.bfloat16  # computed in float32, cast back


def test_ntk_fixed_is_2d_with_scaled_theta_except_windows():
    rope = RoPE2D(8, (4, 4), 'ntk_fixed', theta=100.0, ntk_factor=3.0)
    ref = RoPE2D(8, (4, 4), '2d', theta=300.0)
    for a, b in zip(rope.grid(6, 5), ref.grid(6, 5)):  # unscaled positions, theta x 3
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    base = RoPE2D(8, (4, 4), '2d', theta=100.0)
    for a, b in zip(rope.grid(3, 3, local=True), base.grid(3, 3, local=True)):  # LSA: base
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_abs_pos_embed_sincos_and_resizing():
    pe = AbsPosEmbed('sincos', 8, (2, 3), num_prefix=1)
    w = pe.table((2, 3))
    assert w.shape == (1, 7, 8) and torch.equal(w[0, 0], torch.zeros(8))  # class token 0
    # token (y=1, x=2): x in the first half, y in the second, [sin, cos] each
    omega = 1.0 / 10000 ** (torch.arange(2) / 2.0)
    ref = torch.cat([(2 * omega).sin(), (2 * omega).cos(), omega.sin(), omega.cos()])
    torch.testing.assert_close(w[0, 1 + 1 * 3 + 2], ref)
    torch.testing.assert_close(pe.table((4, 5))[0, 1:], sincos_2d(8, 4, 5))  # recomputed
    learn = AbsPosEmbed('learnable', 8, (2, 3), num_prefix=1)
    assert learn.table((2, 3)) is learn.weight
    big = learn.table((4, 6))
    assert big.shape == (1, 25, 8) and torch.equal(big[:, 0], learn.weight[:, 0])


def test_unshared_rope_in_the_mae_encoder():
    """Kept tokens gather their rows of a per-head table too."""
    torch.manual_seed(0)
    mae = VisionLLaMAMAE(dict(embed_dims=32, num_layers=1, num_heads=2), img_size=32,
                         patch_size=8, rope_shared=False, rope_ratio=0.5)
    latent, mask, _ = mae(torch.randn(2, 3, 32, 32))
    assert latent.shape == (2, 1 + 4, 32) and mask.shape == (2, 16)
    with pytest.raises(ValueError, match='abs_pos_embed'):
        VisionLLaMAMAE(dict(embed_dims=32, num_layers=1, num_heads=2), img_size=32,
                       patch_size=8, abs_pos_embed='learnable')


def test_layer_depth_and_freezing_of_new_parameters():
    m = plain(abs_pos_embed='learnable', frozen_stages=1)
    assert m.get_layer_depth('backbone.pos_embed.weight', 'backbone.')[0] == 0
    assert not m.pos_embed.weight.requires_grad
    p = pyramid(abs_pos_embed='learnable', use_peg=True, frozen_stages=1)
    assert p.get_layer_depth('pos_embeds.1.weight')[0] == 2
    assert p.get_layer_depth('pegs.1.proj.weight')[0] == 3  # after block 0 of stage 1
    assert not p.pegs[0].proj.weight.requires_grad and p.pegs[1].proj.weight.requires_grad
    assert not p.pos_embeds[0].weight.requires_grad


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize('kw, match', [
    (dict(mlp_type='relu'), 'mlp_type'),
    (dict(norm_type='bn'), 'norm_type'),
    (dict(rope_ratio=0.0), 'rope_ratio'),
    (dict(rope_ratio=1.5), 'rope_ratio'),
    (dict(rope_ratio=0.4), 'rope_ratio 0.4 rotates'),  # int(0.4 * 16) = 6: not 4k
    (dict(rope_shared='no'), 'rope_shared'),
    (dict(abs_pos_embed='rope'), 'abs_pos_embed'),
    (dict(rope_type='ntk_fixed', rope_ntk_factor=0.0), 'ntk_factor'),
])
def test_bad_values_name_the_option(kw, match):
    with pytest.raises(ValueError, match=match):
        plain(**kw)


def test_pyramid_bad_values_name_the_option():
    with pytest.raises(ValueError, match='use_peg'):
        pyramid(use_peg=1)
    with pytest.raises(ValueError, match='abs_pos_embed'):
        pyramid(abs_pos_embed='sincos')  # the pyramid offers the learnable PE only
    with pytest.raises(ValueError, match='rope_ratio 0.1 rotates'):
        pyramid(rope_ratio=0.1)  # int(3.2) = 3 channels of 32


# ---------------------------------------------------------------------------- configs
ABLATION_CONFIGS = sorted((ROOT / 'configs/mmpretrain').glob('*/ablations/*.py'))


def test_every_ablation_config_is_listed_in_its_readme():
    assert len(ABLATION_CONFIGS) >= 12
    for cfg in ABLATION_CONFIGS:
        assert cfg.name in (cfg.parent / 'README.md').read_text(), cfg


@pytest.mark.parametrize('path', ABLATION_CONFIGS, ids=lambda p: p.name)
def test_ablation_config_is_its_base_recipe_plus_backbone_options(path):
    """Only backbone options (and the embedding's weight decay) differ from the paper
    config the ablation inherits; data, schedule and optimizer are the base recipe."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path)).to_dict()
    base = Config.fromfile(str(path.parent / Config._get_base_files(str(path))[0])).to_dict()
    for c in (cfg, base):
        c['optim_wrapper'].get('paramwise_cfg', {}).get('custom_keys', {}).pop(
            '.pos_embed', None)
        c['optim_wrapper'].get('paramwise_cfg', {}).get('custom_keys', {}).pop(
            '.pos_embeds', None)
        c.pop('filename', None)
    bb, base_bb = cfg['model'].pop('backbone'), base['model'].pop('backbone')
    assert cfg == base
    changed = {k for k in set(bb) | set(base_bb) if bb.get(k) != base_bb.get(k)}
    assert changed and changed <= {'mlp_type', 'norm_type', 'rope_ratio', 'rope_theta',
                                   'rope_shared', 'abs_pos_embed', 'use_peg',
                                   'with_cls_token', 'out_type', 'final_norm'}, changed


@pytest.mark.parametrize('path', ABLATION_CONFIGS, ids=lambda p: p.name)
def test_ablation_config_builds_a_working_model(path):
    """Each config, shrunk to a tiny arch, builds and runs; the option is really on."""
    from mmengine.config import Config

    import vllama_mm.mmpretrain  # noqa: F401  registers the backbones
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(path))
    bb = cfg.model.backbone
    is_pyr = bb.type == 'PyramidVisionLLaMA'
    bb.arch = PYR if is_pyr else PLAIN
    bb.img_size = 32
    cfg.model.head.in_channels = 32
    cfg.model.head.num_classes = 5
    cfg.model.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    model.init_weights()
    feats = model.extract_feat(torch.randn(2, 3, 32, 32))
    assert feats[-1].shape == (2, 32)
    b = model.backbone
    name = path.stem.split('ablation-')[1]
    expect = {
        'ffn-gelu': lambda: isinstance(b.layers[0].ffn, GeluMLP),
        'rmsnorm': lambda: isinstance(b.layers[0].ln1, RMSNorm),
        'rope-ratio-25pct': lambda: b.rope.rotary_dim == 4,
        'rope-ratio-50pct': lambda: b.rope.rotary_dim == 8,
        'rope-theta-100': lambda: b.rope.theta == 100.0,
        'rope-theta-1000': lambda: b.rope.theta == 1000.0,
        'rope-unshared': lambda: not b.rope.shared,
        'gap': lambda: not b.with_cls_token and b.out_type == 'avg_featmap',
        'abs-pe-learnable': lambda: (b.pos_embeds[0] if is_pyr else b.pos_embed).kind
        == 'learnable',
        'abs-pe-sincos': lambda: b.pos_embed.kind == 'sincos',
        'peg': lambda: len(b.pegs) == 4,
    }[name]
    assert expect(), name


# ---------------------------------------------------------------------------- table 12 tool
def test_resolution_tool_on_a_pyramid_checkpoint(tmp_path):
    """The resolution tool runs on a pyramid classifier checkpoint as on a plain one:
    1d is reported n/a, as2d equals 2d at the training size, ntk_fixed takes the factor."""

    from mmengine.config import Config

    from vllama_mm.datasets.synthetic_imagenet import generate
    from vllama_mm.engine.runner_utils import import_plugin

    tool = load_tool('tools/analysis/resolution_robustness.py', 'resolution_robustness')
    plain_cfg = ROOT / ('configs/mmpretrain/vision_llama/'
                        'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
    cfg_path = tmp_path / 'pyramid_tiny.py'
    cfg_path.write_text(
        f"_base_ = ['{plain_cfg}']\n"
        "model = dict(backbone=dict(_delete_=True, type='PyramidVisionLLaMA', "
        "arch=dict(embed_dims=[32, 32, 32, 32], depths=[2, 2, 2, 2]), img_size=64, "
        "out_type='avg_featmap'), head=dict(in_channels=32))\n")
    data = str(tmp_path / 'data')
    generate(data, num_train=2, num_val=4, img_size=64)
    cfg = Config.fromfile(str(cfg_path))
    import_plugin(cfg)
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = tmp_path / 'pyramid.pth'
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), ckpt)

    out = tmp_path / 'res'
    summary = tool.main([str(cfg_path), str(ckpt), '--sizes', '32', '64', '--rope', 'none',
                         '1d', '2d', 'ntk_fixed', 'as2d', '--ntk-factor', '3',
                         '--out-dir', str(out), '--cfg-options',
                         f'test_dataloader.dataset.data_root={data}',
                         'test_dataloader.num_workers=0'])
    assert summary['backbone'] == 'PyramidVisionLLaMA' and summary['base_size'] == 64
    top1 = summary['top1']
    assert top1['1d'] == {'32': None, '64': None} and '1d' in summary['skipped']
    assert top1['as2d']['64'] == top1['2d']['64']
    assert all(0 <= top1[r][s] <= 100 for r in ('none', '2d', 'ntk_fixed', 'as2d')
               for s in ('32', '64'))
    assert 'n/a' in (out / 'resolution_robustness.md').read_text()


def test_toy_resolution_experiment_smoke():
    """The toy table-12 script: labels follow the layout, renders scale, rows are filled."""
    toy = load_tool('tools/analysis/rope_toy_resolution.py', 'rope_toy_resolution')
    centres, labels = toy.sample_scenes(200, torch.Generator().manual_seed(0))
    d = centres[:, 0] - centres[:, 1]  # red - green
    horiz = d[:, 0].abs() > d[:, 1].abs()
    assert torch.equal(labels[horiz] < 2, torch.ones(int(horiz.sum()), dtype=torch.bool))
    assert torch.equal(labels[horiz] == 1, d[horiz, 0] > 0)  # 'right': red has larger x
    assert torch.equal(labels[~horiz] == 3, d[~horiz, 1] > 0)  # 'below': larger y
    assert set(labels.tolist()) == {0, 1, 2, 3}
    img16, img64 = toy.render(centres[:2], 16), toy.render(centres[:2], 64)
    assert img16.shape == (2, 3, 16, 16) and img64.shape == (2, 3, 64, 64)
    # red is in channel 0 at the same place at both sizes (4x4 blocks of the 64 px image)
    on16 = img16[:, 0] > 0
    on64 = img64[:, 0].reshape(2, 16, 4, 16, 4).gt(0).any(4).any(2)
    assert (on16 & ~on64).sum() == 0 and on16.any()
    out = toy.run(steps=2, train_size=16, num_train=32, num_test=8, batch=8,
                  variants=('none', '2d', 'as2d'), seeds=(0, ))
    assert out['sizes'] == [8, 12, 16, 24, 32]
    assert set(out['results']) == {'none', '2d', 'as2d'}
    assert out['results']['as2d'][16] == out['results']['2d'][16]  # equal at the train size


def test_ntk_on_partial_rope_uses_the_rotated_width():
    full = RoPE2D(16, (2, 2), 'ntk', rotary_dim=16)
    part = RoPE2D(16, (2, 2), 'ntk', rotary_dim=8)
    assert full._theta_for(4, 4) == pytest.approx(1e4 * 2 ** (8 / 6))
    assert part._theta_for(4, 4) == pytest.approx(1e4 * 2 ** (4 / 2))
    with pytest.raises(ValueError, match='more than 4 rotated channels'):
        RoPE2D(16, (2, 2), 'ntk', rotary_dim=4).grid(4, 4)
