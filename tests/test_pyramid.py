"""Pyramid VisionLLaMA (Twins-SVT layout): sizes, shapes, RoPE geometry, padding, API."""
import importlib
import subprocess
import sys

import pytest
import torch

from vllama_mm.models import PyramidVisionLLaMA
from vllama_mm.models.rope import grid_positions, rope_frequencies, rope_table

# head dim 32 everywhere -> 1, 2, 3, 4 heads; one LSA + one GSA block per stage
TINY = dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2])
# layer scale 1 so that attention changes show up clearly in the outputs
TINY_LS1 = dict(TINY, layer_scale_init=1.0)


def _pair_of_models(arch=TINY_LS1, **switches_b):
    """Two models with the same weights; the second is built with ``switches_b`` (one
    official detail at a time: ``rope_compat``, ``rope_scale``, ``double_final_norm``,
    ``window_pad_mask``, ``gsa_pool``)."""
    torch.manual_seed(0)
    a = PyramidVisionLLaMA(arch)
    a.init_weights()
    b = PyramidVisionLLaMA(arch, **switches_b)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


# ---------------------------------------------------------------- sizes and shapes
@pytest.mark.parametrize('arch,expected', [('s', 25.90e6), ('b', 56.03e6), ('l', 104.72e6)])
def test_param_counts_with_1000_class_head(arch, expected):
    with torch.device('meta'):
        m = PyramidVisionLLaMA(arch, out_type='avg_featmap')
    n = sum(p.numel() for p in m.parameters()) + m.embed_dims[-1] * 1000 + 1000
    assert abs(n - expected) / expected < 1e-3, n


