"""Forward passes of adaptive CERTIFY (``--adaptive``, n_max = N) against fixed-N CERTIFY and against the
ORACLE, and the certified accuracy it gives up, on real p_A distributions. Single sigma and the MDDS cascade.

**Inputs.** Each test input is a simulated base classifier with known class probabilities, built from one
row of a real certify log (ours, Cohen's, Salman's, DDS's, FT-CADIS's: any TSV with the columns ``label
predict radius``; ``--log PATH --sigma S --log_n N --log_alpha A``). A certified row's radius gives
pABar = Phi(radius / sigma), nA is the count whose Clopper-Pearson bound at (log_n, log_alpha) is nearest,
and p_A is drawn from the posterior Beta(nA + 1, log_n - nA + 1) (this also spreads the rows at the
largest radius, nA = log_n, over their plausible range); an abstained row gets p_A ~ U(0.3, p*), p* the
smallest nA / log_n that certifies. The top class is the row's prediction (abstained rows: the label or
another class, 1/2 each); a runner-up (the label when the top class is wrong) gets min(p_A, 0.6 (1 - p_A)),
the other classes share the rest. ``--reps R`` redraws p_A and the noise R times per row.
Default: the five vendored Cohen/Salman CIFAR-10 logs (tests/data/reference_results/salman/, N = 10k,
alpha = 1e-3): whitebox ResNet-110 at sigma .12 / .25 / .50 / 1.00 and the MSE-DnCNN at .25, and the
cascade sigma = 1 > .5 > .25 built from the three whitebox logs of the same images (rows match on idx).

**Paired draws.** One noise stream per input (and stage), shared by both methods: the adaptive run's counts
are the first n_used draws of the stream and fixed-N CERTIFY completes that stream to N (the same n0
selection draws), so the differences come from the procedures, not from sampling luck.

**The oracle.** The fewest draws with which someone who knew p_A would certify the grid radius that
fixed-N CERTIFY certifies at the same alpha, the hits at their expected count: single sigma,
n0 + min{n : sigma Phi^-1(CP(p_A n, n, alpha)) >= r_fix} with r_fix the largest grid radius below
sigma Phi^-1(CP(p_A N, N, alpha)) (CP at a real count: the Beta(alpha; k, n - k + 1) quantile), and n0
alone for an input fixed N abstains on. Cascade: n0 per stage the fixed cascade visits at expected counts,
plus, when it certifies grid radius r at stage k, the draws stage k needs to prove r and the draws every
earlier stage j needs for its off-class cap -r_j >= r (both at alpha_k). The oracle knows the next grid
radius is out of reach; a real procedure has to learn it (``bench/adaptive_frontier.py`` measures that part).

**The limit (Wald), single sigma.** The oracle is not attainable even by someone who knows p_A: it credits
the hits at their expected count, and a fixed-n test at the oracle's n certifies only when the hits reach
it (about half the time, unless nearly every draw is a hit). What is attainable: let t = Phi(r_fix / sigma).
Any sound procedure (a stopping time tau and a decision, certifying r_fix with probability <= alpha when
p = t) that certifies r_fix with probability q > alpha under p_A needs E_{p_A}[tau] >= d(q || alpha) /
KL(p_A || t) draws, d(q || alpha) = q ln(q / alpha) + (1 - q) ln((1 - q) / (1 - alpha)) (KL, d: Bernoulli
KL divergences), since E_{p_A}[tau] KL(p_A || t) = E_{p_A}[S_tau] >= d(q || alpha) (Wald 1945: Wald's
identity for the log likelihood ratio S of p_A against t, then the data-processing inequality on the
decision); the sequential probability ratio test of t against p_A attains it up to the overshoot of its
boundaries (no test with these error rates needs fewer: Wald & Wolfowitz 1948). The limit per input is
n0 + d(P_fix || alpha) / KL(p_A || t), P_fix = P(Bin(N, p_A) >= k*) with k* the fewest hits whose
Clopper-Pearson bound at (N, alpha) reaches t: the expected cost of certifying r_fix exactly as often as
fixed N does, for one who knows p_A (n0 alone where fixed N abstains at expected counts). The goal "within
.25 point of fixed N" allows a little less (d grows with q). ``--sprt K`` computes that SPRT exactly on K
random inputs per log (boundaries valid at alpha at t, power >= P_fix) as the achieved reference. The
cascade's limit is not given.

Forward passes include the n0 selection draws. The certified-accuracy gap (adaptive - fixed, percentage
points) is given at every grid radius with its paired standard error.

    python bench/adaptive_samples.py [--small] [--reps R] [--seed S] [--no_cascade] [--sprt K]
    python bench/adaptive_samples.py --log ours.tsv --sigma 0.5 --log_n 100000 --log_alpha 0.001
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import adaptive  # noqa: E402
from core.adaptive import StageCounts  # noqa: E402
from core.cascade import UNDECIDED, cascade_decide, sequential_cascade, stage_alpha  # noqa: E402
from core.smoothing import ABSTAIN, certify_from_counts, sequential_certify  # noqa: E402
from core.stats import offclass_radius  # noqa: E402

LOGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference_results" / "salman"
WHITEBOX = "cifar10_whitebox_cohen_resnet110_noise_{s:.2f}_sigma_{s:.2f}_N10000.tsv"
DEFAULT_LOGS = [(LOGS / WHITEBOX.format(s=s), s) for s in (0.12, 0.25, 0.5, 1.0)] + \
    [(LOGS / "cifar10_mse_dncnn_resnet110_noise_0.25_sigma_0.25_N10000.tsv", 0.25)]
DEFAULT_CASCADE = [(LOGS / WHITEBOX.format(s=s), s) for s in (1.0, 0.5, 0.25)]
K = 10


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class Log:
    """One certify log: its rows' labels, predictions and radii (any of our / the reference formats)."""
    path: Path
    sigma: float
    log_n: int
    log_alpha: float
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    radius: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.path.name} (sigma {self.sigma})"

    @property
    def key(self) -> int:
        """Seeds this log's draws (two logs never share a stream)."""
        return zlib.crc32(self.path.name.encode())


