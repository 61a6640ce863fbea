"""Sequential (adaptive) CERTIFY: look schedule, alpha split, stopping decisions on scripted counts,
n_used accounting, agreement with the fixed-N rules (core/adaptive.py, the sequential paths of core/smoothing.py and
core/cascade.py; soundness: test_soundness.py)."""
import math

import numpy as np
import pytest
import torch

from core import adaptive, stats
from core.adaptive import look_schedule, look_weights
from core.cascade import UNDECIDED, MultiScaleSmooth, StageCounts, cascade_decide, sequential_cascade
from core.smoothing import ABSTAIN, Smooth, certify_from_counts, example_generator, sequential_certify

ALPHA = 0.001


def scripted(probs, log=None):
    """A sampler whose cumulative counts are always floor(probs * draws so far) (remainder to class 0):
    deterministic counts at any rate. ``log`` collects the size of every request."""
    probs = np.asarray(probs, dtype=float)
    state = {"n": 0, "counts": np.zeros(len(probs), dtype=np.int64)}

    def sample(num):
        if log is not None:
            log.append(num)
        state["n"] += num
        target = np.floor(probs * state["n"] + 1e-9).astype(np.int64)
        target[0] = state["n"] - target[1:].sum()
        inc, state["counts"] = target - state["counts"], target
        return inc
    return sample


def top(p, k=10):
    """Class 0 with probability p, the rest spread evenly over k - 1 classes."""
    return [p] + [(1 - p) / (k - 1)] * (k - 1)


def all_hits_look(sigma, r, looks, weights, alpha=ALPHA):
    """The first look at which a classifier that always answers the same class certifies radius r."""
    return next(n for n, w in zip(looks, weights) if stats.radius(sigma, stats.cp_lower(n, n, alpha * w)) >= r)


# --- schedule and alpha split ---------------------------------------------------------------------

def test_look_schedule_is_geometric_and_ends_at_n_max():
    assert look_schedule(100_000, 256, 2.0) == [256 * 2 ** i for i in range(9)] + [100_000]
    assert look_schedule(100, 256) == [100]
    assert look_schedule(256, 256) == [256]
    for n_max, growth in [(5000, 1.5), (12_345, 1.1), (10 ** 6, 3.0)]:
        looks = look_schedule(n_max, 100, growth)
        assert looks[0] == 100 and looks[-1] == n_max and all(np.diff(looks) > 0)
    with pytest.raises(ValueError):
        look_schedule(0)
    with pytest.raises(ValueError):
        look_schedule(100, 10, 1.0)


