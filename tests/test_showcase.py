"""core.runs.showcase and scripts/digits_showcase.py: the digits demo figure (dashed upper envelope of the
single-σ curves) and the cascade stage outcomes."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from core.runs import showcase
from core.runs.analysis import read_results
from core.errors import MsrsError

ROOT = Path(__file__).resolve().parents[1]
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def tsv(tmp_path: Path, name: str, rows: list[tuple[float, int]]) -> Path:
    """A certify file of (radius, correct) rows."""
    p = tmp_path / name
    p.write_text(HEADER + "".join(f"{i}\t1\t{1 if c else 2}\t{r}\t{c}\t0.1\n" for i, (r, c) in enumerate(rows)))
    return p


@pytest.fixture
def runs(tmp_path):
    a = tsv(tmp_path, "a.tsv", [(0.9, 1), (0.0, 0), (0.2, 1), (0.0, 0)])     # 0.5 up to 0.2, 0.25 to 0.9
    b = tsv(tmp_path, "b.tsv", [(0.3, 1), (0.3, 1), (0.4, 1), (0.1, 1)])     # 1.0 up to 0.1, 0.75, ..., 0.25 to 0.4
    c = tsv(tmp_path, "c.tsv", [(2.0, 1), (2.0, 1), (2.0, 1), (2.0, 1)])     # not in the envelope
    return [read_results(p) for p in (a, b, c)]


def test_envelope_is_the_pointwise_max(runs):
    radii = [0.0, 0.1, 0.15, 0.3, 0.35, 0.4, 0.5, 0.9, 1.0]
    np.testing.assert_allclose(showcase.envelope_accuracy(runs[:2], radii),
                               [1.0, 1.0, 0.75, 0.75, 0.25, 0.25, 0.25, 0.25, 0.0])
    with pytest.raises(MsrsError):
        showcase.envelope_accuracy([], radii)


def test_envelope_gaps_table(runs):
    text = showcase.format_envelope_gaps(runs, ["a", "b", "c"], [0, 1], [0.0, 0.3, 0.9, 1.0])
    lines = text.splitlines()
    assert lines[0] == "| upper envelope of the single-σ runs | r=0 | r=0.3 | r=0.9 | r=1 | ACR |"
    # ACR: a = (0.9 + 0.2) / 4, b = (0.3 + 0.3 + 0.4 + 0.1) / 4 = 0.275 (the best), c = 2.0
    assert lines[2] == "| envelope | 1.000 | 0.750 | 0.250 | 0.000 | 0.2750 (best single) |"
    assert lines[3] == "| best single run | b | b | a | - | |"
    assert lines[4] == "| c − envelope (pp) | +0.0 | +25.0 | +75.0 | +100.0 | +1.7250 |"
    assert len(lines) == 5
    tie = showcase.format_envelope_gaps(runs, ["a", "b", "c"], [0, 1, 2], [0.0]).splitlines()
    assert tie[3] == "| best single run | b/c | |" and len(tie) == 4
    with pytest.raises(MsrsError, match="envelope_of"):
        showcase.format_envelope_gaps(runs, ["a", "b", "c"], [], [0.0])


def test_plot_draws_the_envelope_dashed(runs, tmp_path):
    out = tmp_path / "fig.png"
    fig = showcase.plot_with_envelope(runs, ["a", "b", "c"], [0, 1], out, title="t")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["a", "b", "c", "upper envelope of a, b"]
    line = ax.get_lines()[-1]
    assert line.get_linestyle() == "--"
    x, y = line.get_xdata(), line.get_ydata()
    for r, want in ((0.0, 1.0), (0.3, 0.75), (0.9, 0.25), (1.5, 0.0)):   # the values at the grid points
        assert y[np.argmin(np.abs(x - r))] == pytest.approx(want)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MsrsError, match="envelope_of"):
        showcase.plot_with_envelope(runs, ["a", "b", "c"], [3])


def script():
    spec = importlib.util.spec_from_file_location("digits_showcase", ROOT / "scripts" / "digits_showcase.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_script(argv: list[str]) -> str:
    mod = script()
    return mod.main(mod.get_args_parser().parse_args(argv))


def test_cli(tmp_path, capsys):
    files = [tsv(tmp_path, f"{n}.tsv", [(0.5, 1), (0.0, 0)]) for n in ("x", "y")]
    out = tmp_path / "cli.png"
    text = run_script([str(f) for f in files] + ["--radii", "0", "0.5", "--envelope_of", "0", "--plot", str(out)])
    assert "| x | 0.500 | 0.500 |" in text and "stage 0" not in text and out.exists()
    assert text.endswith("| y − envelope (pp) | +0.0 | +0.0 | +0.0000 |\n")
    mod = script()
    with pytest.raises(SystemExit) as e:
        mod.run_cli(mod.main, mod.get_args_parser(), [str(f) for f in files] + ["--envelope_of", "2", "--plot", str(out)])
    assert e.value.code == 2 and "envelope_of" in capsys.readouterr().err


def cascade_tsv(tmp_path: Path, rows: list[tuple[int, int, float, int]]) -> Path:
    """A cascade file of (label, predict, radius, stage) rows."""
    p = tmp_path / "cascade.tsv"
    p.write_text("idx\tlabel\tpredict\tradius\tr_neg\tcorrect\tpred_uc\tcorr_uc\tstage\ttime\n" + "".join(
        f"{i}\t{y}\t{c}\t{r}\t-100\t{int(c == y)}\t{c}\t{int(c == y)}\t{s}\t0.1\n"
        for i, (y, c, r, s) in enumerate(rows)))
    return p


def test_stage_outcomes(tmp_path):
    rows = [(1, 1, 1.2, 0), (2, 2, 0.9, 0), (3, 5, 0.4, 0), (4, -2, 0.0, 0),     # right, right, wrong, undecided
            (5, 5, 0.3, 1), (6, -2, 0.0, 1), (7, 7, 0.1, 2), (8, -1, 0.0, 2)]    # handed on to stage 1
    df = read_results(cascade_tsv(tmp_path, rows))
    o = showcase.stage_outcome(df, 0)
    assert (o.reached, o.certified_correct, o.certified_wrong, o.undecided, o.abstained) == (1, 2 / 8, 1 / 8, 1 / 8, 4 / 8)
    o = showcase.stage_outcome(df, 2)
    assert (o.reached, o.certified_correct, o.certified_wrong, o.undecided, o.abstained) == (2 / 8, 1 / 8, 0, 0, 1 / 8)
    table = showcase.format_stage_outcomes([df], ["mdds"])
    assert "| mdds | 0.250 | 0.125 | 0.125 | 0.500 | 8 |" in table
    with pytest.raises(MsrsError, match="cascade"):
        showcase.stage_outcome(read_results(tsv(tmp_path, "single.tsv", [(0.5, 1)])))
    out = tmp_path / "fig.png"
    text = run_script([str(tsv(tmp_path, "s.tsv", [(0.5, 1)])), str(tmp_path / "cascade.tsv"),
                       "--labels", "s", "mdds", "--envelope_of", "0", "--plot", str(out)])
    assert text.endswith("\n" + table) and "| mdds | 0.500 |" in text and out.exists()
