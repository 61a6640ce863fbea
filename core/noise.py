"""Floating-point-sound smoothing noise (``--sound``): Gaussian noise on the input's 8-bit grid.

Voráček & Hein (ICLR 2023) show that certificates computed with float Gaussian noise can be wrong: the
float sum x + sigma * eps is not a shifted Gaussian, and an attacker can exploit the rounding. The fix
used here: when x lies on the grid {j / L} (L = 255, 8-bit images), draw the noise *on the grid* too,

    delta = k / L,   k integer,   P(k) = Phi((k + 1/2) / (L sigma)) - Phi((k - 1/2) / (L sigma)),

which is exactly the law of round(L sigma Z) (Z ~ N(0, 1), rounding to the nearest integer), so that
x + delta = round_L(x + sigma Z) coordinate-wise, with round_L(y) = round(L y) / L. The base classifier is
then evaluated on (j + k) / L, formed exactly from integers: the procedure estimates the class
probabilities of h = f o round_L under *continuous* Gaussian noise, and Cohen's theorem certifies the
smoothed h (any base classifier, so also f o round_L) with no floating-point error in the noise at all.

**Exact sampling.** k is drawn by inversion of an integer table: C[i] = nearest integer to
2^62 Phi((i - K + 1/2) / (L sigma)), i = 0 .. 2K, computed in 60-digit arithmetic (mpmath), and a
uniform integer u in [0, 2^62) (``torch.randint`` with a power-of-two range: exactly uniform given
uniform random bits) gives k = i - K for the cell C[i-1] <= u < C[i] (C[-1] the lower edge). Every cell's
probability is then within 2^-62 of the exact P(k), and u outside [C[-1], C[2K]) means |k| > K: that
noise sample is rejected and redrawn. With the default K (the tail beyond +-K below 2^-64) both edges
round to 0 and 2^62, so no draw is ever rejected.

**The statement.** The sampled law Q of one coordinate (truncated, table-rounded) is within
``tv_per_coordinate`` = (2K + 1) 2^-63 + P(|k| > K) of the exact discretized Gaussian in total
variation, and the d coordinates are independent, so for every class c
|P_Q(h = c) - P_exact(h = c)| <= d * tv_per_coordinate = ``tv_bound(d)``. A lower bound pABar on the
sampled probability therefore gives pABar - tv_bound(d) for the exact one: with probability >= 1 - alpha
over the draws, the smoothed f o round_L (continuous Gaussian noise, then rounding to the grid) predicts
cAHat within L2 radius sigma Phi^-1(pABar - tv_bound(d)) of x. (tv_bound is ~1e-12 for ImageNet inputs.)

Pure functions of torch tensors and a ``torch.Generator``; the table is built once per (sigma, L, K).
"""
from __future__ import annotations

import functools

import mpmath
import numpy as np
import torch
from scipy.special import ndtri

from core.errors import MsrsError

LEVELS = 255                 # 8-bit images: the grid j / 255, j = 0 .. 255
BITS = 62                    # uniform integers in [0, 2^BITS): exact for a power-of-two range
TAIL = 2.0 ** -64            # default truncation: P(|k| > K) below this
GRID_TOL = 1e-4              # |L x - round(L x)| allowed for x to count as on the grid (float32 of j / 255)


def _phi(t: mpmath.mpf) -> mpmath.mpf:
    return mpmath.erfc(-t / mpmath.sqrt(2)) / 2


@functools.lru_cache(maxsize=32)
def _table(sigma: float, levels: int, K: int | None) -> tuple[int, tuple[int, ...]]:
    """(K, edges): edges[0] = lower edge, edges[1 + i] = C[i], integers in [0, 2^BITS]."""
    with mpmath.workdps(60):
        s = mpmath.mpf(levels) * mpmath.mpf(sigma)
        if K is None:
            # smallest K with P(|k| > K) = 2 Phi(-(K + 1/2) / s) <= TAIL (float guess, then exact steps)
            def fits(k: int) -> bool:
                return 2 * _phi(-(k + mpmath.mpf(1) / 2) / s) <= TAIL
            K = max(1, int(np.ceil(-ndtri(TAIL / 2) * float(s) - 0.5)))
            while not fits(K):
                K += 1
            while K > 1 and fits(K - 1):
                K -= 1
        scale = mpmath.mpf(2) ** BITS
        edges = [int(mpmath.nint(scale * _phi((i + mpmath.mpf(1) / 2) / s))) for i in range(-K - 1, K + 1)]
    return K, tuple(edges)


