"""Floating-point-sound noise (core/noise.py): the integer table, the sampled law against the exact
discretized Gaussian (chi-square, KS, moments), rejection of the truncated tail, the grid check, and
exactness (the same integers give the same noisy inputs and counts whatever the batch and dtype)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as ss

from core.errors import MsrsError
from core.noise import BITS, LEVELS, DiscreteGaussian, grid_indices, noisy_batch, on_grid, variance


def chi2_pvalue(draws: np.ndarray, pmf: np.ndarray, K: int) -> float:
    """Chi-square goodness of fit of integer draws in -K..K to pmf, cells pooled to expected counts >= 20."""
    observed = np.bincount(draws + K, minlength=2 * K + 1).astype(float)
    expected = pmf * len(draws)
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 20:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o = acc_e = 0.0
    obs[-1] += acc_o
    exp[-1] += acc_e
    return float(ss.chisquare(obs, np.array(exp) * sum(obs) / sum(exp)).pvalue)


@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5, 1.0])
def test_table_is_the_discretized_gaussian(sigma):
    dg = DiscreteGaussian(sigma)
    s = LEVELS * sigma
    # default K: the tail beyond +-K is below 2^-64, so both table edges round exactly: nothing is rejected
    assert dg.exact_edges and dg.tail <= 2.0 ** -64 and 2 * ss.norm.sf((dg.K - 0.5) / s) > 2.0 ** -64
    p, target = dg.pmf(), dg.target_pmf()
    assert math.isclose(p.sum(), 1.0, abs_tol=1e-15)
    assert np.all(np.abs(p - target) <= 2.0 ** -BITS + 1e-15 * target)   # each cell within 2^-62 (+ float64 rounding)
    assert np.allclose(target, ss.norm.cdf((np.arange(-dg.K, dg.K + 1) + 0.5) / s)
                       - ss.norm.cdf((np.arange(-dg.K, dg.K + 1) - 0.5) / s), atol=1e-15)
    assert abs(variance(dg) - (s * s + 1 / 12)) < 1e-6 * s * s           # Sheppard: Var(round(sZ)) = s^2 + 1/12 + tiny
    assert dg.tv_bound(3 * 224 * 224) < 1e-10


def test_samples_follow_the_exact_law():
    dg = DiscreteGaussian(0.25)
    k = dg.sample((2000, 3, 16, 16), torch.Generator().manual_seed(0)).numpy().ravel()   # 1.5M coordinates
    assert chi2_pvalue(k, dg.pmf(), dg.K) > 1e-3
    n, s2 = len(k), variance(dg)
    assert abs(k.mean()) < 4 * math.sqrt(s2 / n)
    assert abs(k.var() - s2) < 4 * s2 * math.sqrt(2 / n)
    # KS on the discrete CDF (conservative for a discrete law): sup |F_n - F| below the 0.1% critical value
    cdf = np.cumsum(dg.pmf())
    emp = np.cumsum(np.bincount(k + dg.K, minlength=2 * dg.K + 1)) / n
    assert np.max(np.abs(emp - cdf)) < ss.kstwobign.isf(1e-3) / math.sqrt(n)


def test_a_wrongly_scaled_sampler_fails_the_same_checks():
    """The [-1, 1] pitfall (noise of 2 sigma in pixel units) and a 2% error in sigma are both caught."""
    dg = DiscreteGaussian(0.25)
    g = torch.Generator().manual_seed(0)
    for wrong_sigma in (0.5, 0.255):
        bad = DiscreteGaussian(wrong_sigma, K=dg.K if wrong_sigma < 0.5 else None)
        k = bad.sample((2000, 3, 16, 16), g).numpy().ravel()
        k = np.clip(k, -dg.K, dg.K)
        assert chi2_pvalue(k, dg.pmf(), dg.K) < 1e-6


def test_truncation_redraws_samples_beyond_K():
    dg = DiscreteGaussian(0.05, K=20)          # L sigma = 12.75: P(|k| > 20) ~ 0.11 per coordinate
    assert not dg.exact_edges and 0.05 < dg.tail < 0.2
    k = dg.sample((20000, 1, 1, 2), torch.Generator().manual_seed(1))
    assert dg.rejected > 0.1 * 20000 and int(k.abs().max()) <= 20
    # accepted rows follow the truncated law: chi-square against pmf() (which is normalized over -K..K)
    assert chi2_pvalue(k.numpy().ravel(), dg.pmf(), dg.K) > 1e-3
    assert np.allclose(dg.pmf(), dg.target_pmf() / dg.target_pmf().sum(), atol=1e-15)
    with pytest.raises(ValueError, match="truncates too much"):
        dg.sample((4, 3, 32, 32))


def test_grid_check():
    img = torch.randint(0, 256, (3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = img.float() / 255                     # what ToTensor gives for an 8-bit image
    assert torch.equal(grid_indices(x), img.long())
    assert torch.equal(grid_indices(x.double()), img.long())
    for bad in (x + 0.3 / 255, torch.full((3, 2, 2), 1.5), torch.full((3, 2, 2), -1 / 255)):
        with pytest.raises(MsrsError, match="--sound needs inputs on the 256-level grid"):
            grid_indices(bad)


def test_same_integers_same_inputs_and_counts_whatever_batch_and_dtype():
    dg = DiscreteGaussian(0.5)
    j = grid_indices(torch.randint(0, 256, (3, 4, 4), generator=torch.Generator().manual_seed(2)).float() / 255)

    def stream(batches, dtype):
        g = torch.Generator().manual_seed(7)
        return torch.cat([noisy_batch(j, b, dg, g, dtype) for b in batches])

    whole = stream([64], torch.float32)
    assert torch.equal(whole, stream([1, 7, 20, 36], torch.float32))        # batches continue one stream
    wide = stream([5, 59], torch.float64)
    assert torch.equal(torch.round(whole.double() * LEVELS), torch.round(wide * LEVELS))   # the same grid points
    assert torch.equal(torch.round(whole.double() * LEVELS), (whole.double() * LEVELS).round())
    k = torch.round(whole.double() * LEVELS).long() - j
    assert torch.equal(on_grid(j, k), whole)                                 # built from integers only

    # a base classifier of f o round (the classifier the certificate is about): identical counts
    w = torch.randn(48, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def f_round(batch):
        ints = torch.round(batch.double() * LEVELS)
        return (ints.reshape(len(batch), -1) @ w > 0).long()

    assert torch.equal(torch.bincount(f_round(whole), minlength=2), torch.bincount(f_round(wide), minlength=2))


def test_certify_on_grid_noise_is_sound_and_a_wrongly_scaled_table_is_caught():
    """CERTIFY on grid noise against the exact p_A of f o round (a 4-fold convolution of the exact pmf):
    wrong bounds at rate <= alpha + 3 sd; a table built at sigma / 2 (the [-1, 1] scale slip) is flagged."""
    from bench.adaptive_soundness import ALPHA, sound_runs, tolerance
    runs = 400
    wrong, certified = sound_runs(runs, 1)
    assert certified > runs / 2 and wrong / runs <= tolerance(runs)
    wrong, _ = sound_runs(runs, 2, 0.5)
    assert wrong / runs > tolerance(runs) and ALPHA == 0.1


def test_smooth_sound_counts_do_not_depend_on_batch_or_dtype():
    from bench.adaptive_soundness import GridThreshold
    from core.smoothing import Smooth, example_generator
    x = torch.tensor([[[40.0, 180.0], [90.0, 120.0]]]) / 255
    smooth = Smooth(GridThreshold(200.0), 2, 0.5, sound=True)
    counts = [smooth.sample_counts(x.to(dtype), 500, bs, example_generator(0, 3))
              for bs, dtype in ((500, torch.float32), (7, torch.float32), (64, torch.float64))]
    assert counts[0].sum() == 500 and 0 < counts[0][1] < 500
    assert all(np.array_equal(c, counts[0]) for c in counts[1:])
    with pytest.raises(MsrsError, match="--sound needs inputs"):
        smooth.sample_counts(x + 0.1 / 255, 10, 10)


def test_sound_certificate_subtracts_the_samplers_distance_and_cascades():
    from bench.adaptive_soundness import GridThreshold
    from core.cascade import MultiScaleSmooth
    from core.smoothing import Smooth, example_generator
    x = torch.tensor([[[40.0, 180.0], [90.0, 120.0]]]) / 255
    sound, plain = Smooth(GridThreshold(-1e9), 2, 0.25, sound=True), Smooth(GridThreshold(-1e9), 2, 0.25)
    assert plain.slack(x) == 0 and sound.slack(x) == sound.grid_noise.tv_bound(4) > 0
    pred, radius = sound.certify(x, 10, 100, 0.01, 100, example_generator(0, 1))
    assert pred == 1 and 0 < radius < 0.25 * ss.norm.ppf(0.01 ** (1 / 100))   # all 100 hits, less the slack
    ms = MultiScaleSmooth({0.5: GridThreshold(1e9), 0.25: GridThreshold(0.0)}, 2, sound=True)
    res = ms.certify_adaptive(x, 10, 2000, 0.01, 256, lambda k: example_generator(0, 1, k))
    assert all(s.grid_noise is not None for s in ms.smooths)
    assert res.prediction == 0 and res.stage == 0 and res.radius > 0        # class 0 everywhere at sigma .5


def test_certify_cli_sound_rows_do_not_depend_on_batch(tmp_path):
    """certify.py --sound end to end on a CIFAR-10 in its on-disk format (8-bit pixels: on the grid), single
    sigma and the cascade, plain and --adaptive: the rows are the same whatever --batch."""
    import pickle

    import pandas as pd

    from models.classifiers import create_model, save_classifier
    from tests.conftest import run_main
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({"labels": rng.integers(0, 10, 2).tolist(),
                         "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    torch.manual_seed(0)
    clf = str(tmp_path / "clf.pt")
    save_classifier(create_model("cifar_resnet20", num_classes=10).eval(), "cifar_resnet20", {"num_classes": 10}, clf)
    for sigmas in (["--sigma25"], ["--sigma25", "--sigma50"], ["--sigma25", "--adaptive"]):
        rows = []
        for batch in ("40", "7"):
            out = tmp_path / f"{'_'.join(sigmas)}_{batch}.tsv"
            r = run_main("certify.py", "cifar10", clf, str(out), *sigmas, "--sound", "--N0", "10", "--N", "40",
                         "--batch", batch, "--data_path", str(tmp_path), "--denoiser", "none", "--device", "cpu")
            assert r.returncode == 0, r.stderr
            rows.append(pd.read_csv(out, sep="\t").drop(columns=["time"]))
        assert len(rows[0]) == 2
        pd.testing.assert_frame_equal(rows[0], rows[1])
