"""RoPE variants beyond the paper (mixed, dinov3, yarn) against float64 references written
from the published formulas / reference code (rope-vit ``RoPE-Mixed``, DINOv3
``RopePositionEmbedding``, YaRN's NTK-by-parts), not from our module's helpers: tables,
attention outputs, gradients, augmentation statistics, named errors, the optimizer rule,
checkpoints and compilation."""
import math

import pytest
import torch
from torch import nn

from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA, VisionLLaMAMAE
from vllama_mm.models.attention import RoPEAttention
from vllama_mm.models.rope import ROPE_CFG, RoPE2D, apply_rope

TINY = dict(embed_dims=32, num_layers=3, num_heads=2)
TINY_PYRAMID = dict(embed_dims=[32, 32, 32, 32], depths=[2, 2, 2, 2])


# ------------------------------------------------------------------ references (float64)
def ref_rotate_pairs(x: torch.Tensor, angles: torch.Tensor, amp=None) -> torch.Tensor:
    """Interleaved pairs (2j, 2j+1) of x [..., N, D] times exp(i angle_j) (complex, as
    rope-vit / LLaMA apply_rotary_emb), angles [..., N, D/2]; ``amp`` scales them."""
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    rot = torch.polar(torch.ones_like(angles) if amp is None else amp.expand_as(angles),
                      angles)
    return torch.view_as_real(xc * rot).flatten(-2)


def ref_grid_xy(h: int, w: int) -> torch.Tensor:
    """rope-vit init_t_xy: t_x = t mod w, t_y = t div w (row-major), [N, 2] float64."""
    t = torch.arange(h * w, dtype=torch.float64)
    return torch.stack([t % w, torch.div(t, w, rounding_mode='floor')], -1)


