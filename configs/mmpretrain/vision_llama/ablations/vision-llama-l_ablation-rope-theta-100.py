# Table 11c: RoPE base theta 100 instead of 10000, VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(rope_theta=100.0))
