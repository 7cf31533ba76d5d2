# Beyond the paper (not one of its rows): Pyramid VisionLLaMA-S supervised exactly as
# ../pyramid-vision-llama-s_8xb128_in1k.py, with RoPE-Mixed (Heo et al. 2024, naver-ai
# rope-vit `RoPE-Mixed`, timm `RotaryEmbeddingMixed`) on every LSA and GSA attention:
# learnable x/y frequencies per block, head and pair (one tensor per stage,
# backbone.ropes.<stage>.freqs), initialised as rope-vit with theta 10, no weight decay on
# them (rope-vit's no_weight_decay). Only the RoPE changes.
_base_ = ['../pyramid-vision-llama-s_8xb128_in1k.py']

model = dict(backbone=dict(rope_type='mixed', rope_theta=10.0))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.freqs': dict(decay_mult=0.0)}))
