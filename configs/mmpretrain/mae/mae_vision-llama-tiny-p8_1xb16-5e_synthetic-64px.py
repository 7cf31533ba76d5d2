# Tiny MAE pre-training for trying it on a CPU in about a minute: the B recipe
# (mae_vision-llama-b-p16_..._800e: stock mmpretrain MAE with our VisionLLaMAMAE encoder, mask
# ratio 0.75, norm_pix loss, AdamW betas (0.9, 0.95)) with a tiny encoder and decoder, 64 px
# images, patch 8, 5 epochs, fp32, on generated ImageNet-style folders:
#   python tools/generate_synthetic_data.py imagenet data/synthetic_imagenet
#   python tools/train.py configs/mmpretrain/mae/mae_vision-llama-tiny-p8_1xb16-5e_synthetic-64px.py
_base_ = './mae_vision-llama-b-p16_8xb512-amp-coslr-800e_in1k.py'

data_root = 'data/synthetic_imagenet'
img_size = 64
patch_size = 8
dim = 64
model = dict(
    backbone=dict(
        arch=dict(_delete_=True,  # a custom arch dict replaces the base's preset name
                  embed_dims=dim, num_layers=4, num_heads=2, feedforward_channels=128,
                  ffn_bias=True),
        img_size=img_size,
        patch_size=patch_size),
    neck=dict(num_patches=(img_size // patch_size)**2, patch_size=patch_size, embed_dim=dim,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0),
    head=dict(patch_size=patch_size))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline=train_pipeline))

# fp32 (AMP needs a GPU); the recipe's lr for batch 4096 scaled to 16, warm-up 1 epoch
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-4 * 16 / 256, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'ln': dict(decay_mult=0.0),
        'bias': dict(decay_mult=0.0),
        'mask_token': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=4, by_epoch=True, begin=1, end=5,
         convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=5)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=5, max_keep_ckpts=1))
randomness = dict(seed=0, diff_rank_seed=True)
resume = False  # the recipe resumes by default; a tiny run starts fresh
auto_scale_lr = dict(base_batch_size=16)
