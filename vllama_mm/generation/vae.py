"""Image <-> latent codecs for the generators.

* ``kind='sd'``: diffusers' ``AutoencoderKL`` from a local directory or a hub id
  (``stabilityai/sd-vae-ft-ema`` as the authors; ``-mse`` for decoding is a choice),
  latents scaled by 0.18215;
* ``kind='tiny'``: a small randomly initialised ``AutoencoderKL`` (tests, demos; no
  download), downsampling by 2;
* ``kind='identity'``: pixel space (latent = image in [-1, 1], 3 channels), no diffusers.

The codec is frozen and deliberately *not* a sub-module of the generator: it is not
trained, not averaged by EMA and not written into checkpoints (335 MB for the SD VAE).
"""
import os.path as osp
from typing import Optional, Tuple

import torch
from torch import Tensor

KINDS = ('sd', 'tiny', 'identity')
SD_SCALING = 0.18215


def _autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError("the VAE kinds 'sd' and 'tiny' need diffusers: pip install "
                          "diffusers (or use vae=dict(kind='identity') for pixel space)") from e
    return AutoencoderKL


def _looks_local(path: str) -> bool:
    """A filesystem path (absolute, ./, ../, ~ or existing) rather than a hub id
    ``owner/name``."""
    return osp.isabs(path) or path.startswith(('.', '~')) or osp.exists(path) or \
        path.count('/') > 1


class LatentCodec:
    """Frozen VAE (or identity) mapping images [B, 3, H, W] in [-1, 1] to latents.

    Args:
        kind: one of ``'sd'``, ``'tiny'``, ``'identity'``.
        path: local directory or hub id of an ``AutoencoderKL`` (kind ``'sd'``).
        scaling: latent scale (0.18215 for the SD VAE; 1.0 for identity).
        seed: initialisation seed of the tiny VAE.
    """

    def __init__(self, kind: str = 'sd', path: str = 'stabilityai/sd-vae-ft-ema',
                 scaling: Optional[float] = None, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f'VAE kind must be one of {KINDS}, got {kind!r}')
        self.kind = kind
        self.vae = None
        if kind == 'identity':
            self.scaling = 1.0 if scaling is None else scaling
            self.channels, self.factor = 3, 1
            return
        if kind == 'sd' and _looks_local(path) and not osp.isdir(path):
            raise FileNotFoundError(f'VAE directory not found: {path} (give a local '
                                    'diffusers AutoencoderKL folder or a hub id such as '
                                    'stabilityai/sd-vae-ft-ema)')
        AutoencoderKL = _autoencoder_kl()
        if kind == 'sd':
            self.vae = AutoencoderKL.from_pretrained(path)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.vae = AutoencoderKL(
                    in_channels=3, out_channels=3, latent_channels=4,
                    down_block_types=('DownEncoderBlock2D',) * 2,
                    up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(8, 16),
                    layers_per_block=1, norm_num_groups=4, sample_size=32)
        self.vae.requires_grad_(False).eval()
        self.scaling = SD_SCALING if scaling is None else scaling
        self.channels = self.vae.config.latent_channels
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device) -> 'LatentCodec':
        if self.vae is not None:
            self.vae.to(device)
        return self

    def latent_shape(self, image_hw: Tuple[int, int]) -> Tuple[int, int, int]:
        h, w = image_hw
        if h % self.factor or w % self.factor:
            raise ValueError(f'image size {h}x{w} is not divisible by the VAE factor '
                             f'{self.factor}')
        return self.channels, h // self.factor, w // self.factor

    @torch.no_grad()
    def moments(self, images: Tensor) -> Tensor:
        """Posterior mean and log variance [B, 2C, h, w] (unscaled; what
        ``extract_latents.py`` caches). Identity: (images, -inf-like zeros variance)."""
        if self.vae is None:
            return torch.cat([images, torch.full_like(images, -30.0)], dim=1)
        with torch.autocast(images.device.type, enabled=False):
            dist = self.vae.encode(images.float()).latent_dist
        return torch.cat([dist.mean, dist.logvar], dim=1)

    def sample_moments(self, moments: Tensor) -> Tensor:
        """Scaled latent sample from cached moments [B, 2C, h, w]."""
        mean, logvar = moments.float().chunk(2, dim=1)
        if self.vae is None:
            return mean * self.scaling
        z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn_like(mean)
        return z * self.scaling

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images [-1, 1] -> scaled latent sample (the authors draw one per step)."""
        return self.sample_moments(self.moments(images))

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> images, clamped to [-1, 1]."""
        z = latents.float() / self.scaling
        if self.vae is not None:
            with torch.autocast(z.device.type, enabled=False):
                z = self.vae.decode(z).sample
        return z.clamp(-1, 1)
