# Beyond the paper (not one of its rows): plain VisionLLaMA-B supervised at 192 px exactly as
# ../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py, with DINOv3's RoPE (Simeoni et al.
# 2025, `RopePositionEmbedding`) in place of AS2DRoPE: patch-centre coordinates normalised
# to [-1, 1] per axis ('separate'), periods base ** (4k / R) with base 100, and the released
# models' training-time coordinate augmentation rescale_coords=2 (one log-uniform factor in
# [1/2, 2] per batch; off in eval). No learnable parameter. Only the RoPE changes.
_base_ = ['../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py']

model = dict(
    backbone=dict(
        rope_type='dinov3',
        rope_theta=100.0,  # DINOv3's base
        rope_cfg=dict(normalize_coords='separate', rescale_coords=2.0)))
