# Table 11d: one RoPE over the full embedding width, each head its slice (authors'
# share_rpe=False), VisionLLaMA-L.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(backbone=dict(rope_shared=False))
