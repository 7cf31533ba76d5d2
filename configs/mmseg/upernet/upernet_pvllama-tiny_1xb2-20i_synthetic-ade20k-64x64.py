# Tiny pyramid UperNet for trying MMSegmentation on a CPU in about a minute: the S recipe
# (upernet_pvllama-s_...) with a tiny backbone and heads, 64x64 crops, 20 iterations, no
# pretrained weights, on generated ADE20K-layout data:
#   python tools/generate_synthetic_data.py ade20k data/synthetic_ade20k
#   python tools/train.py configs/mmseg/upernet/upernet_pvllama-tiny_1xb2-20i_synthetic-ade20k-64x64.py
_base_ = ['./upernet_pvllama-s_8xb2-160k_ade20k-512x512.py']

data_root = 'data/synthetic_ade20k'
crop_size = (64, 64)
dims = [32, 64, 96, 128]  # head dim 32: 1, 2, 3, 4 heads
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a distributed run
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=dims, depths=[1, 1, 2, 1]),
                  drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=dims, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=dims[2], channels=16, norm_cfg=norm_cfg))

# ADE20K's pipelines with the (2048, 512) resize and 512 crop scaled to (256, 64) and 64.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=2, num_workers=1,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=1,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# the recipe's optimizer in fp32 (its fp16 AmpOptimWrapper needs a GPU)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        '.ln1.': dict(decay_mult=0.0),
        '.ln2.': dict(decay_mult=0.0),
        'norm': dict(decay_mult=0.0),
    }))
max_iters = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=2, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
