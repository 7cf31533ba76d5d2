"""DiT-LLaMA (DDPM) and SiT-LLaMA (flow) generators as mmengine ``BaseModel``s.

``forward(inputs=None, labels=None, moments=None, mode='loss')``: a batch holds images
(``inputs`` [B, 3, H, W] in [-1, 1], encoded by the frozen VAE each step as the authors)
or cached VAE posteriors (``moments`` [B, 2C, h, w]); ``mode='predict'`` samples images
for ``labels``. Only ``denoiser.*`` is a parameter (the VAE stays out of checkpoints and
EMA); mmengine's ``EMAHook`` keeps the averaged copy.
"""
from abc import abstractmethod
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from torch import Tensor

from . import flow
from .diffusion import GaussianDiffusion
from .progress import randn_like
from .registry import MODELS, SCOPE
from .vae import LatentCodec

DIT_SAMPLERS = ('ddpm', 'ddim')
SIT_SAMPLERS = ('sde', 'euler', 'heun', 'dopri5')


class _LatentGenerator(BaseModel):
    """Shared plumbing: denoiser, frozen codec, batch -> scaled latents, sampling API."""

    default_sampler: str = ''
    samplers: Tuple[str, ...] = ()

    def __init__(self, denoiser: Dict, vae: Optional[Dict] = None,
                 sampler: Optional[Dict] = None, data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # a nested build resolves names in the *current* default scope (another library's
        # when tests or tools set one): build the denoiser in the plugin's own scope
        with DefaultScope.overwrite_default_scope(SCOPE):
            self.denoiser = MODELS.build(denoiser)
        self.vae_cfg = dict(kind='identity') if vae is None else dict(vae)
        self._codec: Optional[LatentCodec] = None
        self.sampler_cfg = dict(type=self.default_sampler)
        self.sampler_cfg.update(sampler or {})
        if self.sampler_cfg['type'] not in self.samplers:
            raise ValueError(f'{type(self).__name__}: sampler type must be one of '
                             f'{self.samplers}, got {self.sampler_cfg["type"]!r}')

    @property
    def codec(self) -> LatentCodec:
        """The frozen VAE, built on first use and kept on the denoiser's device."""
        if self._codec is None:
            self._codec = LatentCodec(**self.vae_cfg)
        return self._codec.to(next(self.denoiser.parameters()).device)

    def latents(self, inputs: Optional[Tensor] = None,
                moments: Optional[Tensor] = None) -> Tensor:
        """Scaled latents [B, C, h, w] of a batch (images or cached moments)."""
        if (inputs is None) == (moments is None):
            raise ValueError('a batch needs exactly one of inputs (images) and moments '
                             '(cached latents)')
        if moments is not None:
            return self.codec.sample_moments(moments)
        return self.codec.encode(inputs)

    def forward(self, inputs: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                moments: Optional[Tensor] = None, data_samples=None,
                mode: str = 'loss') -> Union[Dict[str, Tensor], Tensor]:
        if labels is None:
            raise ValueError('class-conditional generators need labels in every batch')
        labels = torch.as_tensor(labels, device=next(self.parameters()).device).long()
        if mode == 'loss':
            return self.loss(self.latents(inputs, moments).detach(), labels)
        if mode == 'predict':
            return self.sample(labels)
        raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")

    @abstractmethod
    def loss(self, z: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """Training losses for scaled latents ``z`` [B, C, h, w] and ``labels`` [B]."""

    # -- sampling ----------------------------------------------------------------------
    def _guided(self, labels: Tensor, cfg_scale: float):
        """(model_fn(x, t), batch multiplier) with classifier-free guidance when > 1."""
        net = self.denoiser
        if cfg_scale == 1.0:
            return (lambda x, t: net(x, t, labels)), 1
        null = torch.full_like(labels, net.num_classes)
        y = torch.cat([labels, null])
        return (lambda x, t: net.forward_with_cfg(x, t, y, cfg_scale)), 2

    @torch.no_grad()
    def sample_latents(self, labels: Tensor, latent_hw: Optional[Tuple[int, int]] = None,
                       cfg_scale: float = 1.0, generator: Optional[torch.Generator] = None,
                       progress: bool = False, **sampler) -> Tensor:
        """Latents [B, C, h, w] for ``labels`` [B]; ``sampler`` overrides the config's
        (e.g. ``type='ddim', num_steps=50``)."""
        net = self.denoiser
        was_training = net.training
        net.eval()
        try:
            cfg = dict(self.sampler_cfg, **sampler)
            if cfg['type'] not in self.samplers:
                raise ValueError(f'sampler type must be one of {self.samplers}, '
                                 f'got {cfg["type"]!r}')
            h, w = latent_hw or net.input_size
            labels = labels.to(next(net.parameters()).device)
            noise = randn_like(torch.empty(labels.shape[0], net.in_channels, h, w,
                                           device=labels.device), generator)  # [B, C, h, w]
            model_fn, mult = self._guided(labels, cfg_scale)
            if mult == 2:
                noise = torch.cat([noise, noise])
            z = self._run_sampler(model_fn, noise, cfg, progress, generator)
            return z[:labels.shape[0]]
        finally:
            net.train(was_training)

    def sample(self, labels: Tensor, **kwargs) -> Tensor:
        """Images [B, 3, H, W] in [-1, 1] for ``labels``."""
        return self.codec.decode(self.sample_latents(labels, **kwargs))

    @abstractmethod
    def _run_sampler(self, model_fn, noise: Tensor, cfg: Dict, progress: bool,
                     generator: Optional[torch.Generator] = None) -> Tensor:
        """Integrate ``model_fn`` from ``noise`` [B', C, h, w] with sampler ``cfg``."""


class DiTGenerator(_LatentGenerator):
    """DiT-LLaMA: IDDPM hybrid loss (eps MSE + variational bound for the learned variance)
    on a linear-beta 1000-step diffusion; t is an integer 0..T-1.

    Args:
        denoiser: ``DiTLLaMA`` config (``learn_sigma=True, return_sigma=True``).
        vae: :class:`LatentCodec` kwargs (``kind='sd', path=...``; default identity).
        num_timesteps: training diffusion steps (1000).
        sampler: ``dict(type='ddpm'|'ddim', num_steps=250, eta=0.0,
            clip_denoised=False, spacing=...)`` (clip the predicted x_0 only in pixel
            space). ``spacing`` defaults to DiT's: ``'linspace'`` for ddpm (its
            ``"250"``), ``'ddim'`` for ddim (its ``"ddim50"``: the stride giving exactly
            n steps); ``'leading'`` is diffusers' DDIM spacing.
    """

    default_sampler = 'ddpm'
    samplers = DIT_SAMPLERS

    def __init__(self, denoiser: Dict, vae: Optional[Dict] = None, num_timesteps: int = 1000,
                 sampler: Optional[Dict] = None, data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None):
        sampler = dict(dict(num_steps=250), **(sampler or {}))
        super().__init__(denoiser, vae, sampler, data_preprocessor, init_cfg)
        if not (self.denoiser.learn_sigma and self.denoiser.return_sigma):
            raise ValueError('DiTGenerator needs a denoiser with learn_sigma=True and '
                             'return_sigma=True (noise and variance outputs)')
        self.diffusion = GaussianDiffusion.linear(num_timesteps)

    def loss(self, z: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        t = torch.randint(0, self.diffusion.num_timesteps, (z.shape[0],), device=z.device)
        terms = self.diffusion.training_losses(
            lambda x, tt: self.denoiser(x, tt, labels), z, t)
        return dict(loss=terms['loss'].mean(), mse=terms['mse'].detach().mean(),
                    vb=terms['vb'].detach().mean())

    def _run_sampler(self, model_fn, noise: Tensor, cfg: Dict, progress: bool,
                     generator: Optional[torch.Generator] = None) -> Tensor:
        n = int(cfg.get('num_steps', 250))
        if cfg['type'] == 'ddpm':
            return self.diffusion.respaced(n, cfg.get('spacing', 'linspace')).ddpm_sample(
                model_fn, noise, progress=progress, generator=generator,
                clip_denoised=bool(cfg.get('clip_denoised', False)))
        return self.diffusion.respaced(n, cfg.get('spacing', 'ddim')).ddim_sample(
            model_fn, noise, eta=float(cfg.get('eta', 0.0)), progress=progress,
            generator=generator, clip_denoised=bool(cfg.get('clip_denoised', False)))


class SiTGenerator(_LatentGenerator):
    """SiT-LLaMA: linear interpolant ``x_t = t x1 + (1-t) noise``, velocity MSE, t ~ U[0,1].

    Args:
        denoiser: ``DiTLLaMA`` config (``return_sigma=False``: C output channels).
        vae: :class:`LatentCodec` kwargs.
        sampler: ``dict(type='sde', num_steps=250, last_step_size=0.04)`` (the paper's),
            ``dict(type='euler'|'heun', num_steps=N)`` (N time points, N - 1 steps, as
            SiT's ``--num-sampling-steps``) or
            ``dict(type='dopri5', atol=1e-6, rtol=1e-3)``.
    """

    default_sampler = 'sde'
    samplers = SIT_SAMPLERS

    def __init__(self, denoiser: Dict, vae: Optional[Dict] = None,
                 sampler: Optional[Dict] = None, data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None):
        sampler = dict(dict(num_steps=250), **(sampler or {}))
        super().__init__(denoiser, vae, sampler, data_preprocessor, init_cfg)
        if self.denoiser.learn_sigma and self.denoiser.return_sigma:
            raise ValueError('SiTGenerator needs return_sigma=False (the velocity, C '
                             'channels), as the released SiT-LLaMA')

    def loss(self, z: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        terms = flow.training_losses(lambda x, t: self.denoiser(x, t, labels), z)
        return dict(loss=terms['loss'].mean())

    def _run_sampler(self, model_fn, noise: Tensor, cfg: Dict, progress: bool,
                     generator: Optional[torch.Generator] = None) -> Tensor:
        kind = cfg['type']
        if kind == 'sde':
            return flow.sample_sde(model_fn, noise, num_steps=int(cfg.get('num_steps', 250)),
                                   last_step_size=float(cfg.get('last_step_size', 0.04)),
                                   progress=progress, generator=generator)
        return flow.sample_ode(model_fn, noise, method=kind,
                               num_steps=int(cfg.get('num_steps', 250)),
                               atol=float(cfg.get('atol', 1e-6)),
                               rtol=float(cfg.get('rtol', 1e-3)), progress=progress)


__all__: Sequence[str] = ('DiTGenerator', 'SiTGenerator')
