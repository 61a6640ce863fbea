"""Diffusion denoised smoothing: DDS/MDDS one-shot x̂0 and DensePure's multi-step reverse (ALGORITHMS §2, §3a, §5).

Pixels x ∈ [0,1]; the diffusion works in u = 2x − 1, so pixel noise σ is 2σ there. At t* (first t with
√((1−ᾱ_t)/ᾱ_t) ≥ 2σ), √ᾱ_t*·(2(x+δ)−1) is a valid x_t* whose noise level is at least the diffusion's
(conservative: the certified radius uses the nominal σ). The denoiser is a deterministic (one-shot) or
seeded-stochastic (DensePure) function of x+δ, so Cohen's guarantee holds for f∘denoise.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import MsrsError
from core.smoothing import example_generator
from models.diffusion import COSINE_S, cosine_alpha_bar

if TYPE_CHECKING:  # duck-typed: alphas_cumprod, predicts_eps, model_timesteps, respaced, p_sample
    from models.diffusion import GaussianDiffusion

REVERSE_STAGE = 1_000_000  # generator stage of reverse stream k: REVERSE_STAGE + k (apart from noise stages)
NOISES = ("add", "q_sample", "densepure")    # the protocols' noise constructions (core.runs.protocols)
T_RULES = ("first", "densepure")
RESPACINGS = ("discrete", "densepure")


def t_star_for_sigma(alphas_cumprod: np.ndarray | torch.Tensor, sigma: float) -> int:
    """DDS and MDDS: the first t ≥ 1 with √((1−ᾱ_t)/ᾱ_t) ≥ 2σ (σ in pixels; DDS starts its search at 1, MDDS
    at 0 with √ᾱ_t ≤ 1/√(1+4σ²): the same t).

    Cosine-4000: σ .25/.5/1 → 1158/1984/2809; linear-1000: 145/259/396.
    """
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    ok = np.flatnonzero(np.sqrt((1.0 - ab[1:]) / ab[1:]) >= 2.0 * sigma)
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


class DiffusionDenoiser(nn.Module):
    """Pixel-space denoiser x+δ → x̂0 ∈ [0,1] built on a diffusion UNet; t* is chosen once (``t_star``).

    ``num_t_steps=1``: the DDS one-shot x̂0 = clip(x_t/√ᾱ − √(1/ᾱ−1)·ε, −1, 1) at t*.
    ``num_t_steps=S>1`` (DensePure): S stochastic reverse steps on the grid round(t* − i·t*/S), i < S, with
    betas re-derived from ᾱ at the grid points and no noise on the last step; S = 1 is the one-shot x̂0.
    Its randomness is a ``torch.Generator`` re-seeded by ``set_example(seed, idx)`` from
    (seed, idx, reverse_seed), so rows do not depend on batching across examples.
    ``pad_to``: reflection-pad H, W to this size, denoise, crop back (MDDS ImageNet 224 → 256).
    Autocast, when asked for, is the caller's (``core.runs.setup.Autocast``); the output is float32.

    The papers' protocol choices (core.runs.protocols):
    ``noise``: 'add' (MDDS: x_t = √ᾱ_t*·(2(x+σε) − 1)); 'q_sample' (DDS / FT-CADIS: the same x_t with the
    schedule's noise √(1/ᾱ_t* − 1)/2 ≥ σ, drawn by Smooth at ``noise_sigma``); 'densepure' (x_t =
    (2(x+σε) − 1)/√(1+4σ²), the exact scale). ``t_rule``: 'first' (t_star_for_sigma) or 'densepure'
    (``densepure_t``: its float t* on cosine schedules, one-shot at round(t*); the nearest index otherwise).
    ``respacing``: 'discrete' (``diffusion.respaced``) or 'densepure' (``densepure_betas``; needs
    ``schedule``, the diffusion's noise_schedule name).
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, sigma: float, num_t_steps: int = 1,
                 pad_to: int | None = None, clip: bool = True, reverse_seed: int = 0, noise: str = "add",
                 t_rule: str = "first", respacing: str = "discrete", schedule: str | None = None):
        super().__init__()
        for name, value, allowed in (("noise", noise, NOISES), ("t_rule", t_rule, T_RULES),
                                     ("respacing", respacing, RESPACINGS)):
            if value not in allowed:
                raise MsrsError(f"unknown {name} {value!r}; valid: {', '.join(allowed)}")
        if "densepure" in (t_rule, respacing) and schedule is None:
            raise MsrsError("DensePure's t* / respacing need the diffusion's noise_schedule name (schedule=)")
        self.model, self.diffusion = model, diffusion
        self.sigma, self.num_t_steps, self.pad_to, self.clip = float(sigma), int(num_t_steps), pad_to, clip
        self.reverse_seed = int(reverse_seed)
        self.noise, self.t_rule, self.respacing = noise, t_rule, respacing
        ac, T = diffusion.alphas_cumprod, diffusion.num_timesteps
        if self.num_t_steps < 1:
            raise MsrsError(f"--num_t_steps must be >= 1, got {num_t_steps}")
        if noise == "q_sample" and self.num_t_steps > 1:
            raise MsrsError("the q_sample noise (DDS / FT-CADIS) is one-shot denoising: use --num_t_steps 1")
        self.t_float = densepure_t(ac, self.sigma, schedule, T) if t_rule == "densepure" else t_star_for_sigma(ac, sigma)
        self.t_star = int(round(self.t_float))
        ab = float(ac[self.t_star])
        self.sqrt_recip_ab, self.sqrt_recipm1_ab = math.sqrt(1 / ab), math.sqrt(1 / ab - 1)
        # what multiplies u = 2(x+δ) − 1 to make x_t
        self.x_t_scale = x_t_scale("exact" if noise == "densepure" else "schedule", ac, self.t_star, self.sigma)
        # the pixel noise Smooth must draw (q_sample: the schedule's, slightly above σ)
        self.noise_sigma = max(self.sigma, q_sample_sigma(ac, self.t_star)) if noise == "q_sample" else self.sigma
        self.t_model = diffusion.model_timesteps(torch.tensor([self.t_star]))  # what the UNet sees at t*
        self.t_grid = sorted(set(densepure_grid(self.t_float, self.num_t_steps)))
        if len(self.t_grid) != self.num_t_steps or self.t_grid[0] < 1:
            raise MsrsError(f"--num_t_steps {num_t_steps} exceeds t*={self.t_float:g} distinct timesteps; "
                            "use fewer steps")
        # a new, respaced schedule: the diffusion's own arrays are never touched (ALGORITHMS §8.9)
        self.reverse = None
        if self.num_t_steps > 1:
            betas = densepure_betas(self.t_grid, schedule, ac, T) if respacing == "densepure" else None
            self.reverse = diffusion.respaced(self.t_grid, betas=betas)
        self._example: tuple[int, int] = (0, 0)
        self._gen: torch.Generator | None = None

    @property
    def stochastic(self) -> bool:
        return self.num_t_steps > 1

    def set_example(self, seed: int, idx: int) -> None:
        """Restart the reverse stream at (seed, idx, reverse_seed); the certify driver calls it per example."""
        self._example, self._gen = (int(seed), int(idx)), None

    def reverse_generator(self, device: torch.device, k: int | None = None) -> torch.Generator:
        """A fresh generator of reverse stream k (default: this denoiser's reverse_seed) for the current example."""
        k = self.reverse_seed if k is None else k
        return example_generator(*self._example, REVERSE_STAGE + k, device)

    def _t_model_on(self, device: torch.device) -> torch.Tensor:
        """t* as the UNet sees it, on ``device``: copied once, not per batch (a host-to-device copy from
        pageable memory can stall the sampling loop)."""
        if self.t_model.device != device:
            self.t_model = self.t_model.to(device)
        return self.t_model

    def net(self, x_t: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        """The UNet, float32 out."""
        return self.model(x_t, t_model).float()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: noisy pixels [B,C,H,W] (x + σ·N(0,I), unclipped) → x̂0 in pixels [B,C,H,W], float32."""
        B, C, H, W = x.shape
        u = 2.0 * x.float() - 1.0
        if self.pad_to is not None and (H, W) != (self.pad_to, self.pad_to):
            ph, pw = self.pad_to - H, self.pad_to - W
            u = F.pad(u, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")
        x_t = self.x_t_scale * u
        if self.reverse is None:
            out = self.net(x_t, self._t_model_on(x.device).expand(B))[:, :C]
            # x̂0 = x_t/√ᾱ − √(1/ᾱ − 1)·ε (or the network's x̂0 for predict_xstart models)
            x0 = self.sqrt_recip_ab * x_t - self.sqrt_recipm1_ab * out if self.diffusion.predicts_eps else out
            x0 = x0.clamp(-1, 1) if self.clip else x0
        else:
            if generator is None:
                if self._gen is None or self._gen.device != x.device:
                    self._gen = self.reverse_generator(x.device)
                generator = self._gen
            x0 = x_t
            for j in reversed(range(self.num_t_steps)):  # x0 ends as the last step's (noise-free) x̂0
                t = torch.full((B,), j, dtype=torch.long, device=x.device)
                x0 = self.reverse.p_sample(self.net, x0, t, generator=generator, clip_denoised=self.clip)["sample"]
        if self.pad_to is not None and (H, W) != (self.pad_to, self.pad_to):
            top, left = (self.pad_to - H) // 2, (self.pad_to - W) // 2
            x0 = x0[:, :, top:top + H, left:left + W]
        return (x0 + 1) / 2

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma}, t_star={self.t_float:g}, num_t_steps={self.num_t_steps}, pad_to={self.pad_to}, "
                f"noise={self.noise}, t_rule={self.t_rule}, respacing={self.respacing}")


def majority_vote(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels [K,B] (one row per reverse seed) → the most frequent label per column [B]; ties → earliest seed's."""
    counts = F.one_hot(labels, num_classes).sum(0)                      # [B, num_classes]
    votes = counts.gather(1, labels.T)                                   # [B, K]: count of seed k's label
    first = (votes == votes.max(1, keepdim=True).values).int().argmax(1)  # argmax returns the first maximum
    return labels.T.gather(1, first[:, None])[:, 0]


class DenoiseThenClassify(nn.Module):
    """Base classifier f(D(x+δ)): pixel noisy batch [B,C,H,W] → scores [B,K] (Smooth counts their argmax).

    ``denoiser``: a DiffusionDenoiser, any module noisy pixels → denoised pixels (e.g. DnCNN), or None.
    ``reverse_seeds=K>1`` (DensePure): K runs of a stochastic denoiser with independent reverse streams
    k = 0..K−1, majority vote of their labels per noise sample (ties → earliest seed), returned one-hot;
    the voted label is a fixed function of (x+δ, reverse randomness), so Cohen's guarantee still holds.
    Scores are float32.
    """

    def __init__(self, denoiser: nn.Module | None, classifier: Callable[[torch.Tensor], torch.Tensor], sigma: float,
                 reverse_seeds: int = 1):
        super().__init__()
        self.denoiser, self.classifier = denoiser, classifier
        self.sigma, self.reverse_seeds = float(sigma), int(reverse_seeds)
        den_sigma = getattr(denoiser, "sigma", None)
        if den_sigma is not None and abs(float(den_sigma) - self.sigma) > 1e-12:
            raise MsrsError(f"denoiser was built for sigma={den_sigma}, classifier wrapper for sigma={sigma}")
        if self.reverse_seeds > 1 and not getattr(denoiser, "stochastic", False):
            raise MsrsError("--reverse_seeds > 1 needs a stochastic denoiser (a diffusion with --num_t_steps > 1)")
        self._example: tuple[int, int] = (0, 0)
        self._gens: list[torch.Generator] | None = None

    def set_example(self, seed: int, idx: int) -> None:
        """Restart every reverse stream at (seed, idx); called by the certify driver before each example."""
        self._example, self._gens = (int(seed), int(idx)), None
        if hasattr(self.denoiser, "set_example"):
            self.denoiser.set_example(seed, idx)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse_seeds == 1:
            return self.classify(x if self.denoiser is None else self.denoiser(x))
        if self._gens is None or self._gens[0].device != x.device:
            self._gens = [self.denoiser.reverse_generator(x.device, k) for k in range(self.reverse_seeds)]
        runs = [self.classify(self.denoiser(x, generator=g)) for g in self._gens]
        num_classes = runs[0].shape[1]
        voted = majority_vote(torch.stack([r.argmax(1) for r in runs]), num_classes)
        return F.one_hot(voted, num_classes).float()
