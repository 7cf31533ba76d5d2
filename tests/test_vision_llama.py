"""Plain VisionLLaMA backbone: shapes, parameter counts, gradients, freezing, equivalences."""
import pytest
import torch

from vllama_mm.models import VisionLLaMA
from vllama_mm.models.attention import RoPEAttention
from vllama_mm.models.rope import apply_rope

TINY = dict(embed_dims=64, num_layers=3, num_heads=2)


def _count_with_head(arch: str, num_classes: int = 1000) -> int:
    with torch.device('meta'):
        m = VisionLLaMA(arch)
    return sum(p.numel() for p in m.parameters()) + m.embed_dims * num_classes + num_classes


@pytest.mark.parametrize('arch,expected', [('s', 21.96e6), ('b', 86.39e6), ('l', 310.34e6)])
def test_param_counts_with_1000_class_head(arch, expected):
    assert abs(_count_with_head(arch) - expected) / expected < 1e-3


def test_mae_b_param_count():
    with torch.device('meta'):
        m = VisionLLaMA('mae-b')
    n = sum(p.numel() for p in m.parameters())
    # 255.8 M in the official count (which includes the unused 197x768 pos_embed)
    assert abs(n - 255.8e6) / 255.8e6 < 1e-3
    assert m.layers[0].ffn.w12.weight.shape == (2 * 8192, 768)
    assert m.layers[0].ffn.w12.bias is not None
    assert not hasattr(m.layers[0].ls1, 'weight')  # no layer scale


@pytest.mark.parametrize('size', [(224, 224), (256, 320), (97, 131)])
def test_output_shapes_all_out_types(size):
    x = torch.randn(2, 3, *size)
    h, w = -(-size[0] // 16), -(-size[1] // 16)
    expected = {'raw': (2, h * w + 1, 64), 'cls_token': (2, 64),
                'featmap': (2, 64, h, w), 'avg_featmap': (2, 64)}
    for out_type, shape in expected.items():
        m = VisionLLaMA(TINY, out_type=out_type, out_indices=(0, -1)).eval()
        outs = m(x)
        assert len(outs) == 2
        assert all(o.shape == shape for o in outs), (out_type, [o.shape for o in outs])


def test_every_parameter_gets_a_gradient():
    m = VisionLLaMA(TINY, out_type='avg_featmap', drop_path_rate=0.1)
    m.init_weights()
    m.train()
    (m(torch.randn(2, 3, 64, 48))[0] ** 2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_stages_stay_frozen_after_train():
    m = VisionLLaMA(TINY, frozen_stages=2, out_type='avg_featmap')
    m.train()
    frozen = [m.patch_embed, m.layers[0], m.layers[1]]
    assert all(not mod.training for mod in frozen) and m.layers[2].training
    assert not m.cls_token.requires_grad
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    out = m(torch.randn(2, 3, 32, 32))[0]
    (out * torch.randn_like(out)).sum().backward()
    opt.step()
    after = m.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith(('layers.2', 'ln')), k


def test_as2d_equals_2d_at_anchor_size_only():
    torch.manual_seed(0)
    a = VisionLLaMA(TINY, img_size=64, rope_type='as2d', out_type='featmap').eval()
    b = VisionLLaMA(TINY, img_size=64, rope_type='2d', out_type='featmap').eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x)[0], b(x)[0])
    x2 = torch.randn(1, 3, 128, 96)
    assert not torch.allclose(a(x2)[0], b(x2)[0], atol=1e-4)


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = RoPEAttention(32, 2).eval()
    x = torch.randn(2, 12, 32)
    from vllama_mm.models.rope import RoPE2D
    table = RoPE2D(16, (3, 4), 'as2d').grid(3, 4)
    q, k, v = attn.qkv(x).view(2, 12, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(q, table), apply_rope(k, table)
    w = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 12, 32))
    torch.testing.assert_close(attn(x, table), ref, rtol=1e-5, atol=1e-5)


