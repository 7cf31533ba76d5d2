"""MAE encoder: masking, RoPE gathered at kept positions, stock mmpretrain MAE neck/head."""
import pytest
import torch

from vllama_mm.models import VisionLLaMAMAE

TINY = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128)


def test_masking_keeps_a_quarter():
    m = VisionLLaMAMAE(TINY, img_size=64, mask_ratio=0.75).eval()
    latent, mask, ids_restore = m(torch.randn(3, 3, 64, 64))
    assert latent.shape == (3, 1 + 4, 64)  # 16 patches -> 4 kept + class token
    assert mask.shape == (3, 16) and torch.all(mask.sum(1) == 12)
    assert torch.all(ids_restore.sort(1).values == torch.arange(16))


def test_kept_tokens_keep_their_grid_position():
    """With nothing masked the encoder only shuffles tokens: its output must equal the
    unmasked forward, permuted — true only if each token keeps its own RoPE position."""
    torch.manual_seed(0)
    m = VisionLLaMAMAE(TINY, img_size=64, mask_ratio=0.0).eval()
    x = torch.randn(2, 3, 64, 80)
    latent, _, ids_restore = m(x, mask=True)
    full = m(x, mask=None)[0]  # out_type raw: [B, 1 + N, C]
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    expected = torch.gather(full[:, 1:], 1, ids_shuffle[..., None].expand(-1, -1, 64))
    torch.testing.assert_close(latent[:, 1:], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(latent[:, 0], full[:, 0], rtol=1e-5, atol=1e-5)
    # the class token is appended after the blocks (released-weights layout): changing it
    # changes only the class-token output
    with torch.no_grad():
        m.cls_token.add_(torch.randn_like(m.cls_token))
    full2 = m(x, mask=None)[0]
    torch.testing.assert_close(full2[:, 1:], full[:, 1:])
    assert not torch.allclose(full2[:, 0], full[:, 0])
    # and a model whose tables were NOT gathered would differ (the check can fail)
    m2 = VisionLLaMAMAE(TINY, img_size=64, mask_ratio=0.0, rope_type='none').eval()
    m2.load_state_dict(m.state_dict())
    assert not torch.allclose(m2(x, mask=None)[0], full, atol=1e-4)


def test_stock_mmpretrain_mae_trains_with_our_encoder():
    import vllama_mm.mmpretrain  # noqa: F401
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    model = MODELS.build(dict(
        type='MAE',
        backbone=dict(type='VisionLLaMAMAE', arch=TINY, img_size=64, patch_size=16,
                      mask_ratio=0.75),
        neck=dict(type='MAEPretrainDecoder', num_patches=16, patch_size=16, in_chans=3,
                  embed_dim=64, decoder_embed_dim=32, decoder_depth=1,
                  decoder_num_heads=2, mlp_ratio=2.0),
        head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=16,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2')),
        data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               to_rgb=True)))
    model.init_weights()
    x = torch.randn(2, 3, 64, 64)
    losses = model.loss(x, [DataSample() for _ in range(2)])
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    for name, p in model.backbone.named_parameters():
        assert p.grad is not None, name
    feats = model.extract_feat(x)
    assert feats[0].shape == (2, 17, 64)


def test_mask_ratio_validated():
    with pytest.raises(ValueError, match='mask_ratio'):
        VisionLLaMAMAE(TINY, mask_ratio=1.0)
