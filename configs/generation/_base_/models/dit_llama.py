# DiT-LLaMA: adaLN-Zero VisionLLaMA denoiser on SD-VAE latents (256 px -> 32x32x4), IDDPM
# hybrid loss on a linear-beta 1000-step diffusion, 250-step DDPM sampling.
model = dict(
    type='DiTGenerator',
    denoiser=dict(type='DiTLLaMA', arch='XL', patch_size=2, in_channels=4, input_size=32,
                  num_classes=1000, class_dropout_prob=0.1, learn_sigma=True,
                  return_sigma=True, rope_type='2d', cfg_channels='first3'),
    vae=dict(kind='sd', path='stabilityai/sd-vae-ft-ema'),
    num_timesteps=1000,
    sampler=dict(type='ddpm', num_steps=250))
