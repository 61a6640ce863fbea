"""Multi-scale smoothed prediction (MDDS predict_mdds): the first sigma level, from the largest down,
whose top class reaches skip_p of the N draws decides, through a prior on the clean logits.

    python predict_mdds.py DATASET CLASSIFIER OUTFILE --sigma25 --sigma50 --sigma100 [--N 200] [--unif_w 0.1]

Writes ``idx label pred0 predict correct time stage c_max``: pred0 is the accepting stage's class
(-1 if every stage abstained), predict = argmax(clean logits + log((1-w) counts/N + w/K)) (the clean
argmax when every stage abstains), stage the last stage run, c_max the max clean softmax.
"""
from __future__ import annotations

import argparse

from core.errors import MsrsError
from core.runs import loop, parsers, predict, setup

COLUMNS = ["idx", "label", "pred0", "predict", "correct", "time", "stage", "c_max"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("predict_mdds.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=parsers.certify_family())
    p.add_argument("dataset")
    p.add_argument("classifier", help="classifier checkpoint path or zoo:NAME")
    p.add_argument("outfile", help="output TSV (a directory for cifar10c)")
    p.add_argument("--unif_w", type=float, default=0.1, help="weight of the uniform prior mixed into the counts")
    return p


def run_one(args: argparse.Namespace, dataset: str, outfile: str) -> str | None:
    sigmas = parsers.sigmas_from_args(args)
    job = setup.setup(args, sigmas, dataset, outfile=outfile, columns=COLUMNS)
    ms = job.cascade(args.skip_p)
    batch = min(job.batch_size(s, args.N) for s in sigmas)

    def process(idx, x, label):
        logits = job.clean_logits(x)
        res = ms.predict_detailed(x, args.N, batch, job.stage_generators(idx),
                                  clean_logits=logits, unif_w=args.unif_w)
        return dict(idx=idx, label=label, pred0=res.pred0, predict=res.prediction,
                    correct=int(res.prediction == label), stage=res.stage,
                    c_max=f"{float(logits.softmax(0).max()):.4}")
    return loop.execute(job, process, desc="predict")


def main(args: argparse.Namespace):
    setup.resolve_run(args, "predict_mdds")
    parsers.check_args(args)
    if not 0 <= args.unif_w <= 1:
        raise MsrsError(f"--unif_w must be in [0, 1], got {args.unif_w}")
    sigmas = parsers.sigmas_from_args(args)
    return predict.run_datasets(args, run_one, tag="N{}_{}_P{}".format(
        args.N, "_".join(f"{s:.2f}" for s in sorted(sigmas)), args.skip_p))


if __name__ == "__main__":
    parsers.run_cli(main, get_args_parser())
