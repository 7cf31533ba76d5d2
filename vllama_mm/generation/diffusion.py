"""Gaussian diffusion for DiT: training loss and samplers, written from the papers.

* DDPM (Ho et al. 2020): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``; the network
  predicts ``eps``.
* Improved DDPM (Nichol & Dhariwal 2021): learned variance ``log var = v' log beta_t +
  (1 - v') log beta~_t`` with ``v' = (v + 1) / 2`` from the network's second half;
  hybrid loss ``L_simple + L_vb`` where the VB term sees a stopped-gradient mean;
  respacing: a sub-sequence of timesteps with betas re-derived from ``abar``.
* DDIM (Song et al. 2021) on the respaced sequence.

The schedule is held in float64 and values are gathered per sample then cast to the
input's dtype. Timesteps given to the network are the original integers 0..T-1.
"""
import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .progress import progress, randn_like

ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x [B,C,H,W], t [B] long) -> [B, 2C, H, W]


def linear_betas(num_timesteps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule, endpoints scaled by ``1000 / T`` (so any T spans the same
    total noise as 1000 steps)."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * start, scale * end, num_timesteps, dtype=np.float64)


SPACINGS = ('linspace', 'ddim', 'leading')


def respace(num_timesteps: int, num_steps: int, spacing: str = 'linspace') -> np.ndarray:
    """Timesteps kept by respacing (increasing).

    * ``'linspace'``: ``round(linspace(0, T-1, n))``, DiT's ``timestep_respacing="n"``
      (its DDPM sampling) and diffusers' ``timestep_spacing='linspace'``.
    * ``'ddim'``: DiT's ``"ddimN"``: ``range(0, T, s)`` with the smallest stride ``s`` that
      gives exactly n steps (``ceil(T / s) == n``); some n have no such stride.
    * ``'leading'``: diffusers' ``'leading'``, ``0, T//n, 2T//n, ...`` (n steps). Equal to
      ``'ddim'`` when n divides T; otherwise a smaller stride and a lower last step.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f'num_steps must be in [1, {num_timesteps}], got {num_steps}')
    if spacing == 'linspace':
        steps = np.round(np.linspace(0, num_timesteps - 1, num_steps)).astype(np.int64)
    elif spacing == 'ddim':
        strides = [s for s in range(1, num_timesteps)
                   if -(-num_timesteps // s) == num_steps]
        if not strides:
            raise ValueError(f"spacing 'ddim': no stride gives exactly {num_steps} of "
                             f"{num_timesteps} steps (DiT's ddim{num_steps} fails too); "
                             "choose another step count or spacing='leading'")
        steps = np.arange(0, num_timesteps, strides[0])
    elif spacing == 'leading':
        steps = np.arange(0, num_timesteps, num_timesteps // num_steps)[:num_steps]
    else:
        raise ValueError(f'spacing must be one of {SPACINGS}, got {spacing!r}')
    if len(np.unique(steps)) != num_steps:
        raise ValueError(f'{num_steps} steps cannot be spaced over {num_timesteps}')
    return steps


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) element-wise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales))
    (the DDPM decoder L_0), element-wise, in nats; edge bins take the tail mass."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


class GaussianDiffusion:
    """A discrete diffusion defined by ``betas`` [T] (float64).

    Args:
        betas: the noise schedule.
        timestep_map: the original timestep of each entry (respaced processes); the
            network always receives original timesteps.
    """

    def __init__(self, betas: np.ndarray, timestep_map: Optional[Sequence[int]] = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError('betas must be a 1-D array in (0, 1]')
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = np.arange(len(betas)) if timestep_map is None \
            else np.asarray(timestep_map, dtype=np.int64)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        ac, acp = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - acp) / (1.0 - ac)
        # beta~_0 is 0: its log is clipped to beta~_1
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(acp) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - acp) * np.sqrt(alphas) / (1.0 - ac)

    @classmethod
    def linear(cls, num_timesteps: int = 1000) -> 'GaussianDiffusion':
        return cls(linear_betas(num_timesteps))

    def respaced(self, num_steps: int, spacing: str = 'linspace') -> 'GaussianDiffusion':
        """The process restricted to ``respace(T, num_steps, spacing)``: betas
        ``1 - abar_k / abar_{k-1}`` over the kept steps."""
        keep = respace(self.num_timesteps, num_steps, spacing)
        ac = self.alphas_cumprod[keep]
        betas = 1.0 - ac / np.append(1.0, ac[:-1])
        return GaussianDiffusion(betas, self.timestep_map[keep])

    @staticmethod
    def _at(arr: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
        """arr[t] as [B, 1, 1, 1] in like's dtype/device."""
        v = torch.from_numpy(arr).to(like.device)[t].to(like.dtype)
        return v.view(-1, *([1] * (like.dim() - 1)))

    # -- forward process ---------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return (self._at(np.sqrt(self.alphas_cumprod), t, x0) * x0
                + self._at(np.sqrt(1.0 - self.alphas_cumprod), t, x0) * noise)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor):
        """Mean and log variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._at(self.posterior_mean_coef1, t, xt) * x0
                + self._at(self.posterior_mean_coef2, t, xt) * xt)
        return mean, self._at(self.posterior_log_variance_clipped, t, xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return (self._at(np.sqrt(1.0 / self.alphas_cumprod), t, xt) * xt
                - self._at(np.sqrt(1.0 / self.alphas_cumprod - 1.0), t, xt) * eps)

    def p_mean_variance(self, out: Tensor, xt: Tensor, t: Tensor,
                        clip: bool = False) -> Dict[str, Tensor]:
        """Network output ``out`` [B, 2C, ...] = (eps, v) -> mean / log variance of
        p(x_{t-1} | x_t) with the learned-range variance."""
        eps, v = out.chunk(2, dim=1)
        min_log = self._at(self.posterior_log_variance_clipped, t, xt)
        max_log = self._at(np.log(self.betas), t, xt)
        frac = (v + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return dict(mean=mean, log_variance=log_var, pred_x0=x0, eps=eps)

    # -- training ----------------------------------------------------------------------
    def training_losses(self, model_fn: ModelFn, x0: Tensor, t: Tensor,
                        noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """IDDPM hybrid loss per sample: ``mse`` (eps) + ``vb`` (bits/dim, on a
        stopped-gradient mean so that it trains only the variance)."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)
        out = model_fn(xt, self._map(t))
        if out.shape[1] != 2 * x0.shape[1]:
            raise ValueError(f'the hybrid loss needs a learned-sigma network (2C = '
                             f'{2 * x0.shape[1]} channels), got {out.shape[1]}')
        eps, v = out.chunk(2, dim=1)
        frozen = torch.cat([eps.detach(), v], dim=1)
        vb = self.vb_terms(frozen, x0, xt, t)
        mse = mean_flat((noise - eps) ** 2)
        return dict(loss=mse + vb, mse=mse, vb=vb)

    def vb_terms(self, out: Tensor, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the decoder
        NLL for t = 0, mean over dims, in bits."""
        true_mean, true_logvar = self.q_posterior(x0, xt, t)
        p = self.p_mean_variance(out, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_logvar, p['mean'], p['log_variance']))
        nll = -mean_flat(discretized_gaussian_log_likelihood(
            x0, p['mean'], 0.5 * p['log_variance']))
        return torch.where(t == 0, nll, kl) / math.log(2.0)

    def _map(self, t: Tensor) -> Tensor:
        return torch.from_numpy(self.timestep_map).to(t.device)[t]

    # -- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def ddpm_sample(self, model_fn: ModelFn, noise: Tensor, progress: bool = False,
                    generator: Optional[torch.Generator] = None,
                    clip_denoised: bool = False) -> Tensor:
        """Ancestral sampling over this (respaced) process with the learned variance.
        ``clip_denoised`` clamps the predicted x_0 to [-1, 1] (pixel space, as ADM; off
        for latents, as DiT)."""
        x = noise
        for i in _steps(self.num_timesteps, progress, 'DDPM'):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            p = self.p_mean_variance(model_fn(x, self._map(t)), x, t, clip=clip_denoised)
            if i > 0:
                z = randn_like(x, generator)
                x = p['mean'] + torch.exp(0.5 * p['log_variance']) * z
            else:
                x = p['mean']
        return x

    @torch.no_grad()
    def ddim_sample(self, model_fn: ModelFn, noise: Tensor, eta: float = 0.0,
                    progress: bool = False, generator: Optional[torch.Generator] = None,
                    clip_denoised: bool = False) -> Tensor:
        """DDIM over this (respaced) process; ``eta=0`` is deterministic. Only the eps
        half of a learned-sigma output is used; ``clip_denoised`` as in ddpm_sample."""
        x = noise
        for i in _steps(self.num_timesteps, progress, 'DDIM'):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            out = model_fn(x, self._map(t))
            eps = out[:, :x.shape[1]]
            x0 = self.predict_x0(x, t, eps)
            if clip_denoised:  # re-derive eps from the clamped x0
                x0 = x0.clamp(-1, 1)
                eps = (x - self._at(np.sqrt(self.alphas_cumprod), t, x) * x0) / \
                    self._at(np.sqrt(1.0 - self.alphas_cumprod), t, x)
            ac = self._at(self.alphas_cumprod, t, x)
            acp = self._at(self.alphas_cumprod_prev, t, x)
            sigma = eta * torch.sqrt((1 - acp) / (1 - ac)) * torch.sqrt(1 - ac / acp)
            x = x0 * torch.sqrt(acp) + torch.sqrt(1 - acp - sigma ** 2) * eps
            if i > 0 and eta > 0:
                x = x + sigma * randn_like(x, generator)
        return x


def _steps(n: int, enable: bool, desc: str):
    return progress(range(n - 1, -1, -1), n, desc, enable)
