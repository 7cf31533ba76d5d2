# The README's main job: a tiny plain VisionLLaMA classifier trained on CPU in a couple
# of minutes on generated ImageNet-style folders (tools/generate_synthetic_data.py imagenet).
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

data_root = 'data/synthetic_imagenet'
num_classes = 10

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionLLaMA',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, layer_scale_init=0.1),
        img_size=64,
        patch_size=8,
        out_type='cls_token',
        drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=64,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, )))

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
