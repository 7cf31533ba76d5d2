# Plain VisionLLaMA-B, supervised on ImageNet-1k at 192 px with the DeiT III recipe (the
# authors' command line for B): as the S config, but LAMB lr 3e-3, drop path 0.2 and 192 x 192
# training/evaluation crops (12 x 12 tokens; evaluation resizes to int(256 / 224 * 192) = 219
# first); 8 GPUs x 256 images, 800 epochs.
# Then fine-tune at 224 px for 20 epochs: vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py.
_base_ = './vision-llama-s-p16_8xb256-lamb-800e_in1k.py'

img_size = 192
model = dict(
    backbone=dict(
        arch='b',  # d 768, 12 layers, 12 heads, bias-free SwiGLU 2048, layer scale 1e-4
        img_size=img_size,  # AS2DRoPE anchor: the 12x12 pre-training grid
        drop_path_rate=0.2),
    head=dict(in_channels=768))

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

optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 3e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=795, eta_min=1e-5, by_epoch=True, begin=5, end=800,
         convert_to_iter_based=True),
]
