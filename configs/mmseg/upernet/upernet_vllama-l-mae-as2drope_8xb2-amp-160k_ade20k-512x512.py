# Variant of upernet_vllama-l-mae_8xb2-amp-160k_ade20k-512x512.py (not the authors' run):
# AS2DRoPE anchored at the 14x14 MAE pre-training grid instead of plain 2D RoPE over the
# 32x32 fine-tuning grid. Same weights, a different network.
_base_ = ['./upernet_vllama-l-mae_8xb2-amp-160k_ade20k-512x512.py']

model = dict(backbone=dict(img_size=224, rope_type='as2d'))
