# Variant of upernet_vllama-b-mae_8xb2-amp-160k_ade20k-512x512.py (not the paper row): the
# backbone's RoPE is AS2DRoPE anchored at the 14x14 MAE pre-training grid, so the 32x32
# grid of the 512 crops is mapped into the span the weights were pre-trained on instead of
# extending positions to 0..31. Same weights, a different network: compare with the
# paper-row config before reporting numbers.
_base_ = ['./upernet_vllama-b-mae_8xb2-amp-160k_ade20k-512x512.py']

model = dict(backbone=dict(img_size=224, rope_type='as2d'))
