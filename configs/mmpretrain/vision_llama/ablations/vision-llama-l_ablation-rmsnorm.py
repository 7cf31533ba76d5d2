# Table 11g: the authors' RMSNorm (eps 1e-6, learnable weight) for the block and final norms,
# VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(norm_type='rmsnorm'))
