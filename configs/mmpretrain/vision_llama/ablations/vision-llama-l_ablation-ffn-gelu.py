# Table 11a: the ViT MLP (GELU, hidden 4d, biased) instead of SwiGLU, VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(mlp_type='gelu'))