@pytest.mark.parametrize("final_share", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_alpha_split_never_exceeds_alpha(final_share, power):
    for n_max in [1, 100, 257, 5000, 100_000, 10 ** 7]:
        for growth in [1.2, 2.0]:
            looks = look_schedule(n_max, 256, growth)
            w = look_weights(looks, final_share, power)
            assert len(w) == len(looks) and min(w) > 0
            assert math.fsum(ALPHA * x for x in w) <= ALPHA
            if len(looks) > 1:
                assert w[-1] == pytest.approx(final_share)
                assert all(np.diff(w[:-1]) >= 0) if power > 0 else len(set(w[:-1])) == 1
    with pytest.raises(ValueError):
        look_weights([10, 20, 30], 1.0)   # earlier looks with no alpha left would have useless bounds


def test_default_grid_tops_out_at_what_n_max_can_certify():
    grid = adaptive.default_radius_grid(0.5, 100_000, ALPHA / 2)
    r_max = 0.5 * stats.norm.ppf(stats.cp_lower(100_000, 100_000, ALPHA / 2))
    assert grid[0] == 0 and np.allclose(np.diff(grid), 0.25) and grid[-1] <= r_max < grid[-1] + 0.25


# --- single sigma on scripted counts --------------------------------------------------------------

def test_constant_classifier_stops_at_first_look_when_grid_is_settled():
    log = []
    pred, radius, n_used = sequential_certify(scripted([0, 1, 0], log), 0.25, 100, 100_000, ALPHA,
                                              radius_grid=[0.0, 0.25])
    looks, weights = adaptive.schedule(100_000)
    w1 = weights[0]
    assert (pred, n_used, log) == (1, 100 + looks[0], [100, looks[0]])
    assert radius == pytest.approx(0.25 * stats.norm.ppf(stats.cp_lower(looks[0], looks[0], ALPHA * w1)))


def test_constant_classifier_stops_once_the_top_grid_radius_is_proven():
    sigma = 0.25
    looks, weights = adaptive.schedule(100_000)
    grid = adaptive.default_radius_grid(sigma, 100_000, ALPHA * weights[-1])
    n = all_hits_look(sigma, grid[-1], looks, weights)
    pred, radius, n_used = sequential_certify(scripted(top(1.0)), sigma, 100, 100_000, ALPHA)
    assert grid[-1] == 0.75 and n < 100_000
    assert (pred, n_used) == (0, 100 + n) and radius >= grid[-1]


def test_clear_abstention_stops_at_first_look():
    pred, radius, n_used = sequential_certify(scripted(top(0.3)), 0.5, 100, 100_000, ALPHA)
    assert (pred, radius, n_used) == (ABSTAIN, 0.0, 100 + look_schedule(100_000)[0])


def test_near_half_abstains_before_n_max_and_exact_half_uses_everything():
    pred, _, n_used = sequential_certify(scripted(top(0.46)), 0.5, 100, 100_000, ALPHA)
    assert pred == ABSTAIN and n_used < 100_000 / 4
    # p = 1/2 exactly: never certified; may use up to all n_max draws (radius 0 is only just out of reach)
    pred, radius, n_used = sequential_certify(scripted([0.5, 0.5]), 0.5, 100, 20_000, ALPHA)
    assert (pred, radius) == (ABSTAIN, 0.0) and n_used <= 20_100


def test_clear_radius_stops_once_next_grid_radius_is_out_of_reach():
    # p = .9 at sigma = .25: radius ~.32 < .5 = the next grid radius, which would need p >= .977: stops as
    # soon as .25 is proven (within the first few hundred draws)
    pred, radius, n_used = sequential_certify(scripted(top(0.9)), 0.25, 100, 100_000, ALPHA)
    assert pred == 0 and 0.25 <= radius < 0.5 and n_used < 1000


@pytest.mark.parametrize("p", [0.6, 0.8, 0.95, 0.999])
def test_n_used_counts_every_draw_and_stops_on_a_look(p):
    log = []
    pred, _, n_used = sequential_certify(scripted(top(p), log), 0.5, 37, 30_000, ALPHA)
    assert n_used == sum(log) and log[0] == 37
    assert n_used - 37 in look_schedule(30_000)
    assert pred == 0


def scripted_with_looks(probs, looks):
    """scripted(probs), also recording the cumulative counts after every request."""
    inner = scripted(probs)
    total = []

    def sample(num):
        inc = inner(num)
        total.append(inc if not total else total[-1] + inc)
        looks.append(total[-1])
        return inc
    return sample


@pytest.mark.parametrize("p", [0.55, 0.7, 0.9, 0.99, 0.9995])
def test_radius_never_above_fixed_n_bound(p):
    # a grid too fine to ever settle: the run uses all n_max draws. No look's bound may beat the fixed-n
    # bound at the full alpha on that look's counts; with smooth counts the best is the fixed-N CERTIFY
    sigma, n_max = 0.5, 20_000
    cumulative = []
    pred, radius, n_used = sequential_certify(scripted_with_looks(top(p), cumulative), sigma, 100, n_max, ALPHA,
                                              radius_grid=np.arange(0, 5, 1e-4))
    assert n_used == 100 + n_max and pred == 0
    selection = cumulative[0]
    fixed = [certify_from_counts(selection, c - selection, ALPHA, sigma)[1] for c in cumulative[1:]]
    assert 0 < radius <= max(fixed)
    if p <= 0.99:
        assert radius <= fixed[-1]


def test_single_look_equals_fixed_certify():
    # n_max <= first look: one look, all of alpha (up to the 1e-9 safety margin) -> Cohen's CERTIFY
    for p in [0.3, 0.52, 0.8, 1.0]:
        sample = scripted(top(p))
        pred, radius, n_used = sequential_certify(sample, 0.25, 50, 200, ALPHA)
        ref = scripted(top(p))
        sel = ref(50)
        ref_pred, ref_radius, _ = certify_from_counts(sel, ref(200), ALPHA, 0.25)
        assert (pred, n_used) == (ref_pred, 250) and radius == pytest.approx(ref_radius, abs=1e-6)


# --- Smooth.certify_adaptive ----------------------------------------------------------------------

class Recorder:
    """Base classifier answering class 2 of 3, recording every batch of noisy inputs it sees."""

    def __init__(self):
        self.batches = []

    def __call__(self, x):
        self.batches.append(x.clone())
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), 2), 3).float()


