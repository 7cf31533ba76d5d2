# Plain VisionLLaMA-L, supervised on ImageNet-1k at 128 px with the DeiT III recipe (the
# authors' command line for L): as the S config, but drop path 0.45, 128 x 128 crops (8 x 8
# tokens; evaluation resizes to int(256 / 224 * 128) = 146 first); 8 GPUs x 256 images, 800
# epochs. That command does not pass `--unscale-lr`, so their script scales `--lr 3e-3` by
# 2048 / 512: LAMB lr 1.2e-2 (S and B pass it: 4e-3 / 3e-3 as given). It does not set
# `--reprob 0` either, but with `--ThreeAugment` the 3-Augment transform replaces the whole
# training transform, random erasing included: no random erasing, as S and B.
# Then fine-tune at 224 px for 20 epochs: vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py.
_base_ = './vision-llama-s-p16_8xb256-lamb-800e_in1k.py'

img_size = 128
model = dict(
    backbone=dict(
        arch='l',  # d 1024, 24 layers, 16 heads, bias-free SwiGLU 2816, layer scale 1e-4
        img_size=img_size,  # AS2DRoPE anchor: the 8x8 pre-training grid
        drop_path_rate=0.45),
    head=dict(in_channels=1024))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandomChoice',
        transforms=[
            dict(type='RandomGrayscale', prob=1.0, keep_channels=True, color_format='bgr'),
            dict(type='Solarize', thr=128, prob=1.0),
            dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_level=10,
                 total_level=10, magnitude_std='inf', prob=1.0),
        ]),
    dict(type='ColorJitter', brightness=0.3, contrast=0.3, saturation=0.3),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(256 / 224 * img_size), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

lr = 3e-3 * 256 * 8 / 512  # DeiT's linear scaling (no --unscale-lr): 1.2e-2
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / lr, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=795, eta_min=1e-5, by_epoch=True, begin=5, end=800,
         convert_to_iter_based=True),
]
