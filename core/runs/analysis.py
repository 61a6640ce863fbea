"""Certified-accuracy analysis of result TSVs: ours and the reference repos' formats.

Semantics follow the reference `analyze.py` scripts (Cohen; Salman; MDDS), see
tests/data/reference_results/README.md:

- certified accuracy at r = mean over ALL rows of [correct and radius >= r] (inclusive ``>=``; the
  denominator counts abstentions), compared on the radii as stored in the file (``{:.3}``-rounded);
- ACR = mean(correct * radius);
- ``correct`` is always recomputed as ``predict == label``: -1 (abstain) and -2 (undecided) are
  wrong, and the DDS (running total) and FT-CADIS (``True``/``False``) columns are never trusted.

Radii are pixel-space L2 in every format we read (MDDS files store the already-halved radius).
Nothing here touches a global matplotlib backend: plots are drawn on a bare ``Figure``.
"""
from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.cascade import UNDECIDED
from core.errors import MsrsError
from core.smoothing import ABSTAIN

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)

# Formats, most specific first: (name, columns that must all be present). Extra columns are kept
# (e.g. our optional `n_used`); `time` is ignored (seconds or H:MM:SS.ffffff).
_FORMATS = (
    # ours (MDDS cascade) and MDDS certify.py; radius already in pixel units
    ("cascade", ("idx", "label", "predict", "radius", "r_neg", "correct", "pred_uc", "corr_uc", "stage")),
    # FT-CADIS certify.py: correct_num is a running total, correct is True/False
    ("ftcadis", ("idx", "label", "predict", "radius", "correct_num", "correct")),
    # predict_mdds.py: pred0 smoothed (-1 if every stage abstains), predict after the logit prior
    ("predict_mdds", ("idx", "label", "pred0", "predict", "correct", "stage", "c_max")),
    # predict_ddpm.py: pred0 = Cohen PREDICT (-1 abstain), pred1 = clean fallback; correct uses pred1
    ("predict_ddpm", ("idx", "label", "pred0", "pred1", "correct", "conf")),
    # Cohen / ours single sigma (and DDS, whose `correct` is a running total: detected from values)
    ("certify", ("idx", "label", "predict", "radius", "correct")),
    # Cohen predict.py
    ("predict", ("idx", "label", "predict", "correct")),
)
_INT_COLUMNS = ("idx", "label", "predict", "pred0", "pred1", "pred_uc", "corr_uc", "stage")
_FLOAT_COLUMNS = ("radius", "r_neg", "n_used", "conf", "c_max")


