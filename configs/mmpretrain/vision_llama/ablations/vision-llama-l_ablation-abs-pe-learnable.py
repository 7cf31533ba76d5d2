# Authors' use_abs=True, lr_pe=True: a learnable absolute position embedding on top of RoPE,
# VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(abs_pos_embed='learnable'))
# no weight decay on the embedding (timm/PVT convention)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.pos_embed': dict(decay_mult=0.0)}))
