"""Run files: which examples to process, TSV rows written one by one (flushed), resume after a kill,
the JSON sidecar, shard part files and their merge into one TSV."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Any, Iterable

from core.errors import MsrsError

# Arguments that change the rows: a resumed run must match the run it continues on these.
RESULT_KEYS = ("dataset", "classifier", "split", "sigma", "sigmas", "sigma25", "sigma50", "sigma100", "N", "N0",
               "alpha", "skip_p", "seed", "denoiser", "denoiser_config", "arch", "num_t_steps", "reverse_seeds",
               "adaptive", "batch", "corr_type", "severity", "pad_to", "unif_w", "amp", "use_module",
               "imagenet_transform", "cascade_alpha")


def select_indices(length: int, start: int = 0, skip: int = 1, max_idx: int = -1) -> list[int]:
    """The reference scripts' selection: idx in [start, length), idx % skip == 0, stop at idx == max."""
    stop = length if max_idx < 0 else min(length, max_idx)
    return [i for i in range(start, stop) if i % skip == 0]


def shard_indices(indices: list[int], rank: int, world: int) -> list[int]:
    """Round-robin share of one worker: disjoint, covering, and balanced in cost along the dataset."""
    return indices[rank::world]


def part_path(outfile: str, rank: int, world: int) -> str:
    return outfile if world == 1 else f"{outfile}.part{rank}of{world}"


def format_time(seconds: float) -> str:
    return str(datetime.timedelta(seconds=seconds))


class ResultWriter:
    """Append rows to a TSV, one flushed line each; resumes after the last complete row.

    An existing file is never overwritten: without ``resume`` it is an error; with ``resume`` its header
    must match and a trailing partial line (a kill mid-write) is cut off.
    """

    def __init__(self, path: str, columns: list[str], resume: bool = False):
        self.path, self.columns = path, list(columns)
        self.done: set[int] = set()
        header = "\t".join(self.columns) + "\n"
        if os.path.exists(path) and not resume:
            raise MsrsError(f"{path} already exists: pass --resume to continue it, or choose another OUTFILE")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            if not complete.decode().startswith(header):
                raise MsrsError(f"{path}: its header is not '{header.strip()}'; it is not a result of this "
                                "command (choose another OUTFILE)")
            lines = complete.decode().splitlines()[1:]
            self.done = {int(line.split("\t", 1)[0]) for line in lines if line}
            if len(complete) != len(data):  # drop the partial last row
                with open(path, "r+b") as f:
                    f.truncate(len(complete))
            self.f = open(path, "a")
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.f = open(path, "w")
            self.f.write(header)
            self.f.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.f.write("\t".join(str(row[c]) for c in self.columns) + "\n")
        self.f.flush()
        self.done.add(int(row["idx"]))

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "torchvision", "timm", "numpy", "scipy", "statsmodels", "deepspeed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def write_sidecar(outfile: str, args: dict[str, Any], checkpoints: dict[str, str | None],
                  extra: dict[str, Any] | None = None, resume: bool = False) -> None:
    """OUTFILE.json: resolved arguments, checkpoint hashes, versions, git commit (atomic write).

    On resume the existing sidecar must agree on every argument that changes the rows.
    """
    path = outfile + ".json"
    if resume and os.path.exists(path):
        with open(path) as f:
            old = json.load(f).get("args", {})
        for k in RESULT_KEYS:
            if k in old and k in args and old[k] != args[k]:
                raise MsrsError(f"--resume: {k}={args[k]!r} differs from the run being continued "
                                f"({k}={old[k]!r} in {path}); use the same arguments or a new OUTFILE")
        return
    meta = {"args": args, "checkpoints": checkpoints, "versions": package_versions(), "git_commit": git_commit(),
            "host": platform.node(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
    meta.update(extra or {})
    atomic_write_text(path, json.dumps(meta, indent=1, default=str) + "\n")


def read_rows(path: str) -> tuple[str, list[str]]:
    """Header line and complete data lines of a TSV."""
    with open(path) as f:
        text = f.read()
    lines = text[: text.rfind("\n") + 1].splitlines()
    if not lines:
        raise MsrsError(f"{path} is empty")
    return lines[0], lines[1:]


def merge_parts(outfile: str, parts: Iterable[str], expected: list[int] | None = None) -> int:
    """Merge part files into OUTFILE sorted by idx (atomic; refuses to overwrite an existing OUTFILE).

    ``expected``: the indices the whole run must contain; a missing or duplicated row is an error
    naming the part to resume.
    """
    parts = list(parts)
    if os.path.exists(outfile):
        raise MsrsError(f"{outfile} already exists: remove it or merge into another path")
    header, rows = None, {}
    for p in parts:
        if not os.path.exists(p):
            raise MsrsError(f"missing part file {p}: run (or --resume) that shard first")
        h, lines = read_rows(p)
        if header is not None and h != header:
            raise MsrsError(f"{p}: header differs from {parts[0]}")
        header = h
        for line in lines:
            idx = int(line.split("\t", 1)[0])
            if idx in rows:
                raise MsrsError(f"{p}: idx {idx} appears in two part files")
            rows[idx] = line
    if expected is not None:
        missing = sorted(set(expected) - set(rows))
        if missing:
            raise MsrsError(f"{len(missing)} rows missing (first idx {missing[0]}): --resume the unfinished shards, "
                            "then merge again")
    atomic_write_text(outfile, header + "\n" + "".join(rows[i] + "\n" for i in sorted(rows)))
    return len(rows)