def test_window_equal_to_grid_is_global_attention():
    """ViTDet windows covering the whole (anchor) grid reproduce global attention."""
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=64, with_cls_token=False, out_type='featmap')
    glob = VisionLLaMA(**kw).eval()
    win = VisionLLaMA(**kw, window_size=4, global_attn_indexes=(1, )).eval()
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(win(x)[0], glob(x)[0], rtol=1e-5, atol=1e-5)
    # with padding (grid 5x5, windows 4) masked and unmasked padding differ
    x = torch.randn(1, 3, 80, 80)
    unmasked = VisionLLaMA(**kw, window_size=4, window_pad_mask=False).eval()
    unmasked.load_state_dict(glob.state_dict())
    masked = VisionLLaMA(**kw, window_size=4).eval()
    masked.load_state_dict(glob.state_dict())
    assert masked(x)[0].shape == (1, 64, 5, 5)
    assert not torch.allclose(masked(x)[0], unmasked(x)[0], atol=1e-5)


def test_masked_window_padding_equals_cropped_windows():
    """A padded window with masking attends only to its real tokens."""
    torch.manual_seed(0)
    block_kw = dict(arch=dict(embed_dims=32, num_layers=1, num_heads=1), img_size=48,
                    patch_size=16, with_cls_token=False, out_type='raw', final_norm=False,
                    rope_type='2d')
    m = VisionLLaMA(**block_kw, window_size=2).eval()  # grid 3x3 -> padded to 4x4
    x = torch.randn(1, 3, 48, 48)
    out = m(x)[0].view(3, 3, 32)
    # the bottom-right window holds only token (2, 2): it must equal a 1-token attention
    tokens, hw = m.embed(x)
    t = tokens[:, 8:9]  # token (2, 2)
    layer = m.layers[0]
    table = m.rope.grid(2, 2, scale=(1.0, 1.0))
    single = layer.attn(layer.ln1(t), (table[0][:1], table[1][:1]))
    y = t + layer.ls1(single)
    y = y + layer.ls2(layer.ffn(layer.ln2(y)))
    torch.testing.assert_close(out[2, 2], y[0, 0], rtol=1e-5, atol=1e-5)


def test_layer_depth():
    m = VisionLLaMA(TINY)
    assert m.get_layer_depth('backbone.cls_token', 'backbone.') == (0, 5)
    assert m.get_layer_depth('backbone.patch_embed.projection.weight', 'backbone.') == (0, 5)
    assert m.get_layer_depth('backbone.layers.1.attn.qkv.weight', 'backbone.') == (2, 5)
    assert m.get_layer_depth('backbone.ln1.weight', 'backbone.') == (4, 5)
    assert m.get_layer_depth('head.fc.weight', 'backbone.') == (4, 5)


def test_pretrained_state_dict_drops_pos_embed():
    m = VisionLLaMA(TINY, with_cls_token=False, out_type='featmap')
    sd = m.state_dict()
    sd['pos_embed'] = torch.zeros(1, 17, 64)
    sd['cls_token'] = torch.zeros(1, 1, 64)
    result = m.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_rope_tables_not_recomputed_per_call():
    m = VisionLLaMA(TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    m(x)
    table = m.rope._cache
    n = len(table)
    m(x)
    assert len(m.rope._cache) == n == 1
    m(torch.randn(1, 3, 64, 80))
    assert len(m.rope._cache) == 2


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'unknown arch'),
    (dict(arch=dict(embed_dims=64, num_layers=2)), 'missing keys'),
    (dict(arch=dict(embed_dims=64, num_layers=2, num_heads=2, depth=3)), 'unknown keys'),
    (dict(arch=dict(embed_dims=60, num_layers=2, num_heads=2)), 'divisible by 4'),
    (dict(arch=dict(embed_dims=64, num_layers=2, num_heads=3)), 'not divisible by num_heads'),
    (dict(arch=TINY, out_indices=(5, )), 'out_indices'),
    (dict(arch=TINY, frozen_stages=4), 'frozen_stages'),
    (dict(arch=TINY, out_type='tokens'), 'out_type'),
    (dict(arch=TINY, with_cls_token=False), 'with_cls_token'),
    (dict(arch=TINY, out_type='featmap', window_size=4), 'with_cls_token=False'),
    (dict(arch=TINY, rope_type='3d'), 'rope_type'),
    (dict(arch=TINY, cls_token_rope='last'), 'cls_token_rope'),
])
def test_bad_arguments_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VisionLLaMA(**kwargs)


def test_wrong_input_channels_named():
    m = VisionLLaMA(TINY)
    with pytest.raises(ValueError, match=r'expected input \[B, 3, H, W\]'):
        m(torch.randn(1, 1, 32, 32))
