# Plain VisionLLaMA-S, supervised on ImageNet-1k with the DeiT III recipe (paper §ImageNet
# supervised, plain models; the authors' command line for S): class token, 3-Augment, binary
# cross-entropy with Mixup 0.8 / CutMix 1.0, LAMB lr 4e-3 (not rescaled by batch size), wd 0.05,
# 800 epochs with a 5-epoch warm-up and cosine decay to 1e-5, drop path 0.05, layer scale 1e-4,
# repeated augmentation (3 repeats), 224 px, 8 GPUs x 256 images = 2048 per iteration.
# Evaluation as the authors' DeiT code evaluates: short side resized to int(256 / 224 * size),
# then a centre crop of `size` (ratio 0.875; their `--eval-crop-ratio 1.0` is parsed but never
# read), every epoch; the reported number is the best epoch (`save_best`). Same drop-path rate
# in every block (their plain models have no stochastic-depth decay). bf16 autocast as their
# training loop (AmpOptimWrapper, dtype bfloat16; needs a GPU with bf16).
#
# Known difference from DeiT III: its BCE binarises the mixed targets (every class with a
# non-zero Mixup/CutMix weight becomes 1); mmpretrain's CrossEntropyLoss(use_sigmoid=True) uses
# the soft Mixup/CutMix targets as they are.
#
# This file is also the base of the B and L configs in this folder.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_deit3_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs4096_AdamW.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

# ---------------------------------------------------------------- model
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionLLaMA',
        arch='s',  # d 384, 12 layers, 6 heads, bias-free SwiGLU 1024, layer scale 1e-4
        img_size=224,  # AS2DRoPE anchor: the 14x14 training grid
        patch_size=16,
        with_cls_token=True,
        # the authors' plain models rotate the class token too, at t = -1 of the flattened
        # grid (x = G-1, y = -1); 'none' would leave it unrotated
        cls_token_rope='official',
        out_type='cls_token',
        drop_path_rate=0.05,
        drop_path_schedule='uniform'),  # DeiT III: no stochastic-depth decay
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        # DeiT III's BCEWithLogitsLoss averages over batch x classes; mmpretrain's head sums
        # over classes and averages over the batch, hence loss_weight = 1 / num_classes.
        # The scale matters: LAMB clips the global gradient norm at 1.0.
        loss=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1 / 1000),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

# ---------------------------------------------------------------- data
# 3-Augment (DeiT III): random-resized crop + flip, then exactly one of grayscale / solarize /
# Gaussian blur (radius uniform in [0.1, 2]), then colour jitter 0.3. No RandAugment, no
# random erasing. Images are BGR until the data preprocessor (to_rgb=True).
img_size = 224
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
            dict(
                type='GaussianBlur',
                magnitude_range=(0.1, 2.0),
                magnitude_level=10,
                total_level=10,
                magnitude_std='inf',  # uniform in [0, level] -> radius uniform in [0.1, 2]
                prob=1.0),
        ]),
    dict(type='ColorJitter', brightness=0.3, contrast=0.3, saturation=0.3),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # DeiT's eval transform: resize to int(256 / 224 * size), centre crop size
    dict(type='ResizeEdge', scale=int(256 / 224 * img_size), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,
    num_workers=10,
    persistent_workers=True,
    drop_last=True,  # as DeiT's training loader
    # DeiT's repeated augmentation: each image 3 times per epoch, spread over the GPUs
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=3),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=256, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# ---------------------------------------------------------------- schedule
# LAMB as the authors' `--opt fusedlamb` (betas 0.9/0.999, global grad-norm clip 1.0 inside
# LAMB; eps 1e-8: timm passes the script's `--opt-eps` default to the optimizer); no weight
# decay on 1-D parameters (norms, biases, layer scale) nor on the class token. bf16 autocast.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='Lamb', lr=4e-3, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0)}))

max_epochs = 800
warmup_epochs = 5
param_scheduler = [
    # warm-up from 1e-6 (DeiT's warmup_lr) to the base lr
    dict(
        type='LinearLR',
        start_factor=1e-6 / 4e-3,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-5,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]

# validated every epoch; the best top-1 checkpoint is kept (the authors report the best epoch)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)

default_hooks = dict(checkpoint=dict(
    type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3,
    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)

# The lr is the authors' absolute value for 8 x 256 = 2048 images per iteration
# (`--auto-scale-lr` rescales it linearly for other batch sizes).
auto_scale_lr = dict(base_batch_size=2048)
