"""Speed features as properties (no timings): the RoPE rotation equals a float64
reference (values and gradients), tables are fetched once per forward, activation checkpointing changes nothing numerically, the backbones trace
with torch.compile without graph breaks, and the benchmark/FLOPs tools measure what
they claim."""
import copy
import math
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from torch.utils._python_dispatch import TorchDispatchMode

from vllama_mm.models import PyramidVisionLLaMA, VisionLLaMA, VisionLLaMAMAE
from vllama_mm.models.dit_llama import DiTLLaMA
from vllama_mm.models.attention import RoPEAttention, attend
from vllama_mm.models.rope import (RoPE2D, apply_rope, grid_positions, rope_frequencies,
                                   rope_table)
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_PLAIN = dict(embed_dims=64, num_layers=3, num_heads=2, feedforward_channels=96)
TINY_PYRAMID = dict(embed_dims=[32, 64, 96, 128], depths=[2, 2, 2, 2])
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def reference_rope(x, cos, sin):
    """Textbook interleaved rotation in float64: (a, b) -> (a cos - b sin, a sin + b cos)."""
    xd, c, s = x.double(), cos.double(), sin.double()
    a, b = xd[..., 0::2], xd[..., 1::2]
    out = torch.stack((a * c[..., 0::2] - b * s[..., 0::2],
                       a * s[..., 0::2] + b * c[..., 0::2]), dim=-1).flatten(-2)
    return out.to(x.dtype)


def _table(n_h=5, n_w=7, head_dim=16):
    return RoPE2D(head_dim, (4, 4), 'as2d').grid(n_h, n_w)


# ----------------------------------------------------------------------------- rotation
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('per_sample', [False, True])
def test_apply_rope_equals_reference(dtype, per_sample):
    torch.manual_seed(0)
    table = _table()
    cos, sin = table
    x = torch.randn(3, 2, 35, 16).to(dtype)
    if per_sample:  # MAE: gathered rows, [B, N, Hc]
        ids = torch.stack([torch.randperm(35)[:20] for _ in range(3)])
        cos, sin = table = (cos[ids], sin[ids])
        x = x[:, :, :20]
        ref = reference_rope(x, cos[:, None], sin[:, None])
    else:
        ref = reference_rope(x, cos, sin)
    out = apply_rope(x, table)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])
    assert not torch.allclose(out.float(), x.float(), atol=1e-2)  # it did rotate


