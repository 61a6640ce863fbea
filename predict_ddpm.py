"""Smoothed prediction at one sigma (Cohen's PREDICT on the denoise-then-classify pipeline; MDDS predict_ddpm).

    python predict_ddpm.py DATASET CLASSIFIER SIGMA OUTFILE [--N 200] [--denoiser PATH|zoo:NAME|none]

MDDS (``--protocol mdds``, the default) writes ``idx label pred0 pred1 correct time conf``: pred0 is the
smoothed prediction (-1 = abstain), pred1 falls back to the clean argmax when pred0 abstains (``correct``
uses pred1), conf is the max clean softmax. Cohen (``--protocol cohen``) writes ``idx label predict correct
time`` and counts an abstention as wrong. ``--columns`` / ``--abstain`` choose each separately. For cifar10c
OUTFILE is a directory of ``{corruption}.tsv``; an accuracy CSV is written beside every run (MDDS).
"""
from __future__ import annotations

import argparse
import math

from core.errors import MsrsError
from core.runs import loop, parsers, predict, setup
from core.smoothing import ABSTAIN

COLUMNS = {"mdds": ["idx", "label", "pred0", "pred1", "correct", "time", "conf"],
           "cohen": ["idx", "label", "predict", "correct", "time"]}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("predict_ddpm.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=parsers.certify_family())
    p.add_argument("dataset")
    p.add_argument("classifier", help="classifier checkpoint path or zoo:NAME")
    p.add_argument("sigma", type=float, help="noise level (pixel space)")
    p.add_argument("outfile", help="output TSV (a directory for cifar10c)")
    p.set_defaults(batch="200")
    return p


def run_one(args: argparse.Namespace, dataset: str, outfile: str) -> str | None:
    job = setup.setup(args, [args.sigma], dataset, outfile=outfile, columns=COLUMNS[args.columns])
    smooth = job.smooth(args.sigma)
    batch = job.batch_size(args.sigma, args.N)

    def process(idx, x, label):
        pred0 = smooth.predict(x, args.N, args.alpha, batch, job.generator(idx))
        if args.columns == "cohen" and args.abstain == "wrong":    # Cohen's predict.py: no clean forward pass
            return dict(idx=idx, label=label, predict=pred0, correct=int(pred0 == label))
        probs = job.clean_logits(x).softmax(0)
        pred1 = int(probs.argmax()) if pred0 == ABSTAIN and args.abstain == "clean_fallback" else pred0
        if args.columns == "cohen":
            return dict(idx=idx, label=label, predict=pred1, correct=int(pred1 == label))
        return dict(idx=idx, label=label, pred0=pred0, pred1=pred1, correct=int(pred1 == label),
                    conf=f"{float(probs.max()):.4}")
    return loop.execute(job, process, desc="predict")


def main(args: argparse.Namespace):
    setup.resolve_run(args, "predict_ddpm")
    parsers.check_args(args)
    if not (args.sigma > 0 and math.isfinite(args.sigma)):
        raise MsrsError(f"sigma must be a finite number > 0, got {args.sigma}")
    if args.columns not in COLUMNS:
        raise MsrsError(f"--columns {args.columns} is certify.py's only: predict_ddpm.py writes {' or '.join(COLUMNS)}")
    return predict.run_datasets(args, run_one, tag=f"N{args.N}_{args.sigma}")


if __name__ == "__main__":
    parsers.run_cli(main, get_args_parser())
