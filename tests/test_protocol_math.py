"""Timestep and noise rules of the papers (core/denoise.py; issue 12 items 10-11), each checked against a
transcription of the reference code on the real schedules (cosine-4000, linear-1000)."""
import math

import numpy as np
import pytest
import torch

from core import denoise as ts
from models.diffusion import GaussianDiffusion, get_named_beta_schedule

SIGMAS = [0.12, 0.25, 0.5, 1.0]


@pytest.fixture(scope="module", params=[("cosine", 4000), ("linear", 1000)])
def schedule(request):
    name, T = request.param
    return name, T, GaussianDiffusion(get_named_beta_schedule(name, T))


def dds_t(diffusion, sigma):
    """ethz-spylab cifar10/certify.py: target = 2σ; t from 0, `while real_sigma < target: t += 1`."""
    target, real, t = sigma * 2, 0, 0
    while real < target:
        t += 1
        real = diffusion.sqrt_one_minus_alphas_cumprod[t] / diffusion.sqrt_alphas_cumprod[t]
    return t


def mdds_t(diffusion, sigma):
    """smoothing-multiscale certify.py DDPM.find_timestep with sigma = magnitude·σ = 2σ: (t, sac)."""
    sqrt_calpha = np.sqrt(1 / (1 + (2 * sigma) ** 2))
    for t, sac in enumerate(diffusion.sqrt_alphas_cumprod):
        if sac <= sqrt_calpha:
            break
    return t, sac


def densepure_improved_t(sigma, T):
    """DensePure runners/diffpure_ddpm_densepure.py Diffusion.__init__ (sigma doubled first)."""
    a = 1 / (1 + (sigma * 2) ** 2)
    scale = a ** 0.5
    sigma = sigma * 2
    t = T * (1 - (2 * 1.008 * math.asin(math.sin(math.pi / (2 * 1.008)) / (1 + sigma ** 2) ** 0.5)) / math.pi)
    return t, scale


def densepure_guided_t(alphas_cumprod, sigma):
    """DensePure runners/diffpure_guided_densepure.py GuidedDiffusion.__init__ (the loop as written)."""
    sqrt_recipm1 = np.sqrt(1.0 / alphas_cumprod - 1)
    sigma = sigma * 2
    out = None
    for t in range(len(sqrt_recipm1) - 1):
        if sqrt_recipm1[t] < sigma and sqrt_recipm1[t + 1] >= sigma:
            if sigma - sqrt_recipm1[t] > sqrt_recipm1[t + 1] - sigma:
                out = t + 1
                break
            else:
                out = t
                break
        out = len(alphas_cumprod) - 1
    return out


@pytest.mark.parametrize("sigma", SIGMAS)
def test_first_t_is_dds_and_mdds(schedule, sigma):
    name, T, d = schedule
    t = ts.t_star_for_sigma(d.alphas_cumprod, sigma)
    assert t == dds_t(d, sigma) == mdds_t(d, sigma)[0]
    assert ts.x_t_scale("schedule", d.alphas_cumprod, t, sigma) == pytest.approx(mdds_t(d, sigma)[1], abs=1e-15)


def test_known_t_values():
    cos = GaussianDiffusion(get_named_beta_schedule("cosine", 4000)).alphas_cumprod
    lin = GaussianDiffusion(get_named_beta_schedule("linear", 1000)).alphas_cumprod
    assert [ts.t_star_for_sigma(cos, s) for s in (0.25, 0.5, 1.0)] == [1158, 1984, 2809]
    assert [ts.t_star_for_sigma(lin, s) for s in (0.25, 0.5, 1.0)] == [145, 259, 396]
    # DensePure's nearest rule on ImageNet: 144 / 258 (ALGORITHMS §5), one below the first-≥ rule
    assert [ts.densepure_t(lin, s, "linear", 1000) for s in (0.25, 0.5)] == [144, 258]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_densepure_t_and_scale(schedule, sigma):
    name, T, d = schedule
    got = ts.densepure_t(d.alphas_cumprod, sigma, name, T)
    if name == "cosine":
        ref_t, ref_scale = densepure_improved_t(sigma, T)
        assert isinstance(got, float) and got == pytest.approx(ref_t, abs=1e-9)
        assert ts.x_t_scale("exact", d.alphas_cumprod, round(got), sigma) == pytest.approx(ref_scale, abs=1e-15)
        assert abs(got - ts.t_star_for_sigma(d.alphas_cumprod, sigma)) < 2     # the continuous t lies beside the discrete
    else:
        assert got == densepure_guided_t(d.alphas_cumprod, sigma)