def test_arch_zoo_layout():
    with torch.device('meta'):
        m = PyramidVisionLLaMA('b')
    assert m.num_heads == [3, 6, 12, 24] and m.depths == [2, 2, 18, 2]
    # LSA (even j) fused qkv; GSA (odd j) q/kv + Conv(k=s=sr) + LN; sr = 1 is fused qkv
    assert m.stages[0][0].window_size == 7 and m.stages[0][0].attn.sr_ratio == 1
    assert m.stages[0][1].window_size == 0 and m.stages[0][1].attn.sr.kernel_size == (8, 8)
    assert m.stages[2][1].attn.sr.stride == (2, 2)
    assert hasattr(m.stages[3][1].attn, 'qkv') and not hasattr(m.stages[3][1].attn, 'sr')
    assert m.stages[0][0].ffn.w12.weight.shape == (2 * 256, 96)  # ceil256(int(8*96/3))
    assert m.stages[0][0].ffn.w12.bias is None and m.stages[0][0].ffn.w3.bias is None
    assert m.arch_settings['layer_scale_init'] == 1e-4
    assert m.stages[1][0].ls1.weight.shape == (192, )
    assert m.stages[0][0].ln1.eps == 1e-5 and m.patch_embeds[0].norm.eps == 1e-5
    assert m.patch_embeds[0].projection.stride == (4, 4)
    assert m.patch_embeds[1].projection.stride == (2, 2)
    assert [r.anchor_hw for r in m.ropes] == [(56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.parametrize('size,grids', [
    ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((511, 511), [(128, 128), (64, 64), (32, 32), (16, 16)]),
    ((112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)]),
    ((17, 23), [(5, 6), (3, 3), (2, 2), (1, 1)]),  # stage grids smaller than sr and 7
])
def test_featmap_shapes(size, grids):
    m = PyramidVisionLLaMA(TINY).eval()
    with torch.no_grad():
        outs = m(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (2, c, h, w) for c, (h, w) in zip(TINY['embed_dims'], grids)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_out_indices_and_avg_featmap_shape():
    m = PyramidVisionLLaMA(TINY, out_indices=(1, -1)).eval()
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128]
    # all four stage norms exist (they sit in the main path), whatever out_indices is
    assert sorted(k.split('.')[1] for k in m.state_dict() if k.startswith('norms')) == \
        ['0', '0', '1', '1', '2', '2', '3', '3']
    m = PyramidVisionLLaMA(TINY, out_type='avg_featmap').eval()
    outs = m(torch.randn(3, 3, 112, 137))
    assert len(outs) == 1 and outs[0].shape == (3, 128)


def test_classification_norm_once_or_twice():
    """One ``norm`` module: ``norm(mean(x))`` by default, ``norm(mean(norm(x)))`` official."""
    torch.manual_seed(1)
    once = PyramidVisionLLaMA(TINY_LS1, out_type='avg_featmap').eval()
    with torch.no_grad():  # a non-trivial affine norm, so applying it twice shows
        once.norm.weight.normal_()
        once.norm.bias.normal_()
    twice = PyramidVisionLLaMA(TINY_LS1, out_type='avg_featmap', double_final_norm=True).eval()
    twice.load_state_dict(once.state_dict())
    top_level_norms = [k for k in once.state_dict() if k.split('.')[0] in ('norm', 'norms')]
    assert top_level_norms == ['norm.weight', 'norm.bias']

    captured = []
    once.stages[3][-1].register_forward_hook(lambda m, i, o: captured.append(o))
    twice.stages[3][-1].register_forward_hook(lambda m, i, o: captured.append(o))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y1, y2 = once(x)[0], twice(x)[0]
        tokens = captured[0]  # [B, N, C] last-stage tokens (identical in both models)
        torch.testing.assert_close(captured[1], tokens)
        torch.testing.assert_close(y1, once.norm(tokens.mean(1)))
        torch.testing.assert_close(y2, once.norm(once.norm(tokens).mean(1)))
    assert not torch.allclose(y1, y2, atol=1e-3)


# ---------------------------------------------------------------- RoPE geometry
def test_official_gsa_key_positions_match_design_worked_example():
    """DESIGN §2.7: 224 px, stage 1 (56x56, sr 8, 49 keys)."""
    m = PyramidVisionLLaMA(TINY, compat='official', out_type='avg_featmap')
    assert m.rope_scale == 1.0 and m.double_final_norm
    pos = m.gsa_key_positions(0, (56, 56))
    assert pos.shape == (49, 2)
    expected_x = 0.875 + 8.0 * torch.arange(49, dtype=torch.float64)
    assert torch.equal(pos[:, 0], expected_x)
    assert pos[0, 0].item() == 0.875 and pos[-1, 0].item() == 384.875
    assert torch.equal(pos[:, 1], torch.full((49, ), 0.875, dtype=torch.float64))
    # the official seg/det scale 14 / H_stage, on both axes, GSA only
    dense = PyramidVisionLLaMA(TINY, compat='official')
    assert dense.gsa_scale(0, (56, 56)) == (0.25, 0.25)
    assert dense.gsa_scale(1, (32, 40)) == (14 / 32, 14 / 32)
    torch.testing.assert_close(dense.gsa_key_positions(0, (56, 56)), pos * 0.25)


def test_correct_gsa_key_positions_are_cell_centres():
    m = PyramidVisionLLaMA(TINY)  # correct geometry, AS2DRoPE: scale 1 at 224
    pos = m.gsa_key_positions(0, (56, 56))
    centres = torch.tensor([3.5 + 8 * i for i in range(7)], dtype=torch.float64)
    assert centres[-1] == 51.5
    yy, xx = torch.meshgrid(centres, centres, indexing='ij')  # row-major keys
    assert torch.equal(pos, torch.stack([xx.flatten(), yy.flatten()], -1))
    # each key is the mean position of the sr x sr cell of query positions it pools
    q = grid_positions(56, 56).view(7, 8, 7, 8, 2).permute(0, 2, 1, 3, 4).reshape(49, 64, 2)
    torch.testing.assert_close(pos, q.mean(1))
    # other stages: sr 4 and 2, non-square grid, AS2DRoPE scale of the queries
    pos = m.gsa_key_positions(1, (56, 42))  # anchor 28x28 -> scale (28/42, 28/56)
    assert pos.shape == (14 * 11, 2)
    assert pos[1, 0].item() == pytest.approx(5.5 * 28 / 42)
    assert pos[11, 1].item() == pytest.approx(5.5 * 28 / 56)
    assert m.gsa_key_positions(2, (14, 14))[:3, 0].tolist() == [0.5, 2.5, 4.5]


def test_rope_tables_are_the_documented_geometry():
    m = PyramidVisionLLaMA(TINY, compat='official')
    freqs = rope_frequencies(32)
    lsa, gsa_q, gsa_k = m.rope_tables(0, (56, 56), torch.device('cpu'))
    # LSA: window-local 0..6, never rescaled; GSA queries scaled by 14/56
    for table, pos in ((lsa, grid_positions(7, 7)),
                       (gsa_q, grid_positions(56, 56, (0.25, 0.25))),
                       (gsa_k, m.gsa_key_positions(0, (56, 56)))):
        ref = rope_table(pos, freqs)
        torch.testing.assert_close(table[0], ref[0])
        torch.testing.assert_close(table[1], ref[1])
    # sr = 1: keys are the queries
    assert m.rope_tables(3, (7, 7), torch.device('cpu'))[2] is None


def test_official_and_correct_geometry_change_the_output():
    correct, official = _pair_of_models(rope_compat='official')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = correct(x), official(x)
    assert not torch.allclose(a[0], b[0], atol=1e-4)
    # sr = 1 (stage 4): keys are the queries in both modes
    assert torch.equal(correct.gsa_key_positions(3, (4, 4)), official.gsa_key_positions(3, (4, 4)))


def test_tables_built_once_per_stage_and_size():
    m = PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128], depths=[4, 2, 2, 2])).eval()
    builds = []
    for s, rope in enumerate(m.ropes):
        original = rope._from_positions

        def counted(*args, _s=s, _orig=original):
            builds.append(_s)
            return _orig(*args)
        rope._from_positions = counted
    x = torch.randn(1, 3, 112, 137)
    with torch.no_grad():
        m(x)
        # per stage: LSA window table, GSA query table, GSA key table (sr > 1)
        assert sorted(builds) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
        m(x)
        assert len(builds) == 11  # nothing rebuilt on the second call
        m(torch.randn(1, 3, 96, 96))  # new size: GSA tables only, LSA table reused
        assert len(builds) == 11 + 7
    assert not any('rope' in k for k in m.state_dict())


