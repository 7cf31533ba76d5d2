# Authors' use_abs=True, lr_pe=False: a fixed 2D sin-cos position embedding on top of RoPE,
# VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(abs_pos_embed='sincos'))