class _OutputDtypes(TorchDispatchMode):
    """Dtype of every activation-sized tensor the ops under it return."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.dtypes = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel:
                self.dtypes.append((str(func), t.dtype))
        return out


def test_apply_rope_runs_in_the_dtype_of_q_on_contiguous_rows():
    """The rotation of a strided q view (as the attention passes it) equals the one of
    a contiguous copy bit for bit; in bf16 no activation-sized float32 tensor appears (no
    promoted products, no casts of q); in float32 the values are those of the
    float32-table formula bit for bit (the equivalence tests' numbers are unchanged)."""
    torch.manual_seed(0)
    cos, sin = table = _table()
    qkv = torch.randn(3, 35, 3, 2, 16).permute(2, 0, 3, 1, 4)  # [3, B, h, N, Hc] views
    q = qkv[0]
    assert not q.is_contiguous()
    for dtype in (torch.float32, torch.bfloat16):
        view = q.to(dtype) if dtype != torch.float32 else q
        with _OutputDtypes(q.numel()) as seen:
            out = apply_rope(view, table)
        assert out.dtype == dtype
        assert torch.equal(out, apply_rope(view.contiguous(), table))
        if dtype == torch.bfloat16:
            assert seen.dtypes and all(d == dtype for _, d in seen.dtypes), seen.dtypes
    signed = torch.stack((-sin[:, 0::2], sin[:, 1::2]), -1).flatten(-2)
    a, b = q[..., 0::2], q[..., 1::2]
    swapped = torch.stack((b, a), -1).flatten(-2)
    assert torch.equal(apply_rope(q, table), torch.addcmul(q * cos, swapped, signed))


def test_rotation_gradient_is_the_inverse_rotation():
    """d/dx of sum(w * rot_theta(x)) = rot_-theta(w): the backward of the plain formula."""
    torch.manual_seed(0)
    cos, sin = _table()
    x = torch.randn(2, 3, 35, 16, requires_grad=True)
    w = torch.randn(2, 3, 35, 16)
    (apply_rope(x, (cos, sin)) * w).sum().backward()
    torch.testing.assert_close(x.grad, reference_rope(w, cos, -sin), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('masked', [False, True])
def test_attend_is_softmax_attention(masked):
    """attend() is softmax(q k^T / sqrt(Hc)) v with masked keys excluded: against a
    written-out float64 reference, values and gradients (one SDPA call, no second path)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 9, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(6, 1, 1, 9) > 0.3 if masked else None
    if masked:
        mask[..., 0] = True  # every query sees at least one key
    outs, grads = [], []
    for fn in (attend, None):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        if fn is None:
            a = leaves[0] @ leaves[1].transpose(-2, -1) / 8 ** 0.5  # [B, h, N, Nk]
            if masked:
                a = a.masked_fill(~mask, float('-inf'))
            out = a.softmax(-1) @ leaves[2]
        else:
            out = fn(*leaves, attn_mask=mask)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append([t.grad for t in leaves])
    torch.testing.assert_close(outs[0], outs[1])
    for got, ref in zip(*grads):
        torch.testing.assert_close(got, ref)
    # the same for bf16 (autocast's dtype) within bf16 rounding
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    got = attend(qb, kb, vb, mask).double()
    assert (got - outs[1].detach()).norm() / outs[1].norm() < 2e-2


def test_rope_table_is_a_plain_tuple():
    table = RoPE2D(16, (4, 4), 'as2d').grid(4, 6)
    assert type(table) is tuple and len(table) == 2
    # the same values as the public table function (what the layout tests pin down)
    ref = rope_table(grid_positions(4, 6, scale=(4 / 6, 1.0)), rope_frequencies(16))
    torch.testing.assert_close(table[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(table[1], ref[1], rtol=0, atol=0)


@pytest.mark.parametrize('sr_pad,hw', [(True, (10, 13)), (False, (10, 13)), (True, (8, 8))])
def test_pooled_keys_gemm_equals_the_strided_conv(sr_pad, hw):
    torch.manual_seed(0)
    attn = RoPEAttention(32, 2, sr_ratio=4, sr_pad=sr_pad)
    H, W = hw
    x = torch.randn(2, H * W, 32)
    x_map = x.transpose(1, 2).reshape(2, 32, H, W)
    if sr_pad:
        x_map = F.pad(x_map, (0, (-W) % 4, 0, (-H) % 4))
    ref = attn.sr(x_map).flatten(2).transpose(1, 2)
    torch.testing.assert_close(attn._subsample(x, H, W), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- tables
def _count_lookups(ropes):
    calls = []
    for i, rope in enumerate(ropes):
        original = rope._cached

        def counted(key, build, _i=i, _orig=original):
            calls.append((_i, key))
            return _orig(key, build)
        rope._cached = counted
    return calls


def test_plain_tables_fetched_once_per_forward():
    m = VisionLLaMA(TINY_PLAIN, img_size=64, with_cls_token=False, out_type='featmap',
                    window_size=3, global_attn_indexes=(1, )).eval()
    calls = _count_lookups([m.rope])
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 80))
        assert len(calls) == 2  # one global table, one window table, for 3 blocks
        m(torch.randn(1, 3, 64, 80))
    assert len(calls) == 4 and len(m.rope._cache) == 2  # second forward: cache hits only


def test_pyramid_tables_fetched_once_per_stage():
    m = PyramidVisionLLaMA(TINY_PYRAMID, img_size=64).eval()
    calls = _count_lookups(m.ropes)
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    # per stage: LSA window, GSA queries, GSA keys (sr > 1) -- not per block
    assert sorted(i for i, _ in calls) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


# ----------------------------------------------------------------------------- checkpointing
CP_KINDS = ['plain', 'pyramid', 'vitdet', 'mae', 'dit']


def _cp_model(kind):
    """A tiny model of each kind in train mode, its input and its number of blocks."""
    torch.manual_seed(0)
    if kind == 'dit':
        m = DiTLLaMA(dict(embed_dims=64, num_layers=3, num_heads=2), patch_size=2,
                     input_size=8, num_classes=10)
        with torch.no_grad():  # adaLN-Zero starts every block at the identity: perturb
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        x = (torch.randn(2, 4, 8, 8), torch.tensor([3., 700.]), torch.tensor([1, 10]))
        return m.train(), x, 3
    if kind == 'plain':
        m = VisionLLaMA(TINY_PLAIN, img_size=64, drop_path_rate=0.2)
        x = torch.randn(2, 3, 64, 64)
    elif kind == 'vitdet':
        m = VisionLLaMA(TINY_PLAIN, img_size=64, with_cls_token=False, out_type='featmap',
                        window_size=3, global_attn_indexes=(1, ), drop_path_rate=0.2)
        x = torch.randn(2, 3, 64, 80)
    elif kind == 'mae':
        m = VisionLLaMAMAE(TINY_PLAIN, img_size=64, mask_ratio=0.5, drop_path_rate=0.2)
        x = torch.randn(2, 3, 64, 64)
    else:
        m = PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, drop_path_rate=0.2)
        x = torch.randn(2, 3, 64, 80)
    m.init_weights()
    return m.train(), (x, ), 8 if kind == 'pyramid' else 3


def _outputs_and_grads(model, inputs):
    torch.manual_seed(123)  # same drop-path draws, MAE masks and label drops
    outs = model(*inputs)
    outs = [o for o in (outs if isinstance(outs, (tuple, list)) else [outs])
            if o.requires_grad]
    sum(o.pow(2).mean() for o in outs).backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}


def _checkpointed_outputs_and_grads(model, inputs):
    """:func:`_outputs_and_grads` with every ``torch.utils.checkpoint.checkpoint`` call
    recorded as ``(checkpointed function, context_fn)``."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def spy(fn, *args, **kwargs):
        calls.append((fn, kwargs.get('context_fn')))
        return original(fn, *args, **kwargs)
    torch.utils.checkpoint.checkpoint = spy
    try:
        return (*_outputs_and_grads(model, inputs), calls)
    finally:
        torch.utils.checkpoint.checkpoint = original


@pytest.mark.parametrize('mode', [True, 'selective'])
@pytest.mark.parametrize('kind', CP_KINDS)
def test_with_cp_gives_the_same_outputs_and_gradients(kind, mode):
    m, x, num_blocks = _cp_model(kind)
    cp = copy.deepcopy(m)
    cp.with_cp = mode
    out_ref, grad_ref = _outputs_and_grads(m, x)
    out_cp, grad_cp, calls = _checkpointed_outputs_and_grads(cp, x)
    contexts = [ctx for _, ctx in calls]
    assert len(contexts) == num_blocks  # every block checkpointed
    assert all((c is None) == (mode is True) for c in contexts)  # selective: a policy
    for a, b in zip(out_ref, out_cp):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert grad_ref.keys() == grad_cp.keys() and len(grad_ref) > 10
    for name in grad_ref:
        torch.testing.assert_close(grad_ref[name], grad_cp[name], rtol=1e-5, atol=1e-6,
                                   msg=name)


class _CountOps(TorchDispatchMode):
    """Counts matmul-like and element-wise (LayerNorm, SiLU) aten calls."""

    def __init__(self):
        super().__init__()
        self.counts = {'matmul': 0, 'norm': 0, 'silu': 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ('mm', 'addmm', 'bmm'):
            self.counts['matmul'] += 1
        elif name == 'native_layer_norm':
            self.counts['norm'] += 1
        elif name == 'silu':
            self.counts['silu'] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('kind', ['plain', 'dit'])
def test_selective_cp_recomputes_elementwise_work_only(kind):
    """What each mode re-runs in the backward pass (ops counted at the aten level):
    full recomputes every block's matmuls, selective none of them but the norms and
    SiLU; and what each keeps: peak tensor bytes full < selective < none."""
    bench = _load_tool('tools/benchmark.py')
    m, x, _ = _cp_model(kind)
    m.eval()  # no dropout/drop path: the same ops every call
    for p in m.parameters():
        p.requires_grad_(False)
    inputs = (x[0].requires_grad_(), ) + x[1:]  # a gradient through every block
    counts, peaks = {}, {}
    for mode in ('none', 'full', 'selective'):
        m.with_cp = mode

        def step():
            out = m(*inputs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            out.pow(2).mean().backward()
        with _CountOps() as ops:
            step()
        counts[mode] = ops.counts
        peaks[mode] = bench.PeakMemory(torch.device('cpu')).measure(step)
    none, full, sel = counts['none'], counts['full'], counts['selective']
    assert sel['matmul'] == none['matmul'] < full['matmul']  # no matmul re-run
    assert sel['norm'] == full['norm'] > none['norm']  # norms re-run
    assert sel['silu'] == full['silu'] > none['silu']  # SiLU re-run
    assert peaks['full'] < peaks['selective'] < peaks['none'], peaks


def test_pyramid_with_cp_per_stage():
    """A per-stage with_cp checkpoints exactly the blocks of the stages it names, each in
    its mode, and leaves outputs and gradients as the unchecked model's."""
    m, x, _ = _cp_model('pyramid')
    cp = copy.deepcopy(m)
    cp.with_cp = ('full', 'none', 'selective', False)  # as a config writes it
    out_ref, grad_ref = _outputs_and_grads(m, x)
    out_cp, grad_cp, calls = _checkpointed_outputs_and_grads(cp, x)
    stage_of = {id(b): s for s, blocks in enumerate(cp.stages) for b in blocks}
    assert [(stage_of[id(fn)], ctx is None) for fn, ctx in calls] == \
        [(0, True), (0, True), (2, False), (2, False)]  # stage 1 full, stage 3 selective
    for a, b in zip(out_ref, out_cp):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert grad_ref.keys() == grad_cp.keys()
    for name in grad_ref:
        torch.testing.assert_close(grad_ref[name], grad_cp[name], rtol=1e-5, atol=1e-6,
                                   msg=name)
    with pytest.raises(ValueError, match=r'with_cp per stage needs 4 values \(one per stage\)'):
        PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, with_cp=['full', 'none'])
    with pytest.raises(ValueError, match="with_cp must be True, False or one of"):
        PyramidVisionLLaMA(TINY_PYRAMID, img_size=64, with_cp=['full', 'none', 'none', 'x'])


def test_with_cp_rejects_unknown_modes():
    with pytest.raises(ValueError, match="with_cp must be True, False or one of"):
        VisionLLaMA(TINY_PLAIN, img_size=64, with_cp='partial')
    with pytest.raises(ValueError, match='with_cp must be'):
        DiTLLaMA(dict(embed_dims=64, num_layers=1, num_heads=2), input_size=8, with_cp=1)


# ----------------------------------------------------------------------------- compile
def _tiny_models():
    return [
        ('plain', VisionLLaMA(TINY_PLAIN, img_size=64), (2, 3, 64, 64)),
        ('vitdet', VisionLLaMA(TINY_PLAIN, img_size=64, with_cls_token=False,
                               out_type='featmap', window_size=3, global_attn_indexes=(1, )),
         (2, 3, 64, 80)),
        ('pyramid', PyramidVisionLLaMA(TINY_PYRAMID, img_size=64), (2, 3, 80, 96)),
        ('mae', VisionLLaMAMAE(TINY_PLAIN, img_size=64, mask_ratio=0.5), (2, 3, 64, 64)),
    ]


@pytest.mark.parametrize('index', range(4))
def test_backbones_trace_without_graph_breaks(index):
    name, model, shape = _tiny_models()[index]
    torch._dynamo.reset()
    x = torch.randn(*shape)
    explanation = torch._dynamo.explain(model.eval())(x)
    assert explanation.graph_break_count == 0, (name, explanation.break_reasons)
    assert explanation.graph_count == 1


def test_compiled_training_step_matches_eager():
    """The code paths taken while compiling (plain element-wise RoPE and SwiGLU, the
    in-graph window mask) give eager's outputs and gradients (backend aot_eager: the
    traced graphs without code generation)."""
    torch.manual_seed(0)
    for name, model, shape in _tiny_models()[:3]:
        model.init_weights()
        model.train()
        compiled_model = copy.deepcopy(model)
        torch._dynamo.reset()
        compiled = torch.compile(compiled_model, backend='aot_eager', fullgraph=True)
        x = torch.randn(*shape)
        outs = model(x)
        outs_c = compiled(x)
        sum(o.pow(2).mean() for o in outs).backward()
        sum(o.pow(2).mean() for o in outs_c).backward()
        for a, b in zip(outs, outs_c):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for (n, p), q in zip(model.named_parameters(), compiled_model.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name + n)


#: three input sizes per kind: the windowed ones padded and unpadded (3x3 windows on
#: 4x5, 6x4 and 6x6 token grids), square after non-square (duck sizing would otherwise
#: specialise the first graph on H == W)
DYNAMIC_SIZES = {'plain': [(64, 80), (96, 64), (64, 64)],
                 'vitdet': [(64, 80), (96, 64), (96, 96)],
                 'pyramid': [(64, 96), (96, 64), (64, 64)],
                 'dit': [(8, 12), (12, 8), (8, 8)]}


@pytest.mark.parametrize('kind', list(DYNAMIC_SIZES))
def test_compiled_dynamic_shapes_do_not_recompile(kind):
    """torch.compile(dynamic=True) (in a config: ``compile=dict(dynamic=True)``): one
    graph, no recompilation over three input sizes, training steps included (the RoPE
    tables and the window padding are traced into the graph, not looked up by size)."""
    from torch._dynamo.utils import counters
    if kind == 'dit':
        m = DiTLLaMA(dict(embed_dims=32, num_layers=1, num_heads=2), patch_size=2,
                     input_size=8, num_classes=10)
    elif kind == 'pyramid':
        m = PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1]),
                               img_size=64)
    else:
        m = _tiny_models()[['plain', 'vitdet'].index(kind)][1]
    m.train()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(m, dynamic=True, backend='eager')
    for h, w in DYNAMIC_SIZES[kind]:
        if kind == 'dit':
            out = compiled(torch.randn(2, 4, h, w), torch.tensor([1., 9.]), torch.tensor([0, 3]))
            assert out.shape == (2, 8, h, w)
        else:
            out = compiled(torch.randn(2, 3, h, w))[-1]
        out.float().pow(2).mean().backward()
    assert counters['stats']['unique_graphs'] == 1, dict(counters['stats'])
    assert not counters['graph_break'], dict(counters['graph_break'])
    assert counters['stats']['calls_captured'] > 0  # it did trace the model


