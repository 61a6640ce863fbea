"""Run files: which examples to process, TSV rows written one by one (flushed, each checked), resume
after a kill, the JSON sidecar (the run's identity, provenance, start/end times and resume history).
What a run is, and what a resume or a merge must match, is ``core.runs.integrity``."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from core.errors import MsrsError
from core.runs import integrity


def select_indices(length: int, start: int = 0, skip: int = 1, max_idx: int = -1, order: str = "max_first",
                   base: list[int] | None = None) -> list[int]:
    """The reference scripts' loop over i in [start, length): keep i when i % skip == 0; stop when i == max.

    ``order`` is which test comes first (pitfall 14): 'max_first' (MDDS certify.py / predict_mdds.py: stop at
    i == max) or 'skip_first' (locuslab, MDDS predict_ddpm.py, DensePure, Salman: ``if i % skip: continue``
    first, so the stop is only seen on a kept i and max % skip != 0 never stops). ``base``: the positions i
    index this list instead of the dataset (FT-CADIS's one-per-class Subset); the result holds its entries.
    """
    if order not in ("max_first", "skip_first"):
        raise MsrsError(f"unknown --max_order {order!r} (max_first or skip_first)")
    out = []
    for i in range(start, length if base is None else len(base)):
        if order == "max_first" and i == max_idx:
            break
        if i % skip != 0:
            continue
        if order == "skip_first" and i == max_idx:
            break
        out.append(i if base is None else base[i])
    return out


def select_examples(dataset, args, num_classes: int) -> list[int]:
    """The examples a run goes through: ``--subset`` (FT-CADIS's one_per_class, seeded with --seed), then
    --start / --skip / --max in --max_order (`select_indices`)."""
    base = None
    if getattr(args, "subset", None) == "one_per_class":
        from datasets import one_per_class
        base = one_per_class(dataset.targets, num_classes, args.seed)
    return select_indices(len(dataset), args.start, args.skip, args.max, getattr(args, "max_order", None) or "max_first",
                          base)


def shard_indices(indices: list[int], rank: int, world: int) -> list[int]:
    """Round-robin share of one worker: disjoint, covering, and balanced in cost along the dataset."""
    return indices[rank::world]


def part_path(outfile: str, rank: int, world: int) -> str:
    return outfile if world == 1 else f"{outfile}.part{rank}of{world}"


def format_time(seconds: float) -> str:
    return str(datetime.timedelta(seconds=seconds))


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def file_sha256(path: str, limit: int | None = None) -> str | None:
    """sha256 of a file (None if it is not a local file: 'none', 'zoo:...' resolved by the caller)."""
    if not path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(*argv: str) -> str | None:
    try:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "-C", here, *argv], capture_output=True, text=True, timeout=10)
        return out.stdout if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return (out.strip() or None) if out is not None else None


def git_dirty(commit: str | None) -> bool | None:
    """Whether the checkout of `commit` (``git_commit()``) has uncommitted changes to tracked files (None
    outside a git checkout)."""
    if commit is None:
        return None
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def package_versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "torchvision", "timm", "numpy", "scipy", "statsmodels", "deepspeed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def provenance() -> dict[str, Any]:
    """Where and with what code a run (or a resume of it) ran: host, versions, git commit and dirty flag."""
    commit = git_commit()
    return {"host": platform.node(), "versions": package_versions(), "git_commit": commit,
            "git_dirty": git_dirty(commit)}


# ------------------------------------------------------------------------------ OUTFILE and resume
@dataclass
class OutfilePlan:
    """What a run will do with its TSV, decided (and checked) before any model is built or file written:
    ``done`` rows of ``expected`` are already there and valid, up to byte ``end``."""
    path: str
    columns: list[str]
    identity: dict[str, Any]
    expected: list[int]
    done: int = 0
    end: int = 0
    header: bool = False
    exists: bool = False
    meta: dict[str, Any] | None = None

    @property
    def todo(self) -> list[int]:
        return self.expected[self.done:]


def plan_outfile(path: str, columns: list[str], identity: dict[str, Any], expected: list[int],
                 resume: bool) -> OutfilePlan:
    """Check OUTFILE (or a part file) against the run about to start; changes nothing.

    No TSV: a fresh start. A TSV without --resume: a refusal. With --resume: its sidecar must exist and
    record this very run (``integrity.describe_difference``), and every complete row must parse and be
    the next example of the selection; then the run continues after the last of them.
    """
    plan = OutfilePlan(path, list(columns), identity, list(expected))
    if not os.path.exists(path):
        return plan
    if not resume:
        raise MsrsError(f"{path} already exists: pass --resume to continue it, or choose another OUTFILE")
    advice = f"{integrity.NEW_OUTFILE} (or move {path} and its .json away)"
    meta = integrity.read_sidecar(integrity.sidecar_path(path), advice)
    diff = integrity.describe_difference(meta["identity"], identity, integrity.sidecar_path(path))
    if diff is not None:
        raise MsrsError(f"--resume: {diff}; run with the arguments and files of that run, or {integrity.NEW_OUTFILE}")
    rows = integrity.check_existing_rows(path, columns, expected, advice)
    return OutfilePlan(path, list(columns), identity, list(expected), rows.count, rows.end, rows.header, True, meta)


class ResultWriter:
    """Writes a planned run: the sidecar (new, or the old one with a resume entry), then the TSV (a new
    one with its header, or the old one cut after its last complete row), then one flushed row per
    example, each checked (``integrity.check_row``) before it is written. ``close`` records the end time
    once every expected row is there. Files it created are removed by ``discard`` (a run stopped before
    its first row leaves nothing behind)."""

    def __init__(self, plan: OutfilePlan, meta: dict[str, Any], what: str):
        self.plan, self.what, self.rows_written = plan, what, 0
        self.sidecar = integrity.sidecar_path(plan.path)
        self.created = {p for p in (plan.path, self.sidecar) if not os.path.exists(p)}
        self.done = plan.done
        if plan.exists:
            self.meta = dict(plan.meta)
            self.meta["resumes"] = list(self.meta.get("resumes") or []) + [
                {"started": now(), "rows_before": plan.done, **provenance(), "flags": meta.get("flags")}]
            self.meta["ended"] = None
        else:
            self.meta = {"identity": plan.identity, **meta, **provenance(), "started": now(), "ended": None,
                         "resumes": []}
        os.makedirs(os.path.dirname(os.path.abspath(plan.path)), exist_ok=True)
        self._write_meta()
        if plan.exists and plan.header:
            with open(plan.path, "r+b") as f:  # drop a partial last row (a kill mid-write)
                f.truncate(plan.end)
            self.f = open(plan.path, "a")
        else:
            self.f = open(plan.path, "w")
            self.f.write("\t".join(plan.columns) + "\n")
            self.f.flush()

    def _write_meta(self) -> None:
        atomic_write_text(self.sidecar, json.dumps(self.meta, indent=1, default=str) + "\n")

    def write(self, row: dict[str, Any]) -> None:
        line = integrity.check_row(row, self.plan.columns, self.what)
        self.f.write(line)
        self.f.flush()
        self.rows_written += 1
        self.done += 1

    def close(self) -> None:
        self.f.close()
        if self.done == len(self.plan.expected) and self.meta.get("ended") is None:
            self.meta["ended"] = now()
            self._write_meta()

    def discard(self) -> None:
        """After a failure: remove what this run created if it wrote no row (else keep the rows)."""
        self.f.close()
        if self.rows_written == 0:
            integrity.remove_if_created([self.plan.path, self.sidecar], self.created)
