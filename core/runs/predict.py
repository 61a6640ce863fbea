"""The part the prediction scripts share: one dataset, or CIFAR-10-C as a directory of per-corruption
TSVs, and MDDS's accuracy CSV beside every run (``accuracy_{dataset}_{corr_type}_{tag}_sk{skip}_st{start}.csv``
in the output's folder, or in the CIFAR-10-C directory)."""
from __future__ import annotations

import argparse
import csv
import io
import os
from typing import Callable

import pandas as pd

from core.runs.files import atomic_write_text
from core.runs.integrity import check_output_path
from datasets import resolve_corruptions


def accuracy(path: str) -> float:
    return float(pd.read_csv(path, sep="\t")["correct"].mean() * 100.0)


def run_datasets(args: argparse.Namespace, run_one: Callable[[argparse.Namespace, str, str], str | None],
                 tag: str) -> dict[str, float]:
    """Run ``run_one(args, dataset, outfile)`` for the dataset (or each corruption) and report accuracy;
    like MDDS's predict_*.py, an accuracy CSV (one row [dataset, accuracy %] per run) beside the rows."""
    results: dict[str, float] = {}
    if args.dataset != "cifar10c":
        outdir = os.path.dirname(args.outfile) or "."
        path = run_one(args, args.dataset, args.outfile)
        if path == args.outfile:
            results[args.dataset] = accuracy(path)
            print(f"Accuracy ({args.dataset}): {results[args.dataset]:.2f} %")
        elif path is not None:  # a --shard part
            print(f"Accuracy ({args.dataset}, this shard's part {path}): {accuracy(path):.2f} %")
    else:
        outdir = args.outfile
        check_output_path(outdir, resume=True, kind="dir")
        names = resolve_corruptions(args.corr_type)
        os.makedirs(outdir, exist_ok=True)
        for corruption in names:
            sub = argparse.Namespace(**{**vars(args), "corr_type": corruption})
            out = os.path.join(outdir, f"{corruption}.tsv")
            path = run_one(sub, "cifar10c", out)
            if path == out:
                results[f"cifar10c_{corruption}"] = accuracy(out)
                print(f"Accuracy (cifar10c {corruption}, severity {args.severity}): "
                      f"{results[f'cifar10c_{corruption}']:.2f} %")
            elif path is not None:
                print(f"Accuracy (cifar10c {corruption}, this shard's part {path}): {accuracy(path):.2f} %")
    if results:
        name = os.path.join(outdir, f"accuracy_{args.dataset}_{args.corr_type}_{tag}_sk{args.skip}_st{args.start}.csv")
        buf = io.StringIO()
        csv.writer(buf).writerows([[k, v] for k, v in results.items()])
        atomic_write_text(name, buf.getvalue())
    return results
