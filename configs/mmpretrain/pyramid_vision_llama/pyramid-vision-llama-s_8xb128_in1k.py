# Pyramid VisionLLaMA-S (Twins-SVT layout, RoPE/SwiGLU blocks, no conditional position encoding)
# supervised on ImageNet-1k, the authors' Twins/DeiT recipe: 300 epochs, AdamW lr 1e-3 for
# 8 GPUs x 128 = 1024 images (5e-4 x 1024 / 512), wd 0.05 (none on norms, biases, layer scale),
# 5 warm-up epochs from 1e-6, cosine to 1e-5, RandAugment m9 (mstd 0.5, increasing), random
# erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, drop path 0.2, no gradient clipping
# (the authors' default; mmpretrain's Twins configs clip at 5), bf16 autocast as their training
# loop (AmpOptimWrapper, dtype bfloat16; needs a GPU with bf16). Evaluation as their DeiT code:
# resize 256, centre crop 224, every epoch; the reported number is the best epoch (save_best).
# Paper: 81.6 top-1 (released weights). Also the base of the B and L configs.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PyramidVisionLLaMA',
        arch='s',  # dims 64/128/256/512, depths 2/2/10/4, head dim 32, layer scale 1e-4
        img_size=224,  # AS2DRoPE anchors: the 56/28/14/7 stage grids at 224 px
        out_type='avg_featmap',  # GAP of the last stage, then LayerNorm
        drop_path_rate=0.2),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

train_dataloader = dict(batch_size=128, drop_last=True)  # as DeiT's training loader
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(
        type='AdamW',
        lr=5e-4 * 128 * 8 / 512,  # 1e-3 for 8 GPUs x 128 images
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

default_hooks = dict(checkpoint=dict(
    type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)
