"""analyze.py plus what the digits showcase (scripts/digits_demo.sh) shows beside its table: with
--envelope_of, the upper envelope of those runs (a table of it and of every other run's gap to it, and a
dashed curve in the plot), and what each cascade's first (largest-σ) stage did (certified correct /
certified wrong / undecided / abstained, as fractions of all rows).

    python scripts/digits_showcase.py s25.tsv s50.tsv s100.tsv plain.tsv mdds.tsv \\
        --labels "σ=0.25" "σ=0.5" "σ=1" plain MDDS --radii 0 0.5 1 2 --envelope_of 0 1 2 --plot fig.png

Takes every analyze.py flag; the logic lives in core/runs/showcase.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from anywhere

import analyze  # noqa: E402
from core.runs.analysis import analyze as analyze_files, plot_certified_accuracy  # noqa: E402
from core.runs.parsers import run_cli  # noqa: E402
from core.runs.showcase import format_envelope_gaps, format_stage_outcomes, plot_with_envelope  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("digits_showcase.py", add_help=add_help, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[analyze.get_args_parser(add_help=False)])
    p.add_argument("--envelope_of", nargs="+", type=int, default=[], metavar="I",
                   help="0-based indices of the files (the single-σ runs) whose upper envelope is tabled, "
                        "with every other run's gap to it, and drawn dashed by --plot")
    return p


def main(args: argparse.Namespace) -> str:
    text, dfs, labels = analyze_files(args.tsv, labels=args.labels, radii=args.radii, fmt=args.format,
                                      compare=args.compare, envelope=args.envelope, plot=args.plot)
    if args.envelope_of:
        text += "\n" + format_envelope_gaps(dfs, labels, args.envelope_of, args.radii)
    cascades = [(df, label) for df, label in zip(dfs, labels) if df.attrs.get("format") == "cascade"]
    if cascades:
        text += "\n" + format_stage_outcomes(*zip(*cascades))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")   # headless; set here, never at import
        if args.envelope_of:
            plot_with_envelope(dfs, labels, args.envelope_of, args.plot, title=args.title)
        else:
            plot_certified_accuracy(dfs, labels, args.plot, title=args.title)
    sys.stdout.write(text)
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return text


if __name__ == "__main__":
    run_cli(main, get_args_parser())