# ---------------------------------------------------------------- window padding
def _windows_without_padding(blk, x, hw, rope, ws=7):
    """Reference LSA block: each window's real tokens only, no padding, no mask."""
    B, N, C = x.shape
    H, W = hw
    h = blk.ln1(x).view(B, H, W, C)
    attn = torch.zeros(B, H, W, C)
    for i0 in range(0, H, ws):
        for j0 in range(0, W, ws):
            win = h[:, i0:i0 + ws, j0:j0 + ws]
            r, c = win.shape[1:3]
            table = rope.grid(r, c, scale=(1.0, 1.0))  # window-local positions
            attn[:, i0:i0 + r, j0:j0 + c] = blk.attn(win.reshape(B, r * c, C), table).view(
                B, r, c, C)
    x = x + blk.ls1(attn.view(B, N, C))
    return x + blk.ls2(blk.ffn(blk.ln2(x)))


@pytest.mark.parametrize('hw', [(14, 14), (10, 12), (3, 9)])
def test_lsa_equals_window_by_window_reference(hw):
    torch.manual_seed(0)
    m = PyramidVisionLLaMA(TINY_LS1).eval()
    official = PyramidVisionLLaMA(TINY_LS1, window_pad_mask=False).eval()
    official.load_state_dict(m.state_dict())
    blk = m.stages[1][0]  # LSA block, 64 channels, 2 heads
    lsa_table = m.rope_tables(1, hw, torch.device('cpu'))[0]
    x = torch.randn(2, hw[0] * hw[1], 64)
    with torch.no_grad():
        ref = _windows_without_padding(blk, x, hw, m.ropes[1])
        torch.testing.assert_close(blk(x, hw, lsa_table), ref, rtol=1e-5, atol=1e-5)
        # official: padded zeros take part unmasked
        unmasked = official.stages[1][0](x, hw, lsa_table)
    if hw[0] % 7 or hw[1] % 7:
        assert not torch.allclose(unmasked, ref, atol=1e-3)
    else:
        torch.testing.assert_close(unmasked, ref, rtol=1e-5, atol=1e-5)