def test_smooth_certify_adaptive_respects_batches_and_continues_the_stream():
    f = Recorder()
    smooth = Smooth(f, 3, 0.5)
    x = torch.zeros(1, 2, 2)
    pred, radius, n_used = smooth.certify_adaptive(x, 10, 3000, ALPHA, 300, example_generator(0, 1),
                                                   radius_grid=[0.0, 1.0])
    assert pred == 2 and radius >= 1.0 and n_used == 10 + all_hits_look(0.5, 1.0, *adaptive.schedule(3000))
    assert max(b.shape[0] for b in f.batches) <= 300 and sum(b.shape[0] for b in f.batches) == n_used
    noise = torch.cat(f.batches).reshape(n_used, -1)
    assert torch.unique(noise, dim=0).shape[0] == n_used              # never the same noise twice
    again = Smooth(Recorder(), 3, 0.5).certify_adaptive(x, 10, 3000, ALPHA, 300, example_generator(0, 1),
                                                        radius_grid=[0.0, 1.0])
    assert again == (pred, radius, n_used)


# --- the cascade ----------------------------------------------------------------------------------

SIGMAS = [1.0, 0.5, 0.25]


def stage_samplers(probs_per_stage, logs):
    return [scripted(p, logs.setdefault(k, [])) for k, p in enumerate(probs_per_stage)]


def test_cascade_first_stage_certifies_and_later_stages_are_never_sampled():
    logs = {}
    res = sequential_cascade(stage_samplers([[0, 1, 0], [1, 0, 0], [1, 0, 0]], logs), SIGMAS, 20, 100_000, ALPHA)
    assert res.prediction == 1 and res.stage == 0 and res.r_neg == stats.NO_EARLIER_STAGE
    assert logs[1] == [] and logs[2] == [] and res.n_used == sum(logs[0])
    assert res.radius >= 3.5    # top of the grid at sigma = 1 with 100k draws


def test_cascade_leaves_a_clearly_abstaining_stage_after_one_look_then_refines_its_cap():
    logs = {}
    looks = look_schedule(100_000)
    stage0 = [0.34, 0.33, 0.33]    # clearly abstains (top class far below p0 = .5)
    res = sequential_cascade(stage_samplers([stage0, [0, 1, 0], [1, 0, 0]], logs), SIGMAS, 20, 100_000, ALPHA)
    assert res.prediction == 1 and res.stage == 1 and logs[2] == []
    # stage 0 was left at its first look, and sampled again later: its off-class bound (.34 -> r_0 ~ -.41)
    # first capped the radius near .2 < .25, and more draws could lift the cap past the .25 grid radius
    assert logs[0][:2] == [20, looks[0]] and len(logs[0]) > 2
    assert res.radius == pytest.approx(-res.r_neg) and 0.25 <= res.radius < 0.42
    assert res.n_used == sum(map(sum, logs.values()))


