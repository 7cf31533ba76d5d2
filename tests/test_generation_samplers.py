"""Samplers and losses of vllama_mm.generation against closed forms on Gaussian data.

Data x1 ~ N(MU, S^2) per element; the exact noise / velocity predictors are known in
closed form, so a correct sampler must reproduce N(MU, S^2) (exact flow maps for the ODE).
"""
import math

import numpy as np
import pytest
import torch

from vllama_mm.generation.diffusion import GaussianDiffusion, linear_betas, respace
from vllama_mm.generation.flow import sample_ode, sample_sde, training_losses

MU, S = 1.5, 0.5


def exact_velocity(x, t):
    """v = E[x1|x_t] - E[eps|x_t] for x_t = t x1 + (1-t) eps, x1 ~ N(MU, S^2)."""
    t = t.view(-1, 1, 1, 1).double()
    x = x.double()
    m = t ** 2 * S ** 2 + (1 - t) ** 2
    e_x1 = MU + t * S ** 2 / m * (x - t * MU)
    e_eps = (1 - t) / m * (x - t * MU)
    return (e_x1 - e_eps).float()


@pytest.mark.parametrize('method,steps,tol', [('euler', 400, 1e-2), ('heun', 50, 1e-3)])
def test_ode_fixed_step_is_the_exact_gaussian_flow(method, steps, tol):
    # for Gaussians the flow is affine: x1 = MU + S * x0
    x0 = torch.linspace(-3, 3, 16).view(4, 1, 2, 2)
    x1 = sample_ode(exact_velocity, x0, method=method, num_steps=steps)
    assert torch.allclose(x1, MU + S * x0, atol=tol), (x1 - MU - S * x0).abs().max()


def test_ode_dopri5_is_the_exact_gaussian_flow():
    pytest.importorskip('torchdiffeq')
    x0 = torch.linspace(-3, 3, 16, dtype=torch.float64).view(4, 1, 2, 2)
    fn = lambda x, t: exact_velocity(x, t).double()  # noqa: E731
    x1 = sample_ode(fn, x0, method='dopri5')  # the authors' tolerances: atol 1e-6, rtol 1e-3
    assert torch.allclose(x1, MU + S * x0, atol=1e-2)
    x1 = sample_ode(fn, x0, method='dopri5', atol=1e-9, rtol=1e-7)
    assert torch.allclose(x1, MU + S * x0, atol=1e-5)


def test_sde_euler_maruyama_reaches_the_data_distribution():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, 2, 2, generator=g)
    x = sample_sde(exact_velocity, noise, num_steps=250, last_step_size=0.04, generator=g)
    n = x.numel()
    assert abs(x.mean().item() - MU) < 4 * S / math.sqrt(n) + 2e-3
    assert abs(x.std().item() - S) < 0.02
    # without the stochastic part it would still be right, but not identical: noise is used
    x2 = sample_sde(exact_velocity, noise, num_steps=250)
    assert not torch.allclose(x, x2)


def test_flow_loss_is_zero_for_the_true_velocity_of_a_fixed_pair():
    x1, noise = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    t = torch.rand(3)
    out = training_losses(lambda x, tt: x1 - noise, x1, t=t, noise=noise)
    assert out['loss'].shape == (3,) and torch.all(out['loss'] == 0)
    out = training_losses(lambda x, tt: torch.zeros_like(x), x1, t=t, noise=noise)
    assert torch.allclose(out['loss'], ((x1 - noise) ** 2).mean((1, 2, 3)))


def test_linear_schedule_and_respacing():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    steps = respace(1000, 250)
    assert steps[0] == 0 and steps[-1] == 999 and len(np.unique(steps)) == 250
    assert list(respace(1000, 4, 'leading')) == [0, 250, 500, 750]
    d = GaussianDiffusion.linear().respaced(250)
    # respacing keeps the cumulative products at the kept steps
    np.testing.assert_allclose(d.alphas_cumprod,
                               GaussianDiffusion.linear().alphas_cumprod[steps], rtol=1e-12)


def _exact_ddpm_model(rd: GaussianDiffusion):
    """(eps, v) that make each reverse step of ``rd`` the exact Gaussian conditional."""
    index = {int(t): i for i, t in enumerate(rd.timestep_map)}

    def fn(x, t_orig):
        i = torch.tensor([index[int(t)] for t in t_orig])
        ac = torch.from_numpy(rd.alphas_cumprod)[i].view(-1, 1, 1, 1)
        x = x.double()
        m = ac * S ** 2 + 1 - ac
        eps = (1 - ac).sqrt() / m * (x - ac.sqrt() * MU)
        var_x0 = S ** 2 * (1 - ac) / m  # Var[x0 | x_t]
        c1 = torch.from_numpy(rd.posterior_mean_coef1)[i].view(-1, 1, 1, 1)
        post = torch.from_numpy(rd.posterior_variance)[i].view(-1, 1, 1, 1)
        true_log = torch.log(post + c1 ** 2 * var_x0)
        lo = torch.from_numpy(rd.posterior_log_variance_clipped)[i].view(-1, 1, 1, 1)
        hi = torch.from_numpy(np.log(rd.betas))[i].view(-1, 1, 1, 1)
        v = 2 * (true_log - lo) / (hi - lo) - 1
        return torch.cat([eps, v.expand_as(eps)], 1).float()

    return fn


def test_ddpm_learned_variance_sampler_is_exact_on_gaussian_data():
    rd = GaussianDiffusion.linear().respaced(50)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, 2, 2, generator=g)
    x = rd.ddpm_sample(_exact_ddpm_model(rd), noise, generator=g)
    n = x.numel()
    assert abs(x.mean().item() - MU) < 4 * S / math.sqrt(n)
    assert abs(x.std().item() - S) < 4 * S / math.sqrt(2 * n) + 2e-3


