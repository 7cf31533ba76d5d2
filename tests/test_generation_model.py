"""DiTLLaMA denoiser features: adaLN-Zero init, output channels, RoPE variants,
non-square latents, label dropout, both classifier-free guidance variants, errors; and the
generators' samplers end to end on a tiny network."""
import pytest
import torch

from vllama_mm.models.dit_llama import DiTLLaMA, timestep_embedding

TINY = dict(embed_dims=32, num_layers=2, num_heads=2)


def tiny(**kw) -> DiTLLaMA:
    torch.manual_seed(0)
    net = DiTLLaMA(dict(TINY), kw.pop('patch_size', 2), input_size=kw.pop('input_size', 8),
                   num_classes=5, **kw)
    for p in net.parameters():  # leave adaLN-Zero: make every output depend on everything
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def test_adaln_zero_init_outputs_zero_and_channels():
    torch.manual_seed(0)
    dit = DiTLLaMA(dict(TINY), 2, input_size=8, num_classes=5)
    x = torch.randn(2, 4, 8, 8)
    out = dit(x, torch.tensor([1, 999]), torch.tensor([0, 4]))
    assert out.shape == (2, 8, 8, 8) and torch.all(out == 0)  # zero final layer
    sit = DiTLLaMA(dict(TINY), 2, input_size=8, num_classes=5, return_sigma=False)
    assert sit(x, torch.tensor([0.1, 0.9]), torch.tensor([0, 4])).shape == (2, 4, 8, 8)
    nosig = DiTLLaMA(dict(TINY), 2, input_size=8, num_classes=5, learn_sigma=False)
    assert nosig.final_layer.linear.out_features == 2 * 2 * 4