class DiscreteGaussian:
    """The law of round(L sigma Z) on the integers, truncated at +-K, sampled exactly (module docstring).

    ``sample(shape, generator)`` returns int64 k of that shape; ``pmf()`` the sampled law of k on -K..K
    (exact rationals as float64), ``target_pmf()`` the exact discretized Gaussian there.
    """

    def __init__(self, sigma: float, levels: int = LEVELS, K: int | None = None):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if K is not None and K < 1:
            raise ValueError(f"need K >= 1, got {K}")
        self.sigma, self.levels = float(sigma), int(levels)
        self.K, edges = _table(self.sigma, self.levels, K)
        self._lo, self._cells = edges[0], edges[1:]          # C[0 .. 2K]
        self._tables: dict[str, torch.Tensor] = {}
        self.rejected = 0                                     # noise samples redrawn so far (|k| > K)

    @property
    def exact_edges(self) -> bool:
        """True when both table edges are exact (0 and 2^62): no draw can land outside +-K, so ``sample``
        never checks (and never syncs with the host)."""
        return self._lo == 0 and self._cells[-1] == 2 ** BITS

    @property
    def tail(self) -> float:
        """P(|k| > K) under the exact discretized Gaussian."""
        return float(2 * _phi(-(self.K + mpmath.mpf(1) / 2) / (mpmath.mpf(self.levels) * self.sigma)))

    @property
    def tv_per_coordinate(self) -> float:
        """Total-variation distance between the sampled law of one coordinate and the exact one (bound)."""
        return (2 * self.K + 1) * 2.0 ** -(BITS + 1) + self.tail

    def tv_bound(self, dim: int) -> float:
        """Bound on |P_sampled(h = c) - P_exact(h = c)| for inputs of ``dim`` coordinates (subtract it from pABar)."""
        return min(1.0, int(dim) * self.tv_per_coordinate)

    def pmf(self) -> np.ndarray:
        """The sampled law of k = -K .. K (after rejection), as float64."""
        edges = np.array([self._lo, *self._cells], dtype=object)
        cells = np.diff(edges).astype(float)
        return cells / cells.sum()

    def target_pmf(self) -> np.ndarray:
        """The exact P(k) = Phi((k + 1/2) / (L sigma)) - Phi((k - 1/2) / (L sigma)), k = -K .. K."""
        with mpmath.workdps(40):
            s = mpmath.mpf(self.levels) * self.sigma
            return np.array([float(_phi((k + mpmath.mpf(1) / 2) / s) - _phi((k - mpmath.mpf(1) / 2) / s))
                             for k in range(-self.K, self.K + 1)])

    def _upper(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = torch.tensor(self._cells, dtype=torch.int64, device=device)
        return self._tables[key]

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """int64 k of ``shape`` = (B, *input shape): B iid noise samples; a sample with any |k| > K is
        redrawn (from the same generator, after the batch), so every returned row has the truncated law."""
        device = torch.device(device) if device is not None else (generator.device if generator is not None
                                                                  else torch.device("cpu"))
        dim = int(np.prod(shape[1:]))
        if not self.exact_edges and (1 - self.tail) ** dim < 0.5:
            raise ValueError(f"K = {self.K} truncates too much for samples of {dim} coordinates (a sample would be "
                             f"redrawn more often than kept); use the default K")
        upper = self._upper(device)
        if self.exact_edges:    # no draw can land beyond ±K: one batch, nothing to redraw
            u = torch.randint(0, 2 ** BITS, shape, generator=generator, device=device, dtype=torch.int64)
            return torch.searchsorted(upper, u, right=True).sub_(self.K)
        out = torch.empty(shape, dtype=torch.int64, device=device)
        todo = torch.arange(shape[0], device=device)
        while True:
            u = torch.randint(0, 2 ** BITS, (len(todo), *shape[1:]), generator=generator, device=device,
                              dtype=torch.int64)
            k = torch.searchsorted(upper, u, right=True) - self.K      # u >= C[2K] -> K + 1
            out[todo] = k
            bad_rows = ((u < self._lo) | (k > self.K)).reshape(len(todo), -1).any(1)
            if not bool(bad_rows.any()):
                return out
            self.rejected += int(bad_rows.sum())
            todo = todo[bad_rows]


def grid_indices(x: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """The integers j with x = j / levels (int64, same shape); MsrsError if x is not on the grid."""
    scaled = x.detach().to(torch.float64) * levels
    j = torch.round(scaled)
    off = float((scaled - j).abs().max()) if x.numel() else 0.0
    if off > GRID_TOL or (x.numel() and (float(j.min()) < 0 or float(j.max()) > levels)):
        raise MsrsError(f"--sound needs inputs on the {levels + 1}-level grid j/{levels} in [0, 1] (8-bit images "
                        f"loaded with ToTensor, no resampling after it); this input is off the grid by "
                        f"{off / levels:.3g} (or outside [0, 1]): drop --sound or feed 8-bit images")
    return j.to(torch.int64)


def on_grid(j: torch.Tensor, k: torch.Tensor, levels: int = LEVELS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(j + k) / levels, formed from integers (j broadcast over the batch of k): the same integers give the
    same floats whatever the batch; float32 unless float64 is asked for, then cast to ``dtype``."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    return (j + k).to(wide).div_(levels).to(dtype)


def noisy_batch(j: torch.Tensor, bs: int, sampler: DiscreteGaussian, generator: torch.Generator | None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bs noisy copies of the grid input j / L ([C,H,W] int64 from ``grid_indices``): [bs, C, H, W] of dtype."""
    k = sampler.sample((bs, *j.shape), generator, j.device)
    return on_grid(j, k, sampler.levels, dtype)


def variance(sampler: DiscreteGaussian) -> float:
    """Var(k) under the sampled law (for moment checks): close to (L sigma)^2 + 1/12."""
    ks = np.arange(-sampler.K, sampler.K + 1)
    p = sampler.pmf()
    return float(np.sum(p * ks.astype(float) ** 2) - np.sum(p * ks) ** 2)