def test_cascade_clearly_abstaining_stages_cost_one_look_when_their_caps_do_not_bind():
    logs = {}
    first = 20 + look_schedule(100_000)[0]
    low = top(0.3)      # abstains clearly; the off-class mass of class 0 is spread thin (7.8% a class)
    res = sequential_cascade(stage_samplers([low, low, top(1.0)], logs), [2.0, 1.0, 0.25], 20, 100_000, ALPHA)
    # the caps (Goodman bounds of ~.078 at 256 draws: ~.87 at sigma 1, more at 2) lie between .75 and 1,
    # and sigma = .25 cannot reach the 1.0 grid radius anyway (~.95): those stages are never sampled again
    assert res.stage == 2 and res.prediction == 0 and 0.75 <= res.radius < -res.r_neg
    assert sum(logs[0]) == sum(logs[1]) == first
    assert res.n_used == 2 * first + sum(logs[2])


def test_cascade_undecided_ends_the_cascade():
    # top class at exactly p0: neither certifying nor abstaining can be proven -> UNDECIDED, once the
    # predictive rule sees that neither is within reach (at the latest at n_max)
    logs = {}
    res = sequential_cascade(stage_samplers([[0.5, 0.5, 0], [0, 1, 0], [0, 1, 0]], logs), SIGMAS, 20, 4000, ALPHA)
    assert (res.prediction, res.radius, res.stage) == (UNDECIDED, 0.0, 0)
    assert logs[1] == [] and res.n_used == sum(logs[0]) <= 4020
    res = sequential_cascade(stage_samplers([[0.5, 0.5, 0], [0, 1, 0]], {}), SIGMAS[:2], 20, 4000, ALPHA,
                             futility=1e-9)
    assert res.prediction == UNDECIDED and 3000 < res.n_used <= 4020   # (only the last look is skipped)


def test_cascade_all_stages_abstain():
    logs = {}
    ab = [0.34, 0.33, 0.33]
    res = sequential_cascade(stage_samplers([ab, ab, ab], logs), SIGMAS, 20, 100_000, ALPHA)
    assert (res.prediction, res.radius, res.stage, res.sigma) == (ABSTAIN, 0.0, 2, 0.25)
    assert all(sum(logs[k]) == 20 + look_schedule(100_000)[0] for k in range(3))


@pytest.mark.parametrize("stages", [
    [[0, 1, 0]],
    [[0.4, 0.3, 0.3], [0, 0.99, 0.01]],
    [[0.46, 0.08, 0.46], [0, 1, 0]],           # cap makes the radius negative -> ABSTAIN, stage kept
    [[0.3, 0.7], [0, 1]],                      # 2-cell fallback of the off-class bound
    [[0.5, 0.5, 0]],                           # undecided
    [[0.34, 0.33, 0.33], [0.34, 0.33, 0.33], [0.34, 0.33, 0.33]],
])
def test_cascade_single_look_equals_fixed_cascade(stages):
    # n_max <= first look: one look per stage with all of alpha_k -> the fixed cascade's decisions
    res = sequential_cascade([scripted(p) for p in stages], SIGMAS[:len(stages)], 20, 200, ALPHA)

    def sample_stage(k):
        s = scripted(stages[k])
        return StageCounts(s(20), s(200))
    ref = cascade_decide(sample_stage, SIGMAS[:len(stages)], ALPHA)
    assert (res.prediction, res.stage, res.n_used) == (ref.prediction, ref.stage, ref.n_used)
    assert res.radius == pytest.approx(ref.radius, abs=1e-6) and res.r_neg == pytest.approx(ref.r_neg, abs=1e-6)


def test_multiscale_certify_adaptive_calls_each_stage_generator_once():
    def const(cls):
        return lambda x: torch.nn.functional.one_hot(torch.full((x.shape[0],), cls), 3).float()
    calls = []

    def gens(k):
        calls.append(k)
        return example_generator(0, 3, k)
    ms = MultiScaleSmooth({1.0: const(0), 0.5: const(1)}, 3)
    res = ms.certify_adaptive(torch.zeros(1, 2, 2), 10, 5000, ALPHA, 256, gens, radius_grid=[0.0, 1.0, 2.0])
    assert res.prediction == 0 and res.stage == 0 and res.radius >= 2.0 and calls == [0]
    assert res.n_used == 10 + all_hits_look(1.0, 2.0, *adaptive.schedule(5000))