# ----------------------------------------------------------------------------- tools
def _load_tool(rel):
    return load_tool(rel, osp.basename(rel)[:-3] + '_under_test')


def test_flop_counter_counts_sdpa():
    gf = _load_tool('tools/analysis/get_flops.py')

    class Attn(torch.nn.Module):
        def forward(self, x):  # image [2, 3, 10, 8] -> SDPA, 4 heads, 10 queries, 6 keys
            q = x[:, :1].expand(2, 4, 10, 8)
            return F.scaled_dot_product_attention(q, q[:, :, :6], q[:, :, :6])

    c = gf.count_complexity(Attn(), (10, 8), batch=2)
    # q.k: 2*4*10*6*8 MACs, attn.v: the same
    assert c.by_operator['scaled_dot_product_attention'] == 2 * (2 * 4 * 10 * 6 * 8)
    assert c.stock_flops == c.flops - c.by_operator['scaled_dot_product_attention']
    # a real backbone: every GEMM of ~ 2 * params per token is seen
    m = VisionLLaMA(TINY_PLAIN, img_size=64)
    c = gf.count_complexity(m, (64, 64))
    n = 17  # 16 patches + class token
    blocks = sum(p.numel() for n_, p in m.named_parameters()
                 if n_.startswith('layers.') and p.dim() == 2)
    assert c.by_operator['linear'] == n * blocks
    assert 'aten::silu' in c.uncounted  # element-wise work is listed, not counted


