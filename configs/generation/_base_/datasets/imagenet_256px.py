# ImageNet train/ as a class-folder (ADM centre crop to 256, random flip); the VAE encodes
# every step, as the authors. 8 GPUs x 32 = batch 256.
data_root = 'data/imagenet'
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ClassImageFolder', data_root=data_root, data_prefix='train',
                 image_size=256, flip=True))
