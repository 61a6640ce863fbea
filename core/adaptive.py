"""Sample-efficient CERTIFY (``--adaptive``, ALGORITHMS §7b): draw the estimation samples in growing
rounds and stop as soon as the certified radius is settled on an evaluation grid of radii.

This module holds what the fixed and the sequential paths share: a sigma's draws and their bounds at the
looks (``Stage``; fixed-N CERTIFY is the one-look case at the full alpha), the look schedule and its
alpha split, and the stopping rule (``settle``). The decisions are the papers' own and live with them:
Cohen's in ``core.smoothing`` (``certify_decision``), the MDDS cascade's in ``core.cascade``
(``run_cascade``); both run the same code on one look (fixed N) and on many (``--adaptive``).

**Looks.** Estimation draws are examined only at a fixed, data-independent schedule of sample sizes
n_1 < n_2 < ... < n_L = n_max (``look_schedule``: geometric), and the one-sided level alpha is split over
them: look l uses alpha_l = w_l * alpha with sum_l w_l <= 1 (``look_weights``: FINAL_SHARE of alpha on
the last look, so that inputs that need every draw lose little against fixed-N CERTIFY; the rest over
the earlier looks in proportion to sqrt(n_l), i.e. more where the undecided inputs are).

**Soundness (one sigma).** cAHat comes from n0 selection draws that are never reused, so given cAHat the
estimation draws are iid Bernoulli(pA). At each look l, pABar_l = Clopper-Pearson lower bound of nA_l
out of n_l at alpha_l, and P(pABar_l > pA) <= alpha_l because n_l is fixed in advance. The reported
bound is max_{l <= tau} pABar_l at the look tau where sampling stopped; it exceeds pA only if the bound
of some look does, which has probability <= sum_l alpha_l <= alpha by the union bound, *whatever the
stopping rule* (tau may depend on everything seen). So the certificate (cAHat, sigma Phi^-1(pABar))
holds with probability >= 1 - alpha, exactly as CERTIFY's. The radius is the exact bound at stopping,
never rounded to the grid.

**Stopping rule** (it only decides how many samples are drawn; soundness never uses it). A radius R
being certified is *settled* when the next grid radius above it is out of reach: even if the hits by
n_max landed at the upper FUTILITY quantile of their predictive distribution (``_predicted_hits``: the
rate's uncertainty plus the luck of the draws still to come), the last look's bound (n_max draws at
alpha_L) would stay below that grid radius. Then sampling stops; it also stops at the top of the grid
and at n_max. With R < 0 (not certified) the next grid radius is 0, so a clearly abstaining input stops
at the first looks. FUTILITY trades samples for the few inputs that would have reached the next grid
radius after all (bench/adaptive_samples.py). The default grid is 0, .25, .5, ... up to the largest
radius n_max draws can certify at alpha_L.

**Cascade (MDDS, ALGORITHMS §3b).** Stage k runs at alpha_k = alpha / (k + 1) as in
the fixed cascade (``core.cascade.run_cascade``, the same loop), itself split over the looks. At each look of stage k:
pLower >= p0 -> certify cAHat (keep sampling while the capped radius can still reach the next grid
radius); pUpper < p0 -> the stage confidently abstains: leave it now and go on to the next sigma;
otherwise keep sampling, and end UNDECIDED at n_max or as soon as neither certifying nor abstaining
can be proven even optimistically. The cap min_j(-r_j) uses every earlier stage j's off-class upper
bound (``stats.offclass_upper``) on the counts of stage j *at the look l_j where it now stands*, at
level alpha_k * w_{l_j}. l_j is a data-dependent stopping time (stage j left early when it clearly
abstained, and is sampled further, lazily, when its cap is what keeps the certified radius below the
next grid radius and more draws could lift it), so the bound must be anytime-valid: for a fixed class
c (c comes from stage k's selection draws, independent of stage j's draws) and a fixed look l, the
Goodman bound on the n_l counts fails w.p. <= alpha_k * w_l, and the bound at l_j fails only if the
bound of some look does: probability <= sum_l alpha_k * w_l <= alpha_k. So every fixed-n bound of the
fixed cascade (stage k's lower bound, each earlier stage's off-class bound, all at alpha_k) is replaced
by an anytime-valid one at the same level, and the adaptive cascade keeps the fixed cascade's
guarantee (whatever the per-stage levels alpha_k give overall: they are the fixed cascade's). The
certificate's correctness needs only those bounds: whether stage j "confidently abstained" is not
used, so resuming stage j later is harmless.

Samples are drawn through callables ``sample(num) -> counts`` that continue one noise stream
(``Smooth.sample_counts`` with the same generator), so the decision code runs on scripted counts too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from core import stats

FIRST_LOOK = 256       # estimation draws at the first look
GROWTH = 1.3           # each look multiplies the draws so far by this factor (the last one is n_max)
FINAL_SHARE = 0.4      # share of alpha spent on the last look
POWER = 0.5            # the rest goes to the earlier looks in proportion to n_l^POWER
GRID_STEP = 0.25       # default evaluation grid: 0, .25, .5, ...
FUTILITY = 0.1         # predictive probability below which the next grid radius counts as out of reach

Sampler = Callable[[int], np.ndarray]


def look_schedule(n_max: int, first_look: int = FIRST_LOOK, growth: float = GROWTH) -> list[int]:
    """Cumulative estimation sample sizes of the looks: first_look * growth^l while below n_max, then n_max."""
    if n_max < 1 or first_look < 1 or not growth > 1:
        raise ValueError(f"need n_max >= 1, first_look >= 1, growth > 1; got {n_max}, {first_look}, {growth}")
    looks, n = [], int(first_look)
    while n < n_max:
        looks.append(n)
        n = max(n + 1, math.ceil(n * growth))
    return looks + [int(n_max)]


def look_weights(looks: Sequence[int], final_share: float = FINAL_SHARE, power: float = POWER) -> list[float]:
    """Shares w_l of alpha per look, summing to <= 1: final_share on the last look, the rest over the
    earlier ones in proportion to n_l^power (power 0: evenly; > 0: more where the undecided inputs are)."""
    if not looks or not 0 < final_share < 1:
        raise ValueError(f"need at least one look and final_share in (0, 1); got {len(looks)}, {final_share}")
    if len(looks) == 1:
        w = [1.0]
    else:
        early = np.asarray(looks[:-1], dtype=float) ** power
        w = ((1 - final_share) * early / early.sum()).tolist() + [final_share]
    return [x * (1 - 1e-9) for x in w]  # float rounding must never push the sum above 1


def schedule(n_max: int, first_look: int = FIRST_LOOK, growth: float = GROWTH, final_share: float = FINAL_SHARE,
             power: float = POWER) -> tuple[list[int], list[float]]:
    """The looks and their shares of alpha (data-independent: fixed before any draw)."""
    looks = look_schedule(n_max, first_look, growth)
    return looks, look_weights(looks, final_share, power)


def default_radius_grid(sigma: float, n_max: int, alpha_last: float, p0: float = 0.5,
                        step: float = GRID_STEP) -> np.ndarray:
    """0, step, 2 step, ... up to the largest radius that n_max draws (all hits) certify at alpha_last."""
    r_max = stats.radius(sigma, stats.cp_lower(n_max, n_max, alpha_last), p0)
    return np.arange(0.0, max(r_max, 0.0) + 1e-12, step)


def _next_grid(grid: np.ndarray, r: float) -> float | None:
    """The smallest grid radius above r (what sampling further could still gain), None past the top."""
    above = grid[grid > r]
    return float(above[0]) if len(above) else None


def _predicted_hits(k: int, n: int, n_last: int, z: float, high: bool) -> int:
    """Hits by the last look at z predictive standard deviations above (high) or below their mean, given
    k hits in n draws: normal approximation of k + Binomial(n_last - n, p) with p ~ N(k/n, p(1-p)/n),
    i.e. both the uncertainty of the rate and the luck of the draws still to come."""
    m = n_last - n
    v = (k + 0.5) / (n + 1)  # keeps the variance positive at k = 0 or k = n
    mean, sd = k + m * k / n, math.sqrt(v * (1 - v) * (m * m / n + m))
    return min(n_last, math.ceil(mean + z * sd)) if high else max(k, math.floor(mean - z * sd))


@dataclass
class StageCounts:
    """The two independent count vectors of one stage: n0 selection draws, n estimation draws."""
    selection: np.ndarray
    estimation: np.ndarray


class Stage:
    """One sigma's draws: n0 selection draws pick cAHat (their argmax, ties -> the lowest class; never
    reused), then estimation draws up to each look.

    ``pLower``/``pUpper`` are cAHat's Clopper-Pearson bounds intersected over the looks so far (look l at
    alpha * w_l), valid simultaneously with probability >= 1 - alpha (see the module docstring). With one
    look at weight 1 (``Stage.fixed``) they are fixed-N CERTIFY's bounds at alpha.
    """

    def __init__(self, sample: Sampler, sigma: float, n0: int, looks: Sequence[int], weights: Sequence[float],
                 alpha: float, futility: float = FUTILITY):
        self.sample, self.sigma, self.looks, self.weights, self.alpha = sample, sigma, list(looks), list(weights), alpha
        if not 0 < futility < 0.5:
            raise ValueError(f"need futility in (0, 0.5), got {futility}")
        self.z_futility = float(stats.norm.isf(futility))
        self.selection = np.asarray(sample(n0), dtype=np.int64)
        self.cAHat = int(np.argmax(self.selection))  # ties -> lowest class index
        self.estimation = np.zeros_like(self.selection)
        self.look = -1
        self.pLower, self.pUpper = 0.0, 1.0
        self.advance()

    @classmethod
    def fixed(cls, sample: Sampler, sigma: float, n0: int, n: int, alpha: float) -> "Stage":
        """Fixed-N CERTIFY's stage: n0 selection draws, then n estimation draws seen once, at alpha."""
        return cls(sample, sigma, n0, [n], [1.0], alpha)

    @classmethod
    def from_counts(cls, counts: StageCounts, sigma: float, alpha: float) -> "Stage":
        """A fixed stage on counts drawn already (the selection vector, then the estimation vector)."""
        draws = iter((counts.selection, counts.estimation))
        return cls.fixed(lambda num: next(draws), sigma, int(np.sum(counts.selection)),
                         int(np.sum(counts.estimation)), alpha)

    @property
    def n(self) -> int:
        return int(self.estimation.sum())

    @property
    def n_used(self) -> int:
        return int(self.selection.sum()) + self.n

    @property
    def done(self) -> bool:
        return self.look == len(self.looks) - 1

    def level(self, alpha: float | None = None, look: int | None = None) -> float:
        """One-sided level of a bound computed at a look: alpha (default the stage's) times that look's share."""
        return (self.alpha if alpha is None else alpha) * self.weights[self.look if look is None else look]

    def advance(self) -> None:
        """Draw up to the next look and tighten cAHat's bounds."""
        self.look += 1
        self.estimation = self.estimation + np.asarray(self.sample(self.looks[self.look] - self.n), dtype=np.int64)
        lo, hi = stats.cp_bounds(int(self.estimation[self.cAHat]), self.n, self.level())
        self.pLower, self.pUpper = max(self.pLower, lo), min(self.pUpper, hi)

    def _optimistic_bound(self, k: int, alpha: float, high: bool) -> float:
        """The bound the last look (n_max draws at alpha * w_L) gives a class with k of the n draws so far
        if its hits by then reach their upper (high: lower bound returned) or lower (upper bound returned)
        futility quantile (``_predicted_hits``). Used for stopping decisions only."""
        hits = _predicted_hits(k, self.n, self.looks[-1], self.z_futility, high)
        n_last, level = self.looks[-1], self.level(alpha, -1)
        return stats.cp_lower(hits, n_last, level) if high else stats.cp_upper(hits, n_last, level)

    def radius(self, p0: float) -> tuple[float, float]:
        """(certified radius now, best radius reachable by n_max optimistically); negative: not certified."""
        now = stats.radius(self.sigma, self.pLower, p0)
        if self.done:
            return now, now
        best = self._optimistic_bound(int(self.estimation[self.cAHat]), self.alpha, high=True)
        return now, max(now, stats.radius(self.sigma, best, p0))

    def can_abstain(self, p0: float) -> bool:
        """Could pUpper still fall below p0 by n_max (optimistically)?"""
        if self.pUpper < p0:
            return True
        return not self.done and self._optimistic_bound(int(self.estimation[self.cAHat]), self.alpha, False) < p0

    def offclass_radius(self, c: int, alpha: float, p0: float) -> tuple[float, float]:
        """(r_j now, smallest r_j reachable by n_max optimistically): the MDDS off-class radius of class c
        on these counts at the current look, bounded at alpha * w_look (anytime-valid at alpha)."""
        now = stats.offclass_radius(self.sigma, self.estimation, c, self.level(alpha), p0)
        if self.done:
            return now, now
        top_other = int(np.delete(self.estimation, c).max(initial=0))
        best = self._optimistic_bound(top_other, alpha, high=False)
        return now, min(now, stats.radius(self.sigma, best, p0))

    def counts(self) -> StageCounts:
        return StageCounts(self.selection, self.estimation)


def settle(components: list[tuple[float, float, Stage]], grid: np.ndarray) -> list[Stage]:
    """The stages to sample further, or [] when the reported radius min(now) is settled on the grid.

    components: (radius now, best reachable radius, stage whose draws move it). The radius is settled when
    there is no grid radius above it, or when a component below that grid radius cannot reach it.
    """
    target = _next_grid(grid, min(now for now, _, _ in components))
    if target is None:
        return []
    binding = [(best, stage) for now, best, stage in components if now < target]
    if any(best < target for best, _ in binding):
        return []
    return list({id(stage): stage for _, stage in binding}.values())


def check_n0(n0: int) -> None:
    """The sequential paths need at least one selection draw."""
    if n0 < 1:
        raise ValueError(f"need n0 >= 1 selection draws, got {n0}")


def radius_grid_for(sigma: float, n_max: int, alpha_last: float, radius_grid: Sequence[float] | None,
                    p0: float = 0.5) -> np.ndarray:
    """The evaluation grid: the given radii sorted, or the default one (``default_radius_grid``)."""
    if radius_grid is None:
        return default_radius_grid(sigma, n_max, alpha_last, p0)
    return np.sort(np.asarray(radius_grid, dtype=float))
