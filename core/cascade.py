"""Multi-scale (cascaded) smoothing of Jeong & Shin 2023 (ALGORITHMS §3b, §3c).

The cascade works on per-sigma counts only; it has no idea what a denoiser is. Stages run from the
largest sigma down, whatever order the sigmas were given in. Radii are in pixel units (the MDDS
files' radius after their halving); ``r_neg`` is in pixel units too (MDDS printed it unhalved).
``run_cascade`` is the one implementation of the rules: fixed N (``cascade_decide``, ``certify``) runs it
on one-look stages, ``--adaptive`` (``sequential_cascade``, ``certify_adaptive``) on many (``core.adaptive``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from core import adaptive, stats
from core.smoothing import ABSTAIN, Smooth

UNDECIDED = -2
StageCounts = adaptive.StageCounts   # re-exported: the counts of one stage (``CascadeResult.counts``)
__all__ = ["UNDECIDED", "ABSTAIN", "StageCounts", "CascadeResult", "PredictResult", "MultiScaleSmooth", "ALPHA_RULES",
           "stage_alpha", "capped_result", "run_cascade", "cascade_decide", "sequential_cascade"]


@dataclass
class CascadeResult:
    prediction: int          # class, ABSTAIN (-1) or UNDECIDED (-2)
    radius: float            # pixel-space L2 radius (0 unless a class is certified)
    stage: int               # index (descending sigma) of the stage that ended the cascade
    sigma: float             # that stage's sigma
    r_neg: float             # max over earlier stages of their off-class radius (NO_EARLIER_STAGE if none)
    n_used: int = 0          # noise samples drawn over all stages (selection included)
    counts: list = field(default_factory=list, repr=False)


ALPHA_RULES = ("mdds", "union")


def stage_alpha(alpha: float, k: int, num_stages: int = 1, rule: str = "mdds") -> float:
    """The level of every bound a certificate at stage k (0-based, descending sigma) rests on.

    'mdds' (the reference): alpha_k = alpha / (k + 1) — stage k's own lower bound and the k off-class
    bounds of the earlier stages, k + 1 bounds at alpha / (k + 1). Which stage certifies is itself random,
    so a union bound over the K stages a run may end at only gives K * alpha overall.
    'union' (provably alpha): a wrong certificate needs one of the bounds that *some* stage k would rest
    on to fail — (k + 1) bounds for stage k, K (K + 1) / 2 in all, each at alpha_k = 2 alpha / (K (K + 1)).
    (Abstain/undecided decisions need no bound of their own: a certificate at stage k holds as soon as its
    own lower bound and the off-class bounds of the earlier stages hold.)
    """
    if rule == "mdds":
        return alpha / (k + 1)
    if rule == "union":
        return 2 * alpha / (num_stages * (num_stages + 1))
    raise ValueError(f"unknown cascade alpha rule {rule!r}; choose from {ALPHA_RULES}")


def capped_result(c: int, R: float, r_neg: float, k: int, sigma: float, n_used: int, counts: list) -> CascadeResult:
    """Certify c at stage k with radius R capped by the earlier stages, R <- min(R, -r_neg); a cap that
    makes R negative turns the output into ABSTAIN with radius 0 (stage and r_neg kept)."""
    R = min(R, -r_neg)
    if R < 0:
        return CascadeResult(ABSTAIN, 0.0, k, sigma, r_neg, n_used, counts)
    return CascadeResult(c, R, k, sigma, r_neg, n_used, counts)


def run_cascade(open_stage: Callable[[int, float], adaptive.Stage], sigmas: Sequence[float], alpha: float,
                p0: float = 0.5, alpha_rule: str = "mdds", grid: Sequence[float] = ()) -> CascadeResult:
    """The MDDS cascaded CERTIFY (sigmas descending); ``open_stage(k, alpha_k)`` draws stage k's selection
    draws and its first look, lazily: a stage below the deciding one is never opened.

    Stage k's bounds are at alpha_k = stage_alpha(alpha, k, K, alpha_rule) (MDDS: alpha / (k + 1)):
    - pLower >= p0: certify cAHat with R = sigma_k (Phi^-1(pLower) - Phi^-1(p0)), capped by every earlier
      stage j's off-class radius r_j = sigma_j (Phi^-1(pBUpper_j) - Phi^-1(p0)) (bounded at alpha_k), so
      that no other class can reach p0 at an earlier, larger sigma within R; stop (``capped_result``).
    - pUpper < p0: the stage confidently abstains: go on to the next smaller sigma.
    - otherwise UNDECIDED; stop.
    With one-look stages (fixed N) that is all. With looks (``--adaptive``) a stage is sampled on while
    ``core.adaptive.settle`` says the reported radius can still reach the next radius of ``grid`` (an
    earlier stage may be sampled further to lift its cap), and an undecided stage while it may still
    certify or abstain; it ends UNDECIDED at its last look.
    """
    seen: list[adaptive.Stage] = []

    def n_used() -> int:
        return sum(s.n_used for s in seen)

    def all_counts() -> list[StageCounts]:
        return [s.counts() for s in seen]

    grid = np.asarray(grid, dtype=float)
    for k, sigma in enumerate(sigmas):
        alpha_k = stage_alpha(alpha, k, len(sigmas), alpha_rule)
        stage = open_stage(k, alpha_k)
        earlier, seen = list(seen), seen + [stage]
        c = stage.cAHat
        while True:
            if stage.pLower >= p0:  # certifies c: sample on while the capped radius can reach the next grid radius
                r_js = [prev.offclass_radius(c, alpha_k, p0) for prev in earlier]  # (now, best) per stage
                caps = [(-r_now, -r_best, prev) for (r_now, r_best), prev in zip(r_js, earlier)]
                step = adaptive.settle([(*stage.radius(p0), stage)] + caps, grid)
                if not step:
                    r_neg = max([stats.NO_EARLIER_STAGE] + [r_now for r_now, _ in r_js])
                    return capped_result(c, stats.radius(sigma, stage.pLower, p0), r_neg, k, sigma, n_used(),
                                         all_counts())
                for s in step:
                    s.advance()
                continue
            if stage.pUpper < p0:  # confidently abstains: leave the stage now
                break
            _, best = stage.radius(p0)
            if stage.done or (best < 0 and not stage.can_abstain(p0)):
                return CascadeResult(UNDECIDED, 0.0, k, sigma, stats.NO_EARLIER_STAGE, n_used(), all_counts())
            stage.advance()
    return CascadeResult(ABSTAIN, 0.0, len(sigmas) - 1, sigmas[-1], stats.NO_EARLIER_STAGE, n_used(), all_counts())


def cascade_decide(sample_stage: Callable[[int], StageCounts], sigmas: list[float], alpha: float,
                   p0: float = 0.5, alpha_rule: str = "mdds") -> CascadeResult:
    """The fixed-N cascade (``run_cascade``) on counts drawn lazily by ``sample_stage(k)`` (sigmas descending)."""
    def open_stage(k: int, alpha_k: float) -> adaptive.Stage:
        return adaptive.Stage.from_counts(sample_stage(k), sigmas[k], alpha_k)
    return run_cascade(open_stage, sigmas, alpha, p0, alpha_rule)


def sequential_cascade(samplers: Sequence[adaptive.Sampler], sigmas: Sequence[float], n0: int, n_max: int,
                       alpha: float, p0: float = 0.5, radius_grid: Sequence[float] | None = None,
                       first_look: int = adaptive.FIRST_LOOK, growth: float = adaptive.GROWTH,
                       final_share: float = adaptive.FINAL_SHARE, power: float = adaptive.POWER,
                       futility: float = adaptive.FUTILITY, alpha_rule: str = "mdds") -> CascadeResult:
    """Sequential MDDS cascade: ``samplers[k](num)`` draws num more samples of stage k (sigmas descending).

    Stages are sampled lazily (a stage below the deciding one is never sampled); an earlier stage may be
    sampled further after it was left, to tighten its off-class cap. Result as ``cascade_decide``'s.
    """
    adaptive.check_n0(n0)
    looks, weights = adaptive.schedule(n_max, first_look, growth, final_share, power)
    grid = adaptive.radius_grid_for(sigmas[0], n_max, alpha * weights[-1], radius_grid, p0)
    def open_stage(k: int, alpha_k: float) -> adaptive.Stage:
        return adaptive.Stage(samplers[k], sigmas[k], n0, looks, weights, alpha_k, futility)
    return run_cascade(open_stage, sigmas, alpha, p0, alpha_rule, grid)


@dataclass
class PredictResult:
    prediction: int          # final answer (MDDS: clean logits + log prior of the accepting stage)
    pred0: int               # the accepting stage's top class, or ABSTAIN
    stage: int               # last stage run (descending sigma)
    probs: np.ndarray | None  # counts / N of the accepting stage


class MultiScaleSmooth:
    """Cascade of smoothed classifiers, one per sigma (MDDS). ``base_classifiers`` maps sigma -> f_sigma;
    ``noise_sigmas`` (optional) sigma -> the noise drawn at that level (``Smooth``'s noise_sigma ≥ sigma)."""

    def __init__(self, base_classifiers: dict[float, Callable[[torch.Tensor], torch.Tensor]], num_classes: int,
                 p0: float = 0.5, seed: int = 0, split=None, alpha_rule: str = "mdds",
                 noise_sigmas: dict[float, float] | None = None):
        if not base_classifiers:
            raise ValueError("need at least one sigma")
        if alpha_rule not in ALPHA_RULES:
            raise ValueError(f"unknown cascade alpha rule {alpha_rule!r}; choose from {ALPHA_RULES}")
        self.alpha_rule = alpha_rule
        if not 0 < p0 < 1:
            raise ValueError(f"p0 must be in (0, 1), got {p0}")
        self.sigmas = sorted((float(s) for s in base_classifiers), reverse=True)
        noise = noise_sigmas or {}
        self.smooths = [Smooth(base_classifiers[s], num_classes, s, seed, split, noise.get(s)) for s in self.sigmas]
        self.num_classes = num_classes
        self.p0 = p0
        self.seed = seed

    def _stage_generator(self, x: torch.Tensor, generator, k: int) -> torch.Generator | None:
        # A callable gives one independent stream per stage (the certify driver passes (seed, idx, k)).
        return generator(k) if callable(generator) else generator

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator=None) -> CascadeResult:
        """Cascaded CERTIFY; stages below the deciding one are never sampled.

        generator: None, a torch.Generator shared by the stages in order, or a callable k -> Generator.
        """
        def open_stage(k: int, alpha_k: float) -> adaptive.Stage:
            g, s = self._stage_generator(x, generator, k), self.smooths[k]
            return adaptive.Stage.fixed(lambda num: s.sample_counts(x, num, batch_size, g), s.sigma, n0, n, alpha_k)
        return run_cascade(open_stage, self.sigmas, alpha, self.p0, self.alpha_rule)

    def certify_adaptive(self, x: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int,
                         generator=None, **kwargs) -> CascadeResult:
        """Sample-efficient cascaded CERTIFY (anytime-valid; same overall alpha): ``sequential_cascade``.

        generator as ``certify``'s; a callable is called once per stage, at its first draw (a resumed stage
        continues its stream, never restarts it). kwargs as ``Smooth.certify_adaptive``.
        """
        gens: dict[int, torch.Generator | None] = {}

        def sampler(k: int) -> adaptive.Sampler:
            def sample(num: int) -> np.ndarray:
                if k not in gens:
                    gens[k] = self._stage_generator(x, generator, k)
                return self.smooths[k].sample_counts(x, num, batch_size, gens[k])
            return sample
        return sequential_cascade([sampler(k) for k in range(len(self.sigmas))], self.sigmas, n0, n_max, alpha, self.p0,
                                  alpha_rule=self.alpha_rule, **kwargs)

    def predict_detailed(self, x: torch.Tensor, n: int, batch_size: int, generator=None,
                         clean_logits: torch.Tensor | np.ndarray | None = None, unif_w: float = 0.1) -> PredictResult:
        """MDDS predict (ALGORITHMS §3c): the first stage (descending sigma) whose top class has
        >= p0 * n of the n draws accepts it; with ``clean_logits`` the answer is
        argmax(clean_logits + log max(pi, 1e-20)), pi = (1 - w) counts / n + w / K, else the accepted class.
        If every stage abstains: the clean argmax (or ABSTAIN without clean logits).
        """
        probs, pred0, stage = None, ABSTAIN, 0
        for stage, s in enumerate(self.smooths):
            counts = s.sample_counts(x, n, batch_size, self._stage_generator(x, generator, stage))
            top = int(np.argmax(counts))
            if counts[top] >= self.p0 * n:
                pred0, probs = top, counts / n
                break
        if clean_logits is None:
            return PredictResult(pred0, pred0, stage, probs)
        logits = torch.as_tensor(clean_logits, dtype=torch.float64).reshape(-1).cpu().numpy()
        if probs is not None:
            prior = (1 - unif_w) * probs + unif_w / len(probs)
            logits = logits + np.log(np.clip(prior, 1e-20, None))
        return PredictResult(int(np.argmax(logits)), pred0, stage, probs)

    def predict(self, x: torch.Tensor, n: int, batch_size: int, generator=None, **kwargs) -> int:
        """MDDS predict: the answer only (see ``predict_detailed``)."""
        return self.predict_detailed(x, n, batch_size, generator, **kwargs).prediction