def test_ddim_deterministic_sampler_on_gaussian_data():
    rd = GaussianDiffusion.linear().respaced(50, 'leading')
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(4000, 1, 2, 2, generator=g)
    model = _exact_ddpm_model(rd)
    x = rd.ddim_sample(model, noise)
    assert torch.equal(x, rd.ddim_sample(model, noise))  # eta 0: deterministic
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - S) < 0.03


def test_hybrid_loss_vanishes_for_the_true_posterior():
    d = GaussianDiffusion.linear()
    x0 = torch.rand(4, 4, 3, 3) * 1.6 - 0.8
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 10, 500, 999])
    # eps = the true noise and v = -1 (log var = the true posterior's) -> mse 0, KL 0
    out = d.training_losses(lambda x, tt: torch.cat([noise, -torch.ones_like(x)], 1), x0, t,
                            noise=noise)
    assert torch.allclose(out['mse'], torch.zeros(4))
    assert torch.allclose(out['vb'], torch.zeros(4), atol=1e-4)
    # a wrong variance costs bits
    out = d.training_losses(lambda x, tt: torch.cat([noise, torch.ones_like(x)], 1), x0, t,
                            noise=noise)
    assert (out['vb'][:2] > 1e-3).all()  # at large t beta ~ beta~: little to learn
    # t = 0: the decoder NLL (positive, finite)
    out = d.training_losses(lambda x, tt: torch.cat([noise, -torch.ones_like(x)], 1), x0,
                            torch.zeros(4, dtype=torch.long), noise=noise)
    assert torch.isfinite(out['vb']).all() and (out['vb'] > 0).all()


def test_ddpm_step_matches_diffusers_scheduler():
    diffusers = pytest.importorskip('diffusers')
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule='linear',
                                    beta_start=1e-4, beta_end=0.02,
                                    variance_type='learned_range', clip_sample=False,
                                    timestep_spacing='linspace')
    sched.set_timesteps(250)
    rd = GaussianDiffusion.linear().respaced(250)
    assert list(sched.timesteps.numpy()[::-1]) == list(rd.timestep_map)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    out = torch.randn(2, 8, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    for i in (200, 57, 1):
        t_orig = int(rd.timestep_map[i])
        p = rd.p_mean_variance(out, x, torch.full((2,), i))
        z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)
        ours = p['mean'] + torch.exp(0.5 * p['log_variance']) * z
        theirs = sched.step(out, t_orig, x, generator=torch.Generator().manual_seed(5)
                            ).prev_sample
        assert torch.allclose(ours, theirs.double(), rtol=1e-4, atol=1e-5), i


def _dit_ddim_steps(T, n):
    """DiT's space_timesteps(T, f'ddim{n}'), written out: the first stride i with
    len(range(0, T, i)) == n."""
    for i in range(1, T):
        if len(range(0, T, i)) == n:
            return list(range(0, T, i))
    return None


@pytest.mark.parametrize('n', [10, 25, 30, 33, 50, 100, 250])
def test_ddim_spacing_is_dits_ddimN(n):
    ref = _dit_ddim_steps(1000, n)
    assert list(respace(1000, n, 'ddim')) == ref
    leading = list(respace(1000, n, 'leading'))  # diffusers' 'leading': another grid unless n | T
    assert (leading == ref) == (1000 % n == 0)


def test_ddim_spacing_without_a_stride_fails_as_dit():
    assert _dit_ddim_steps(1000, 45) is None
    with pytest.raises(ValueError, match="no stride gives exactly 45"):
        respace(1000, 45, 'ddim')


def test_dit_generator_ddim_uses_dits_spacing(monkeypatch):
    from vllama_mm.generation.generators import DiTGenerator
    seen = []
    real = GaussianDiffusion.respaced
    monkeypatch.setattr(GaussianDiffusion, 'respaced',
                        lambda self, n, spacing='linspace': seen.append((n, spacing))
                        or real(self, n, spacing))
    gen = DiTGenerator(dict(type='DiTLLaMA', arch=dict(embed_dims=32, num_layers=1,
                                                       num_heads=2),
                            input_size=4, patch_size=2, in_channels=1, num_classes=3))
    labels = torch.tensor([0, 1])
    gen.sample_latents(labels, type='ddim', num_steps=30)
    gen.sample_latents(labels, type='ddim', num_steps=30, spacing='leading')
    gen.sample_latents(labels, type='ddpm', num_steps=4)
    assert seen == [(30, 'ddim'), (30, 'leading'), (4, 'linspace')]


@pytest.mark.parametrize('method,calls', [('euler', 1), ('heun', 2)])
def test_ode_num_steps_counts_time_points_as_sit(method, calls):
    """SiT hands linspace(t0, t1, N) to torchdiffeq: N points, N - 1 fixed steps."""
    times = []

    def fn(x, t):
        times.append(float(t[0]))
        return torch.ones_like(x)

    x = sample_ode(fn, torch.zeros(1, 1, 1, 1), method=method, num_steps=5)
    assert len(times) == calls * 4
    np.testing.assert_allclose(sorted(set(times)), np.linspace(0, 1, 5)[:4 if calls == 1
                                                                           else 5])
    assert x.item() == pytest.approx(1.0)  # dx/dt = 1 over [0, 1]
    with pytest.raises(ValueError, match='time points'):
        sample_ode(fn, torch.zeros(1, 1, 1, 1), method=method, num_steps=1)
