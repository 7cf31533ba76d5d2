"""Arguments and inputs (issue 14 item 6): every bad value gets one error naming the
argument; inference mode then training works; a traced backbone refuses other sizes."""
import math
import warnings

import pytest
import torch

from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA

PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2)
PYRAMID = dict(embed_dims=[32] * 4, depths=[1] * 4)
KW = dict(img_size=32, patch_size=8)


@pytest.mark.parametrize('kw,match', [
    (dict(rope_theta='1e4x'), r"rope_theta must be a finite number > 0, got '1e4x' \(str\)"),
    (dict(rope_theta=math.inf), r'rope_theta must be a finite number > 0, got inf'),
    (dict(patch_size=8.7), r'patch_size must be a positive int, got 8.7 \(float\)'),
    (dict(patch_size=8.0), r'patch_size must be a positive int, got 8.0 \(float\)'),
    (dict(window_size=2.5, with_cls_token=False, out_type='featmap'),
     r'window_size must be an int >= 0, got 2.5'),
    (dict(img_size='32'), r"img_size must be a positive int or a pair \(h, w\) of them, "
                          r"got '32'"),
    (dict(img_size=(32, 32.5)), r'img_size must be .*got \(32, 32.5\)'),
    (dict(qkv_bias='no'), r"qkv_bias must be True or False, got 'no'"),
    (dict(norm_eps=-1e-6), r'norm_eps must be a finite number > 0'),
    (dict(out_indices=(1, 1)), r'out_indices must be increasing without duplicates .*'
                               r'got \(1, 1\)'),
    (dict(out_indices=(1, 0)), r'out_indices must be increasing .*got \(1, 0\)'),
    (dict(out_indices=(-1, 0)), r'out_indices must be increasing .*got \(-1, 0\) = \(1, 0\)'),
])
def test_bad_plain_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match='VisionLLaMA: ' + match):
        VisionLLaMA(PLAIN, **{**KW, **kw})


@pytest.mark.parametrize('arch,match', [
    (dict(layer_scale_init=-1.0), r'arch[. ]layer_scale_init must be a (finite )?number >= 0'
                                  r', got -1.0'),
    (dict(layer_scale_init=float('nan')), r'arch[. ]layer_scale_init .* got nan'),
    (dict(ffn_bias='no'), r"arch[. ]ffn_bias must be True or False, got 'no'"),
])
def test_bad_arch_values_are_named(arch, match):
    with pytest.raises(ValueError, match=match):
        VisionLLaMA(dict(PLAIN, **arch), **KW)
    with pytest.raises(ValueError, match=match):
        PyramidVisionLLaMA(dict(PYRAMID, **arch))


def test_pyramid_out_indices_order_and_values():
    with pytest.raises(ValueError, match=r'out_indices must be increasing .*got \(2, 1\)'):
        PyramidVisionLLaMA(PYRAMID, out_indices=(2, 1))
    with pytest.raises(ValueError, match=r"rope_theta must be .*got '1e4'"):
        PyramidVisionLLaMA(PYRAMID, rope_theta='1e4')
    outs = PyramidVisionLLaMA(PYRAMID, out_indices=(1, 3))(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(32, 8, 8), (32, 2, 2)]


@pytest.mark.parametrize('make', [
    lambda: VisionLLaMA(PLAIN, **KW, out_type='featmap', with_cls_token=False),
    lambda: VisionLLaMA(PLAIN, **KW),  # class token: a prefix row in the RoPE table
    lambda: PyramidVisionLLaMA(PYRAMID, img_size=64),
])
def test_inference_mode_then_training_step(make):
    """A first forward under torch.inference_mode() caches the RoPE tables; a later
    training step must be able to use them (it raised "Inference tensors cannot be
    saved for backward")."""
    torch.manual_seed(0)
    model = make()
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 64, 32))
    model.train()
    loss = sum(o.float().square().mean() for o in model(torch.randn(2, 3, 64, 32)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('make', [
    lambda: VisionLLaMA(PLAIN, **KW, out_type='featmap', with_cls_token=False),
    lambda: PyramidVisionLLaMA(PYRAMID, img_size=64),
])
def test_traced_backbone_is_exact_at_its_size_and_refuses_others(make):
    model = make().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 32), check_trace=False)
    assert any('traced at input size 64x32' in str(w.message) for w in caught)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        for a, b in zip(traced(x), model(x)):
            assert torch.equal(a, b)
        # the transposed grid: before, a transposed map came back without an error
        with pytest.raises(RuntimeError, match='expanded size'):
            traced(torch.randn(1, 3, 32, 64))