def test_unmasked_padding_differs_only_where_padding_exists():
    masked, unmasked = _pair_of_models(window_pad_mask=False)
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)  # 56, 28, 14, 7: no window padding anywhere
        for a, b in zip(masked(x), unmasked(x)):
            torch.testing.assert_close(a, b)
        x = torch.randn(1, 3, 64, 72)  # 16x18, 8x9, ...: padded windows in every stage
        outs = list(zip(masked(x), unmasked(x)))
    for a, b in outs:
        assert not torch.allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------- GSA sub-sampling
def test_gsa_pool_pad_and_floor():
    pad, floor = _pair_of_models(gsa_pool='floor')
    assert pad.pooled_grid(0, (28, 35)) == (4, 5) and floor.pooled_grid(0, (28, 35)) == (3, 4)
    assert pad.pooled_grid(0, (5, 6)) == (1, 1)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)  # 16, 8, 4, 2: every stage grid a multiple of its sr
        for a, b in zip(pad(x), floor(x)):
            torch.testing.assert_close(a, b)
        x = torch.randn(1, 3, 52, 60)  # stage 1 is 13x15, not a multiple of 8
        a, b = pad(x), floor(x)
        assert [o.shape for o in a] == [o.shape for o in b]
        assert not torch.allclose(a[0], b[0], atol=1e-4)
        pad(torch.randn(1, 3, 17, 23))  # stage 1 is 5x6 < sr 8: padded to one key
        with pytest.raises(ValueError, match='smaller than sr_ratio'):
            floor(torch.randn(1, 3, 17, 23))


# ---------------------------------------------------------------- training API
def test_every_parameter_gets_a_gradient():
    for out_type in ('featmap', 'avg_featmap'):
        torch.manual_seed(0)
        m = PyramidVisionLLaMA(TINY, out_type=out_type, drop_path_rate=0.1)
        m.init_weights()
        m.train()
        outs = m(torch.randn(2, 3, 64, 48))
        sum((o * torch.randn_like(o)).sum() for o in outs).backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (out_type, name)


def test_drop_path_grows_linearly_over_all_blocks():
    m = PyramidVisionLLaMA(TINY, drop_path_rate=0.7)
    rates = [blk.drop_path.p for stage in m.stages for blk in stage]
    assert rates == pytest.approx([0.1 * i for i in range(8)])
    assert all(torch.all(blk.ls1.weight == 1e-4) for stage in m.stages for blk in stage)


def test_with_cp_matches_plain():
    a, b = _pair_of_models(with_cp=True)
    a.train()
    b.train()
    x = torch.randn(2, 3, 64, 64)
    for m in (a, b):
        sum(o.pow(2).mean() for o in m(x)).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_frozen_stages_stay_frozen_after_train():
    m = PyramidVisionLLaMA(TINY, frozen_stages=2)
    m.train()
    frozen = [m.patch_embeds[0], m.stages[0], m.norms[0], m.patch_embeds[1], m.stages[1],
              m.norms[1]]
    live = [m.patch_embeds[2], m.stages[2], m.norms[2], m.stages[3], m.norms[3]]
    assert all(not mod.training for mod in frozen) and all(mod.training for mod in live)
    assert all(not p.requires_grad for mod in frozen for p in mod.parameters())
    assert all(p.requires_grad for mod in live for p in mod.parameters())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    sum((o * torch.randn_like(o)).sum() for o in m(torch.randn(2, 3, 64, 64))).backward()
    opt.step()
    for k, v in m.state_dict().items():
        changed = not torch.equal(before[k], v)
        assert changed == k.startswith(('patch_embeds.2', 'patch_embeds.3', 'stages.2',
                                        'stages.3', 'norms.2', 'norms.3')), k
    m = PyramidVisionLLaMA(TINY, out_type='avg_featmap', frozen_stages=4).train()
    assert not any(p.requires_grad for p in m.parameters())


