"""Merge the part files of a sharded run (Slurm arrays with ``--shard I/N``).

    python -m core.shards merge OUTFILE --num_shards N [--remove_parts]

The merged TSV is sorted by idx and identical (but for the time column) to a one-process run with the
same seed. The parts must be one run (``core.runs.integrity``): every part with its sidecar, the same
identity but for the rank, each complete with exactly its share of the selection; anything else is a
one-line refusal naming the part and what to do, and nothing is written. torchrun runs merge by
themselves (rank 0, when every rank is done).
"""
from __future__ import annotations

import argparse
import json
import os

from core.errors import MsrsError
from core.runs import files, integrity


def merge_run(outfile: str, world: int, remove_parts: bool = False) -> int:
    """Merge the W part files of a sharded run into OUTFILE (sorted by idx) with its sidecar.

    Every part must have its sidecar, record the same run (all but its rank), and hold exactly the rows
    of its share of the selection, complete and valid; the union of the shares must be the whole
    selection. The merged sidecar records what the parts agree on (the identity, the arguments) and
    each part's provenance. Refuses to overwrite an existing OUTFILE; writes nothing on a refusal.
    """
    if os.path.exists(outfile):
        raise MsrsError(f"{outfile} already exists: remove it or merge into another path")
    integrity.check_output_path(outfile, resume=False)
    parts = [files.part_path(outfile, r, world) for r in range(world)]
    metas, identity = [], None
    for r, p in enumerate(parts):
        redo = f"rerun shard {r}/{world} (--shard {r}/{world}) after moving {p} away"
        if not os.path.exists(p):
            raise MsrsError(f"missing part file {p}: run (or --resume) shard {r}/{world} first")
        meta = integrity.read_sidecar(integrity.sidecar_path(p), redo)
        own = {k: v for k, v in meta["identity"].items() if k != "part"}
        if meta["identity"].get("part") != {"rank": r, "world": world}:
            raise MsrsError(f"{integrity.sidecar_path(p)} records part {meta['identity'].get('part')}, not part "
                            f"{r} of {world}; {redo}")
        if identity is None:
            identity = own
        diff = integrity.describe_difference(identity, own, f"{integrity.sidecar_path(parts[0])}")
        if diff is not None:
            raise MsrsError(f"merge: the parts are not one run: in {integrity.sidecar_path(p)}, {diff}; rerun "
                            "the odd shard with the others' arguments")
        if not (isinstance(meta.get("indices"), list) and all(type(i) is int for i in meta["indices"])):
            raise MsrsError(f"{integrity.sidecar_path(p)} does not list its examples; {redo}")
        metas.append(meta)
    union = sorted(i for m in metas for i in m["indices"])
    if integrity.selection_summary(union) != identity["selection"]:
        raise MsrsError(f"merge: the parts' examples ({len(union)}) are not the run's selection "
                        f"({identity['selection']['count']} examples); rerun the shards")
    rows = {}
    for r, (p, meta) in enumerate(zip(parts, metas)):
        if meta["indices"] != files.shard_indices(union, r, world):
            raise MsrsError(f"{integrity.sidecar_path(p)}: not the examples of shard {r}/{world}; rerun the shards")
        advice = f"--resume shard {r}/{world} (--shard {r}/{world} --resume), then merge again"
        for idx, line in zip(meta["indices"], integrity.read_complete_rows(p, identity["columns"], meta["indices"],
                                                                            advice)):
            rows[idx] = line
    first = metas[0]
    merged = {k: v for k, v in first.items() if k not in ("identity", "rank", "world", "indices", "resumes")}
    merged.update(identity=identity, merged_from=parts, merged=files.now(),
                  started=min(m.get("started") or "" for m in metas),
                  ended=max(m.get("ended") or "" for m in metas) or None,
                  parts=[{k: m.get(k) for k in ("host", "started", "ended", "resumes", "git_commit", "git_dirty",
                                                 "flags")} for m in metas])
    files.atomic_write_text(integrity.sidecar_path(outfile), json.dumps(merged, indent=1, default=str) + "\n")
    files.atomic_write_text(outfile, "\t".join(identity["columns"]) + "\n" + "".join(rows[i] + "\n" for i in union))
    if remove_parts:
        for p in parts:
            for f in (p, integrity.sidecar_path(p)):
                if os.path.exists(f):
                    os.remove(f)
    return len(union)


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
