# Fine-tune the 192-px VisionLLaMA-B (vision-llama-b-p16_8xb256-lamb-800e_in1k-192px.py) at 224 px
# for 20 epochs, as the authors' B fine-tuning command: AdamW lr 1e-5 (not rescaled), wd 0.1,
# 5 warm-up epochs from 1e-6 (the cosine then stays at its 1e-5 floor), label smoothing 0.1 with
# Mixup 0.8 / CutMix 1.0, RandAugment m9 (mstd 0.5, increasing), no random erasing, no repeated
# augmentation, drop path 0.2 in every block; 8 GPUs x 64 images; bf16 autocast as their
# training loop. Evaluated every epoch as their DeiT code evaluates (resize 256, centre crop
# 224: their `--eval-crop-ratio 1.0` is never read); the best epoch is kept (`save_best`).
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

# the last checkpoint of the 192-px pre-training run
checkpoint = 'work_dirs/vision-llama-b-p16_8xb256-lamb-800e_in1k-192px/epoch_800.pth'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionLLaMA',
        arch='b',
        # AS2DRoPE anchor choice: img_size=224 anchors RoPE at the 14x14 fine-tuning grid, i.e.
        # plain 2D RoPE at 224 px (positions 0..13, extending the 0..11 seen at 192 px), as the
        # authors' fine-tuning builds its model at 224. The fine-tuned model is then "native" at
        # 224 and downstream inputs are auto-scaled into the 14x14 span. (rope_anchor=(12, 12)
        # would instead squeeze the 224-px grid into the 192-px span.)
        img_size=224,
        patch_size=16,
        with_cls_token=True,
        # the authors' plain models rotate the class token too, at t = -1 of the flattened
        # grid (x = G-1, y = -1); 'none' would leave it unrotated
        cls_token_rope='official',
        out_type='cls_token',
        drop_path_rate=0.2,
        drop_path_schedule='uniform',  # DeiT III: no stochastic-depth decay
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5),
        # the authors' `--finetune` keeps the pre-trained classifier too (same 1000 classes)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='head.')),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

# RandAugment m9 as the base, without its random erasing (the authors pass --reprob 0.0)
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # DeiT's eval transform: resize to int(256 / 224 * 224), centre crop 224
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, drop_last=True,  # as DeiT's training loader
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1e-5, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=15, eta_min=1e-5, by_epoch=True, begin=5, end=20,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=1)

default_hooks = dict(checkpoint=dict(
    type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)
auto_scale_lr = dict(base_batch_size=512)