def test_layer_depth():
    m = PyramidVisionLLaMA(TINY)  # depths 2, 2, 2, 2 -> blocks 1..8, 10 layers
    d = lambda name: m.get_layer_depth(name, 'backbone.')  # noqa: E731
    assert d('backbone.patch_embeds.0.projection.weight') == (0, 10)
    assert d('backbone.stages.0.0.attn.qkv.weight') == (1, 10)
    assert d('backbone.stages.0.1.attn.sr.weight') == (2, 10)
    assert d('backbone.patch_embeds.1.norm.weight') == (2, 10)
    assert d('backbone.stages.1.0.ln1.weight') == (3, 10)
    assert d('backbone.stages.3.1.ffn.w3.weight') == (8, 10)
    assert d('backbone.norms.0.weight') == (9, 10)
    assert d('head.fc.weight') == (9, 10)
    depths = [d('backbone.' + n)[0] for n, _ in m.named_parameters()]
    assert min(depths) == 0 and max(depths) == 9


def test_pretrained_init_cfg_loads_weights(tmp_path):
    torch.manual_seed(0)
    src = PyramidVisionLLaMA(TINY)
    src.init_weights()
    path = tmp_path / 'pyramid.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()}}, path)
    dst = PyramidVisionLLaMA(
        TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_dense_mode_drops_classification_norm_when_loading():
    cls = PyramidVisionLLaMA(TINY, out_type='avg_featmap')
    dense = PyramidVisionLLaMA(TINY)
    result = dense.load_state_dict(cls.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(k for k in dense.state_dict()
                                                 if k.startswith('norms.'))


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'unknown arch'),
    (dict(arch=dict(embed_dims=[32, 64, 96])), 'missing keys'),
    (dict(arch=dict(embed_dims=[32, 64, 96], depths=[2, 2, 2])), 'list of 4'),
    (dict(arch=dict(TINY, depth=3)), 'unknown keys'),
    (dict(arch=dict(embed_dims=[32, 64, 96, 100], depths=[1, 1, 1, 1])), 'head dim'),
    (dict(arch=dict(TINY, num_heads=[1, 1, 1, 1])), 'head dim must be 32'),
    (dict(arch=dict(TINY, depths=[2, 0, 2, 2])), 'positive ints'),
    (dict(arch=TINY, out_indices=(4, )), 'out_indices'),
    (dict(arch=TINY, out_type='avg_featmap', out_indices=(2, )), 'last stage'),
    (dict(arch=TINY, frozen_stages=5), 'frozen_stages'),
    (dict(arch=TINY, out_type='raw'), 'out_type'),
    (dict(arch=TINY, rope_type='1d'), 'rope_type'),
    (dict(arch=TINY, compat='timm'), 'compat'),
    (dict(arch=TINY, rope_compat='timm'), 'rope_compat'),
    (dict(arch=TINY, gsa_pool='ceil'), 'gsa_pool'),
    (dict(arch=TINY, rope_scale='auto'), 'rope_scale'),
    (dict(arch=TINY, double_final_norm='yes'), 'double_final_norm'),
    (dict(arch=3), 'must be a str or dict'),
])
def test_bad_arguments_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PyramidVisionLLaMA(**kwargs)


def test_wrong_input_channels_named():
    m = PyramidVisionLLaMA(TINY)
    with pytest.raises(ValueError, match=r'expected input \[B, 3, H, W\]'):
        m(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------- packaging
def test_model_code_imports_no_task_library():
    code = ('import sys, vllama_mm.models.pyramid_vision_llama; '
            "bad = [m for m in ('mmpretrain', 'mmseg', 'mmdet', 'mmcv') if m in sys.modules]; "
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('lib', ['mmpretrain', 'mmseg', 'mmdet'])
def test_build_through_each_registry(lib):
    registry = pytest.importorskip(f'{lib}.registry')
    importlib.import_module(f'vllama_mm.{lib}')
    m = registry.MODELS.build(dict(type='PyramidVisionLLaMA', arch=TINY, out_indices=(0, 3)))
    assert isinstance(m, PyramidVisionLLaMA)
    outs = m.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16), (1, 128, 2, 2)]
