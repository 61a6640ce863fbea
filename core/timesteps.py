"""σ → diffusion timestep rules of the papers, the x_t they build from a noisy image, and DensePure's
respaced reverse schedule (ALGORITHMS §0, §2, §3a, §5). Pure numpy math on a schedule's ᾱ; no torch.

Pixels x ∈ [0,1] smoothed at σ are 2σ-noisy in the diffusion's u = 2x − 1.

- ``first_t``: DDS and MDDS: the first t ≥ 1 with √((1−ᾱ_t)/ᾱ_t) ≥ 2σ (the same t either way).
- ``densepure_t``: DensePure: on cosine schedules the float t* from the continuous cosine inverse (its
  one-shot mode uses round(t*)); on other schedules the index whose √(1/ᾱ_t − 1) is nearest 2σ.
- ``x_t_scale``: what multiplies u + 2σε: √ᾱ_t* (MDDS, the schedule's value at t*) or 1/√(1+4σ²)
  (DensePure, the exact value for 2σ).
- ``q_sample_sigma``: DDS / FT-CADIS draw x_t = √ᾱ u + √(1−ᾱ) ε, i.e. pixel noise √(1/ᾱ_t* − 1)/2 ≥ σ.
- ``densepure_grid`` / ``densepure_betas``: the S reverse steps round(t* − i·t*/S) and their betas.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from core.errors import MsrsError

COSINE_S = 0.008     # improved-diffusion's cosine offset: ᾱ(τ) ∝ cos²((τ + s)/(1 + s)·π/2)


def _ratio(alphas_cumprod: np.ndarray) -> np.ndarray:
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - ab) / ab)


def first_t(alphas_cumprod: Sequence[float], sigma: float) -> int:
    """First t ≥ 1 with √((1−ᾱ_t)/ᾱ_t) ≥ 2σ (σ in pixels). Cosine-4000: σ .25/.5/1 → 1158/1984/2809;
    linear-1000: 145/259/396."""
    ok = np.flatnonzero(_ratio(alphas_cumprod)[1:] >= 2.0 * sigma)
    if ok.size == 0:
        raise MsrsError(f"sigma={sigma} is larger than the diffusion's largest noise level; use a smaller sigma")
    return int(ok[0]) + 1


def densepure_t(alphas_cumprod: Sequence[float], sigma: float, schedule: str, num_timesteps: int) -> float | int:
    """DensePure's start timestep. 'cosine': T(1 − (2(1+s)/π)·asin(sin(π/(2(1+s)))/√(1+4σ²))), a float
    (runners/diffpure_ddpm_densepure.py); otherwise the t < T−1 with √(1/ᾱ_t − 1) < 2σ ≤ √(1/ᾱ_{t+1} − 1)
    that is nearer to 2σ (t+1 when strictly nearer), or T−1 when none brackets 2σ (diffpure_guided_densepure.py)."""
    s2 = 2.0 * sigma
    if schedule == "cosine":
        k = 2.0 * (1.0 + COSINE_S)
        return num_timesteps * (1.0 - k * math.asin(math.sin(math.pi / k) / math.sqrt(1.0 + s2 ** 2)) / math.pi)
    r = np.sqrt(1.0 / np.asarray(alphas_cumprod, dtype=np.float64) - 1.0)
    for t in range(len(r) - 1):
        if r[t] < s2 <= r[t + 1]:
            return t + 1 if s2 - r[t] > r[t + 1] - s2 else t
    return len(r) - 1


def x_t_scale(rule: str, alphas_cumprod: Sequence[float], t: int, sigma: float) -> float:
    """The factor on u + 2σε: 'schedule' √ᾱ_t (MDDS, DDS); 'exact' 1/√(1+4σ²) (DensePure)."""
    if rule == "schedule":
        return math.sqrt(float(alphas_cumprod[t]))
    if rule == "exact":
        return 1.0 / math.sqrt(1.0 + 4.0 * sigma ** 2)
    raise MsrsError(f"unknown x_t scale rule {rule!r} (schedule or exact)")


def q_sample_sigma(alphas_cumprod: Sequence[float], t: int) -> float:
    """Pixel-space noise of q_sample at t: x_t/√ᾱ_t = u + √(1/ᾱ_t − 1)·ε = 2(x + σ_q ε) − 1."""
    return 0.5 * math.sqrt(1.0 / float(alphas_cumprod[t]) - 1.0)


def densepure_grid(t_star: float, num_steps: int) -> list[int]:
    """round(t* − i·t*/S) for i < S, descending (t* may be a float; Python's round, half to even)."""
    inter = t_star / num_steps
    return [round(t_star - i * inter) for i in range(num_steps)]


def cosine_alpha_bar(tau: float) -> float:
    """improved-diffusion's continuous, unnormalized ᾱ(τ) = cos²((τ + s)/(1 + s)·π/2), τ = t/T."""
    return math.cos((tau + COSINE_S) / (1.0 + COSINE_S) * math.pi / 2) ** 2


def densepure_betas(grid: Sequence[int], schedule: str, alphas_cumprod: Sequence[float],
                    num_timesteps: int) -> np.ndarray:
    """Betas of DensePure's S-step reverse schedule over [0, g_{S−1}, ..., g_0] (ascending), capped at 0.999.

    'cosine' (improved-diffusion, p_sample): 1 − ᾱ(g_{j+1}/T)/ᾱ(g_j/T) with the continuous ᾱ, which equals
    the discrete ᾱ one index below. Otherwise (guided-diffusion): 1 − ᾱ_{g_{j+1}}/ᾱ_{g_j} with the discrete
    ᾱ of the schedule, ᾱ_0 included at 0 (the code's ``alphas_cumprod_origin[0]``, i.e. 1 − β_0, not 1).
    Returned in the order of the reverse index j = 0..S−1 (j ↔ grid point g_{S−1−j}).
    """
    points = [0] + sorted(int(g) for g in grid)
    if len(set(points)) != len(points):
        raise MsrsError(f"DensePure grid {list(grid)} repeats a timestep (or reaches 0); use fewer steps")
    if schedule == "cosine":
        ab = [cosine_alpha_bar(p / num_timesteps) for p in points]
    else:
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
        ab = [float(ac[p]) for p in points]
    return np.array([min(1.0 - ab[j + 1] / ab[j], 0.999) for j in range(len(points) - 1)], dtype=np.float64)
