# Beyond the paper (not one of its rows): YaRN / NTK-by-parts (Peng et al. 2023) is a
# test-time extrapolation. Trains Pyramid VisionLLaMA-S at 224 px exactly as
# ../pyramid-vision-llama-s_8xb128_in1k.py but with rope_type='yarn', which at or below
# the anchor grids (the 56/28/14/7 stage grids at 224 px) IS plain 2D RoPE: training and
# the per-epoch validation at 224 px run 2D RoPE. The test loader evaluates at 448 px
# (scale s = 2 per axis on the global GSA tables; window-local LSA tables keep their 7 x 7
# size), with YaRN's wavelength ramp (beta_fast 32, beta_slow 1) and mscale 0.1 ln s + 1.
# Only the RoPE and the test size change.
_base_ = ['../pyramid-vision-llama-s_8xb128_in1k.py']

model = dict(backbone=dict(rope_type='yarn', rope_cfg=dict(beta_fast=32.0, beta_slow=1.0)))

test_size = 448
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(256 / 224 * test_size), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
    dict(type='PackInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