def test_flops_doc_update_keeps_the_other_rows(tmp_path):
    dt = _load_tool('tools/analysis/doc_table.py')
    doc = tmp_path / 'bench.md'
    doc.write_text('# Title\n\nintro\n<!-- flops:begin -->\n| config | x |\n|---|---|\n'
                   '| a | 1 |\n| b | 2 |\n| c | 3 |\n<!-- flops:end -->\n\nafter\n')
    header = ['| config | x |', '|---|---|']
    dt.update_doc(str(doc), 'flops', header, ['| b | 20 |', '| d | 4 |'])
    text = doc.read_text()
    assert text.startswith('# Title\n\nintro\n') and text.endswith('\n\nafter\n')
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    assert rows == ['| config | x |', '| a | 1 |', '| b | 20 |', '| c | 3 |', '| d | 4 |']
    dt.update_doc(str(tmp_path / 'new.md'), 'flops', header, ['| a | 1 |'])
    assert '| a | 1 |' in (tmp_path / 'new.md').read_text()
    # another column layout cannot be merged: the old table is replaced
    dt.update_doc(str(doc), 'flops', ['| config | y | z |', '|---|---|---|'], ['| e | 5 | 6 |'])
    rows = [line for line in doc.read_text().splitlines() if line.startswith('| ')]
    assert rows == ['| config | y | z |', '| e | 5 | 6 |']


