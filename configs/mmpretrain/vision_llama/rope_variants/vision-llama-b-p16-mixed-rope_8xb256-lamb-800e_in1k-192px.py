# Beyond the paper (not one of its rows): plain VisionLLaMA-B supervised at 192 px exactly as
# ../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py, with RoPE-Mixed (Heo et al. 2024,
# naver-ai rope-vit `RoPE-Mixed`, timm `RotaryEmbeddingMixed`) in place of AS2DRoPE:
# learnable x/y frequencies per layer, head and pair (backbone.rope.freqs), initialised as
# rope-vit with theta 10 (its choice for mixed), no weight decay on them (rope-vit's
# no_weight_decay). Only the RoPE changes.
_base_ = ['../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py']

model = dict(backbone=dict(rope_type='mixed', rope_theta=10.0))
# merged with the base's custom_keys ('.cls_token')
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.freqs': dict(decay_mult=0.0)}))
