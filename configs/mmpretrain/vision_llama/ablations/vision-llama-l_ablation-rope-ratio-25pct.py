# Table 11b: RoPE on the first 25 % of each head's channels (authors' rpe_ratio=0.25),
# VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(rope_ratio=0.25))
