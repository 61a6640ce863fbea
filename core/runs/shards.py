"""Merge the part files of a sharded run (Slurm arrays with ``--shard I/N``).

    python -m core.shards merge OUTFILE --num_shards N [--remove_parts]

The merged TSV is sorted by idx and identical (but for the time column) to a one-process run with the
same seed; a missing or duplicated row is an error naming what to resume. torchrun runs merge by
themselves (rank 0, when every rank is done).
"""
from __future__ import annotations

import argparse
import json
import os

from core.errors import MsrsError
from core.runs import files


def merge_run(outfile: str, world: int, remove_parts: bool = False) -> int:
    """Merge the W part files of OUTFILE (checking every selected index is there) and its sidecar."""
    parts = [files.part_path(outfile, r, world) for r in range(world)]
    expected, meta = [], None
    for p in parts:
        if os.path.exists(p + ".json"):
            with open(p + ".json") as f:
                m = json.load(f)
            expected += m.get("indices", [])
            meta = meta or m
    n = files.merge_parts(outfile, parts, expected or None)
    if meta is not None:
        meta = dict(meta, rank=None, indices=None, merged_from=parts)
        files.atomic_write_text(outfile + ".json", json.dumps(meta, indent=1, default=str) + "\n")
    if remove_parts:
        for p in parts:
            for f in (p, p + ".json"):
                if os.path.exists(f):
                    os.remove(f)
    return n


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m core.shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge OUTFILE.part{I}of{N} into OUTFILE")
    m.add_argument("outfile")
    m.add_argument("--num_shards", type=int, required=True)
    m.add_argument("--remove_parts", action="store_true", help="delete the part files after a successful merge")
    return p


def main(args: argparse.Namespace) -> None:
    if args.num_shards < 1:
        raise MsrsError(f"--num_shards must be >= 1, got {args.num_shards}")
    n = merge_run(args.outfile, args.num_shards, remove_parts=args.remove_parts)
    print(f"merged {n} rows from {args.num_shards} shards into {args.outfile}")
