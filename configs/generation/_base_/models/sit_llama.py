# SiT-LLaMA: the same denoiser returning the velocity (C channels), linear interpolant
# with velocity loss, Euler-Maruyama SDE sampling (250 steps, last "Mean" step 0.04).
model = dict(
    type='SiTGenerator',
    denoiser=dict(type='DiTLLaMA', arch='XL', patch_size=2, in_channels=4, input_size=32,
                  num_classes=1000, class_dropout_prob=0.1, learn_sigma=True,
                  return_sigma=False, rope_type='2d', cfg_channels='first3'),
    vae=dict(kind='sd', path='stabilityai/sd-vae-ft-ema'),
    sampler=dict(type='sde', num_steps=250, last_step_size=0.04))
