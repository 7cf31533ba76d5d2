# Table 11f: a PEG (depth-wise 3x3 conv, x + conv(x)) after the first block of each stage on top
# of RoPE (authors' use_peg), Pyramid VisionLLaMA-S.
_base_ = ['../pyramid-vision-llama-s_8xb128_in1k.py']

model = dict(backbone=dict(use_peg=True))
