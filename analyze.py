"""Certified-accuracy tables and plots from result TSVs (ours, Cohen, Salman, DDS, MDDS, FT-CADIS).

    python analyze.py A.tsv B.tsv --labels sigma0.25 sigma0.5 --radii 0 0.25 0.5 0.75 1.0
    python analyze.py sigma_*.tsv --format latex --envelope --radii 0.25 0.5 0.75 1.0 1.25 1.5
    python analyze.py A.tsv B.tsv --compare --plot curves.png

The logic lives in core/runs/analysis.py.
"""
import argparse
import sys

from core.runs.analysis import DEFAULT_RADII, analyze, plot_certified_accuracy
from core.runs.parsers import run_cli


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "analyze.py", add_help=add_help,
        description="Certified accuracy at chosen radii (mean over ALL rows of correct and "
                    "radius >= r), ACR, abstain/undecided rates, cascade stage counts and n_used "
                    "stats. The file format is detected from the header.")
    p.add_argument("tsv", nargs="+", help="result files: certify (Cohen/DDS/ours), MDDS cascade, "
                                          "FT-CADIS, or predict_ddpm/predict_mdds/Cohen predict")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="one run name per file (default: file stem)")
    p.add_argument("--radii", nargs="+", type=float, default=list(DEFAULT_RADII), metavar="R",
                   help="L2 radii (pixel units) of the table columns")
    p.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown",
                   help="csv: header `run,r=<radius>...,ACR`, then one line per file (fractions)")
    p.add_argument("--envelope", action="store_true",
                   help="Salman et al.'s outer envelope: best run at each radius, ties to the highest "
                        "clean accuracy; with --format latex, their exact table format")
    p.add_argument("--compare", action="store_true",
                   help="show each run's difference to the first one (percentage points; ACR in radius units)")
    p.add_argument("--plot", metavar="OUT.png|OUT.pdf",
                   help="also plot certified accuracy vs radius (a regenerated artifact: an existing "
                        "file is overwritten)")
    p.add_argument("--title", default=None, help="plot title")
    return p


def main(args: argparse.Namespace) -> str:
    text, dfs, labels = analyze(args.tsv, labels=args.labels, radii=args.radii, fmt=args.format,
                                compare=args.compare, envelope=args.envelope, plot=args.plot)
    sys.stdout.write(text)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")   # headless; set here, never at import
        plot_certified_accuracy(dfs, labels, args.plot, title=args.title)
        print(f"wrote {args.plot}", file=sys.stderr)
    return text


if __name__ == "__main__":
    run_cli(main, get_args_parser())