def densepure_improved_betas(indices_t_steps, T):
    """improved_diffusion/gaussian_diffusion.py p_sample, first call (step == len(indices))."""
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = []
    indices_t_steps = list(indices_t_steps)
    indices_t_steps.append(0)
    indices_t_steps = indices_t_steps[::-1]
    for i in range(len(indices_t_steps) - 1):
        t1 = indices_t_steps[i] / T
        t2 = indices_t_steps[i + 1] / T
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999))
    return np.array(betas, dtype=np.float64)


def densepure_guided_betas(indices_t_steps, alphas_cumprod_origin):
    """guided_diffusion/gaussian_diffusion.py p_sample, first call; alphas_cumprod_origin = the discrete ᾱ."""
    betas = []
    indices_t_steps = list(indices_t_steps)
    indices_t_steps.append(0)
    indices_t_steps = indices_t_steps[::-1]
    for i in range(len(indices_t_steps) - 1):
        t1 = indices_t_steps[i]
        t2 = indices_t_steps[i + 1]
        betas.append(min(1 - alphas_cumprod_origin[t2] / alphas_cumprod_origin[t1], 0.999))
    return np.array(betas, dtype=np.float64)


@pytest.mark.parametrize("sigma", [0.25, 0.5])
@pytest.mark.parametrize("steps", [2, 5, 10])
def test_densepure_grid_and_betas(schedule, sigma, steps):
    name, T, d = schedule
    t = ts.densepure_t(d.alphas_cumprod, sigma, name, T)
    inter = t / steps                                   # runners: indices_t_steps
    ref_grid = [round(t - i * inter) for i in range(steps)]
    grid = ts.densepure_grid(t, steps)
    assert grid == ref_grid
    got = ts.densepure_betas(grid, name, d.alphas_cumprod, T)
    ref = densepure_improved_betas(grid, T) if name == "cosine" else densepure_guided_betas(grid, d.alphas_cumprod)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)
    # the product of the respaced alphas reaches the continuous / discrete ᾱ at the top of the grid
    top = np.prod(1 - got)
    if name == "cosine":
        assert top == pytest.approx(ts.cosine_alpha_bar(grid[0] / T) / ts.cosine_alpha_bar(0.0), rel=1e-12)
        # continuous ᾱ(g/T) (normalized) is the discrete ᾱ one index below (ALGORITHMS §5)
        assert ts.cosine_alpha_bar(grid[0] / T) / ts.cosine_alpha_bar(0) == pytest.approx(
            d.alphas_cumprod[grid[0] - 1], rel=1e-9)
    else:
        assert top == pytest.approx(d.alphas_cumprod[grid[0]] / d.alphas_cumprod[0], rel=1e-12)
    # what the generic discrete respacing gives instead (not DensePure's on cosine)
    if name == "cosine":
        disc = d.respaced(grid).betas
        assert np.abs(disc - got).max() > 1e-6


@pytest.mark.parametrize("sigma", SIGMAS)
def test_q_sample_is_pixel_noise_sigma_q(schedule, sigma):
    """DDS DRM.denoise: x_t = diffusion.q_sample(2x − 1, t*, ε). That is √ᾱ·(2(x + σ_q ε) − 1) with
    σ_q = √(1/ᾱ − 1)/2 ≥ σ: Smooth drawing pixel noise at σ_q reproduces DDS's x_t exactly."""
    name, T, d = schedule
    t = ts.t_star_for_sigma(d.alphas_cumprod, sigma)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    tt = torch.full((2,), t, dtype=torch.long)
    ab = float(d.alphas_cumprod[t])
    ref = math.sqrt(ab) * (2 * x - 1) + math.sqrt(1 - ab) * eps          # q_sample, float64
    sq = ts.q_sample_sigma(d.alphas_cumprod, t)
    ours = ts.x_t_scale("schedule", d.alphas_cumprod, t, sigma) * (2 * (x + sq * eps) - 1)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(d.q_sample((2 * x - 1).float(), tt, eps.float()).double(), ref, atol=1e-6, rtol=0)
    assert sigma <= sq < 1.01 * sigma                   # slightly above σ (the radius keeps the nominal σ)
