"""Certify a smoothed classifier on a dataset: one sigma (Cohen / DDS) or a sigma cascade (MDDS).

    python certify.py DATASET CLASSIFIER OUTFILE --sigma25 --sigma50 --sigma100 [--denoiser PATH|zoo:NAME|none]

One sigma writes Cohen's columns ``idx label predict radius correct time`` (``--columns cohen``) or, as
MDDS's certify.py does under ``--protocol mdds`` (the default), the cascade's with one level; several
write the MDDS cascade's ``idx label predict radius r_neg correct pred_uc corr_uc stage time``. Radii are
pixel-space L2 (images in [0,1]), written rounded down. ``--protocol NAME`` takes every choice left
unset from that paper's row (docs/PROTOCOLS.md); the sidecar JSON records what was resolved.
"""
from __future__ import annotations

import argparse

from core.runs import analysis, compat, loop, parsers, setup
from core.stats import floor_radius

SINGLE_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
CASCADE_COLUMNS = ["idx", "label", "predict", "radius", "r_neg", "correct", "pred_uc", "corr_uc", "stage", "time"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("certify.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=parsers.certify_family())
    p.add_argument("dataset", help="digits, cifar10, cifar10c, cifar10.1, imagenet, imagenet-a, imagenet-r")
    p.add_argument("classifier", help="classifier checkpoint path or zoo:NAME")
    p.add_argument("outfile", help="output TSV (never overwritten; --resume continues it)")
    p.add_argument("--adaptive", action="store_true",
                   help="anytime-valid sequential sampling: stop once the radius grid is decided (N is the cap)")
    p.add_argument("--radius_grid", type=float, nargs="+", default=None,
                   help="--adaptive: radii whose certification decides when to stop (default 0, .25, .5, ...)")
    p.add_argument("--summary_radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="radii of the certified-accuracy table printed at the end")
    return p


def main(args: argparse.Namespace) -> str | None:
    setup.resolve_run(args, "certify")
    parsers.check_args(args)
    sigmas = parsers.sigmas_from_args(args)
    # MDDS writes its cascade (one level) for one sigma too; a black-box query log has no clean answers for it
    single = len(sigmas) == 1 and (args.columns != "mdds" or args.classifier.startswith("querylog:"))
    columns = list(SINGLE_COLUMNS if single else CASCADE_COLUMNS)
    if args.adaptive:
        columns.insert(columns.index("time"), "n_used")
    if args.columns == "cadis":                  # FT-CADIS's file: correct_num (running total), True/False
        columns = compat.ftcadis_columns(args, single, columns)
    job = setup.setup(args, sigmas, outfile=args.outfile, columns=columns)
    adaptive_kw = {"radius_grid": args.radius_grid} if args.radius_grid else {}

    if single:
        smooth = job.smooth(sigmas[0])
        batch = job.batch_size(sigmas[0], args.N)

        def process(idx, x, label):
            g = job.generator(idx)
            if args.adaptive:
                pred, radius, n_used = smooth.certify_adaptive(x, args.N0, args.N, args.alpha, batch, g, **adaptive_kw)
            else:
                pred, radius = smooth.certify(x, args.N0, args.N, args.alpha, batch, g)
            row = dict(idx=idx, label=label, predict=pred, radius=floor_radius(radius), correct=int(pred == label))
            if args.adaptive:
                row["n_used"] = n_used
            return row
    else:
        ms = job.cascade(args.skip_p, alpha_rule=args.cascade_alpha)
        batch = min(job.batch_size(s, args.N) for s in sigmas)

        def process(idx, x, label):
            gens = job.stage_generators(idx)
            if args.adaptive:
                res = ms.certify_adaptive(x, args.N0, args.N, args.alpha, batch, gens, **adaptive_kw)
            else:
                res = ms.certify(x, args.N0, args.N, args.alpha, batch, gens)
            pred_uc = res.prediction if res.prediction >= 0 else int(job.clean_logits(x).argmax())
            row = dict(idx=idx, label=label, predict=res.prediction, radius=floor_radius(res.radius),
                       r_neg=floor_radius(res.r_neg), correct=int(res.prediction == label), pred_uc=pred_uc,
                       corr_uc=int(pred_uc == label), stage=res.stage)
            if args.adaptive:
                row["n_used"] = res.n_used
            return row

    if args.columns == "cadis":
        process = compat.running_correct(args, process)
    path = loop.execute(job, process, desc="certify")
    if path is not None:
        analysis.print_summary(path, args.summary_radii, outfile=args.outfile)
    return path


if __name__ == "__main__":
    parsers.run_cli(main, get_args_parser(), form="certify")
