# Table 11f: a learnable absolute position embedding per stage (after each patch embedding) on
# top of RoPE, Pyramid VisionLLaMA-S.
_base_ = ['../pyramid-vision-llama-s_8xb128_in1k.py']

model = dict(backbone=dict(abs_pos_embed='learnable'))
# no weight decay on the embedding (timm/PVT convention)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.pos_embeds': dict(decay_mult=0.0)}))
