"""Multi-scale (cascaded) smoothing of Jeong & Shin 2023 (ALGORITHMS §3b, §3c).

The cascade works on per-sigma counts only; it has no idea what a denoiser is. Stages run from the
largest sigma down, whatever order the sigmas were given in. Radii are in pixel units (the MDDS
files' radius after their halving); ``r_neg`` is in pixel units too (MDDS printed it unhalved).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core import stats
from core.smoothing import ABSTAIN, Smooth, example_generator

UNDECIDED = -2


@dataclass
class StageCounts:
    """The two independent count vectors of one stage: n0 selection draws, n estimation draws."""
    selection: np.ndarray
    estimation: np.ndarray


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


def offclass_radius(sigma_j: float, counts_j: np.ndarray, c: int, alpha: float, p0: float = 0.5) -> float:
    """MDDS r_j = sigma_j (Phi^-1(pBUpper_j) - Phi^-1(p0)) of an earlier stage j for the certified class c:
    within radius -r_j no class other than c reaches p0 at sigma_j (pBUpper_j bounded at alpha)."""
    return stats.radius(sigma_j, stats.offclass_upper(counts_j, c, alpha), p0)


def capped_result(c: int, R: float, r_neg: float, k: int, sigma: float, n_used: int, counts: list) -> CascadeResult:
    """Certify c at stage k with radius R capped by the earlier stages, R <- min(R, -r_neg); a cap that
    makes R negative turns the output into ABSTAIN with radius 0 (stage and r_neg kept)."""
    R = min(R, -r_neg)
    if R < 0:
        return CascadeResult(ABSTAIN, 0.0, k, sigma, r_neg, n_used, counts)
    return CascadeResult(c, R, k, sigma, r_neg, n_used, counts)


def cascade_decide(sample_stage: Callable[[int], StageCounts], sigmas: list[float], alpha: float,
                   p0: float = 0.5, alpha_rule: str = "mdds") -> CascadeResult:
    """The MDDS cascaded CERTIFY on counts drawn lazily by ``sample_stage(k)`` (sigmas descending).

    Stage k uses alpha_k = stage_alpha(alpha, k, K, alpha_rule) (MDDS: alpha / (k + 1)):
    - pLower >= p0: certify cAHat with R = sigma_k (Phi^-1(pLower) - Phi^-1(p0)), capped by every earlier
      stage j's off-class radius r_j = sigma_j (Phi^-1(pBUpper_j) - Phi^-1(p0)) (bounded at alpha_k), so
      that no other class can reach p0 at an earlier, larger sigma within R; stop.
    - pUpper >= p0 > pLower: UNDECIDED; stop.
    - otherwise the stage confidently abstains: go on to the next smaller sigma.
    A cap that makes R negative turns the output into ABSTAIN with radius 0 (stage and r_neg kept).
    """
    seen: list[StageCounts] = []
    n_used = 0
    for k, sigma in enumerate(sigmas):
        sc = sample_stage(k)
        n_used += int(sc.selection.sum() + sc.estimation.sum())
        alpha_k = stage_alpha(alpha, k, len(sigmas), alpha_rule)
        cAHat = int(np.argmax(sc.selection))  # ties -> lowest class index
        n = int(sc.estimation.sum())
        p_lower, p_upper = stats.cp_bounds(int(sc.estimation[cAHat]), n, alpha_k)
        if p_lower >= p0:
            r_neg = max([stats.NO_EARLIER_STAGE] + [offclass_radius(sigmas[j], prev.estimation, cAHat, alpha_k, p0)
                                                    for j, prev in enumerate(seen)])
            return capped_result(cAHat, stats.radius(sigma, p_lower, p0), r_neg, k, sigma, n_used, seen + [sc])
        if p_upper >= p0:
            return CascadeResult(UNDECIDED, 0.0, k, sigma, stats.NO_EARLIER_STAGE, n_used, seen + [sc])
        seen.append(sc)
    return CascadeResult(ABSTAIN, 0.0, len(sigmas) - 1, sigmas[-1], stats.NO_EARLIER_STAGE, n_used, seen)


@dataclass
class PredictResult:
    prediction: int          # final answer (MDDS: clean logits + log prior of the accepting stage)
    pred0: int               # the accepting stage's top class, or ABSTAIN
    stage: int               # last stage run (descending sigma)
    probs: np.ndarray | None  # counts / N of the accepting stage


class MultiScaleSmooth:
    """Cascade of smoothed classifiers, one per sigma (MDDS). ``base_classifiers`` maps sigma -> f_sigma."""

    def __init__(self, base_classifiers: dict[float, Callable[[torch.Tensor], torch.Tensor]], num_classes: int,
                 p0: float = 0.5, seed: int = 0, split=None, alpha_rule: str = "mdds"):
        if not base_classifiers:
            raise ValueError("need at least one sigma")
        if alpha_rule not in ALPHA_RULES:
            raise ValueError(f"unknown cascade alpha rule {alpha_rule!r}; choose from {ALPHA_RULES}")
        self.alpha_rule = alpha_rule
        if not 0 < p0 < 1:
            raise ValueError(f"p0 must be in (0, 1), got {p0}")
        self.sigmas = sorted((float(s) for s in base_classifiers), reverse=True)
        self.smooths = [Smooth(base_classifiers[s], num_classes, s, seed, split) for s in self.sigmas]
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
        def sample_stage(k: int) -> StageCounts:
            g = self._stage_generator(x, generator, k)
            s = self.smooths[k]
            return StageCounts(s.sample_counts(x, n0, batch_size, g), s.sample_counts(x, n, batch_size, g))
        return cascade_decide(sample_stage, self.sigmas, alpha, self.p0, self.alpha_rule)

    def certify_adaptive(self, x: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int,
                         generator=None, **kwargs) -> CascadeResult:
        """Sample-efficient cascaded CERTIFY (anytime-valid; same overall alpha): see ``core.adaptive``."""
        from core.adaptive import cascade_certify_adaptive
        return cascade_certify_adaptive(self, x, n0, n_max, alpha, batch_size, generator, **kwargs)

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


def stage_generators(seed: int, idx: int, device, worker: int = 0) -> Callable[[int], torch.Generator]:
    """Per-(seed, idx, stage) generators for the cascade, so stage k's noise never depends on others."""
    return lambda k: example_generator(seed, idx, k, device, worker)