def test_get_flops_builds_from_a_config_and_updates_only_its_rows(tmp_path):
    pytest.importorskip('mmpretrain')
    gf = _load_tool('tools/analysis/get_flops.py')
    config = osp.join(ROOT, 'configs/mmpretrain/vision_llama/'
                      'vision-llama-tiny-p8_1xb32-10e_synthetic-64px.py')
    doc = tmp_path / 'bench.md'
    doc.write_text('<!-- flops:begin -->\n' + '\n'.join(gf.HEADER) +
                   '\n| other-config | 224x224 | 1 |\n<!-- flops:end -->\n')
    lines = gf.main([config, '--update-doc', str(doc)])
    assert len(lines) == 1 and lines[0].startswith('| vision-llama-tiny-p8')
    text = doc.read_text()
    assert '| other-config |' in text and lines[0] in text
    cfg = gf.load_config(config)
    model = gf.build_backbone(cfg)
    assert type(model).__name__ == 'VisionLLaMA' and gf.input_size(cfg) == (64, 64)


@pytest.mark.parametrize('exact', [True, False])
def test_cpu_peak_memory_sees_a_transient_allocation(exact):
    bench = _load_tool('tools/benchmark.py')
    mem = bench.PeakMemory(torch.device('cpu'), exact=exact)
    if not mem.available:
        pytest.skip('the RSS measurement needs Linux /proc and glibc')

    def allocate():  # 64 MiB live at once, freed before returning
        t = torch.ones(16, 1024, 1024)
        t.add_(1)
        del t
    peak = mem.measure(allocate)
    if exact:  # tensor bytes: exactly the one storage (in-place add and views add none)
        assert peak == 64 * 2 ** 20
    else:
        assert 60 * 2 ** 20 < peak < 100 * 2 ** 20
    assert mem.measure(lambda: None) < 16 * 2 ** 20


