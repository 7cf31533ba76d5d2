"""Released DiT-LLaMA / SiT-LLaMA dumps: convert, build from the registry, load strictly,
and match an independent float64 reference of the network written from its description."""
import argparse
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from vllama_mm.models.convert import dit as convert_dit
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))


def _tool():
    return load_tool('tools/model_converters/official2vllama.py', 'official2vllama')


D, DEPTH, HEADS, P, C, NCLS, GRID = 32, 2, 2, 2, 4, 5, 4  # tiny: head dim 16
HIDDEN = 48


def released_weights(seed: int, learn_sigma: bool = True):
    """Random weights in the released layout (every tensor non-zero)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    out_ch = 2 * C if learn_sigma else C
    sd = {'pos_embed': torch.zeros(1, GRID * GRID, D),
          'x_embedder.proj.weight': r(D, C, P, P), 'x_embedder.proj.bias': r(D),
          't_embedder.mlp.0.weight': r(D, 256), 't_embedder.mlp.0.bias': r(D),
          't_embedder.mlp.2.weight': r(D, D), 't_embedder.mlp.2.bias': r(D),
          'y_embedder.embedding_table.weight': r(NCLS + 1, D)}
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        sd.update({b + 'adaLN_modulation.1.weight': r(6 * D, D),
                   b + 'adaLN_modulation.1.bias': r(6 * D),
                   b + 'attn.qkv.weight': r(3 * D, D), b + 'attn.qkv.bias': r(3 * D),
                   b + 'attn.proj.weight': r(D, D), b + 'attn.proj.bias': r(D),
                   b + 'mlp.c_fc1.weight': r(HIDDEN, D), b + 'mlp.c_fc2.weight': r(HIDDEN, D),
                   b + 'mlp.c_proj.weight': r(D, HIDDEN)})
    sd.update({'final_layer.adaLN_modulation.1.weight': r(2 * D, D),
               'final_layer.adaLN_modulation.1.bias': r(2 * D),
               'final_layer.linear.weight': r(P * P * out_ch, D),
               'final_layer.linear.bias': r(P * P * out_ch)})
    return sd


def reference(W, x, t, y, return_sigma: bool):
    """float64 DiT-LLaMA forward from the description (released names)."""
    W = {k: v.double() for k, v in W.items()}
    x = x.double()
    B, _, H, Wd = x.shape
    h, w = H // P, Wd // P
    lin = lambda z, n: z @ W[n + '.weight'].T + W.get(n + '.bias', 0)  # noqa: E731
    ln = lambda z: F.layer_norm(z, (D,), eps=1e-6)  # noqa: E731
    tok = F.conv2d(x, W['x_embedder.proj.weight'], W['x_embedder.proj.bias'], stride=P)
    tok = tok.flatten(2).transpose(1, 2)  # [B, N, D]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    temb = lin(F.silu(lin(temb, 't_embedder.mlp.0')), 't_embedder.mlp.2')
    c = temb + W['y_embedder.embedding_table.weight'][y]
    # 2D RoPE: pair j uses x (j even) / y (j odd), frequency theta^(-4 (j//2) / Hc)
    hc = D // HEADS
    n = torch.arange(h * w)
    px, py = (n % w).double(), (n // w).double()
    ang = torch.stack([(px if j % 2 == 0 else py) * 10000.0 ** (-4 * (j // 2) / hc)
                       for j in range(hc // 2)], -1)  # [N, Hc/2]
    cos, sin = ang.cos(), ang.sin()

    def rot(z):  # [B, heads, N, Hc]
        a, b = z[..., 0::2], z[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)

    for i in range(DEPTH):
        pre = f'blocks.{i}.'
        m = lin(F.silu(c), pre + 'adaLN_modulation.1').chunk(6, -1)
        z = ln(tok) * (1 + m[1][:, None]) + m[0][:, None]
        q, k, v = lin(z, pre + 'attn.qkv').view(B, -1, 3, HEADS, hc).permute(2, 0, 3, 1, 4)
        q, k = rot(q), rot(k)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hc), -1) @ v
        tok = tok + m[2][:, None] * lin(a.transpose(1, 2).reshape(B, -1, D), pre + 'attn.proj')
        z = ln(tok) * (1 + m[4][:, None]) + m[3][:, None]
        mlp = lin(F.silu(lin(z, pre + 'mlp.c_fc1')) * lin(z, pre + 'mlp.c_fc2'), pre + 'mlp.c_proj')
        tok = tok + m[5][:, None] * mlp
    shift, scale = lin(F.silu(c), 'final_layer.adaLN_modulation.1').chunk(2, -1)
    out = lin(ln(tok) * (1 + scale[:, None]) + shift[:, None], 'final_layer.linear')
    co = out.shape[-1] // (P * P)
    out = out.view(B, h, w, P, P, co).permute(0, 5, 1, 3, 2, 4).reshape(B, co, H, Wd)
    return out if return_sigma else out[:, :C]


@pytest.mark.parametrize('family', ['dit', 'sit'])
def test_convert_build_load_strict_and_match_reference(tmp_path, family):
    import vllama_mm.generation  # noqa: F401  (registers DiTLLaMA)
    from mmengine.registry import DefaultScope
    from vllama_mm.generation.registry import MODELS
    ema, model = released_weights(0), released_weights(1)
    args = argparse.Namespace(model=f'{family.upper()}-LLaMA-tiny', image_size=64)
    if family == 'sit':
        args.path_type = 'Linear'
    src, dst = tmp_path / 'dump.pt', tmp_path / 'conv.pth'
    torch.save({'model': model, 'ema': ema, 'opt': {'state': {}}, 'args': args}, src)
    assert _tool().main([str(src), str(dst), '--num-heads', str(HEADS)]) == 0
    out = torch.load(dst, weights_only=True)
    meta = out['meta']['vllama_mm']
    assert meta['format'] == f'{family}-llama' and meta['weights'] == 'ema'
    assert all(k.startswith('denoiser.') for k in out['state_dict'])
    cfg = meta['denoiser']
    assert cfg['type'] == 'DiTLLaMA' and cfg['return_sigma'] == (family == 'dit')
    with DefaultScope.overwrite_default_scope('vllama_mm'):
        net = MODELS.build(cfg)
    sd = {k[len('denoiser.'):]: v for k, v in out['state_dict'].items()}
    net.load_state_dict(sd, strict=True)
    net = net.double().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, C, 8, 12, generator=g)  # non-square latent
    t = torch.tensor([7.0, 901.0]) if family == 'dit' else torch.tensor([0.3, 0.85])
    y = torch.tensor([1, NCLS])  # a class and the null label
    with torch.no_grad():
        ours = net(x.double(), t.double(), y)
    ref = reference(ema, x, t, y, return_sigma=family == 'dit')
    assert ours.shape == ref.shape == (2, 2 * C if family == 'dit' else C, 8, 12)
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-5, rel
    # the other weights differ
    assert (reference(model, x, t, y, family == 'dit') - ref).abs().max() > 1e-3


def test_convert_model_weights_and_errors(tmp_path):
    ema, model = released_weights(0), released_weights(1)
    dump = {'model': model, 'ema': ema, 'args': argparse.Namespace(model='DiT-LLaMA-B/4')}
    out = convert_dit.convert_dump(dump, weights='model', num_heads=HEADS)
    w12 = out['state_dict']['denoiser.blocks.1.mlp.w12.weight']
    assert torch.equal(w12, torch.cat([model['blocks.1.mlp.c_fc1.weight'],
                                       model['blocks.1.mlp.c_fc2.weight']]))
    assert 'denoiser.pos_embed' not in out['state_dict']
    # the same table read backwards gives the released tensors again, pos_embed aside
    back = convert_dit.to_official(out['state_dict'])
    assert sorted(back) == sorted(k for k in model if k != 'pos_embed')
    assert all(torch.equal(back[k], model[k]) for k in back)
    assert out['meta']['vllama_mm']['denoiser']['input_size'] == GRID * P
    with pytest.raises(convert_dit.ConversionError, match='--family'):
        convert_dit.convert_dump({'ema': ema}, num_heads=HEADS)
    with pytest.raises(convert_dit.ConversionError, match='--num-heads'):
        convert_dit.convert_dump(dump)
    with pytest.raises(convert_dit.ConversionError, match="no 'ema'"):
        convert_dit.convert_dump({'model': model, 'args': dump['args']}, num_heads=HEADS)


def test_released_sizes_are_recognised_on_meta():
    from vllama_mm.models.dit_llama import DiTLLaMA
    with torch.device('meta'):
        net = DiTLLaMA('XL', 2)
    sd = {}
    for k, v in net.state_dict().items():  # back to the released names
        if k.endswith('mlp.w12.weight'):
            gate, up = v.chunk(2)
            sd[k.replace('w12', 'c_fc1')], sd[k.replace('w12', 'c_fc2')] = gate, up
        else:
            sd[k.replace('mlp.w3', 'mlp.c_proj')] = v
    sd['pos_embed'] = torch.empty(1, 256, 1152, device='meta')
    out = convert_dit.convert_dump({'ema': sd}, family='sit')
    cfg = out['meta']['vllama_mm']['denoiser']
    assert (cfg['arch'], cfg['patch_size'], cfg['input_size'], cfg['num_classes']) == \
        ('XL', 2, 32, 1000)
    convert_dit.check_loads(out)


@pytest.mark.parametrize('arch,patch,millions', [
    ('B', 4, 130.38), ('L', 4, 464.16), ('XL', 4, 674.84), ('XL', 2, 674.67),
    ('S', 2, 32.84), ('B', 2, 130.27), ('L', 2, 464.01)])
def test_parameter_counts_match_the_paper_rows(arch, patch, millions):
    from vllama_mm.models.dit_llama import DiTLLaMA
    with torch.device('meta'):
        net = DiTLLaMA(arch, patch, num_classes=1000, input_size=32)
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert round(n / 1e6, 2) == millions


def test_options_of_the_other_kind_of_file_are_refused(tmp_path, capsys):
    """One command line for both kinds of file: an option that does not apply to the
    file given is one error line naming it (exit 1), never silently ignored."""
    src, dst = tmp_path / 'dump.pt', tmp_path / 'conv.pth'
    torch.save({'ema': released_weights(0), 'args': argparse.Namespace(model='DiT-tiny')}, src)
    assert _tool().main([str(src), str(dst), '--num-heads', str(HEADS), '--rope', 'as2d']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and '--rope does not apply' in err and not dst.exists()
    backbone = tmp_path / 'plain.pth'
    torch.save({'model': {'patch_embed.proj.weight': torch.zeros(64, 3, 16, 16),
                          'blocks.0.mlp.c_fc1.weight': torch.zeros(8, 64)}}, backbone)
    assert _tool().main([str(backbone), str(dst), '--weights', 'model']) == 1
    err = capsys.readouterr().err
    assert 'not a DiT-LLaMA / SiT-LLaMA dump: --weights does not apply' in err
    assert not dst.exists()
