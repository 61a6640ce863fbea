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
from core.runs.analysis import (
    ABSTAIN,
    UNDECIDED,
    average_certified_radius,
    certified_accuracy,
    has_radius,
    plot_certified_accuracy,
    save_figure,
)

ENVELOPE_LABEL = "upper envelope of {}"


def run_accuracies(dfs: Sequence[pd.DataFrame], radii) -> np.ndarray:
    """[runs, radii]: certified accuracy of each of `dfs` (certification files only) at each radius."""
    if not dfs or not all(has_radius(df) and len(df) for df in dfs):
        raise MsrsError("the envelope needs at least one run, each a non-empty certification file (with radii)")
    return np.stack([certified_accuracy(df, radii) for df in dfs])


def envelope_accuracy(dfs: Sequence[pd.DataFrame], radii) -> np.ndarray:
    """max over `dfs` of certified accuracy at each radius (certification files only)."""
    return run_accuracies(dfs, radii).max(axis=0)


def format_envelope_gaps(dfs: Sequence[pd.DataFrame], labels: Sequence[str], envelope_of: Sequence[int],
                         radii) -> str:
    """A markdown table: the upper envelope of the runs at `envelope_of` (certified accuracy at each
    radius, and which of them is best there), then every other run's difference to it in percentage
    points, and each run's ACR beside the best ACR of the enveloped runs."""
    envelope_of = _check_indices(envelope_of, len(dfs))
    radii = np.atleast_1d(np.asarray(radii, dtype=float))
    chosen = [dfs[i] for i in envelope_of]
    acc = run_accuracies(chosen, radii)
    env = acc.max(axis=0)
    best_acr = max(average_certified_radius(df) for df in chosen)
    lines = ["| upper envelope of the single-σ runs | " + " | ".join(f"r={r:g}" for r in radii) + " | ACR |",
             "|---|" + "---:|" * (len(radii) + 1),
             "| envelope | " + " | ".join(f"{a:.3f}" for a in env) + f" | {best_acr:.4f} (best single) |",
             "| best single run | " + " | ".join(
                 "/".join(labels[envelope_of[k]] for k in np.flatnonzero(acc[:, j] == env[j])) if env[j] > 0 else "-"
                 for j in range(len(radii))) + " | |"]
    for i, (df, label) in enumerate(zip(dfs, labels)):
        if i in envelope_of:
            continue
        gap = (certified_accuracy(df, radii) - env) * 100
        lines.append(f"| {label} − envelope (pp) | " + " | ".join(f"{g:+.1f}" for g in gap)
                     + f" | {average_certified_radius(df) - best_acr:+.4f} |")
    return "\n".join(lines) + "\n"


def _check_indices(envelope_of: Sequence[int], n: int) -> list[int]:
    envelope_of = list(envelope_of)
    if not envelope_of or any(not 0 <= i < n for i in envelope_of):
        raise MsrsError(f"--envelope_of needs run indices in 0..{n - 1}, got {envelope_of}")
    return envelope_of


def plot_with_envelope(dfs: Sequence[pd.DataFrame], labels: Sequence[str], envelope_of: Sequence[int],
                       out: str | os.PathLike | None = None, title: str | None = None, num_points: int = 2000):
    """`plot_certified_accuracy(dfs, labels)` plus a dashed black step curve: the upper envelope of the
    runs at indices `envelope_of`, evaluated on a fine grid plus every radius in those files (so its
    steps sit where the data puts them). Returns the Figure; with `out` the file is written atomically."""
    envelope_of = _check_indices(envelope_of, len(dfs))
    fig = plot_certified_accuracy(dfs, labels, None, title=title, num_points=num_points)
    ax = fig.axes[0]
    chosen = [dfs[i] for i in envelope_of]
    lo, hi = ax.get_xlim()
    r = np.unique(np.concatenate([np.linspace(0.0, hi, num_points)]
                                 + [df["radius"].dropna().to_numpy(float) for df in chosen]))
    name = ", ".join(labels[i] for i in envelope_of)
    ax.plot(r, envelope_accuracy(chosen, r), color="black", linestyle="--", linewidth=1.2, alpha=0.8,
            drawstyle="steps-pre", label=ENVELOPE_LABEL.format(name), zorder=3)
    ax.set_xlim(lo, hi)
    ax.legend(loc="lower left", fontsize="small")   # the curves fill the upper right
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
