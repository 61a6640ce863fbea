"""The digits showcase (scripts/digits_demo.sh): a certified-accuracy plot with the upper envelope of
the single-σ runs as a dashed line, and what each cascade did at one stage.

    python -m core.showcase s25.tsv s50.tsv s100.tsv plain.tsv mdds.tsv --labels "σ=0.25" "σ=0.5" "σ=1" \\
        plain MDDS --envelope_of 0 1 2 --plot fig.png --title digits

prints, for every cascade file, the outcome of its first (largest-σ) stage as fractions of all rows:
certified correct, certified wrong, undecided (−2), abstained (handed to the next σ), and writes the
plot. The envelope is the pointwise maximum over the chosen runs of certified accuracy at each radius
(what one would get by picking the best single σ for every radius after the fact); the other curves
are `core.analysis.plot_certified_accuracy`'s.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from core.analysis import (ABSTAIN, UNDECIDED, certified_accuracy, has_radius, plot_certified_accuracy,
                           read_results, save_figure)
from core.errors import MsrsError

ENVELOPE_LABEL = "upper envelope of {}"


def envelope_accuracy(dfs: Sequence[pd.DataFrame], radii) -> np.ndarray:
    """max over `dfs` of certified accuracy at each radius (certification files only)."""
    if not dfs or not all(has_radius(df) and len(df) for df in dfs):
        raise MsrsError("the envelope needs at least one run, each a non-empty certification file (with radii)")
    return np.max(np.stack([certified_accuracy(df, radii) for df in dfs]), axis=0)


def plot_with_envelope(dfs: Sequence[pd.DataFrame], labels: Sequence[str], envelope_of: Sequence[int],
                       out: str | os.PathLike | None = None, title: str | None = None, num_points: int = 2000):
    """`plot_certified_accuracy(dfs, labels)` plus a dashed black step curve: the upper envelope of the
    runs at indices `envelope_of`, evaluated on a fine grid plus every radius in those files (so its
    steps sit where the data puts them). Returns the Figure; with `out` the file is written atomically."""
    envelope_of = list(envelope_of)
    if not envelope_of or any(not 0 <= i < len(dfs) for i in envelope_of):
        raise MsrsError(f"--envelope_of needs run indices in 0..{len(dfs) - 1}, got {envelope_of}")
    fig = plot_certified_accuracy(dfs, labels, None, title=title, num_points=num_points)
    ax = fig.axes[0]
    chosen = [dfs[i] for i in envelope_of]
    lo, hi = ax.get_xlim()
    r = np.unique(np.concatenate([np.linspace(0.0, hi, num_points)]
                                 + [df["radius"].dropna().to_numpy(float) for df in chosen]))
    name = ", ".join(labels[i] for i in envelope_of)
    ax.plot(r, envelope_accuracy(chosen, r), color="black", linestyle="--", linewidth=1.2, alpha=0.8,
            drawstyle="steps-pre", label=ENVELOPE_LABEL.format(name), zorder=1)
    ax.set_xlim(lo, hi)
    ax.legend(loc="upper right")
    if out is not None:
        save_figure(fig, out)
    return fig


@dataclass
class StageOutcome:
    """What stage k of a cascade did, as fractions of all rows of the file."""
    stage: int
    reached: float             # rows that got to stage k
    certified_correct: float
    certified_wrong: float
    undecided: float           # −2 at stage k: the run ends there, counted as wrong
    abstained: float           # handed on to stage k + 1 (or, at the last stage / after a cap, abstained)


def stage_outcome(df: pd.DataFrame, stage: int = 0) -> StageOutcome:
    """Stage `stage` (0 = largest σ) of a cascade result file (columns predict, correct, stage)."""
    if df.attrs.get("format") != "cascade" or not len(df):
        raise MsrsError(f"{df.attrs.get('path', 'file')}: stage outcomes need a non-empty cascade (MDDS) file")
    st, pred, ok = df["stage"].to_numpy(int), df["predict"].to_numpy(int), df["correct"].to_numpy(bool)
    here = st == stage
    certified = here & (pred >= 0)
    return StageOutcome(stage=stage, reached=float(np.mean(st >= stage)),
                        certified_correct=float(np.mean(certified & ok)),
                        certified_wrong=float(np.mean(certified & ~ok)),
                        undecided=float(np.mean(here & (pred == UNDECIDED))),
                        abstained=float(np.mean((st > stage) | (here & (pred == ABSTAIN)))))


def format_stage_outcomes(dfs: Sequence[pd.DataFrame], labels: Sequence[str], stage: int = 0) -> str:
    """A markdown table: one row per cascade file, the outcome of its stage `stage`."""
    lines = [f"| run (stage {stage}) | certified correct | certified wrong | undecided | abstained (to next σ) | n |",
             "|---|---:|---:|---:|---:|---:|"]
    for df, label in zip(dfs, labels):
        o = stage_outcome(df, stage)
        lines.append(f"| {label} | {o.certified_correct:.3f} | {o.certified_wrong:.3f} | {o.undecided:.3f} | "
                     f"{o.abstained:.3f} | {len(df)} |")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m core.showcase", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tsv", nargs="+", help="result files (any format analyze.py reads)")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="one curve name per file (default: file stem)")
    p.add_argument("--envelope_of", nargs="+", type=int, required=True, metavar="I",
                   help="0-based indices of the files whose upper envelope is drawn dashed")
    p.add_argument("--plot", required=True, metavar="OUT.png|OUT.pdf|OUT.svg", help="figure to write (overwritten)")
    p.add_argument("--title", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> str:
    args = get_args_parser().parse_args(argv)
    try:
        if args.labels is not None and len(args.labels) != len(args.tsv):
            raise MsrsError(f"--labels gives {len(args.labels)} names for {len(args.tsv)} files; give one per file")
        labels = args.labels or [os.path.splitext(os.path.basename(p))[0] for p in args.tsv]
        dfs = [read_results(p) for p in args.tsv]
        cascades = [(df, label) for df, label in zip(dfs, labels) if df.attrs.get("format") == "cascade"]
        text = format_stage_outcomes(*zip(*cascades)) if cascades else ""
        import matplotlib
        matplotlib.use("Agg")   # headless; set here, never at import
        plot_with_envelope(dfs, labels, args.envelope_of, args.plot, title=args.title)
    except MsrsError as e:
        print(f"showcase: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(text)
    print(f"wrote {args.plot}", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