def _read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    if not path.exists():
        raise MsrsError(f"{path}: no such result file")
    if path.is_dir():
        raise MsrsError(f"{path} is a directory; pass its TSV files (e.g. {path}/*.tsv)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MsrsError(f"{path}: not a text file (byte {e.object[e.start]:#04x} at offset {e.start}); "
                        "give a result TSV") from None
    if not text.strip():
        raise MsrsError(f"{path}: empty file (expected a header line)")
    if not text.endswith("\n") and text.count("\n") >= 1:
        # rows are flushed one at a time: an unterminated last line is a row still being written
        warnings.warn(f"{path}: ignoring the incomplete last line (run still in progress?)")
        text = text[: text.rindex("\n") + 1]
    header = text.splitlines()[0]
    sep = "\t" if "\t" in header else r"\s+"
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as e:
        raise MsrsError(f"{path}: not a readable TSV ({str(e).splitlines()[0]})") from None
    return df, [c.strip() for c in df.columns]


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read any supported result TSV; the format is detected from the header.

    Returns a DataFrame with columns ``idx, label, predict, radius, correct`` (``correct`` bool,
    ``predict == label``; ``radius`` NaN for prediction-only files), plus whichever of ``stage``,
    ``r_neg``, ``n_used``, ``pred0``, ``pred_uc``, ``corr_uc``, ``conf``, ``c_max`` the file has.
    ``df.attrs`` holds ``format`` (cascade, ftcadis, dds, certify, predict_mdds, predict_ddpm,
    predict) and ``path``. Raises MsrsError on an unknown header or a non-numeric cell.
    """
    path = Path(path)
    raw, columns = _read_table(path)
    raw.columns = columns
    fmt = next((name for name, need in _FORMATS if set(need) <= set(columns)), None)
    if fmt is None:
        raise MsrsError(
            f"{path}: unknown header {' '.join(columns)!r}; expected e.g. "
            "'idx label predict radius correct time' (Cohen/DDS/ours) or "
            "'idx label predict radius r_neg correct pred_uc corr_uc stage time' (MDDS cascade)")

    df = pd.DataFrame(index=raw.index)
    for col in columns:
        if col not in _INT_COLUMNS and col not in _FLOAT_COLUMNS:
            continue                       # time, correct, correct_num, ...: never trusted
        text = raw[col].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna()
        if col in _FLOAT_COLUMNS:
            bad &= text.str.lower() != "nan"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MsrsError(f"{path}:{row + 2}: column {col!r} has a non-numeric value "
                            f"{raw[col].iloc[row]!r}")
        df[col] = values.astype(np.int64) if col in _INT_COLUMNS else values.astype(float)

    if fmt == "predict_ddpm":
        df["predict"] = df["pred1"]        # the file's own `correct` uses the clean fallback pred1
    if "radius" not in df:
        df["radius"] = np.nan              # prediction only: empirical accuracy, no radius
    if fmt == "certify":
        stored = pd.to_numeric(raw["correct"], errors="coerce")
        if (stored > 1).any():
            fmt = "dds"                    # DDS writes a running total in `correct` (pitfall 4)
    df["correct"] = (df["predict"] == df["label"]) & (df["predict"] >= 0)

    front = ["idx", "label", "predict", "radius", "correct"]
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs.update(format=fmt, path=str(path))
    return df


def has_radius(df: pd.DataFrame) -> bool:
    """True for certification files (a radius per row), False for prediction-only files."""
    return not df.attrs.get("format", "certify").startswith("predict")


def certified_accuracy(df: pd.DataFrame, radii) -> np.ndarray:
    """Certified accuracy at each r: mean over all rows of [correct and radius >= r].

    Prediction-only files have no radius: r = 0 gives their empirical accuracy, r > 0 gives NaN.
    """
    radii = np.atleast_1d(np.asarray(radii, dtype=float))
    if len(df) == 0:
        return np.full(radii.shape, np.nan)
    correct = df["correct"].to_numpy(bool)
    if not has_radius(df):
        return np.where(radii == 0, correct.mean(), np.nan)
    radius = df["radius"].to_numpy(float)
    return ((radius[None, :] >= radii[:, None]) & correct[None, :]).mean(axis=1)


def average_certified_radius(df: pd.DataFrame) -> float:
    """ACR = mean(correct * radius) over all rows (NaN for prediction-only files)."""
    if len(df) == 0 or not has_radius(df):
        return float("nan")
    return float(np.where(df["correct"].to_numpy(bool), df["radius"].to_numpy(float), 0.0).mean())


@dataclass
class RunSummary:
    """The numbers of one result file, as printed in a table row."""
    label: str
    path: str
    format: str
    n: int
    radii: np.ndarray
    accuracy: np.ndarray          # certified accuracy at `radii`
    clean_accuracy: float         # certified accuracy at r = 0 (the envelope's tie-break)
    acr: float
    abstain: float                # fraction predict == -1 (pred0 for prediction files)
    undecided: float              # fraction predict == -2
    stage_counts: dict[int, int] | None   # rows per cascade stage (0 = largest sigma)
    n_used: dict[str, float] | None       # mean / median / total samples (adaptive runs)


def summarize(df: pd.DataFrame, radii=DEFAULT_RADII, label: str | None = None) -> RunSummary:
    """Certified accuracy at `radii`, ACR, abstain/undecided rates, stage counts, n_used stats."""
    radii = np.atleast_1d(np.asarray(radii, dtype=float))
    path = df.attrs.get("path", "")
    # prediction files keep the smoothed decision in pred0 (their `predict` may be a fallback)
    decision = df["pred0"] if "pred0" in df else df["predict"]
    rate = (lambda mask: float(mask.mean())) if len(df) else (lambda mask: float("nan"))
    stage_counts = None
    if "stage" in df:
        stage_counts = {int(k): int(v) for k, v in df["stage"].value_counts().sort_index().items()}
    n_used = None
    if "n_used" in df:
        s = df["n_used"]
        n_used = {"mean": float(s.mean()), "median": float(s.median()), "total": float(s.sum())}
    return RunSummary(
        label=label if label is not None else Path(path).stem,
        path=path, format=df.attrs.get("format", "?"), n=len(df), radii=radii,
        accuracy=certified_accuracy(df, radii),
        clean_accuracy=float(certified_accuracy(df, [0.0])[0]),
        acr=average_certified_radius(df),
        abstain=rate(decision == ABSTAIN), undecided=rate(decision == UNDECIDED),
        stage_counts=stage_counts, n_used=n_used)


# ----------------------------------------------------------------------------------------- tables
def _r(radius: float) -> str:
    return f"{radius:g}"


def _cell(value: float, ref: float | None, digits: int, scale: float, latex: bool) -> str:
    """`value` with `digits` decimals; with `ref`, append the difference (x `scale`) in brackets."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--" if latex else "-"
    txt = f"{value:.{digits}f}"
    if ref is not None and not math.isnan(ref):
        txt += f" ({(value - ref) * scale:+.{1 if scale == 100 else digits}f})"
    return txt


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                  "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def _table_rows(runs: list[RunSummary], compare: bool, latex: bool):
    """Header and rows (lists of strings) shared by the markdown and LaTeX tables."""
    radii = runs[0].radii
    stages = sorted({k for r in runs if r.stage_counts for k in r.stage_counts})
    with_n_used = any(r.n_used for r in runs)
    dollar = "$" if latex else ""
    header = (["run (diff. vs first: pp)" if compare else "run"]
              + [f"{dollar}r={_r(x)}{dollar}" for x in radii] + ["ACR", "abstain", "undecided", "n"])
    if with_n_used:
        header += ["n_used mean", "n_used median", "n_used total"]
    header += [f"stage {k}" for k in stages]
    if latex:
        header = [_latex_escape(h) if not h.startswith("$") else h for h in header]

    best = [max((r.accuracy[j] for r in runs if not math.isnan(r.accuracy[j])), default=None)
            for j in range(len(radii))]
    rows = []
    for i, run in enumerate(runs):
        ref = runs[0] if compare and i > 0 else None
        row = [_latex_escape(run.label) if latex else run.label]
        for j in range(len(radii)):
            txt = _cell(run.accuracy[j], ref.accuracy[j] if ref else None, 3, 100, latex)
            if latex and best[j] is not None and run.accuracy[j] == best[j] and not compare:
                txt = r"\textbf{" + txt + "}"
            row.append(txt)
        row.append(_cell(run.acr, ref.acr if ref else None, 4, 1, latex))
        row.append(_cell(run.abstain, ref.abstain if ref else None, 3, 100, latex))
        row.append(_cell(run.undecided, ref.undecided if ref else None, 3, 100, latex))
        row.append(str(run.n))
        if with_n_used:
            row += ([f"{run.n_used['mean']:.1f}", f"{run.n_used['median']:.0f}",
                     f"{run.n_used['total']:.0f}"] if run.n_used else ["--" if latex else "-"] * 3)
        for k in stages:
            row.append(str(run.stage_counts.get(k, 0)) if run.stage_counts else ("--" if latex else "-"))
        rows.append(row)
    return header, rows


def format_markdown(runs: list[RunSummary], compare: bool = False) -> str:
    """Runs as rows, radii as columns, then ACR, abstain and undecided rates, n, n_used, stages."""
    header, rows = _table_rows(runs, compare, latex=False)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_latex(runs: list[RunSummary], compare: bool = False) -> str:
    """A booktabs tabular; without --compare the best run at each radius is bold (first max)."""
    header, rows = _table_rows(runs, compare, latex=True)
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def format_csv(runs: list[RunSummary]) -> str:
    """`run,r=<radius>...,ACR`, then one line per run; fractions, NaN as an empty field."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run"] + [f"r={_r(x)}" for x in runs[0].radii] + ["ACR"])
    def num(v: float) -> str:
        return "" if math.isnan(v) else repr(round(float(v), 10))

    for run in runs:
        w.writerow([run.label] + [num(a) for a in run.accuracy] + [num(run.acr)])
    return buf.getvalue()


# --------------------------------------------------------------------------------------- envelope
@dataclass
class Envelope:
    """Salman et al.'s outer envelope: at each radius the run with the highest certified accuracy,
    ties broken by the highest clean accuracy (r = 0), then by the earliest run."""
    radii: np.ndarray
    accuracy: np.ndarray          # max over runs
    clean_accuracy: np.ndarray    # clean accuracy of the chosen run
    chosen: list[int]             # index of the chosen run at each radius
    labels: list[str]


def outer_envelope(runs: list[RunSummary]) -> Envelope:
    acc = np.nan_to_num(np.stack([r.accuracy for r in runs]), nan=-1.0)   # runs x radii
    clean = np.nan_to_num(np.array([r.clean_accuracy for r in runs]), nan=-1.0)
    chosen = []
    for j in range(acc.shape[1]):
        ties = np.flatnonzero(acc[:, j] == acc[:, j].max())   # exact: same counting, same floats
        chosen.append(int(ties[clean[ties].argmax()]))
    return Envelope(radii=runs[0].radii, accuracy=acc[chosen, range(acc.shape[1])],
                    clean_accuracy=clean[chosen], chosen=chosen, labels=[r.label for r in runs])


def format_envelope_latex(runs: list[RunSummary]) -> str:
    """Byte-for-byte the format of Salman's `latex_table_certified_accuracy_upper_envelope`:
    a `{:.3}` radius header, `\\midrule`, then one row of `$^{(clean)}$acc` cells (2 decimals)."""
    env = outer_envelope(runs)
    out = r"$\ell_2$ Radius" + "".join("& ${:.3}$".format(float(r)) for r in env.radii) + "\\\\\n"
    out += "\\midrule\n"
    out += "".join(" & $^{(" + "{:.2f})".format(c) + "}$" + "{:.2f}".format(a)
                   for a, c in zip(env.accuracy, env.clean_accuracy))
    return out + "\\\\\n"


def format_envelope(runs: list[RunSummary], fmt: str) -> str:
    """The outer envelope as markdown, LaTeX (Salman's exact format) or CSV."""
    if fmt == "latex":
        return format_envelope_latex(runs)
    env = outer_envelope(runs)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["radius", "certified_accuracy", "clean_accuracy", "run"])
        for r, a, c, i in zip(env.radii, env.accuracy, env.clean_accuracy, env.chosen):
            w.writerow([_r(r), repr(round(float(a), 10)), repr(round(float(c), 10)), env.labels[i]])
        return buf.getvalue()
    lines = ["| radius (ℓ2) | " + " | ".join(_r(r) for r in env.radii) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(env.radii)) + "|",
             "| certified accuracy | " + " | ".join(f"{a:.3f}" for a in env.accuracy) + " |",
             "| clean accuracy | " + " | ".join(f"{c:.3f}" for c in env.clean_accuracy) + " |",
             "| run | " + " | ".join(env.labels[i] for i in env.chosen) + " |"]
    return "\n".join(lines) + "\n"


def format_table(runs: list[RunSummary], fmt: str = "markdown", compare: bool = False,
                 envelope: bool = False) -> str:
    """Dispatch on `fmt` (markdown, latex, csv); `envelope` gives Salman's best-over-runs table."""
    if not runs:
        raise MsrsError("no result files given")
    if fmt not in ("markdown", "latex", "csv"):
        raise MsrsError(f"unknown --format {fmt!r}; choose markdown, latex or csv")
    if envelope:
        if compare:
            raise MsrsError("--envelope and --compare do not combine; pick one")
        return format_envelope(runs, fmt)
    if fmt == "csv":
        if compare:
            raise MsrsError("--compare is for markdown/latex tables; --format csv keeps one plain "
                            "row per run")
        return format_csv(runs)
    return format_latex(runs, compare) if fmt == "latex" else format_markdown(runs, compare)


# ------------------------------------------------------------------------------------------- plot
def plot_certified_accuracy(dfs: list[pd.DataFrame], labels: list[str], out: str | os.PathLike | None = None,
                            title: str | None = None, num_points: int = 2000):
    """Certified accuracy vs radius, one step curve per run (legend = `labels`).

    The curve is evaluated on a fine grid from 0 to the largest radius plus every radius present in
    the files, so each step sits where the data puts it. Prediction-only runs (no radius) are drawn
    as one marker at r = 0 (their empirical accuracy). Returns the matplotlib Figure; with `out`
    (.png, .pdf or .svg) the file is written atomically and overwritten if it exists.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    rmax = max([float(np.nanmax(df["radius"])) for df in dfs if has_radius(df) and len(df)] + [0.0])
    rmax = rmax if rmax > 0 else 1.0
    grid = np.linspace(0.0, rmax * 1.02, num_points)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for df, label in zip(dfs, labels):
        if has_radius(df) and len(df):
            r = np.unique(np.concatenate([grid, df["radius"].dropna().to_numpy(float)]))
            # acc(r) is left-continuous and non-increasing: the value at r_k holds on (r_{k-1}, r_k]
            ax.plot(r, certified_accuracy(df, r), label=label, linewidth=1.8, drawstyle="steps-pre")
        else:
            ax.plot([0.0], certified_accuracy(df, [0.0]), marker="o", linestyle="none",
                    label=f"{label} (empirical)")
    ax.set_xlabel("radius (ℓ2)")
    ax.set_ylabel("certified accuracy")
    ax.set_xlim(0.0, rmax * 1.02)
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if out is not None:
        save_figure(fig, out)
    return fig


def check_plot_path(out: str | os.PathLike) -> tuple[Path, str]:
    """(path, format) for a plot file name; MsrsError on an unknown suffix or a missing folder."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise MsrsError(f"--plot {out}: use a .png, .pdf or .svg file name")
    if not out.parent.is_dir():
        raise MsrsError(f"--plot {out}: directory {out.parent} does not exist")
    return out, fmt


def save_figure(fig, out: str | os.PathLike) -> None:
    """Write `fig` to `out` (format from the suffix) through a temporary file + rename."""
    out, fmt = check_plot_path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".{fmt}", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, dpi=150)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a figure gets the usual permissions
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------ entry point
def analyze(paths: list[str], labels: list[str] | None = None, radii=DEFAULT_RADII,
            fmt: str = "markdown", compare: bool = False, envelope: bool = False,
            plot: str | os.PathLike | None = None):
    """Read every file and build the requested table. Returns (text, dataframes, labels).

    `plot` is only validated here (before any output), drawn by `plot_certified_accuracy`.
    """
    if plot is not None:
        check_plot_path(plot)
    if labels is not None and len(labels) != len(paths):
        raise MsrsError(f"--labels gives {len(labels)} names for {len(paths)} files; give one per file")
    radii = [float(r) for r in radii]
    if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
        raise MsrsError("--radii must be finite and >= 0")
    dfs = [read_results(p) for p in paths]
    labels = list(labels) if labels is not None else [Path(p).stem for p in paths]
    runs = [summarize(df, radii, label) for df, label in zip(dfs, labels)]
    return format_table(runs, fmt, compare=compare, envelope=envelope), dfs, labels


def print_summary(path: str, radii: list[float], outfile: str | None = None) -> None:
    """Print the certified-accuracy table of a finished result file (the analyze.py markdown table); for
    a part file of a sharded run (``outfile`` its OUTFILE), the table of that part."""
    if outfile is not None and path != outfile:
        print(f"this shard's part of {outfile}: {path}", flush=True)
    text, _, _ = analyze([path], radii=radii, fmt="markdown")
    print(text, flush=True)