def test_cpu_tensor_peak_counts_what_backward_keeps():
    """The exact CPU peak sees activations saved for backward: a chain of two
    [256, 1024] float32 tanh layers keeps both outputs until backward."""
    bench = _load_tool('tools/benchmark.py')
    x = torch.randn(256, 1024, requires_grad=True)
    one = 256 * 1024 * 4  # bytes of one activation

    def step(n):
        def run():
            y = x
            for _ in range(n):
                y = torch.tanh(y)
            y.sum().backward()
        return run
    mem = bench.PeakMemory(torch.device('cpu'))
    p2, p4 = mem.measure(step(2)), mem.measure(step(4))
    assert p4 - p2 == 2 * one  # two more kept activations, nothing else differs
    assert p2 >= 2 * one


def test_benchmark_ratio_quartiles_and_target_verdicts():
    bench = _load_tool('tools/benchmark.py')
    # per-round times: the model takes 1 s, the baseline 0.9 .. 1.3 s -> ratios 0.9 .. 1.3
    ours = [1.0] * 5
    base = [0.9, 1.0, 1.1, 1.2, 1.3]
    med, q1, q3 = bench._paired_ratios(ours, base)
    assert (med, q1, q3) == pytest.approx((1.1, 1.0, 1.2))
    assert bench.verdict(med, q1, q3, 1.0) == 'met'
    assert bench.verdict(med, q1, q3, 1.05) == 'within noise'
    assert bench.verdict(med, q1, q3, 1.25) == 'not met'
    assert bench._paired_ratio(ours, base) == pytest.approx(1.1)
    row = dict(key='pvllama-s@224', baseline='svt-s@224', train_ratio=med, train_q1=q1,
               train_q3=q3)
    assert bench._ratio(row, 'train') == '1.10 [1.00–1.20]'
    assert bench._ratio(dict(train_ratio=float('nan')), 'train') == '—'


