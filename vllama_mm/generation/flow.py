"""SiT's linear interpolant: velocity loss and samplers, written from the SiT paper.

``x_t = t x_1 + (1 - t) eps`` with ``x_1`` data, ``eps ~ N(0, I)`` and ``t`` in [0, 1]
(``t = 0`` is noise). The network predicts the velocity ``v = x_1 - eps``.

For this interpolant the score follows from the velocity:
``E[eps | x] = x - t v`` so ``s(x, t) = -E[eps | x] / (1 - t) = (t v - x) / (1 - t)``.

Samplers integrate from t = 0 (noise) towards t = 1 (data):

* ODE ``dx = v dt``: fixed-step Euler or Heun on ``linspace(0, 1, num_steps)`` (SiT's
  convention: ``num_steps`` time points, ``num_steps - 1`` steps), or adaptive dopri5
  (torchdiffeq);
* SDE (Euler-Maruyama) ``dx = [v + w_t s] dt + sqrt(2 w_t) dW`` with ``w_t = 1 - t``
  (diffusion "sigma": the interpolant's noise level), which keeps the marginals of the
  ODE; it stops at ``t = 1 - last_step_size`` and finishes with one deterministic
  ("Mean") step of that size.
"""
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .progress import progress, randn_like

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x [B,C,H,W], t [B] float) -> v


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    return t.view(-1, *([1] * (x.dim() - 1)))


def interpolate(x1: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = t x1 + (1 - t) noise."""
    tb = _bcast(t, x1)
    return tb * x1 + (1 - tb) * noise


def training_losses(model_fn: VelocityFn, x1: Tensor, t: Optional[Tensor] = None,
                    noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Per-sample velocity MSE ``mean((v(x_t, t) - (x1 - noise))^2)`` with t ~ U[0, 1]."""
    noise = torch.randn_like(x1) if noise is None else noise
    t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype) if t is None else t
    v = model_fn(interpolate(x1, noise, t), t)
    loss = ((v - (x1 - noise)) ** 2).mean(dim=tuple(range(1, x1.dim())))
    return dict(loss=loss)


def score_from_velocity(v: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """s(x, t) = (t v - x) / (1 - t) for the linear interpolant."""
    tb = _bcast(t, x)
    return (tb * v - x) / (1 - tb)


def _progress(it, enable: bool, desc: str):
    return progress(it, None, desc, enable)


@torch.no_grad()
def sample_ode(model_fn: VelocityFn, noise: Tensor, method: str = 'dopri5',
               num_steps: int = 50, atol: float = 1e-6, rtol: float = 1e-3,
               progress: bool = False) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` from t = 0 to 1. ``method``: ``'euler'`` or
    ``'heun'`` on the grid ``linspace(0, 1, num_steps)``, i.e. ``num_steps - 1`` fixed
    steps (SiT's ``num_sampling_steps``: the time points handed to torchdiffeq; Euler
    evaluates the network ``num_steps - 1`` times, Heun twice that), or ``'dopri5'``
    (torchdiffeq, adaptive, ``atol``/``rtol`` as the authors' defaults)."""
    B = noise.shape[0]
    if method == 'dopri5':
        try:
            from torchdiffeq import odeint
        except ImportError as e:
            raise ImportError('the dopri5 sampler needs torchdiffeq: pip install torchdiffeq'
                              ) from e
        ts = torch.tensor([0.0, 1.0], device=noise.device, dtype=torch.float64)

        def f(t, x):
            return model_fn(x, t.to(x.dtype).expand(B))

        return odeint(f, noise, ts.to(noise.dtype), method='dopri5', atol=atol,
                      rtol=rtol)[-1]
    if method not in ('euler', 'heun'):
        raise ValueError(f"ODE method must be 'euler', 'heun' or 'dopri5', got {method!r}")
    if num_steps < 2:
        raise ValueError(f'num_steps counts time points (SiT convention): it must be >= 2 '
                         f'for {num_steps - 1} steps, got {num_steps}')
    ts = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64).tolist()
    x = noise
    for i in _progress(range(num_steps - 1), progress, f'ODE {method}'):
        t0, t1 = ts[i], ts[i + 1]
        h = t1 - t0
        d0 = model_fn(x, torch.full((B,), t0, device=x.device, dtype=x.dtype))
        if method == 'euler':
            x = x + h * d0
        else:  # Heun: trapezoid of the slopes at both ends of an Euler predictor
            xp = x + h * d0
            d1 = model_fn(xp, torch.full((B,), t1, device=x.device, dtype=x.dtype))
            x = x + 0.5 * h * (d0 + d1)
    return x


@torch.no_grad()
def sample_sde(model_fn: VelocityFn, noise: Tensor, num_steps: int = 250,
               last_step_size: float = 0.04, diffusion_norm: float = 1.0,
               progress: bool = False,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Euler-Maruyama on ``dx = [v + w s] dt + sqrt(2 w) dW``, ``w_t = norm (1 - t)``,
    over ``linspace(0, 1 - last_step_size, num_steps)`` (``num_steps - 1`` stochastic
    steps), then one "Mean" step ``x + (v + w s) * last_step_size`` without noise:
    ``num_steps`` network evaluations in all, as the authors' 250-step sampler."""
    if not 0 < last_step_size < 1:
        raise ValueError(f'last_step_size must be in (0, 1), got {last_step_size}')
    B = noise.shape[0]
    t_end = 1.0 - last_step_size
    ts = torch.linspace(0.0, t_end, num_steps, dtype=torch.float64)
    dt = float(ts[1] - ts[0]) if num_steps > 1 else 0.0

    def drift(x: Tensor, t: float) -> Tensor:
        tt = torch.full((B,), t, device=x.device, dtype=x.dtype)
        v = model_fn(x, tt)
        w = diffusion_norm * (1.0 - t)
        return v + w * score_from_velocity(v, x, tt)

    x = noise
    for t in _progress(ts[:-1].tolist(), progress, 'SDE'):
        w = diffusion_norm * (1.0 - t)
        dw = randn_like(x, generator) * dt ** 0.5
        x = x + drift(x, t) * dt + (2.0 * w) ** 0.5 * dw
    return x + drift(x, t_end) * last_step_size