def read_log(path: Path, sigma: float, log_n: int, log_alpha: float) -> Log:
    df = pd.read_csv(path, sep="\t")
    missing = {"label", "predict", "radius"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: no column(s) {sorted(missing)}; need a certify TSV (idx label predict radius ...)")
    idx = df["idx"].to_numpy(int) if "idx" in df else np.arange(len(df))
    return Log(Path(path), float(sigma), int(log_n), float(log_alpha), idx, df["label"].to_numpy(int),
               df["predict"].to_numpy(int), df["radius"].to_numpy(float))


def population(log: Log, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [rows, K] and labels [rows] of the simulated classifiers of one log (module docstring)."""
    n = log.log_n
    ks = np.arange(n // 2, n + 1)
    lowers = ss.beta.ppf(log.log_alpha, ks, n - ks + 1)
    ks, lowers = ks[lowers >= 0.5], lowers[lowers >= 0.5]
    rows = len(log.label)
    certified = log.predict >= 0
    p_A = np.empty(rows)
    nA = ks[np.abs(lowers[None, :] - ss.norm.cdf(log.radius[certified] / log.sigma)[:, None]).argmin(1)]
    p_A[certified] = rng.beta(nA + 1, n - nA + 1)
    p_A[~certified] = rng.uniform(0.3, ks[0] / n, (~certified).sum())
    other = (log.label + 1) % K
    top = np.where(certified, log.predict, np.where(rng.integers(0, 2, rows) == 0, log.label, other))
    second = np.where(top == log.label, other, log.label)
    probs = np.empty((rows, K))
    rest = 1 - p_A - np.minimum(p_A, 0.6 * (1 - p_A))
    probs[:] = (rest / (K - 2))[:, None]
    probs[np.arange(rows), top] = p_A
    probs[np.arange(rows), second] = np.minimum(p_A, 0.6 * (1 - p_A))
    return probs, log.label.copy()


class Stream:
    """One noise stream of one input (and stage): multinomial draws, recorded, continued on demand."""

    def __init__(self, probs: np.ndarray, rng: np.random.Generator):
        self.probs, self.rng, self.draws = probs, rng, []

    def __call__(self, num: int) -> np.ndarray:
        self.draws.append(self.rng.multinomial(num, self.probs))
        return self.draws[-1]

    def first(self, n0: int, n: int) -> StageCounts:
        """The stream's first n0 (selection) and next n (estimation) draws, drawing what is missing."""
        if not self.draws:
            self(n0)
        estimation = np.sum(self.draws[1:], axis=0) if len(self.draws) > 1 else np.zeros(len(self.probs), int)
        if estimation.sum() < n:
            estimation = estimation + self.rng.multinomial(n - int(estimation.sum()), self.probs)
        return StageCounts(self.draws[0], estimation)


# ------------------------------------------------------------------------------------------- oracle
def real_cp_lower(k, n, alpha):
    """Clopper-Pearson lower bound at a real-valued count k (the Beta(alpha; k, n - k + 1) quantile)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    return np.where(k <= 0, 0.0, ss.beta.ppf(alpha, np.maximum(k, 1e-12), n - k + 1))


def min_draws(ok, N: int, shape) -> np.ndarray:
    """Smallest integer x in [1, N] with ok(x) (vectorized, ok monotone in x), N where even N fails."""
    lo, hi = np.zeros(shape), np.full(shape, float(N))
    for _ in range(int(np.ceil(np.log2(N))) + 1):
        mid = np.ceil((lo + hi) / 2)
        good = ok(mid)
        hi, lo = np.where(good, mid, hi), np.where(good, lo, mid)
    return hi


def grid_level(grid: np.ndarray, r) -> np.ndarray:
    """Index of the largest grid radius <= r (-1 when r < grid[0], i.e. not certified)."""
    return np.searchsorted(grid, np.asarray(r, float), side="right") - 1


def fixed_target(p_A: np.ndarray, sigma: float, N: int, alpha: float, grid: np.ndarray):
    """The inputs fixed N certifies at expected counts (a mask) and, for those, t = Phi(r_fix / sigma): the
    threshold of the grid radius r_fix it certifies."""
    level = grid_level(grid, sigma * ss.norm.ppf(real_cp_lower(p_A * N, N, alpha)))
    m = level >= 0
    return m, ss.norm.cdf(grid[level[m]] / sigma)


def oracle_single(p_A: np.ndarray, sigma: float, N: int, n0: int, alpha: float, grid: np.ndarray) -> np.ndarray:
    """Oracle forward passes per input (module docstring)."""
    m, target = fixed_target(p_A, sigma, N, alpha, grid)
    out = np.full(len(p_A), float(n0))
    p = p_A[m]
    out[m] += min_draws(lambda n: real_cp_lower(p * n, n, alpha) >= target, N, m.sum())
    return out


def bernoulli_kl(p, q):
    """KL(Bernoulli(p) || Bernoulli(q)) in nats (0 log 0 = 0)."""
    return special.rel_entr(p, q) + special.rel_entr(1 - p, 1 - q)


def fixed_power(p: np.ndarray, t: np.ndarray, N: int, alpha: float) -> np.ndarray:
    """P_fix = P(Bin(N, p) >= k*): how often fixed N's Clopper-Pearson bound reaches t, k* the fewest hits that do."""
    k_star = min_draws(lambda k: real_cp_lower(k, N, alpha) >= t, N, np.shape(p))
    return ss.binom.sf(k_star - 1, N, p)


def limit_single(p_A: np.ndarray, sigma: float, N: int, n0: int, alpha: float, grid: np.ndarray,
                 power=None) -> np.ndarray:
    """Wald's information limit per input (module docstring): n0 + d(power || alpha) / KL(p_A || t), the
    fewest expected draws of any test valid at level alpha at t that certifies r_fix with probability
    ``power`` under p_A (default P_fix: as often as fixed N; a scalar or one value per input)."""
    m, t = fixed_target(p_A, sigma, N, alpha, grid)
    if power is None:
        power = fixed_power(p_A[m], t, N, alpha)
    else:
        power = np.broadcast_to(np.asarray(power, float), p_A.shape)[m]
    evidence = np.where(power > alpha, bernoulli_kl(power, alpha), 0.0)  # power <= alpha: guessing does it
    out = np.full(len(p_A), float(n0))
    out[m] += evidence / bernoulli_kl(p_A[m], t)
    return out


def sprt(p: float, t: float, alpha: float, power: float, cap: int, tries: int = 12, tol: float = 1e-10):
    """The clairvoyant SPRT of t against p, as an *achieved* reference for the limit (module docstring): the
    cheapest boundaries found that make it valid at alpha at t and certify with probability >= power under p,
    giving up at ``cap`` draws. Computed exactly (the walk's laws under p and t, step by step, ``tries`` lower
    boundaries at once, until both laws have < tol left): (E_p[draws], P_p(certify), P_t(certify)); NaNs when
    no boundary reaches the power."""
    u, v = np.log(p / t), np.log((1 - p) / (1 - t))   # S_n = u hits + v misses, the log likelihood ratio

    hit = np.array([p, t])[:, None, None]

    def run(A: float, B: np.ndarray):                  # certify at S >= A, give up at S <= -B (or at cap)
        laws = np.ones((2, len(B), 1))                 # P(running, hits = base + j) after n draws, under p and t
        base, draws, certify, pad = 0, np.zeros(len(B)), np.zeros((2, len(B))), np.zeros((2, len(B), 1))
        for n in range(1, cap + 1):
            draws += laws[0].sum(1)                    # E[draws] = sum over n of P(still running after n - 1)
            laws = np.concatenate([laws * (1 - hit), pad], 2) + np.concatenate([pad, laws * hit], 2)
            S = (u - v) * (base + np.arange(laws.shape[2])) + v * n
            up, down = S >= A, S[None, :] <= -B[:, None]
            certify += laws[:, :, up].sum(2)
            laws[:, :, up] = 0
            laws[:, down] = 0
            alive = np.flatnonzero(~up & ~down.all(0))
            if not len(alive) or laws.sum(2).max() < tol:
                break
            laws, base = laws[:, :, alive[0]:alive[-1] + 1], base + alive[0]
        return draws, certify[0], certify[1] + laws[1].sum(1)   # what is left under t: counted as certifying

    # Wald: P_t(certify) <= e^-A P_p(certify), P_p(give up at -B) <= e^-B: A's start, B's bracket
    A, top = np.log(power / alpha), np.log(1 / max(1 - power, 1e-15)) + 1
    for _ in range(3):
        B = np.linspace(0, top, tries)
        for _ in range(2):                             # a coarse pass, then between the last short and the first ok
            draws, power_p, alpha_t = run(A, B)
            ok = np.flatnonzero(power_p >= power)
            if not len(ok):
                return float("nan"), float("nan"), float("nan")
            B = np.linspace(B[ok[0] - 1] if ok[0] else 0, B[ok[0]], tries)
        best = ok[0]
        if alpha_t[best] <= alpha:
            return float(draws[best]), float(power_p[best]), float(alpha_t[best])
        A += np.log(alpha_t[best] / alpha) + 1e-9      # over alpha (it certifies more than asked): raise A
    return float("nan"), float("nan"), float("nan")


def sprt_sample(p_A: np.ndarray, sigma: float, N: int, alpha: float, grid: np.ndarray, K: int,
                rng: np.random.Generator) -> dict:
    """The clairvoyant SPRT against the limit on K random inputs that fixed N certifies (estimation draws;
    the power asked is P_fix, capped at 1 - 1e-9 for both so that a boundary can reach it). The SPRT may go
    past N (the limit does not cap the draws; truncating at N would fall short of P_fix on the inputs that
    fixed N barely certifies): it gives up at 10 N."""
    m, t = fixed_target(p_A, sigma, N, alpha, grid)
    candidates = np.flatnonzero(m & (p_A < 1))
    pick = rng.choice(candidates, size=min(K, len(candidates)), replace=False)
    t = t[np.searchsorted(np.flatnonzero(m), pick)]
    power = np.minimum(fixed_power(p_A[pick], t, N, alpha), 1 - 1e-9)
    runs = np.array([sprt(p_A[i], t[j], alpha, power[j], 10 * N) for j, i in enumerate(pick)])
    limit = limit_single(p_A[pick], sigma, N, 0, alpha, grid, power=power)
    return dict(K=len(pick), sprt=float(runs[:, 0].sum()), limit=float(limit.sum()),
                worst_alpha=float(runs[:, 2].max()))


def oracle_cascade(probs: list[np.ndarray], sigmas: list[float], N: int, n0: int, alpha: float, p0: float,
                   grid: np.ndarray, rule: str) -> float:
    """Oracle forward passes of one cascade input (module docstring): probs[k] its class probabilities at stage k."""
    res = cascade_decide(lambda k: StageCounts(probs[k] * n0, np.round(probs[k] * N)), sigmas, alpha, p0, rule)
    passes = n0 * (res.stage + 1)
    level = int(grid_level(grid, res.radius)) if res.prediction >= 0 else -1
    if level < 0:
        return float(passes)
    k, c, r = res.stage, res.prediction, grid[level]
    alpha_k = stage_alpha(alpha, k, len(sigmas), rule)
    p = probs[k][c]
    target = ss.norm.cdf(r / sigmas[k] + ss.norm.ppf(p0))
    passes += float(min_draws(lambda n: real_cp_lower(p * n, n, alpha_k) >= target, N, ()))
    for j in range(k):
        def capped(n, j=j):
            return np.array([-offclass_radius(sigmas[j], np.round(probs[j] * m), c, alpha_k, p0) >= r for m in
                             np.atleast_1d(n)]).reshape(np.shape(n))
        passes += float(min_draws(capped, N, ()))
    return passes


# ---------------------------------------------------------------------------------------------- runs
def single(log: Log, args, method: dict) -> dict:
    """Adaptive and fixed CERTIFY on paired streams for every simulated input of one log."""
    _, weights = adaptive.schedule(args.N, method["first_look"], method["growth"], method["final_share"],
                                       method["power"])
    grid = adaptive.default_radius_grid(log.sigma, args.N, args.alpha * weights[-1])
    res = {"adaptive": [], "fixed": []}
    labels, oracle, limit, achieved = [], [], [], {}
    for rep in range(args.reps):
        probs, lab = population(log, np.random.default_rng([args.seed, rep, log.key]))
        labels.append(lab)
        oracle.append(oracle_single(probs.max(1), log.sigma, args.N, args.N0, args.alpha, grid))
        limit.append(limit_single(probs.max(1), log.sigma, args.N, args.N0, args.alpha, grid))
        if rep == 0 and args.sprt:
            achieved = sprt_sample(probs.max(1), log.sigma, args.N, args.alpha, grid, args.sprt,
                                   np.random.default_rng([args.seed, log.key, 1]))
        for i in range(len(lab)):
            stream = Stream(probs[i], np.random.default_rng([args.seed, rep, log.key, int(log.idx[i])]))
            pred, radius, n_used = sequential_certify(stream, log.sigma, args.N0, args.N, args.alpha,
                                                               **method)
            counts = stream.first(args.N0, args.N)
            fixed_pred, fixed_radius, _ = certify_from_counts(counts.selection, counts.estimation, args.alpha,
                                                              log.sigma)
            res["adaptive"].append((pred, radius, n_used))
            res["fixed"].append((fixed_pred, fixed_radius, args.N0 + args.N))
    return summarize(log.name, res, np.concatenate(labels), np.concatenate(oracle), grid,
                     np.concatenate(limit)) | {"achieved": achieved}


def cascade(logs: list[Log], args, method: dict) -> dict:
    """Adaptive and fixed MDDS cascade on paired per-stage streams, inputs matched across logs on idx."""
    sigmas = [lg.sigma for lg in logs]
    order = np.argsort(sigmas)[::-1]
    logs = [logs[i] for i in order]
    sigmas = [lg.sigma for lg in logs]
    common = sorted(set.intersection(*(set(lg.idx.tolist()) for lg in logs)))
    if args.rows:
        common = common[: args.rows]
    _, weights = adaptive.schedule(args.N, method["first_look"], method["growth"], method["final_share"],
                                       method["power"])
    grid = adaptive.default_radius_grid(sigmas[0], args.N, args.alpha * weights[-1], args.p0)
    res = {"adaptive": [], "fixed": []}
    labels, oracle = [], []
    for rep in range(args.reps):
        pops = []
        for k, lg in enumerate(logs):
            probs, lab = population(lg, np.random.default_rng([args.seed, rep, lg.key, k]))
            where = {int(i): r for r, i in enumerate(lg.idx)}
            pops.append((probs[[where[i] for i in common]], lab[[where[i] for i in common]]))
        for row, i in enumerate(common):
            probs = [pops[k][0][row] for k in range(len(logs))]
            streams = [Stream(p, np.random.default_rng([args.seed, rep, int(i), k, 11])) for k, p in enumerate(probs)]
            a = sequential_cascade(streams, sigmas, args.N0, args.N, args.alpha, args.p0,
                                            alpha_rule=args.cascade_alpha, **method)
            f = cascade_decide(lambda k, streams=streams: streams[k].first(args.N0, args.N), sigmas, args.alpha,
                               args.p0, args.cascade_alpha)
            res["adaptive"].append((a.prediction, a.radius, a.n_used))
            res["fixed"].append((f.prediction, f.radius, f.n_used))
            labels.append(pops[0][1][row])
            oracle.append(oracle_cascade(probs, sigmas, args.N, args.N0, args.alpha, args.p0, grid, args.cascade_alpha))
    name = "cascade " + " > ".join(f"{s}" for s in sigmas)
    return summarize(name, res, np.array(labels), np.array(oracle), grid)


def summarize(name: str, res: dict, labels: np.ndarray, oracle: np.ndarray, grid: np.ndarray,
              limit: np.ndarray | None = None) -> dict:
    out = {m: np.array(v, dtype=float) for m, v in res.items()}
    ok = {m: (out[m][:, 0] >= 0) & (out[m][:, 0] == labels) for m in out}
    cert = {m: ok[m][:, None] & (out[m][:, 1][:, None] >= grid[None, :]) for m in out}
    diff = cert["adaptive"].astype(float) - cert["fixed"].astype(float)
    return dict(name=name, M=len(labels), grid=grid, fixed=float(out["fixed"][:, 2].sum()),
                adaptive=float(out["adaptive"][:, 2].sum()), oracle=float(oracle.sum()),
                limit=float(limit.sum()) if limit is not None else float("nan"),
                acc_fixed=100 * cert["fixed"].mean(0), acc_adaptive=100 * cert["adaptive"].mean(0),
                gap=100 * diff.mean(0), gap_se=100 * diff.std(0) / np.sqrt(len(labels)),
                undecided=float(np.mean(out["adaptive"][:, 0] == UNDECIDED)),
                abstain=float(np.mean(out["adaptive"][:, 0] == ABSTAIN)))


# -------------------------------------------------------------------------------------------- report
def print_result(r: dict) -> None:
    print(f"\n{r['name']}: {r['M']} inputs")
    print(f"  forward passes: fixed {r['fixed']:,.0f}  adaptive {r['adaptive']:,.0f}  oracle {r['oracle']:,.0f} | "
          f"fixed/oracle {r['fixed'] / r['oracle']:.1f}x  fixed/adaptive {r['fixed'] / r['adaptive']:.1f}x  "
          f"adaptive/oracle {r['adaptive'] / r['oracle']:.3f}")
    if not np.isnan(r["limit"]):
        print(f"  limit (Wald) {r['limit']:,.0f} | limit/oracle {r['limit'] / r['oracle']:.3f}  "
              f"adaptive/limit {r['adaptive'] / r['limit']:.3f}")
    if r.get("achieved"):
        a = r["achieved"]
        print(f"  clairvoyant SPRT on {a['K']} inputs: {a['sprt']:,.0f} estimation draws, limit {a['limit']:,.0f}, "
              f"SPRT/limit {a['sprt'] / a['limit']:.4f} (power >= P_fix, level at t <= {a['worst_alpha']:.2e})")
    print("  radius   cert.acc fixed   adaptive   gap (pp) +- se")
    for g, rad in enumerate(r["grid"]):
        print(f"  {rad:6.2f}   {r['acc_fixed'][g]:13.2f}%  {r['acc_adaptive'][g]:8.2f}%   "
              f"{r['gap'][g]:+6.2f} +- {r['gap_se'][g]:.2f}")
    print(f"  worst gap {r['gap'].min():+.2f} pp")


def markdown(results: list[dict]) -> str:
    head = ("| inputs | n | fixed | adaptive | oracle | limit (Wald) | fixed ÷ adaptive | adaptive ÷ oracle | "
            "limit ÷ oracle | adaptive ÷ limit | worst gap (pp) |")
    lines = [head, "|" + "---|" * 11]
    for r in results:
        known = not np.isnan(r["limit"])
        limit = (f"{r['limit'] / 1e6:.1f}M | ", f"{r['limit'] / r['oracle']:.2f} | {r['adaptive'] / r['limit']:.2f} | ")
        lines.append(f"| {r['name']} | {r['M']} | {r['fixed'] / 1e6:.1f}M | {r['adaptive'] / 1e6:.1f}M | "
                     f"{r['oracle'] / 1e6:.1f}M | {limit[0] if known else '— | '}{r['fixed'] / r['adaptive']:.1f}x | "
                     f"{r['adaptive'] / r['oracle']:.2f} | {limit[1] if known else '— | — | '}"
                     f"{r['gap'].min():+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    if args.small:
        args.reps, args.rows = 1, 100
    method = dict(first_look=args.first_look, growth=args.growth, final_share=args.final_share, power=args.power,
                  futility=args.futility)
    looks, weights = adaptive.schedule(args.N, args.first_look, args.growth, args.final_share, args.power)
    print(f"N = n_max = {args.N}, N0 = {args.N0}, alpha = {args.alpha}; {len(looks)} looks {looks[0]} .. "
          f"{looks[-1]}; last look's share of alpha {weights[-1]:.3g}; futility {args.futility}")
    if args.log:
        if not (len(args.sigma) == len(args.log) or len(args.sigma) == 1):
            raise SystemExit("give one --sigma per --log (or one for all)")
        logs = [read_log(p, args.sigma[min(i, len(args.sigma) - 1)], args.log_n, args.log_alpha)
                for i, p in enumerate(args.log)]
        cascade_logs = []
    else:
        logs = [read_log(p, s, 10_000, 1e-3) for p, s in DEFAULT_LOGS]
        cascade_logs = [] if args.no_cascade else [read_log(p, s, 10_000, 1e-3) for p, s in DEFAULT_CASCADE]
    if args.rows:
        logs = [Log(lg.path, lg.sigma, lg.log_n, lg.log_alpha, *(v[: args.rows] for v in
                    (lg.idx, lg.label, lg.predict, lg.radius))) for lg in logs]
    results = []
    for lg in logs:
        t0 = time.time()
        results.append(single(lg, args, method))
        print_result(results[-1])
        print(f"  ({time.time() - t0:.0f} s)")
    if cascade_logs:
        t0 = time.time()
        results.append(cascade(cascade_logs, args, method))
        print_result(results[-1])
        print(f"  ({time.time() - t0:.0f} s)")
    singles = [r for r in results if not r["name"].startswith("cascade")]
    total = {k: sum(r[k] for r in singles) for k in ("fixed", "adaptive", "oracle", "limit")}
    worst = min(r["gap"].min() for r in results)
    print(f"\nsingle sigma, all logs: fixed/adaptive {total['fixed'] / total['adaptive']:.1f}x, adaptive/oracle "
          f"{total['adaptive'] / total['oracle']:.3f}, limit/oracle {total['limit'] / total['oracle']:.3f}, "
          f"adaptive/limit {total['adaptive'] / total['limit']:.3f}; worst gap (every log, the cascade, every grid "
          f"radius) {worst:+.2f} pp")
    print("\n" + markdown(results))
    return results


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("adaptive_samples.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="1 pass over the first 100 rows of each log (a smoke run)")
    p.add_argument("--reps", type=int, default=4, help="passes over each log (fresh p_A and draws each time)")
    p.add_argument("--rows", type=int, default=0, help="only the first ROWS rows of each log (0: all)")
    p.add_argument("--log", type=Path, nargs="+", default=None, help="certify TSV(s) to take p_A from")
    p.add_argument("--sigma", type=float, nargs="+", default=[0.25], help="the sigma of each --log (one for all)")
    p.add_argument("--log_n", type=int, default=100_000, help="the N the --log files were certified with")
    p.add_argument("--log_alpha", type=float, default=0.001, help="their alpha")
    p.add_argument("--no_cascade", action="store_true", help="skip the cascade (default logs only)")
    p.add_argument("--sprt", type=int, default=5, help="inputs per log (first pass) to run the clairvoyant SPRT on (0: none)")
    p.add_argument("--N", type=int, default=100_000, help="fixed N, and the adaptive n_max")
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--p0", type=float, default=0.5, help="cascade threshold (MDDS --skip_p)")
    p.add_argument("--cascade_alpha", choices=["mdds", "union"], default="mdds")
    p.add_argument("--first_look", type=int, default=adaptive.FIRST_LOOK)
    p.add_argument("--growth", type=float, default=adaptive.GROWTH)
    p.add_argument("--final_share", type=float, default=adaptive.FINAL_SHARE)
    p.add_argument("--power", type=float, default=adaptive.POWER)
    p.add_argument("--futility", type=float, default=adaptive.FUTILITY)
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    main()