_MALLOC_PROBE = r"""
import sys, torch
from _tool_loader import load_tool
mode = load_tool('tools/benchmark.py').set_malloc(sys.argv[1])
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) // 1024
x = torch.ones(64 << 18)  # 64 MiB, touched
before_free = rss()
del x
print(mode, before_free - rss())
"""


@pytest.mark.skipif(not osp.exists('/proc/self/status'), reason='Linux only')
@pytest.mark.parametrize('mode', ['retain', 'system'])
def test_benchmark_malloc_retain_keeps_freed_memory(mode):
    """``set_malloc('retain')`` (the CPU timing default) keeps a freed 64 MiB tensor in the
    process, so the next call does not page-fault on it again; ``'system'`` leaves glibc's
    defaults, which hand it back. In a subprocess: mallopt is process-wide."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=osp.join(ROOT, 'tests'))
    out = subprocess.run([sys.executable, '-c', _MALLOC_PROBE, mode], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    got, released_mib = out.stdout.split()[-2], int(out.stdout.split()[-1])
    assert got == mode
    if mode == 'retain':
        assert released_mib < 8  # kept
    else:
        assert released_mib > 56  # handed back (mmap'd block, unmapped on free)


def test_benchmark_ref_models_come_from_the_revision():
    """``--ref REV`` imports that revision's model package (whose models import engine
    helpers) without registering anything twice, and builds a backbone from it."""
    if not osp.isdir(osp.join(ROOT, '.git')):
        pytest.skip('needs the git checkout')
    bench = _load_tool('tools/benchmark.py')
    models, short = bench.load_ref_models('HEAD')
    assert models.__name__ == f'vllama_ref_{short}.models'
    assert models.VisionLLaMA is not VisionLLaMA
    net = models.VisionLLaMA(arch=dict(embed_dims=32, num_layers=1, num_heads=2),
                             img_size=32, patch_size=8)
    assert net(torch.randn(1, 3, 32, 32))[0].shape[0] == 1


def test_gpu_benchmark_command_runs_in_tiny_mode(tmp_path):
    """tools/benchmark_gpu.sh --tiny (CPU, tiny archs, compile through the eager backend)
    measures every model in both modes and writes its table, keeping the doc's text."""
    import re
    import subprocess
    import sys
    doc = tmp_path / 'benchmark.md'
    doc.write_text('# Benchmark\n\nkept text\n')
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run([osp.join(ROOT, 'tools', 'benchmark_gpu.sh'), '--tiny',
                           '--peak-tflops', '0.5', '--out-dir', str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith('# Benchmark\n\nkept text\n') and 'gpu-benchmark:begin' in text
    rows = [line for line in text.splitlines() if re.match(r'\| [A-Z].*, (eager|compiled) \|', line)]
    names = {r.split(' | ')[0][2:] for r in rows}
    expected = {'DiT-LLaMA-XL/2', 'DiT-XL/2', 'VisionLLaMA-B', 'Pyramid-VisionLLaMA-B'}
    try:
        import mmpretrain  # noqa: F401
        expected |= {'ViT-B/16', 'Twins SVT-B'}
    except ImportError:
        pass
    assert names == {f'{n}, {m}' for n in expected for m in ('eager', 'compiled')}
    for r in rows:
        cells = [c.strip() for c in r.strip('|').split('|')]
        img_s, mfu = float(cells[2]), float(cells[5].rstrip('%'))
        assert img_s > 0 and math.isfinite(img_s) and mfu > 0  # MFU from --peak-tflops
        if cells[0].startswith('DiT-LLaMA'):
            assert float(cells[3]) > 0  # ratio to the DiT-XL/2 peer, same mode


def test_benchmark_compiles_every_block_once_per_kind():
    """``tools/benchmark.py --compile blocks``: the same rule picks the transformer blocks of
    our models and of the peers (mmpretrain ViT, Twins SVT); the compiled blocks give the
    eager outputs, and our identical blocks share one graph (plain: one for all blocks;
    pyramid: one per stage and attention kind, LSA / GSA)."""
    from mmpretrain.models import SVT, VisionTransformer
    from torch._dynamo.utils import counters
    bench = _load_tool('tools/benchmark.py')
    svt_arch = dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 3, 4],
                    patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                    sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7])
    # (name, model, blocks compiled, graphs dynamo builds for them or None: the peer's own)
    cases = [
        ('ours plain', VisionLLaMA(TINY_PLAIN, img_size=64), TINY_PLAIN['num_layers'], 1),
        # stage 1: LSA, GSA, LSA, GSA -> 2 graphs; stages 2-4 one LSA block each
        ('ours pyramid', PyramidVisionLLaMA(dict(embed_dims=[32, 64, 96, 128],
                                                 depths=[4, 1, 1, 1]), img_size=64), 7, 5),
        ('mmpretrain ViT', VisionTransformer(dict(embed_dims=32, num_layers=3, num_heads=2,
                                                  feedforward_channels=64), img_size=64,
                                             patch_size=16), 3, None),
        ('Twins SVT', SVT(svt_arch), 5, None),
    ]
    for name, model, blocks, graphs in cases:
        model.eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            eager = model(x)
        torch._dynamo.reset()
        counters.clear()
        assert bench.compile_blocks(model, backend='eager') == blocks, name
        with torch.no_grad():
            compiled = model(x)
        for a, b in zip(eager, compiled):
            torch.testing.assert_close(a, b, msg=name)
        assert counters['stats']['calls_captured'] > 0, name  # dynamo did trace the blocks
        if graphs is not None:
            assert counters['stats']['unique_graphs'] == graphs, (name, dict(counters['stats']))
