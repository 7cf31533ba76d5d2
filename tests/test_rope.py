"""2D RoPE / AS2DRoPE: rotation, relativity, anchor equivalence, layout, caching."""
import math

import pytest
import torch

from vllama_mm.models.rope import (RoPE2D, apply_rope, grid_positions, rope_frequencies,
                                   rope_table)


def _table_at(points, head_dim=16, theta=10000.0):
    pos = torch.tensor(points, dtype=torch.float64)
    return rope_table(pos, rope_frequencies(head_dim, theta))


def test_rotation_preserves_norms():
    torch.manual_seed(0)
    rope = RoPE2D(32, (7, 7), 'as2d')
    table = rope.grid(9, 11)
    x = torch.randn(2, 3, 99, 32)
    y = apply_rope(x, table)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y, x)  # it did rotate


def test_scores_depend_only_on_position_differences():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        tq, tk = _table_at([pq]), _table_at([pk])
        return (apply_rope(q, tq) * apply_rope(k, tk)).sum()

    base = score((2.0, 5.0), (7.0, 1.0))
    shifted = score((2.0 + 3.5, 5.0 - 4.0), (7.0 + 3.5, 1.0 - 4.0))
    torch.testing.assert_close(base, shifted, rtol=1e-5, atol=1e-5)
    # a different difference gives a different score (the test can fail)
    assert not torch.allclose(base, score((2.0, 5.0), (7.0, 2.0)))
    # x and y are independent axes: swapping them changes the score
    assert not torch.allclose(base, score((5.0, 2.0), (1.0, 7.0)))


def test_as2d_equals_2d_at_anchor_and_scales_elsewhere():
    as2d, plain = RoPE2D(32, (14, 14), 'as2d'), RoPE2D(32, None, '2d')
    for a, b in zip(as2d.grid(14, 14), plain.grid(14, 14)):
        torch.testing.assert_close(a, b)
    # a 28x21 grid is squeezed into the 14x14 span: token (x=2, y=4) -> (1, 8/3)
    cos, sin = as2d.grid(28, 21)
    t = 4 * 21 + 2
    ref_cos, ref_sin = _table_at([(2 * 14 / 21, 4 * 14 / 28)], head_dim=32)
    torch.testing.assert_close(cos[t], ref_cos[0])
    torch.testing.assert_close(sin[t], ref_sin[0])


def test_layout_matches_hand_computed_case():
    # Hc = 8 -> pairs j=0..3: x@1, y@1, x@theta^-1/2, y@theta^-1/2 ; real dims x x y y x x y y
    theta = 10000.0
    rope = RoPE2D(8, None, '2d', theta)
    cos, sin = rope.grid(4, 4)
    t = 3 * 4 + 2  # row-major token at x=2, y=3
    angles = torch.tensor([2.0, 2.0, 3.0, 3.0, 0.02, 0.02, 0.03, 0.03])
    assert math.isclose(theta ** -0.5, 0.01)
    torch.testing.assert_close(cos[t], angles.cos())
    torch.testing.assert_close(sin[t], angles.sin())
    # rotating basis vectors: pair 0 = (e0, e1) rotates by angle 2 (x), pair 1 by 3 (y)
    table = (cos[t:t + 1], sin[t:t + 1])
    e = torch.eye(8).view(8, 1, 1, 8)
    out = apply_rope(e, table).view(8, 8)
    c2, s2, c3, s3 = math.cos(2), math.sin(2), math.cos(3), math.sin(3)
    torch.testing.assert_close(out[0, :2], torch.tensor([c2, s2]))
    torch.testing.assert_close(out[1, :2], torch.tensor([-s2, c2]))
    torch.testing.assert_close(out[2, 2:4], torch.tensor([c3, s3]))
    torch.testing.assert_close(out[3, 2:4], torch.tensor([-s3, c3]))


def test_non_square_positions_row_major():
    pos = grid_positions(2, 3)
    assert pos.shape == (6, 2)
    assert pos[4].tolist() == [1.0, 1.0]  # t=4 on a 2x3 grid: x = 4 mod 3, y = 4 div 3
    assert pos[2].tolist() == [2.0, 0.0]


def test_prefix_tokens_unrotated_by_default_and_official_position():
    rope = RoPE2D(16, (4, 4), 'as2d')
    cos, sin = rope.grid(4, 4, num_prefix=1)
    assert cos.shape == (17, 16)
    assert torch.all(cos[0] == 1) and torch.all(sin[0] == 0)
    torch.testing.assert_close(cos[1:], rope.grid(4, 4)[0])
    cos_o, sin_o = rope.grid(4, 4, num_prefix=1, prefix_mode='official')
    ref = _table_at([(3.0, -1.0)])  # x = G-1, y = -1
    torch.testing.assert_close(cos_o[0], ref[0][0])
    torch.testing.assert_close(sin_o[0], ref[1][0])


def test_tables_cached_not_in_state_dict_and_rebuilt_after_to():
    rope = RoPE2D(16, (4, 4), 'as2d')
    a = rope.grid(6, 5)
    assert rope.grid(6, 5) is a  # cached: same tensors
    assert rope.grid(5, 6) is not a and rope.grid(5, 6)[0].shape == a[0].shape
    assert len(rope.state_dict()) == 0
    rope.to(torch.float64)
    assert len(rope._cache) == 0


def test_rope_none_and_1d():
    assert RoPE2D(16, None, 'none').grid(3, 3) is None
    cos, _ = RoPE2D(8, None, '1d').grid(2, 3)
    t = torch.arange(6.0)[:, None]
    freqs = 10000.0 ** (-torch.arange(4) * 2 / 8)
    torch.testing.assert_close(cos, (t * freqs).cos().repeat_interleave(2, -1))


@pytest.mark.parametrize('head_dim', [6, 10, 30])
def test_head_dim_not_divisible_by_4(head_dim):
    with pytest.raises(ValueError, match='divisible by 4'):
        RoPE2D(head_dim, (4, 4))


def test_bad_rope_type():
    with pytest.raises(ValueError, match='rope_type'):
        RoPE2D(16, (4, 4), 'abs')
    with pytest.raises(ValueError, match='anchor'):
        RoPE2D(16, None, 'as2d')
