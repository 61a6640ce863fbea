"""The part the prediction scripts share: one dataset, or CIFAR-10-C as a directory of per-corruption
TSVs plus an accuracy CSV (MDDS layout)."""
from __future__ import annotations

import argparse
import csv
import io
import os
from typing import Callable

import pandas as pd

from core.errors import MsrsError
from core.runs.files import atomic_write_text
from core.runs.integrity import check_output_path
from core.runs.loop import check_outfile
from datasets import CORRUPTIONS


def corruptions(corr_type: str) -> list[str]:
    if corr_type == "all":
        return list(CORRUPTIONS)
    names = [c for c in corr_type.split(",") if c]
    bad = [c for c in names if c not in CORRUPTIONS]
    if bad:
        raise MsrsError(f"unknown corruption {bad[0]!r}; choose from: all, {', '.join(CORRUPTIONS)}")
    return names


def accuracy(path: str) -> float:
    return float(pd.read_csv(path, sep="\t")["correct"].mean() * 100.0)


def run_datasets(args: argparse.Namespace, run_one: Callable[[argparse.Namespace, str, str], str | None],
                 tag: str) -> dict[str, float]:
    """Run ``run_one(args, dataset, outfile)`` for the dataset (or each corruption) and report accuracy."""
    results: dict[str, float] = {}
    if args.dataset != "cifar10c":
        check_outfile(args.outfile, args.resume)
        path = run_one(args, args.dataset, args.outfile)
        if path == args.outfile:
            results[args.dataset] = accuracy(path)
            print(f"Accuracy ({args.dataset}): {results[args.dataset]:.2f} %")
        elif path is not None:  # a --shard part
            print(f"Accuracy ({args.dataset}, this shard's part {path}): {accuracy(path):.2f} %")
        return results
    outdir = args.outfile
    check_output_path(outdir, resume=True, kind="dir")
    names = corruptions(args.corr_type)
    os.makedirs(outdir, exist_ok=True)
    for corruption in names:
        sub = argparse.Namespace(**{**vars(args), "corr_type": corruption})
        out = os.path.join(outdir, f"{corruption}.tsv")
        path = run_one(sub, "cifar10c", out)
        if path == out:
            results[f"cifar10c_{corruption}"] = accuracy(out)
            print(f"Accuracy (cifar10c {corruption}, severity {args.severity}): {results[f'cifar10c_{corruption}']:.2f} %")
        elif path is not None:
            print(f"Accuracy (cifar10c {corruption}, this shard's part {path}): {accuracy(path):.2f} %")
    if results:
        name = os.path.join(outdir, f"accuracy_cifar10c_{args.corr_type}_s{args.severity}_{tag}_sk{args.skip}_st{args.start}.csv")
        rows = [[k, v] for k, v in results.items()]
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        atomic_write_text(name, buf.getvalue())
    return results
