"""Smoothing a classifier that is only a function, or only a log of its answers (Salman et al.'s
offline API mode).

- ``FunctionClassifier(fn, num_classes)``: any function of uint8 images [B,H,W,C] (what an image API
  receives) to integer labels, as a base classifier for ``Smooth``. Clipping and quantizing x + delta
  first is part of the base classifier, so the certificate is unchanged.
- ``QueryRecorder(base, path)``: wraps a base classifier and appends every answer to a query log
  (``idx,j,label``; j = query number within the example: the first n0 are the selection draws), so a
  run against a paid API can be certified again offline.
- ``export_queries(...)``: writes the noisy images of every example as PNGs (what to send to an
  external API), drawn exactly as ``certify.py`` draws them; the API's answers go into a query log.
- ``LogReplay(path)``: replays a query log as a base classifier; ``certify.py DATASET querylog:LOG OUT``
  certifies from it (the first n0 answers select, the next n estimate; never reused).
"""
from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from typing import Callable

import numpy as np
import torch

from core.errors import MsrsError
from core.smoothing import example_generator

LOG_COLUMNS = ["idx", "j", "label"]


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """[B,C,H,W] pixels -> uint8 [B,H,W,C] (clipped to [0,1], rounded), the form an image API takes."""
    return (batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class FunctionClassifier:
    """Base classifier around ``fn(uint8 images [B,H,W,C]) -> labels [B]``; returns one-hot scores."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], num_classes: int):
        self.fn, self.num_classes = fn, num_classes

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(np.asarray(self.fn(to_uint8_images(batch))), dtype=torch.long).reshape(-1)
        if labels.numel() != batch.shape[0] or (labels < 0).any() or (labels >= self.num_classes).any():
            raise MsrsError(f"the black-box classifier must return {batch.shape[0]} labels in [0, {self.num_classes})")
        return torch.nn.functional.one_hot(labels, self.num_classes).float().to(batch.device)


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


def read_query_log(path: str) -> dict[int, np.ndarray]:
    """{idx: labels in query order}; checks that each example's j runs 0..m-1 exactly once."""
    if not os.path.isfile(path):
        raise MsrsError(f"query log not found: {path} (a CSV with header {','.join(LOG_COLUMNS)})")
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


class LogReplay:
    """A base classifier that answers from a query log, in order, for the current example.

    Used with ``Smooth``: the noise it is given is ignored (it was applied when the queries were made);
    the first n0 answers are the selection draws, the next n the estimation draws.
    """

    def __init__(self, path: str, num_classes: int):
        self.path, self.num_classes = path, num_classes
        self.answers = read_query_log(path)
        bad = [int(a.max()) for a in self.answers.values() if len(a) and (a.max() >= num_classes or a.min() < 0)]
        if bad:
            raise MsrsError(f"{path}: label {bad[0]} outside [0, {num_classes})")
        self.idx, self.j = None, 0

    def set_example(self, seed: int, idx: int) -> None:
        if idx not in self.answers:
            raise MsrsError(f"{self.path} has no answers for example {idx}; query it first (or adjust --skip/--max)")
        self.idx, self.j = idx, 0

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        a = self.answers[self.idx]
        b = batch.shape[0]
        if self.j + b > len(a):
            raise MsrsError(f"{self.path}: example {self.idx} has {len(a)} answers, the run needs more "
                            f"(N0 + N = at least {self.j + b}); lower --N/--N0 or query more")
        labels = torch.as_tensor(a[self.j:self.j + b])
        self.j += b
        return torch.nn.functional.one_hot(labels, self.num_classes).float().to(batch.device)


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
    from core import cli
    p = argparse.ArgumentParser("python -m core.blackbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", parents=[cli.data_parser()], help="write the noisy query images as PNGs")
    e.add_argument("dataset")
    e.add_argument("outdir")
    e.add_argument("--sigma", type=float, required=True)
    e.add_argument("--N", type=int, default=10000)
    e.add_argument("--N0", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch", default="1000")
    return p


def main(args: argparse.Namespace) -> None:
    from core import cli
    from core.run import select_indices
    from datasets import get_dataset
    cli.check_args(args)
    if not args.sigma > 0:
        raise MsrsError(f"--sigma must be > 0, got {args.sigma}")
    ds = get_dataset(args.dataset, args.split, args.data_path)
    idx = select_indices(len(ds), args.start, args.skip, args.max)
    n = export_queries(ds, idx, args.sigma, args.N0, args.N, args.seed, args.outdir, int(args.batch))
    print(f"wrote {n} query images for {len(idx)} examples under {args.outdir}; answer them into a CSV "
          f"({','.join(LOG_COLUMNS)}) and run certify.py {args.dataset} querylog:ANSWERS.csv OUTFILE --sigmas {args.sigma}")


if __name__ == "__main__":
    from core import cli as _cli
    _cli.run_cli(main, get_args_parser())