def test_timestep_embedding_is_cos_then_sin():
    e = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(e[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


def test_rope_2d_vs_as2d_and_non_square():
    a, b = tiny(rope_type='2d'), tiny(rope_type='as2d')
    b.load_state_dict(a.state_dict())
    t, y = torch.tensor([5, 600]), torch.tensor([1, 2])
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(a(x, t, y), b(x, t, y), atol=1e-6)  # equal at the anchor
        x2 = torch.randn(2, 4, 8, 16)  # non-square, larger: positions differ
        oa, ob = a(x2, t, y), b(x2, t, y)
    assert oa.shape == (2, 8, 8, 16) and not torch.allclose(oa, ob, atol=1e-4)
    # a token's output depends on its position (RoPE is not permutation invariant globally)
    with torch.no_grad():
        flipped = a(x2.flip(-1), t, y).flip(-1)
    assert not torch.allclose(oa, flipped, atol=1e-4)


def test_label_dropout_and_null_class():
    net = tiny(class_dropout_prob=0.5)
    y = torch.tensor([1, 2, 3, 4] * 64)
    emb = net.y_embedder
    emb.train()
    torch.manual_seed(0)
    out = emb(y)
    null = emb.embedding_table.weight[5]
    dropped = (out == null).all(-1).float().mean().item()
    assert 0.35 < dropped < 0.65
    emb.eval()
    assert not (emb(y) == null).all(-1).any()  # no dropout in eval
    forced = emb(y[:2], force_drop=torch.tensor([True, False]))
    assert torch.equal(forced[0], null) and torch.equal(forced[1], emb.embedding_table.weight[2])
    no_null = DiTLLaMA(dict(TINY), 2, input_size=8, num_classes=5, class_dropout_prob=0.0)
    assert no_null.y_embedder.embedding_table.num_embeddings == 5
    with pytest.raises(ValueError, match='class_dropout_prob'):
        no_null.y_embedder(y[:2], force_drop=torch.tensor([True, False]))


@pytest.mark.parametrize('variant', ['first3', 'all'])
def test_classifier_free_guidance(variant):
    net = tiny(cfg_channels=variant)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 100, 100, 100])
    y = torch.tensor([1, 3, 5, 5])  # labels then null
    with torch.no_grad():
        out = net.forward_with_cfg(torch.cat([x, x]), t, y, 4.0)
        cond = net(x, t[:2], y[:2])
        uncond = net(x, t[:2], y[2:])
    n = 3 if variant == 'first3' else 4
    want = uncond[:, :n] + 4.0 * (cond[:, :n] - uncond[:, :n])
    assert torch.allclose(out[:2, :n], want, atol=1e-5)
    assert torch.allclose(out[2:, :n], want, atol=1e-5)
    assert torch.allclose(out[:2, n:], cond[:, n:], atol=1e-5)  # unguided channels
    with torch.no_grad():  # scale 1 is the conditional output
        assert torch.allclose(net.forward_with_cfg(torch.cat([x, x]), t, y, 1.0)[:2],
                              cond, atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match='unknown arch'):
        DiTLLaMA('XXL')
    with pytest.raises(ValueError, match='cfg_channels'):
        DiTLLaMA(dict(TINY), 2, input_size=8, cfg_channels='some')
    with pytest.raises(ValueError, match='not divisible by patch_size'):
        DiTLLaMA(dict(TINY), 3, input_size=8)
    net = tiny()
    with pytest.raises(ValueError, match='not divisible by patch_size'):
        net(torch.randn(1, 4, 8, 7), torch.tensor([1]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r'expects latents \[B, 4'):
        net(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([1]))


@pytest.mark.parametrize('kind,sampler', [
    ('DiTGenerator', dict(type='ddpm', num_steps=5)),
    ('DiTGenerator', dict(type='ddim', num_steps=5)),
    ('SiTGenerator', dict(type='sde', num_steps=5)),
    ('SiTGenerator', dict(type='euler', num_steps=3)),
    ('SiTGenerator', dict(type='heun', num_steps=3))])
def test_generators_loss_and_sampling(kind, sampler):
    import vllama_mm.generation  # noqa: F401
    from mmengine.registry import DefaultScope
    from vllama_mm.generation.registry import MODELS
    cfg = dict(type=kind, sampler=sampler, vae=dict(kind='identity'),
               denoiser=dict(type='DiTLLaMA', arch=dict(TINY), patch_size=4, in_channels=3,
                             input_size=16, num_classes=5,
                             return_sigma=kind == 'DiTGenerator'))
    with DefaultScope.overwrite_default_scope('vllama_mm'):
        model = MODELS.build(cfg)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    losses = model(inputs=images, labels=torch.tensor([0, 1, 4]), mode='loss')
    assert losses['loss'].requires_grad and losses['loss'].item() > 0
    losses['loss'].backward()
    imgs = model.sample(torch.tensor([1, 2]), latent_hw=(16, 8), cfg_scale=1.5,
                        generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 3, 16, 8) and torch.isfinite(imgs).all()
    with pytest.raises(ValueError, match='exactly one of'):
        model(labels=torch.tensor([0]), mode='loss')


def test_generator_family_mismatch_is_an_error():
    import vllama_mm.generation  # noqa: F401
    from vllama_mm.generation import DiTGenerator, SiTGenerator
    den = dict(type='DiTLLaMA', arch=dict(TINY), patch_size=2, input_size=8, num_classes=5)
    with pytest.raises(ValueError, match='return_sigma=False'):
        SiTGenerator(dict(den, return_sigma=True))
    with pytest.raises(ValueError, match='learn_sigma=True'):
        DiTGenerator(dict(den, return_sigma=False))
    with pytest.raises(ValueError, match='sampler type'):
        DiTGenerator(den, sampler=dict(type='sde'))


def test_tiny_vae_roundtrip_shapes():
    pytest.importorskip('diffusers')
    from vllama_mm.generation.vae import LatentCodec
    codec = LatentCodec(kind='tiny')
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    m = codec.moments(x)
    assert m.shape == (2, 8, 8, 8) and codec.latent_shape((16, 16)) == (4, 8, 8)
    assert codec.decode(codec.encode(x)).shape == x.shape


def test_generator_with_the_tiny_vae():
    pytest.importorskip('diffusers')
    import vllama_mm.generation  # noqa: F401
    from vllama_mm.generation import DiTGenerator
    model = DiTGenerator(
        dict(type='DiTLLaMA', arch=dict(TINY), patch_size=2, in_channels=4, input_size=8,
             num_classes=5), vae=dict(kind='tiny'), sampler=dict(num_steps=3))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    z = model.latents(inputs=images)
    assert z.shape == (2, 4, 8, 8)
    assert model(inputs=images, labels=torch.tensor([1, 2]))['loss'].requires_grad
    assert all(k.startswith('denoiser.') for k in model.state_dict())  # VAE not saved
    out = model.sample(torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 16)


def test_vae_path_errors():
    from vllama_mm.generation.vae import LatentCodec, _looks_local
    with pytest.raises(FileNotFoundError, match='VAE directory not found'):
        LatentCodec(kind='sd', path='/no/such/sd-vae')
    assert not _looks_local('stabilityai/sd-vae-ft-ema') and _looks_local('./models/vae')
    with pytest.raises(ValueError, match='VAE kind'):
        LatentCodec(kind='vqgan')
