# Pyramid VisionLLaMA-B on ImageNet-1k: the S recipe (pyramid-vision-llama-s_8xb128_in1k.py) with
# drop path 0.3. dims 96/192/384/768, depths 2/2/18/2. Paper: 83.2 top-1 (released weights).
_base_ = './pyramid-vision-llama-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.3),
    head=dict(in_channels=768))