def ref_attention(attn: RoPEAttention, x: torch.Tensor, rotate) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in float64 with ``rotate(q_or_k)`` [B, h, N, d]."""
    B, N, C = x.shape
    h = attn.num_heads
    qkv = x.double() @ attn.qkv.weight.double().T + attn.qkv.bias.double()
    q, k, v = qkv.view(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q, k = rotate(q), rotate(k)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // h), -1)
    out = (w @ v).transpose(1, 2).reshape(B, N, C)
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


def ours_attention(attn: RoPEAttention, x: torch.Tensor, table) -> torch.Tensor:
    return attn(x, rope_q=table).double()


# ------------------------------------------------------------------ mixed (rope-vit)
def ropevit_init(dim: int, num_heads: int, theta: float, angles: torch.Tensor):
    """rope-vit init_random_2d_freqs with given per-head angles: (fx, fy) [heads, dim/2]
    in rope-vit's pair order (first dim/4 pairs at angle a, the rest at a + pi/2)."""
    mag = 1 / theta ** (torch.arange(0, dim, 4, dtype=torch.float64)[:dim // 4] / dim)
    fx = torch.cat([mag * torch.cos(angles[:, None]),
                    mag * torch.cos(math.pi / 2 + angles[:, None])], -1)
    fy = torch.cat([mag * torch.sin(angles[:, None]),
                    mag * torch.sin(math.pi / 2 + angles[:, None])], -1)
    return fx, fy


def ropevit_to_ours(f: torch.Tensor) -> torch.Tensor:
    """rope-vit pair order -> ours: their pair k < D/4 is our 2k, their D/4 + k our 2k+1."""
    q = f.shape[-1] // 2
    return torch.stack([f[..., :q], f[..., q:]], -1).flatten(-2)


def test_mixed_init_is_ropevit_in_our_pair_order():
    torch.manual_seed(0)
    layers, heads, dim, theta = 8, 16, 16, 10.0
    rope = RoPE2D(dim, None, 'mixed', theta, num_heads=heads, num_layers=layers)
    f = rope.freqs.detach().double()  # [L, heads, R/2, 2]
    assert f.shape == (layers, heads, dim // 2, 2)
    angles = torch.atan2(f[..., 0, 1], f[..., 0, 0]) % (2 * math.pi)  # a of pair 0
    for l in range(layers):
        fx, fy = ropevit_init(dim, heads, theta, angles[l])
        torch.testing.assert_close(f[l, ..., 0], ropevit_to_ours(fx), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(f[l, ..., 1], ropevit_to_ours(fy), rtol=1e-6, atol=1e-7)
    # init statistics: a ~ U[0, 2 pi) per (layer, head): 128 draws
    a = angles.flatten()
    assert 0 <= a.min() and a.max() < 2 * math.pi
    assert abs(a.mean().item() - math.pi) < 0.5  # sd of the mean: 0.16
    assert abs(a.var().item() - (2 * math.pi) ** 2 / 12) < 1.2  # 3.29; sd ~0.3
    assert len(set(a.tolist())) == a.numel()  # every head its own rotation


def test_mixed_without_rotation_is_2d_rope():
    ref = RoPE2D(16, None, '2d', 10.0).grid(3, 5, num_prefix=1)
    mixed = RoPE2D(16, None, 'mixed', 10.0, num_heads=2, num_layers=3,
                   rope_cfg=dict(rotate=False))
    table = mixed.grid(3, 5, num_prefix=1)
    assert table[0].shape == (3, 2, 16, 16)  # [L, heads, N, R]
    for l in range(3):
        layer = mixed.layer_table(table, l)
        for a, b in zip(layer, ref):
            torch.testing.assert_close(a, b.expand_as(a), rtol=1e-6, atol=1e-6)


def test_mixed_tables_and_attention_match_ropevit():
    torch.manual_seed(1)
    dim, heads, h, w = 16, 2, 3, 4
    rope = RoPE2D(dim // heads, None, 'mixed', 10.0, num_heads=heads, num_layers=2)
    with torch.no_grad():
        rope.freqs.normal_()  # any learned state, not just the init
    attn = RoPEAttention(dim, heads)
    x = torch.randn(2, h * w, dim)
    pos = ref_grid_xy(h, w)
    table = rope.grid(h, w)
    for l in range(2):
        f = rope.freqs.detach().double()[l]  # [heads, R/2, 2]
        # rope-vit compute_mixed_cis: angle = t_x f_x + t_y f_y per head and pair
        angles = pos[:, 0, None, None] * f[..., 0] + pos[:, 1, None, None] * f[..., 1]
        angles = angles.permute(1, 0, 2)  # [heads, N, R/2]
        got = ours_attention(attn, x, rope.layer_table(table, l))
        ref = ref_attention(attn, x, lambda t: ref_rotate_pairs(t, angles))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_mixed_gradients_reach_every_layer_and_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    m = VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='mixed', rope_theta=10.0,
                    out_type='featmap', with_cls_token=False)
    assert tuple(m.state_dict()['rope.freqs'].shape) == (3, 2, 8, 2)
    assert not m.rope._cache
    x = torch.randn(2, 3, 32, 40)
    (m(x)[0] ** 2).mean().backward()
    g = m.rope.freqs.grad
    assert g is not None and torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).all()  # each layer's slice is used
    assert not m.rope._cache  # computed in the graph, never cached
    # checkpoint round trip through the strict Pretrained load
    path = str(tmp_path / 'mixed.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in m.state_dict().items()}}, path)
    fresh = VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='mixed', rope_theta=10.0,
                        out_type='featmap', with_cls_token=False,
                        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    assert not torch.equal(fresh.rope.freqs, m.rope.freqs)  # another random init
    fresh.init_weights()
    torch.testing.assert_close(fresh.rope.freqs, m.rope.freqs, rtol=0, atol=0)
    m.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], m(x)[0])
    # the same file into a model that would ignore the frequencies: one named error
    plain = VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='2d', out_type='featmap',
                        with_cls_token=False)
    with pytest.raises(ValueError, match=r"rope\.freqs.*rope_type='mixed'"):
        plain.load_state_dict(m.state_dict())


def test_mixed_on_windows_pyramid_mae_and_dit():
    torch.manual_seed(0)
    from vllama_mm.generation import DiTLLaMA
    vitdet = VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='mixed', out_type='featmap',
                         with_cls_token=False, window_size=2, global_attn_indexes=(1, ))
    pyr = PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, window_size=2, rope_type='mixed')
    mae = VisionLLaMAMAE(TINY, img_size=32, patch_size=8, rope_type='mixed', mask_ratio=0.5)
    dit = DiTLLaMA(dict(embed_dims=32, num_layers=2, num_heads=2), patch_size=2,
                   input_size=8, num_classes=3, rope_type='mixed')
    for b in dit.blocks:  # adaLN-Zero starts as the identity: open the gates
        nn.init.normal_(b.adaLN_modulation[-1].weight, std=0.1)
    nn.init.normal_(dit.final_layer.linear.weight)
    outs = [vitdet(torch.randn(1, 3, 40, 32))[0], pyr(torch.randn(1, 3, 64, 80))[-1],
            mae(torch.randn(2, 3, 32, 32))[0],
            dit(torch.randn(2, 4, 8, 12), torch.tensor([1., 5.]), torch.tensor([0, 2]))]
    sum((o.double() ** 2).mean() for o in outs).backward()
    for name, p in [('vitdet', vitdet.rope.freqs), ('mae', mae.rope.freqs),
                    ('dit', dit.rope.freqs)] + \
            [(f'pyramid stage {s}', r.freqs) for s, r in enumerate(pyr.ropes)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert tuple(pyr.ropes[2].freqs.shape) == (2, 1, 16, 2)  # [depth, heads, R/2, 2]


# ------------------------------------------------------------------ dinov3
def dinov3_reference(H, W, D, base=100.0, min_period=None, max_period=None,
                     normalize='separate', shift=None, jitter=None, rescale=None,
                     training=False):
    """DINOv3 RopePositionEmbedding.forward in float64 (draws float32 as theirs):
    (sin, cos) [HW, D] in their rotate-half layout."""
    dd = dict(dtype=torch.float64)
    if base is not None:
        periods = base ** (2 * torch.arange(D // 4, **dd) / (D // 2))
    else:
        b = max_period / min_period
        periods = b ** torch.linspace(0, 1, D // 4, **dd) / b * max_period
    ext_h, ext_w = {'max': (max(H, W),) * 2, 'min': (min(H, W),) * 2,
                    'separate': (H, W)}[normalize]
    ch, cw = torch.arange(0.5, H, **dd) / ext_h, torch.arange(0.5, W, **dd) / ext_w
    coords = torch.stack(torch.meshgrid(ch, cw, indexing='ij'), -1).flatten(0, 1)
    coords = 2.0 * coords - 1.0  # [HW, 2] (h, w)
    if training and shift is not None:
        coords = coords + torch.empty(2).uniform_(-shift, shift).double()[None]
    if training and jitter is not None:
        lj = math.log(jitter)
        coords = coords * torch.empty(2).uniform_(-lj, lj).exp().double()[None]
    if training and rescale is not None:
        lr = math.log(rescale)
        coords = coords * torch.empty(1).uniform_(-lr, lr).exp().double()
    angles = 2 * math.pi * coords[..., None] / periods  # [HW, 2, D/4]
    angles = angles.flatten(-2).tile(2)  # [HW, D]
    return torch.sin(angles), torch.cos(angles)


def dinov3_apply(x, sin, cos):
    """Their rope_apply: x cos + rotate_half(x) sin, rotate_half = [-x2, x1]."""
    x1, x2 = x.double().chunk(2, -1)
    return x.double() * cos + torch.cat([-x2, x1], -1) * sin


def dinov3_to_ours(x: torch.Tensor) -> torch.Tensor:
    """Their channels -> ours: our pair 2m (x, period m) = their dims (D/4+m, 3D/4+m),
    our pair 2m+1 (y, period m) = their dims (m, D/2+m)."""
    D = x.shape[-1]
    q = D // 4
    idx = []
    for m in range(q):
        idx += [q + m, 3 * q + m, m, 2 * q + m]
    return x[..., idx]


@pytest.mark.parametrize('normalize', ['separate', 'max', 'min'])
@pytest.mark.parametrize('periods', [dict(base=100.0),
                                     dict(min_period=0.5, max_period=40.0)])
def test_dinov3_rotation_matches_reference(normalize, periods):
    torch.manual_seed(0)
    D, H, W = 16, 3, 5
    cfg = dict(normalize_coords=normalize, **periods)
    rope = RoPE2D(D, None, 'dinov3', rope_cfg=cfg).eval()
    x = torch.randn(2, 1, H * W, D)  # their channel order
    sin, cos = dinov3_reference(H, W, D, base=periods.get('base'),
                                min_period=periods.get('min_period'),
                                max_period=periods.get('max_period'), normalize=normalize)
    ref = dinov3_to_ours(dinov3_apply(x, sin, cos))
    got = apply_rope(dinov3_to_ours(x), rope.grid(H, W)).double()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_dinov3_augmentation_train_only_and_as_reference():
    D, H, W = 16, 4, 6
    cfg = dict(shift_coords=0.3, jitter_coords=1.7, rescale_coords=2.0)
    rope = RoPE2D(D, None, 'dinov3', theta=100.0, rope_cfg=cfg)
    x = torch.randn(1, 1, H * W, D)
    for seed in (0, 1):  # train: the same draw as DINOv3's under the same seed
        torch.manual_seed(seed)
        table = rope.grid(H, W, aug=rope.coords_augmentation())
        torch.manual_seed(seed)
        sin, cos = dinov3_reference(H, W, D, shift=0.3, jitter=1.7, rescale=2.0,
                                    training=True)
        ref = dinov3_to_ours(dinov3_apply(x, sin, cos))
        torch.testing.assert_close(apply_rope(dinov3_to_ours(x), table).double(), ref,
                                   rtol=1e-5, atol=1e-5)
    a, b = (rope.grid(H, W, aug=rope.coords_augmentation()) for _ in range(2))
    assert not torch.equal(a[0], b[0])  # a new draw per forward in training
    rope.eval()
    assert rope.coords_augmentation() is None
    e1 = rope.grid(H, W, aug=rope.coords_augmentation())
    e2 = rope.grid(H, W, aug=rope.coords_augmentation())
    assert e1[0] is e2[0]  # eval: deterministic (cached)
    sin, cos = dinov3_reference(H, W, D)
    torch.testing.assert_close(apply_rope(dinov3_to_ours(x), e1).double(),
                               dinov3_to_ours(dinov3_apply(x, sin, cos)), rtol=1e-5, atol=1e-5)


def test_dinov3_augmentation_statistics():
    torch.manual_seed(0)
    n = 4000
    rope = RoPE2D(16, None, 'dinov3', rope_cfg=dict(shift_coords=0.5))
    shifts = torch.stack([rope.coords_augmentation()[0] for _ in range(n)])  # [n, 2]
    assert shifts.abs().max() <= 0.5 and shifts.abs().max() > 0.49
    torch.testing.assert_close(shifts.mean(0), torch.zeros(2, dtype=torch.float64),
                               atol=0.03, rtol=0)  # sd of the mean 0.0046
    assert abs(shifts.var(0) - 0.25 / 3).max() < 0.01
    rope = RoPE2D(16, None, 'dinov3', rope_cfg=dict(jitter_coords=3.0))
    logs = torch.stack([rope.coords_augmentation()[1] for _ in range(n)]).log()
    lj = math.log(3.0)
    assert logs.abs().max() <= lj + 1e-6 and logs.abs().max() > 0.99 * lj  # log-uniform
    assert abs(logs.mean(0)).max() < 0.05 and abs(logs.var(0) - lj ** 2 / 3).max() < 0.05
    assert abs(torch.corrcoef(logs.T)[0, 1]) < 0.1  # per axis, independent
    rope = RoPE2D(16, None, 'dinov3', rope_cfg=dict(rescale_coords=2.0))
    scales = torch.stack([rope.coords_augmentation()[1] for _ in range(n)])
    assert torch.equal(scales[:, 0], scales[:, 1])  # one factor for both axes
    lr = math.log(2.0)
    assert abs(scales[:, 0].log().var() - lr ** 2 / 3) < 0.02
    assert RoPE2D(16, None, 'dinov3').coords_augmentation() is None  # all off


def test_dinov3_backbones_augment_in_training_only():
    torch.manual_seed(0)
    cfg = dict(jitter_coords=2.0, shift_coords=0.2)
    for m, x in [(VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='dinov3',
                              rope_cfg=cfg), torch.randn(1, 3, 32, 40)),
                 (PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, window_size=2,
                                     rope_type='dinov3', rope_cfg=cfg),
                  torch.randn(1, 3, 64, 48))]:
        m.init_weights()
        with torch.no_grad():
            m.train()
            t1, t2 = m(x)[-1], m(x)[-1]
            m.eval()
            e1, e2 = m(x)[-1], m(x)[-1]
        assert not torch.allclose(t1, t2)
        assert torch.equal(e1, e2)


def test_dinov3_pooled_keys_share_the_query_draw():
    rope = RoPE2D(16, None, 'dinov3', rope_cfg=dict(shift_coords=0.4, jitter_coords=2.0))
    from vllama_mm.models.rope import grid_positions
    aug = rope.coords_augmentation()
    q = rope.grid(4, 6, aug=aug)
    k = rope.positions('same', lambda: grid_positions(4, 6), 4, 6, aug=aug)
    for a, b in zip(q, k):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------ yarn
def yarn_reference(pos, dim, theta, anchor_hw, grid_hw, beta_fast=32.0, beta_slow=1.0):
    """NTK-by-parts (YaRN paper, eq. for h(theta_d) and gamma(r)) per axis in float64:
    (angles [N, dim/2], amplitude [dim/2]) in our x/y pair layout (pair j: axis j % 2,
    frequency theta^(-4 (j//2) / dim))."""
    angles, amps = [], []
    for j in range(dim // 2):
        axis = j % 2  # 0: x (width), 1: y (height)
        L = float(anchor_hw[1 - axis])
        s = max(1.0, grid_hw[1 - axis] / L)
        f = theta ** (-4 * (j // 2) / dim)
        r = L / (2 * math.pi / f)
        gamma = 0.0 if r < beta_slow else 1.0 if r > beta_fast else \
            (r - beta_slow) / (beta_fast - beta_slow)
        f_new = (1 - gamma) * f / s + gamma * f
        angles.append(pos[:, axis] * f_new)
        amps.append(0.1 * math.log(s) + 1.0)
    return torch.stack(angles, -1), torch.tensor(amps, dtype=torch.float64)


@pytest.mark.parametrize('grid', [(10, 4), (6, 15), (20, 25)])
def test_yarn_tables_and_attention_match_reference(grid):
    torch.manual_seed(0)
    dim, heads, anchor, theta = 32, 2, (5, 6), 100.0
    rope = RoPE2D(dim // heads, anchor, 'yarn', theta)
    attn = RoPEAttention(dim, heads)
    x = torch.randn(2, grid[0] * grid[1], dim)
    angles, amp = yarn_reference(ref_grid_xy(*grid), dim // heads, theta, anchor, grid)
    got = ours_attention(attn, x, rope.grid(*grid))
    ref = ref_attention(attn, x, lambda t: ref_rotate_pairs(t, angles, amp))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    cos, sin = rope.grid(*grid)
    torch.testing.assert_close(cos.double(), (angles.cos() * amp).repeat_interleave(2, -1),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sin.double(), (angles.sin() * amp).repeat_interleave(2, -1),
                               rtol=1e-6, atol=1e-6)


def test_yarn_equals_2d_at_or_below_the_anchor():
    yarn, plain = RoPE2D(16, (6, 8), 'yarn'), RoPE2D(16, None, '2d')
    for hw in [(6, 8), (3, 8), (2, 2)]:
        for a, b in zip(yarn.grid(*hw, num_prefix=1), plain.grid(*hw, num_prefix=1)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # one axis above the anchor: only its pairs change
    cy, _ = yarn.grid(6, 16)
    cp, _ = plain.grid(6, 16)
    assert torch.equal(cy[:, 2::4], cp[:, 2::4]) and torch.equal(cy[:, 3::4], cp[:, 3::4])
    assert not torch.allclose(cy[:, 0::4], cp[:, 0::4])
    # window-local tables never scale
    for a, b in zip(yarn.grid(16, 16, local=True), plain.grid(16, 16)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_yarn_ramp_limits_and_mscale():
    # a long anchor (256) so that both ends of the ramp (r < 1, r > 32) occur
    dim, theta, anchor, s = 64, 10000.0, (4, 256), 4
    rope = RoPE2D(dim, anchor, 'yarn', theta)
    cos, sin = rope.grid(4, anchor[1] * s)  # x scale s = 4, y scale 1
    t = 1  # token x = 1, y = 0
    amp = torch.sqrt(cos[t] ** 2 + sin[t] ** 2).double()
    f_new = torch.atan2(sin[t], cos[t]).double()[0::2]  # pair angles at x = 1
    f = theta ** (-4 * (torch.arange(dim // 2, dtype=torch.float64) // 2) / dim)
    r = anchor[1] * f / (2 * math.pi)
    x_pairs = torch.arange(dim // 2) % 2 == 0
    interp, extrap = x_pairs & (r < 1), x_pairs & (r > 32)
    assert interp.any() and extrap.any()
    torch.testing.assert_close(f_new[interp], f[interp] / s, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(f_new[extrap], f[extrap], rtol=1e-5, atol=1e-7)
    mid = x_pairs & (r > 1) & (r < 32)
    assert ((f_new[mid] > f[mid] / s) & (f_new[mid] < f[mid])).all()
    torch.testing.assert_close(amp[0::2][x_pairs], torch.full((int(x_pairs.sum()), ),
                               0.1 * math.log(s) + 1, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(amp[0::2][~x_pairs], torch.ones(int((~x_pairs).sum()),
                               dtype=torch.float64), rtol=1e-6, atol=0)  # y: s = 1


def test_yarn_on_every_backbone_equals_2d_at_the_anchor():
    torch.manual_seed(0)
    for cls, kw, x in [(VisionLLaMA, dict(arch=TINY, img_size=32, patch_size=8),
                        torch.randn(1, 3, 32, 32)),
                       (PyramidVisionLLaMA, dict(arch=TINY_PYRAMID, img_size=64,
                                                 window_size=2), torch.randn(1, 3, 64, 64))]:
        torch.manual_seed(0)
        a = cls(rope_type='yarn', **kw).eval()
        torch.manual_seed(0)
        b = cls(rope_type='2d', **kw).eval()
        with torch.no_grad():
            torch.testing.assert_close(a(x)[-1], b(x)[-1])
            big = torch.randn(1, 3, 96, 64)
            assert not torch.allclose(a(big)[-1], b(big)[-1])


# ------------------------------------------------------------------ named errors
@pytest.mark.parametrize('rope_type, cfg, match', [
    ('yarn', dict(beta_fast=1.0, beta_slow=2.0), 'beta_fast .* must be > beta_slow'),
    ('yarn', dict(beta_fast=1.0), 'beta_fast .* must be > beta_slow'),
    ('yarn', dict(jitter_coords=2.0), "'jitter_coords' is not a parameter of rope_type='yarn' "
                                      r"\(a key of rope_type='dinov3'\)"),
    ('dinov3', dict(shift_coords=-0.1), 'shift_coords must be a finite number >= 0'),
    ('dinov3', dict(jitter_coords=0.5), r'jitter_coords must be .* >= 1'),
    ('dinov3', dict(rescale_coords=0.9), r'rescale_coords must be .* >= 1'),
    ('dinov3', dict(rescale_coords=float('nan')), 'rescale_coords must be a finite'),
    ('dinov3', dict(normalize_coords='both'), 'normalize_coords must be one of'),
    ('dinov3', dict(min_period=1.0), 'min_period and max_period go together'),
    ('dinov3', dict(base=10.0, min_period=1.0, max_period=9.0), 'either base or'),
    ('dinov3', dict(min_period=9.0, max_period=1.0), 'max_period .* must be >= min_period'),
    ('dinov3', dict(beta_fast=3.0), "'beta_fast' is not a parameter of rope_type='dinov3'"),
    ('mixed', dict(rotate='yes'), 'rotate must be True or False'),
    ('mixed', dict(seed=1), "'seed' is not a parameter of rope_type='mixed'"),
    ('2d', dict(rotate=True), "rope_type='2d' takes no rope_cfg"),
    ('as2d', [1], 'rope_cfg must be a dict'),
])
def test_bad_rope_cfg_names_the_problem(rope_type, cfg, match):
    with pytest.raises(ValueError, match=match):
        VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type=rope_type, rope_cfg=cfg)


def test_bad_variant_setups_name_the_problem():
    with pytest.raises(ValueError, match="'mixed' learns frequencies per layer and head"):
        RoPE2D(16, None, 'mixed', num_heads=2)  # no num_layers: no learnable shape
    with pytest.raises(ValueError, match='rope_shared=False does not apply'):
        VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='mixed', rope_shared=False)
    with pytest.raises(ValueError, match="'yarn' needs the anchor"):
        RoPE2D(16, None, 'yarn')
    with pytest.raises(ValueError, match="'dinov3' normalises coordinates"):
        PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, rope_type='dinov3', compat='official')
    with pytest.raises(ValueError, match='build the model with'):
        RoPE2D(16, (4, 4), '2d').configure('mixed')
    assert set(ROPE_CFG) == {'mixed', 'dinov3', 'yarn'}


# ------------------------------------------------------------------ optimizer
def test_mixed_freqs_no_weight_decay_and_layer_ids():
    from vllama_mm.engine.layer_decay import LayerDecayOptimWrapperConstructor

    class Model(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone, self.head = backbone, nn.Linear(32, 2)

    for backbone, key, depth in [
            (VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type='mixed'),
             'backbone.rope.freqs', 0),
            (PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, rope_type='mixed'),
             'backbone.ropes.2.freqs', 4)]:
        model = Model(backbone)
        assert backbone.get_layer_depth(key, 'backbone.') == (depth, backbone.num_blocks + 2)
        ctor = LayerDecayOptimWrapperConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
            dict(layer_decay_rate=0.5))
        groups = {g['param_name']: g for g in ctor(model).optimizer.param_groups}
        assert groups[key]['weight_decay'] == 0.0
        assert groups[key]['lr_scale'] == 0.5 ** (backbone.num_blocks + 1 - depth)
        weight = [k for k in groups if k.endswith('qkv.weight') or k.endswith('q.weight')][0]
        assert groups[weight]['weight_decay'] == 0.05  # the rule is for freqs only


# ------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize('rope_type, cfg', [('mixed', None),
                                            ('dinov3', dict(jitter_coords=2.0))])
def test_compiled_dynamic_no_recompile(rope_type, cfg):
    """torch.compile(dynamic=True), training steps: one graph over three sizes (the mixed
    tables and the DINOv3 draw are traced into the graph), same outputs as eager."""
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    m = VisionLLaMA(TINY, img_size=32, patch_size=8, rope_type=rope_type, rope_cfg=cfg)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(m, dynamic=True, backend='eager')
    for hw in [(64, 96), (96, 64), (64, 64)]:  # square last: no duck-sized first graph
        x = torch.randn(2, 3, *hw)
        compiled(x)[0].pow(2).mean().backward()
        if rope_type == 'mixed':
            torch.testing.assert_close(compiled(x)[0], m(x)[0], rtol=1e-5, atol=1e-5)
    assert counters['stats']['unique_graphs'] == 1, dict(counters['stats'])
    assert not counters['graph_break'], dict(counters['graph_break'])
    if rope_type == 'mixed':
        assert m.rope.freqs.grad is not None
    torch._dynamo.reset()
