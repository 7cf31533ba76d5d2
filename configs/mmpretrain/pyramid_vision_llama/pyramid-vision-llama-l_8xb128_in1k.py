# Pyramid VisionLLaMA-L on ImageNet-1k: the S recipe (pyramid-vision-llama-s_8xb128_in1k.py) with
# drop path 0.5, still 8 GPUs x 128 images as the authors ran it. dims 128/256/512/1024, depths
# 2/2/18/2. Paper: 83.6 top-1 (released weights).
_base_ = './pyramid-vision-llama-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5),
    head=dict(in_channels=1024))
