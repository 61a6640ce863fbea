"""The digits showcase (scripts/digits_demo.sh, through scripts/digits_showcase.py): a certified-accuracy
plot with the upper envelope of the single-σ runs as a dashed line, and what a cascade did at one stage
(certified correct, certified wrong, undecided (−2), abstained: handed to the next σ).

The envelope is the pointwise maximum over the chosen runs of certified accuracy at each radius (what
one would get by picking the best single σ for every radius after the fact); the other curves are
`core.runs.analysis.plot_certified_accuracy`'s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from core.errors import MsrsError
from core.runs.analysis import ABSTAIN, UNDECIDED, certified_accuracy, has_radius, plot_certified_accuracy, save_figure

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
