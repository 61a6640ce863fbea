"""analyze.py / core.runs.analysis: reference numbers (Salman logs), every input format, outputs."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analyze
from core.runs.analysis import (average_certified_radius, certified_accuracy, format_envelope_latex,
                           outer_envelope, plot_certified_accuracy, read_results, summarize)
from core.errors import MsrsError

ROOT = Path(__file__).resolve().parents[1]
SALMAN = ROOT / "tests" / "data" / "reference_results" / "salman"
WHITEBOX = [SALMAN / f"cifar10_whitebox_cohen_resnet110_noise_{s}_sigma_{s}_N10000.tsv"
            for s in ("0.12", "0.25", "0.50", "1.00")]
DNCNN = SALMAN / "cifar10_mse_dncnn_resnet110_noise_0.25_sigma_0.25_N10000.tsv"
PUBLISHED_TEX = SALMAN / "published_analysis_latex_cifar10_certified_outer_envelop_whitebox.tex"
RADII = [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


# reference_results/README.md section 3: recomputed (>=, over all 500 rows), r = 0 .. 1.5, ACR
EXPECTED = {
    WHITEBOX[0]: ([0.842, 0.588, 0.000, 0.000, 0.000, 0.000, 0.000], 0.2477, 20),
    WHITEBOX[1]: ([0.768, 0.590, 0.448, 0.244, 0.000, 0.000, 0.000], 0.4004, 48),
    WHITEBOX[2]: ([0.650, 0.544, 0.412, 0.306, 0.214, 0.134, 0.076], 0.4971, 81),
    WHITEBOX[3]: ([0.446, 0.378, 0.318, 0.260, 0.206, 0.176, 0.134], 0.4972, 160),
    DNCNN: ([0.590, 0.334, 0.128, 0.018, 0.000, 0.000, 0.000], 0.1889, 106),
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text.replace("  ", "\t"))   # tests write columns separated by two spaces
    return p


# --------------------------------------------------------------------------- reference numbers
@pytest.mark.parametrize("path", list(EXPECTED), ids=lambda p: p.stem[:40])
def test_salman_recomputed_numbers(path):
    acc, acr, abstentions = EXPECTED[path]
    df = read_results(path)
    assert df.attrs["format"] == "certify" and len(df) == 500
    np.testing.assert_allclose(certified_accuracy(df, RADII), acc, atol=1e-12)
    assert round(average_certified_radius(df), 4) == acr
    s = summarize(df, RADII)
    assert round(s.abstain * 500) == abstentions and s.undecided == 0.0
    assert s.stage_counts is None and s.n_used is None


def test_boundary_cells_are_inclusive():
    """README section 4: rows sitting exactly on a table radius count (>=, not >)."""
    for path, r, ge, gt in ((WHITEBOX[1], 0.25, 0.590, 0.588), (WHITEBOX[3], 1.25, 0.176, 0.174),
                            (WHITEBOX[3], 1.0, 0.206, None)):
        df = read_results(path)
        assert certified_accuracy(df, [r])[0] == pytest.approx(ge, abs=1e-12)
        strict = float((df["correct"] & (df["radius"] > r)).mean())
        assert strict < ge                                   # the boundary rows exist
        if gt is not None:
            assert strict == pytest.approx(gt, abs=1e-12)


def test_envelope_latex_byte_for_byte():
    runs = [summarize(read_results(p), RADII[1:]) for p in WHITEBOX]
    assert format_envelope_latex(runs).encode() == PUBLISHED_TEX.read_bytes()
    env = outer_envelope(runs)
    assert env.chosen == [1, 1, 2, 2, 3, 3]                  # sigma .25 wins the r=.25 tie-free cell


def test_envelope_via_main(capsys):
    args = analyze.get_args_parser().parse_args(
        [str(p) for p in WHITEBOX] + ["--format", "latex", "--envelope", "--radii"]
        + [str(r) for r in RADII[1:]])
    analyze.main(args)
    assert capsys.readouterr().out.encode() == PUBLISHED_TEX.read_bytes()


def test_envelope_tie_goes_to_higher_clean_accuracy(tmp_path):
    # both runs: 1/2 certified at r=0.5; run b has the higher clean accuracy (2/2 vs 1/2)
    a = write(tmp_path, "a.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.9  1  1.0\n1  2  -1  0.0  0  1.0\n")
    b = write(tmp_path, "b.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.5  1  1.0\n1  2  2  0.1  1  1.0\n")
    runs = [summarize(read_results(p), [0.5]) for p in (a, b)]
    assert outer_envelope(runs).chosen == [1]
    assert format_envelope_latex(runs) == ("$\\ell_2$ Radius& $0.5$\\\\\n\\midrule\n"
                                           " & $^{(1.00)}$0.50\\\\\n")


# ------------------------------------------------------------------------------ other formats
def test_mdds_cascade_with_abstain_undecided_and_stages(tmp_path):
    p = write(tmp_path, "mdds.tsv",
              "idx  label  predict  radius  r_neg  correct  pred_uc  corr_uc  stage  time\n"
              "0  3  3  0.5  -100  1  3  1  0  0:00:01.5\n"
              "1  5  -1  0.0  -100  0  2  0  2  0:00:01.5\n"
              "2  7  -2  0.0  0.3  0  7  1  1  0:00:01.5\n"      # undecided: wrong though pred_uc==label
              "3  1  1  0.25  0.8  1  1  1  1  0:00:01.5\n"      # exactly on r=0.25: counts
              "4  2  4  0.75  -100  0  4  0  0  0:00:01.5\n")
    df = read_results(p)
    assert df.attrs["format"] == "cascade"
    assert df["correct"].tolist() == [True, False, False, True, False]
    np.testing.assert_allclose(certified_accuracy(df, [0, 0.25, 0.5, 0.75]), [2 / 5, 2 / 5, 1 / 5, 0])
    s = summarize(df, [0, 0.25, 0.5])
    assert s.acr == pytest.approx((0.5 + 0.25) / 5)
    assert (s.abstain, s.undecided) == (1 / 5, 1 / 5)
    assert s.stage_counts == {0: 2, 1: 2, 2: 1}
    assert df["r_neg"].tolist() == [-100, -100, 0.3, 0.8, -100]


def test_dds_cumulative_correct(tmp_path):
    p = write(tmp_path, "dds.tsv", "idx  label  predict  radius  correct  time\n"
                                   "0  3  3  0.4  1  12.1\n1  5  5  0.2  2  12.0\n"
                                   "2  7  1  0.9  2  12.3\n3  1  -1  0.0  2  11.9\n"
                                   "4  2  2  0.6  3  12.2\n")
    df = read_results(p)
    assert df.attrs["format"] == "dds"
    assert df["correct"].tolist() == [True, True, False, False, True]
    np.testing.assert_allclose(certified_accuracy(df, [0, 0.25, 0.5, 0.75]), [3 / 5, 2 / 5, 1 / 5, 0])
    assert average_certified_radius(df) == pytest.approx((0.4 + 0.2 + 0.6) / 5)


def test_ftcadis(tmp_path):
    p = write(tmp_path, "ftcadis.tsv", "idx  label  predict  radius  correct_num  correct  time\n"
                                       "0  3  3  0.3  1  True  0:00:05.1\n"
                                       "1  5  2  0.7  1  False  0:00:05.1\n"
                                       "2  7  7  0.25  2  True  0:00:05.1\n"
                                       "3  1  -1  0.0  2  False  0:00:05.1\n")
    df = read_results(p)
    assert df.attrs["format"] == "ftcadis"
    s = summarize(df, [0, 0.25, 0.5])
    np.testing.assert_allclose(s.accuracy, [0.5, 0.5, 0.0])
    assert s.acr == pytest.approx((0.3 + 0.25) / 4) and s.abstain == 0.25


def test_prediction_files_give_accuracy_only(tmp_path):
    ddpm = write(tmp_path, "ddpm.tsv", "idx  label  pred0  pred1  correct  time  conf\n"
                                       "0  3  3  3  1  0:00:01  0.9\n1  5  -1  5  1  0:00:01  0.4\n"
                                       "2  7  -1  2  0  0:00:01  0.3\n3  1  1  1  1  0:00:01  0.8\n")
    s = summarize(read_results(ddpm), [0, 0.5])
    assert s.format == "predict_ddpm" and s.accuracy[0] == 0.75 and math.isnan(s.accuracy[1])
    assert math.isnan(s.acr) and s.abstain == 0.5          # the smoothed pred0 abstained twice
    mdds = write(tmp_path, "pm.tsv", "idx  label  pred0  predict  correct  time  stage  c_max\n"
                                     "0  3  3  3  1  0:00:01  0  0.8\n1  5  -1  5  1  0:00:01  2  0.3\n"
                                     "2  7  7  1  0  0:00:01  1  0.6\n")
    s = summarize(read_results(mdds), [0])
    assert s.format == "predict_mdds" and s.accuracy[0] == pytest.approx(2 / 3)
    assert s.abstain == pytest.approx(1 / 3) and s.stage_counts == {0: 1, 1: 1, 2: 1}
    cohen = write(tmp_path, "cp.tsv", "idx  label  predict  correct  time\n0  1  1  1  2.0\n1  2  -1  0  2.0\n")
    assert summarize(read_results(cohen), [0]).accuracy[0] == 0.5


def test_adaptive_n_used_and_markdown(tmp_path):
    p = write(tmp_path, "ours.tsv", "idx  label  predict  radius  correct  n_used  time\n"
                                    "0  3  3  0.5  1  2100  1.5\n1  5  5  0.1  1  100100  30.2\n"
                                    "2  7  -1  0.0  0  100100  30.0\n")
    s = summarize(read_results(p), [0, 0.25])
    assert s.n_used == {"mean": pytest.approx(202300 / 3), "median": 100100.0, "total": 202300.0}
    text, _, _ = analyze_text([str(p)], fmt="markdown")
    header = text.splitlines()[0]
    for col in ("r=0", "r=0.25", "ACR", "abstain", "undecided", "n_used mean", "n_used total"):
        assert col in header
    assert "| ours | 0.667 | 0.333 |" in text


def analyze_text(paths, **kw):
    from core.runs.analysis import analyze as run
    return run(paths, **kw)


def test_csv_output(tmp_path, capsys):
    a = write(tmp_path, "a.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.9  1  1.0\n1  2  -1  0.0  0  1.0\n")
    b = write(tmp_path, "b.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.5  1  1.0\n1  2  2  0.25  1  0:00:01.000000\n")
    args = analyze.get_args_parser().parse_args(
        [str(a), str(b), "--format", "csv", "--labels", "run a", "b", "--radii", "0", "0.25", "1"])
    analyze.main(args)
    assert capsys.readouterr().out == ("run,r=0,r=0.25,r=1,ACR\n"
                                       "run a,0.5,0.5,0.0,0.45\n"
                                       "b,1.0,1.0,0.0,0.375\n")


def test_compare_and_latex(tmp_path):
    a = write(tmp_path, "a_1.tsv", "idx  label  predict  radius  correct  time\n"
                                   "0  1  1  0.9  1  1.0\n1  2  -1  0.0  0  1.0\n")
    b = write(tmp_path, "b.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.5  1  1.0\n1  2  2  0.25  1  1.0\n")
    text, _, _ = analyze_text([str(a), str(b)], radii=[0, 0.5], compare=True)
    assert "| b | 1.000 (+50.0) | 0.500 (+0.0) | 0.3750 (-0.0750) |" in text
    tex, _, _ = analyze_text([str(a), str(b)], radii=[0, 0.5], fmt="latex")
    assert r"a\_1 & 0.500 & \textbf{0.500}" in tex and tex.startswith(r"\begin{tabular}")
    with pytest.raises(MsrsError):
        analyze_text([str(a), str(b)], fmt="csv", compare=True)


def test_plot_png_with_labels(tmp_path):
    p = write(tmp_path, "a.tsv", "idx  label  predict  radius  correct  time\n"
                                 "0  1  1  0.9  1  1.0\n1  2  -1  0.0  0  1.0\n")
    q = write(tmp_path, "pd.tsv", "idx  label  pred0  pred1  correct  time  conf\n0  3  3  3  1  1.0  0.9\n")
    out = tmp_path / "curves.png"
    fig = plot_certified_accuracy([read_results(p), read_results(q)], ["σ=0.25", "clean"], out,
                                  title="CIFAR-10")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["σ=0.25", "clean (empirical)"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == \
        ("radius (ℓ2)", "certified accuracy", "CIFAR-10")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]   # no temp file left
    with pytest.raises(MsrsError):
        plot_certified_accuracy([read_results(p)], ["a"], tmp_path / "x.jpg")


# ------------------------------------------------------------------------------------- errors
def test_bad_inputs(tmp_path):
    with pytest.raises(MsrsError, match="unknown header"):
        read_results(write(tmp_path, "u.tsv", "a  b  c\n1  2  3\n"))
    with pytest.raises(MsrsError, match="non-numeric"):
        read_results(write(tmp_path, "n.tsv", "idx  label  predict  radius  correct  time\n0  1  x  0.1  1  1\n"))
    with pytest.raises(MsrsError, match="no such"):
        read_results(tmp_path / "missing.tsv")
    ok = write(tmp_path, "ok.tsv", "idx  label  predict  radius  correct  time\n0  1  1  0.1  1  1\n")
    with pytest.raises(MsrsError, match="--labels"):
        analyze_text([str(ok)], labels=["a", "b"])


def test_incomplete_last_row_is_ignored(tmp_path):
    p = tmp_path / "running.tsv"
    p.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.1\t1\t1.0\n20\t2\t2\t0.")
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(read_results(p)) == 1


def test_cli_unknown_header_exits_with_one_line(tmp_path):
    bad = write(tmp_path, "bad.tsv", "foo  bar\n1  2\n")
    proc = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown header" in proc.stderr
