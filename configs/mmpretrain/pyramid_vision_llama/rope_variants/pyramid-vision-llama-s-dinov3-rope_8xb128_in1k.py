# Beyond the paper (not one of its rows): Pyramid VisionLLaMA-S supervised exactly as
# ../pyramid-vision-llama-s_8xb128_in1k.py, with DINOv3's RoPE (Simeoni et al. 2025,
# `RopePositionEmbedding`) on every LSA and GSA attention: coordinates normalised to
# [-1, 1] per axis ('separate'), periods base ** (4k / R) with base 100, training-time
# coordinate augmentation rescale_coords=2 as DINOv3's released models (off in eval).
# Only the RoPE changes.
_base_ = ['../pyramid-vision-llama-s_8xb128_in1k.py']

model = dict(
    backbone=dict(
        rope_type='dinov3',
        rope_theta=100.0,  # DINOv3's base
        rope_cfg=dict(normalize_coords='separate', rescale_coords=2.0)))
