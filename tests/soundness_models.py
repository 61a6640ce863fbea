"""Base classifiers whose smoothed class probabilities are known in closed form (for soundness tests).

Every classifier here looks at x only through u = <w, x> with ||w|| = 1 and thresholds it, so under
x + N(0, sigma^2 I) the projection is u + sigma * z, z ~ N(0, 1): class c has probability
Phi((b_{c+1} - u) / sigma) - Phi((b_c - u) / sigma) for thresholds b_0 = -inf < b_1 < ... < b_K = +inf.
An L2 perturbation delta moves u by at most ||delta||, so the smoothed classifier (and the cascade's
ground truth) is a function of u, and the true robust radius is found along u.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

DIM = 4
W = torch.tensor([0.5, -0.5, 0.5, 0.5])  # unit norm


class Threshold1D:
    """f(x) = number of thresholds below <w, x>: a K-class classifier, returns one-hot scores."""

    def __init__(self, thresholds):
        self.b = torch.tensor(sorted(thresholds), dtype=torch.float32)
        self.num_classes = len(thresholds) + 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        u = x.reshape(x.shape[0], -1) @ W
        cls = (u[:, None] > self.b[None, :]).sum(1)
        return torch.nn.functional.one_hot(cls, self.num_classes).float()

    def probs(self, u: np.ndarray | float, sigma: float) -> np.ndarray:
        """True class probabilities of f(x + eps) at projections u: [len(u), K]."""
        u = np.atleast_1d(np.asarray(u, dtype=float))
        edges = np.concatenate([[-np.inf], self.b.numpy().astype(float), [np.inf]])
        cdf = norm.cdf((edges[None, :] - u[:, None]) / sigma)
        return np.diff(cdf, axis=1)


def point(u: float) -> torch.Tensor:
    """An input x with <w, x> = u, shaped [C=1, H=2, W=2]."""
    return (u * W).reshape(1, 2, 2)


def smoothed_class(f: Threshold1D, u, sigma: float) -> np.ndarray:
    """The true smoothed prediction g(x) (argmax class probability) at projections u."""
    return f.probs(u, sigma).argmax(1)


def cascade_truth(fs: dict, u, p0: float) -> np.ndarray:
    """The true MDDS cascade at projections u: the first sigma (descending) whose top class has
    probability >= p0 decides; -1 if every level abstains."""
    u = np.atleast_1d(np.asarray(u, dtype=float))
    out = np.full(len(u), -1)
    undecided = np.ones(len(u), dtype=bool)
    for sigma in sorted(fs, reverse=True):
        p = fs[sigma].probs(u, sigma)
        hit = undecided & (p.max(1) >= p0)
        out[hit] = p.argmax(1)[hit]
        undecided &= ~hit
    return out


def certificate_is_wrong(truth, u: float, pred: int, radius: float, grid: int = 4001) -> bool:
    """True if a non-abstaining certificate (pred, radius) is violated: the ground truth differs from
    pred somewhere in the closed interval [u - radius, u + radius] of projections (which contains every
    point of the L2 ball, and for these classifiers every reachable value)."""
    if pred < 0:
        return False
    us = np.linspace(u - radius, u + radius, grid) if radius > 0 else np.array([u])
    return bool(np.any(truth(us) != pred))


# --- grid noise (--sound): f(x) = [sum_i GRID_W_i round(255 x_i) > b] on 4 pixels, exact under grid noise ---
GRID_W = np.array([1, -1, 1, 1])


def grid_threshold_sf(dg):
    """t -> P(k1 - k2 + k3 + k4 > t), k_i iid from dg's exact discretized Gaussian (``target_pmf``; -k2 ~ k2):
    at the grid input j, class 1 of f o round has probability sf(b - sum_i GRID_W_i j_i)."""
    pmf = dg.target_pmf()
    total = pmf
    for _ in range(3):
        total = np.convolve(total, pmf)
    tail = np.concatenate([np.cumsum(total[::-1])[::-1], [0.0]])       # tail[i] = P(T >= i - 4K)
    return lambda t: float(tail[int(np.clip(math.floor(t) + 1 + 4 * dg.K, 0, len(tail) - 1))])


def cascade_exact_radius(fs: dict, u: float, c: int, k: int, p0: float) -> float:
    """The radius the exact class probabilities give a certificate of class c at stage k (sigmas descending):
    min(sigma_k (Phi^-1(p_c) - Phi^-1(p0)), the caps -r_j of the earlier stages from their exact largest
    off-class probability). A certificate larger than this means one of its bounds failed (a stricter check
    than ``certificate_is_wrong``: it also flags a certificate that happens to hold)."""
    sigmas = sorted(fs, reverse=True)
    p = fs[sigmas[k]].probs(u, sigmas[k])[0]
    r = sigmas[k] * (norm.ppf(p[c]) - norm.ppf(p0))
    for j in range(k):
        q = np.delete(fs[sigmas[j]].probs(u, sigmas[j])[0], c).max()
        r = min(r, -sigmas[j] * (norm.ppf(q) - norm.ppf(p0)))
    return float(r)
