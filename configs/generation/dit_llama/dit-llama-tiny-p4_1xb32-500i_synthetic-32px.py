# Tiny DiT-LLaMA on generated class images in pixel space (no VAE download): the CPU
# demo of docs/generation.md and the Runner test. 4 classes, 32x32 RGB, patch 4 (64 tokens).
# DDPM's noise prediction needs more steps than SiT's velocity: 500 iterations, lr 2e-3.
_base_ = ['../_base_/models/dit_llama.py', '../_base_/default_runtime.py']

num_classes = 4
model = dict(
    denoiser=dict(arch=dict(_delete_=True, embed_dims=96, num_layers=4, num_heads=4),
                  patch_size=4,
                  in_channels=3, input_size=32, num_classes=num_classes),
    vae=dict(_delete_=True, kind='identity'),
    sampler=dict(num_steps=100, clip_denoised=True))  # pixel space: clip x_0 as ADM
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='SyntheticClassImages', num_classes=num_classes, num_per_class=64,
                 image_size=32, seed=0))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.0))
custom_hooks = [dict(type='EMAHook', momentum=0.02, update_buffers=False,
                     priority='ABOVE_NORMAL')]  # short run: decay 0.98
train_cfg = dict(max_iters=500)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=500, max_keep_ckpts=1))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
