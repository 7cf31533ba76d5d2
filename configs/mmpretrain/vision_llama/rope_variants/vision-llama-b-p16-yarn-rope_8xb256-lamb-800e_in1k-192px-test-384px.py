# Beyond the paper (not one of its rows): YaRN / NTK-by-parts (Peng et al. 2023) is a
# test-time extrapolation. Trains plain VisionLLaMA-B at 192 px exactly as
# ../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py but with rope_type='yarn', which at or
# below the anchor grid (12 x 12, the 192 px training grid) IS plain 2D RoPE: training and
# the per-epoch validation at 192 px run 2D RoPE. The test loader evaluates at 384 px
# (24 x 24 tokens, scale s = 2 per axis), where YaRN blends each frequency between
# interpolation (f / s) and extrapolation (f) by its wavelength (beta_fast 32, beta_slow 1)
# and scales cos/sin by 0.1 ln s + 1. Only the RoPE and the test size change.
_base_ = ['../vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py']

model = dict(backbone=dict(rope_type='yarn', rope_cfg=dict(beta_fast=32.0, beta_slow=1.0)))

test_size = 384
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(256 / 224 * test_size), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
    dict(type='PackInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
