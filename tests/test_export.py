"""Third-party tools read the backbones: torch.jit.trace, torch.export, ONNX (onnxruntime
within 1e-4 of PyTorch at two input sizes), and mmengine's stock FLOP counter (what
mmpretrain's, mmseg's and mmdet's get_flops tools call) agrees with ours."""
import os.path as osp

import pytest
import torch

from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA, VisionLLaMAMAE
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_PLAIN = dict(embed_dims=64, num_layers=3, num_heads=2, feedforward_channels=96)
TINY_PYRAMID = dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2])


def _models():
    """(name, backbone, two input sizes)."""
    return [
        ('plain', VisionLLaMA(TINY_PLAIN, img_size=64), [(64, 64), (80, 96)]),
        ('vitdet', VisionLLaMA(TINY_PLAIN, img_size=64, with_cls_token=False,
                               out_type='featmap', window_size=3, global_attn_indexes=(1, )),
         [(64, 64), (64, 80)]),
        ('pyramid', PyramidVisionLLaMA(TINY_PYRAMID, img_size=64), [(64, 64), (80, 96)]),
        ('pyramid-cls', PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, out_type='avg_featmap'),
         [(64, 64), (96, 80)]),
        ('mae', VisionLLaMAMAE(TINY_PLAIN, img_size=64, mask_ratio=0.5), [(64, 64), (64, 96)]),
    ]


def _load_tool(rel):
    return load_tool(rel, osp.basename(rel)[:-3] + '_under_test')


def _run(model, x, seed=0):
    torch.manual_seed(seed)  # the MAE encoder masks at random
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize('index', range(5))
def test_jit_trace_and_torch_export_match_eager(index):
    name, model, sizes = _models()[index]
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, *sizes[0])
    ref = _run(model, x)
    traced = torch.jit.trace(model, x, strict=False, check_trace=False)
    exported = torch.export.export(model, (x, )).module()
    for runner in (traced, exported):
        for a, b in zip(ref, _run(runner, x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize('index', range(5))
def test_onnx_round_trip_at_two_sizes(index, tmp_path):
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    tool = _load_tool('tools/deployment/pytorch2onnx.py')
    name, model, sizes = _models()[index]
    model.init_weights()
    model.eval()
    if name == 'mae':  # random masking is not exportable as a fixed graph: the unmasked path
        model.forward = lambda x: VisionLLaMAMAE.forward(model, x, mask=False)
    for size in sizes:
        path = str(tmp_path / f'{name}_{size[0]}x{size[1]}.onnx')
        tool.export(model, size, path)
        assert tool.check(model, size, path, 1e-4) <= 1e-4


def test_onnx_tool_on_a_config(tmp_path):
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    pytest.importorskip('mmpretrain')
    tool = _load_tool('tools/deployment/pytorch2onnx.py')
    config = osp.join(ROOT, 'configs/mmpretrain/vision_llama/'
                      'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
    assert tool.main([config, '--out-dir', str(tmp_path), '--shape', '64', '64',
                      '--shape', '48', '80']) == 0
    assert len(list(tmp_path.glob('*.onnx'))) == 2


@pytest.mark.parametrize('index', range(4))
def test_stock_flop_counter_agrees_with_ours(index):
    """mmengine's get_model_complexity_info, called as the upstream get_flops tools call
    it (eval(), no torch.no_grad()), sees every GEMM: within 2 % of our stock column."""
    from mmengine.analysis import get_model_complexity_info
    gf = _load_tool('tools/analysis/get_flops.py')
    name, model, sizes = _models()[index]
    ours = gf.count_complexity(model, sizes[1])
    model.eval()
    stock = get_model_complexity_info(model, input_shape=(3, *sizes[1]), show_table=False,
                                      show_arch=False)['flops']
    assert abs(stock - ours.stock_flops) <= 0.02 * ours.stock_flops, (name, stock, ours)
    # and the attention products are what our total adds on top
    assert ours.flops - ours.stock_flops == ours.by_operator['scaled_dot_product_attention']


def test_onnx_tool_loads_a_checkpoint_safely(tmp_path, capsys):
    """CKPT is verified (zip CRC) and loaded with weights_only=True: a converted/trained
    checkpoint exports; a file with flipped bytes fails naming the file."""
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    mmpretrain = pytest.importorskip('mmpretrain')
    import vllama_mm.mmpretrain  # noqa: F401
    from mmengine.registry import DefaultScope
    tool = _load_tool('tools/deployment/pytorch2onnx.py')
    config = osp.join(ROOT, 'configs/mmpretrain/vision_llama/'
                      'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = mmpretrain.get_model(config)
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, ckpt)
    assert tool.main([config, str(ckpt), '--out-dir', str(tmp_path / 'ok'),
                      '--shape', '64', '64']) == 0
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the largest tensor's data
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(bytes(data))
    assert tool.main([config, str(bad), '--out-dir', str(tmp_path / 'bad'),
                      '--shape', '64', '64']) == 2  # one `error:` line naming the file
    out = capsys.readouterr()
    assert 'error:' in out.err + out.out and 'bad.pth' in out.err + out.out
    assert not (tmp_path / 'bad').exists() or not any((tmp_path / 'bad').iterdir())


# ----------------------------------------------------------------------------- RoPE variants
VARIANTS = [('mixed', None), ('dinov3', dict(jitter_coords=2.0, shift_coords=0.1)),
            ('yarn', None)]


def _variant_models(rope_type, cfg):
    return [('plain', VisionLLaMA(TINY_PLAIN, img_size=64, rope_type=rope_type, rope_cfg=cfg)),
            ('pyramid', PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, rope_type=rope_type,
                                           rope_cfg=cfg))]


@pytest.mark.parametrize('rope_type, cfg', VARIANTS, ids=[v[0] for v in VARIANTS])
def test_rope_variants_export(rope_type, cfg, tmp_path):
    """Every variant exports in eval mode (torch.export and ONNX match eager, above the
    anchor grid): ``mixed`` computes its tables in the graph from the learned ``freqs``
    (Einsum, Cos, Sin nodes), ``dinov3`` (eval: no augmentation) and ``yarn`` carry them
    as constants. ``dinov3`` in training mode refuses torch.export / jit.trace with one
    named error (ONNX export runs the model in eval mode itself)."""
    size = (80, 96)
    # pyramid (pooled GSA keys) where its tables are computed in the graph
    models = _variant_models(rope_type, cfg)[:1 if rope_type != 'mixed' else 2]
    for name, model in models:
        model.init_weights()
        model.eval()
        x = torch.randn(2, 3, *size)
        ref = _run(model, x)
        for a, b in zip(ref, _run(torch.export.export(model, (x, )).module(), x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    import onnx
    tool = _load_tool('tools/deployment/pytorch2onnx.py')
    for name, model in models:
        path = str(tmp_path / f'{rope_type}_{name}.onnx')
        tool.export(model, size, path)
        assert tool.check(model, size, path, 1e-4) <= 1e-4
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert ('Cos' in ops) == (rope_type == 'mixed'), (name, sorted(ops))
        assert not ops & {'RandomUniform', 'RandomUniformLike'}
    if rope_type == 'dinov3':  # torch.export / jit.trace of a training-mode model
        model = _variant_models(rope_type, cfg)[0][1].train()
        x = torch.randn(1, 3, *size)
        for export in (lambda: torch.export.export(model, (x, )),
                       lambda: torch.jit.trace(model, x, check_trace=False)):
            with pytest.raises(RuntimeError, match=r'call \.eval\(\) before exporting'):
                export()
