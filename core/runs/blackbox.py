"""The files of the black-box mode (Salman et al.'s offline API mode; the classifiers: ``core.blackbox``).

- ``export_queries(...)`` / ``python -m core.blackbox export``: write the noisy images of every example
  as PNGs (what to send to an external API), drawn exactly as ``certify.py`` draws them; the API's
  answers go into a query log.
- A query log is a CSV ``idx,j,label`` (j = query number within the example: the first n0 are the
  selection draws); ``read_query_log`` checks and reads it (``certify.py DATASET querylog:LOG OUT``).
- ``QueryRecorder(base, path)``: wraps a base classifier and appends every answer to a query log, so a
  run against a paid API can be certified again offline.
"""
from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from typing import Callable

import numpy as np
import torch

from core.blackbox import to_uint8_images
from core.errors import MsrsError
from core.runs.files import select_examples
from core.runs.parsers import check_args, data_parser, noise_parser, runtime_parser, sigma_parser
from core.runs.protocols import resolve_protocol
from core.smoothing import example_generator
from datasets import dataset_info, get_dataset

LOG_COLUMNS = ["idx", "j", "label"]


class QueryRecorder:
    """Record every answer of ``base`` (per example, in query order) to a CSV query log."""

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor], path: str):
        self.base, self.path = base, path
        new = not os.path.exists(path)
        self.f = open(path, "a", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(LOG_COLUMNS)
        self.idx, self.j = None, 0

    def set_example(self, seed: int, idx: int) -> None:
        self.idx, self.j = idx, 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.idx is None:
            raise RuntimeError("QueryRecorder needs set_example(seed, idx) before the first query")
        scores = self.base(batch)
        for label in scores.argmax(1).tolist():
            self.w.writerow([self.idx, self.j, label])
            self.j += 1
        self.f.flush()
        return scores


def require_query_log(path: str) -> str:
    """The one check (and message) for a query log that must exist: `path`, or MsrsError."""
    if not os.path.isfile(path):
        raise MsrsError(f"query log not found: {path} (a CSV with header {','.join(LOG_COLUMNS)})")
    return path


def read_query_log(path: str) -> dict[int, np.ndarray]:
    """{idx: labels in query order}; checks that each example's j runs 0..m-1 exactly once."""
    require_query_log(path)
    answers: dict[int, dict[int, int]] = defaultdict(dict)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [c.strip() for c in reader.fieldnames][:3] != LOG_COLUMNS:
            raise MsrsError(f"{path}: the header must be {','.join(LOG_COLUMNS)}, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                idx, j, label = int(row["idx"]), int(row["j"]), int(row["label"])
            except (TypeError, ValueError):
                raise MsrsError(f"{path}:{line}: idx, j and label must be integers") from None
            if j in answers[idx]:
                raise MsrsError(f"{path}:{line}: query {j} of example {idx} answered twice")
            answers[idx][j] = label
    out = {}
    for idx, d in answers.items():
        if sorted(d) != list(range(len(d))):
            raise MsrsError(f"{path}: example {idx} misses query {min(set(range(len(d))) - set(d))}")
        out[idx] = np.array([d[j] for j in range(len(d))], dtype=np.int64)
    return out


def export_queries(dataset, indices: list[int], sigma: float, n0: int, n: int, seed: int, out_dir: str,
                   batch_size: int = 1000) -> int:
    """Write x + N(0, sigma^2) for each example as PNGs ``OUT/{idx}/{j:06d}.png`` (j < n0: selection),
    drawn with the same per-example generator and batching as ``certify.py``. Returns images written."""
    from PIL import Image
    written = 0
    for idx in indices:
        x, _ = dataset[idx]
        g = example_generator(seed, idx, 0, "cpu")
        d = os.path.join(out_dir, str(idx))
        os.makedirs(d, exist_ok=True)
        j = 0
        for num in (n0, n):
            remaining = num
            while remaining > 0:
                bs = min(batch_size, remaining)
                remaining -= bs
                noise = torch.randn((bs, *x.shape), generator=g, dtype=x.dtype)
                for img in to_uint8_images(x.unsqueeze(0) + noise * sigma):
                    Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(os.path.join(d, f"{j:06d}.png"))
                    j += 1
                    written += 1
    return written


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m core.blackbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    parents = [data_parser(), sigma_parser(cascade=False), noise_parser(10000), runtime_parser(device=False)]
    e = sub.add_parser("export", parents=parents, help="write the noisy query images as PNGs")
    e.add_argument("dataset")
    e.add_argument("outdir")
    return p


def main(args: argparse.Namespace) -> None:
    from core.runs.setup import dataset_options  # (setup reads query logs with this module)
    # the certify run's protocol: the same example selection (--max_order), transform and labels
    resolve_protocol(args, "certify", args.dataset)
    check_args(args)
    if args.sigma is None or not args.sigma > 0:
        raise MsrsError(f"--sigma must be given and > 0, got {args.sigma}")
    ds = get_dataset(args.dataset, args.split, args.data_path, **dataset_options(args, args.dataset))
    idx = select_examples(ds, args, dataset_info(args.dataset).num_classes)
    n = export_queries(ds, idx, args.sigma, args.N0, args.N, args.seed, args.outdir, int(args.batch))
    print(f"wrote {n} query images for {len(idx)} examples under {args.outdir}; answer them into a CSV "
          f"({','.join(LOG_COLUMNS)}) and run certify.py {args.dataset} querylog:ANSWERS.csv OUTFILE --sigmas {args.sigma}")
