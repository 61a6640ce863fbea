"""What keeps a run's files honest: its identity, the sidecar that records it, the check of existing rows
before a resume or a merge, and the output-path checks made before any work.

A run's identity is
  - its resolved arguments that change rows: every argument but those in ``NOT_IDENTITY`` (the noise
    batch size, the device, torch.compile, where files live, what is printed), with the sigma levels as
    one sorted list and AMP as resolved (``off``/``bf16``/``fp16``);
  - its example selection: the dataset indices it certifies, in order (``--start/--skip/--max`` over the
    dataset as it is on disk), recorded as count, first, last and sha256;
  - the sha256 of every model file it reads (classifier, denoiser, query log);
  - the TSV columns;
  - for a part file of a sharded run, its ``rank`` and ``world``.
``--resume`` continues OUTFILE and ``merge`` joins parts only when all of it matches, and only after
every existing row parsed and sat where the selection puts it: anything else is a one-line refusal
that changes no file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from core.errors import MsrsError

IDENTITY_VERSION = 1

# Arguments that never change a row, or that the identity records in resolved form elsewhere (the
# models by content hash, the sigmas as one list, the selection as its indices).
NOT_IDENTITY = frozenset({
    "batch", "device", "compile", "resume", "shard", "summary_radii", "trust_checkpoint", "data_path", "outfile",
    "classifier", "denoiser", "ddpm_path", "sigma", "sigma25", "sigma50", "sigma100", "sigmas", "amp",
    "start", "skip", "max", "split_n",
})

INT_COLUMNS = frozenset({"idx", "label", "predict", "correct", "pred0", "pred1", "pred_uc", "corr_uc", "stage",
                         "n_used", "correct_num"})
RADIUS_COLUMNS = frozenset({"radius"})  # a certified radius: finite and >= 0 (r_neg is signed)
FLOAT_COLUMNS = frozenset({"conf", "c_max", "r_neg"}) | RADIUS_COLUMNS
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_TIME = re.compile(r"(\d+ days?, )?\d+:\d\d:\d\d(\.\d+)?")
NEW_OUTFILE = "choose a new OUTFILE"


# ------------------------------------------------------------------------------------- identity
def selection_summary(indices: Sequence[int]) -> dict[str, Any]:
    """The selection as recorded in a sidecar: count, first, last and the sha256 of the index list."""
    text = ",".join(str(int(i)) for i in indices)
    return {"count": len(indices), "first": int(indices[0]) if len(indices) else None,
            "last": int(indices[-1]) if len(indices) else None,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def run_identity(args: Mapping[str, Any], *, sigmas: Sequence[float], amp: str | None, selection: Sequence[int],
                 models: Mapping[str, str | None], columns: Sequence[str], split_world: int | None = None,
                 part: tuple[int, int] | None = None) -> dict[str, Any]:
    """The identity of a run (see the module docstring); JSON-ready, compared with ``==``."""
    plain = (int, float, str, bool, type(None))
    kept = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(args.items())
            if k not in NOT_IDENTITY and (isinstance(v, plain) or isinstance(v, (list, tuple)))}
    kept["sigmas"] = sorted((float(s) for s in sigmas), reverse=True)
    kept["amp"] = amp or "off"
    if split_world:
        kept["split_n_world"] = int(split_world)
    ident = {"version": IDENTITY_VERSION, "args": kept, "selection": selection_summary(selection),
             "models": dict(sorted(models.items())), "columns": list(columns)}
    if part is not None:
        ident["part"] = {"rank": int(part[0]), "world": int(part[1])}
    return json.loads(json.dumps(ident))  # exactly what a sidecar gives back (floats, lists)


def _short(v: Any) -> str:
    if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v):
        return v[:12] + "…"
    return repr(v) if isinstance(v, str) else json.dumps(v)


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> str | None:
    """None when the identities match, else one phrase naming the first difference (old = in ``where``)."""
    if old == new:
        return None
    if old.get("version") != new.get("version"):
        return f"{where} records a run identity of another version ({old.get('version')!r})"
    for key in sorted(set(old.get("args", {})) | set(new.get("args", {}))):
        a, b = old.get("args", {}).get(key, "<unset>"), new.get("args", {}).get(key, "<unset>")
        if a != b:
            return f"{key}={_short(b)} differs from the run in {where} ({key}={_short(a)})"
    if old.get("selection") != new.get("selection"):
        o, n = old.get("selection") or {}, new.get("selection") or {}
        return (f"the example selection differs: {n.get('count')} examples (idx {n.get('first')}..{n.get('last')}) "
                f"now, {o.get('count')} (idx {o.get('first')}..{o.get('last')}) in {where}")
    for key in sorted(set(old.get("models", {})) | set(new.get("models", {}))):
        a, b = old.get("models", {}).get(key), new.get("models", {}).get(key)
        if a != b:
            return (f"the {key} file has changed since the run began (sha256 {_short(b)} now, {_short(a)} in "
                    f"{where})")
    if old.get("columns") != new.get("columns"):
        return f"the columns {new.get('columns')} differ from those in {where} ({old.get('columns')})"
    if old.get("part") != new.get("part"):
        return f"part {new.get('part')} differs from the part recorded in {where} ({old.get('part')})"
    return f"the run identity differs from the one in {where}"


# --------------------------------------------------------------------------------------- sidecar
def read_sidecar(path: str, advice: str) -> dict[str, Any]:
    """The sidecar at ``path``, which must exist and hold a run identity; else a refusal ending in ``advice``."""
    if not os.path.exists(path):
        raise MsrsError(f"{path} is missing: the rows beside it cannot be checked to belong to this run; {advice}")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = type(e).__name__ if not str(e) else str(e).splitlines()[0][:80]
        raise MsrsError(f"{path} is not a readable sidecar ({why}): the rows beside it cannot be checked to "
                        f"belong to this run; {advice}") from None
    ident = meta.get("identity") if isinstance(meta, dict) else None
    if not (isinstance(ident, dict) and all(isinstance(ident.get(k), t) for k, t in _IDENTITY_KEYS.items())):
        raise MsrsError(f"{path} records no run identity (an older msrs, or not a sidecar): the rows beside it "
                        f"cannot be checked to belong to this run; {advice}")
    return meta


_IDENTITY_KEYS = {"version": int, "args": dict, "selection": dict, "models": dict, "columns": list}


# ------------------------------------------------------------------------------------------- rows
def check_fields(fields: Sequence[str], columns: Sequence[str]) -> str | None:
    """None if a row's fields fit the columns (types; radii finite and >= 0), else what is wrong."""
    if len(fields) != len(columns):
        return f"{len(fields)} fields, expected {len(columns)} ({' '.join(columns)})"
    cadis = "correct_num" in columns                 # FT-CADIS's file (--columns cadis): correct is True/False
    for name, value in zip(columns, fields):
        if cadis and name == "correct":
            if value not in ("True", "False"):
                return f"correct {value!r} is not True or False"
        elif name in INT_COLUMNS and not _INT.fullmatch(value):
            return f"{name} {value!r} is not an integer"
        if name in FLOAT_COLUMNS:
            if not _FLOAT.fullmatch(value) or not math.isfinite(float(value)):
                return f"{name} {value!r} is not a finite number"
            if name in RADIUS_COLUMNS and float(value) < 0:
                return f"{name} {value} is negative"
        if name == "time" and not _TIME.fullmatch(value):
            return f"time {value!r} is not H:MM:SS"
        if not value:
            return f"{name} is empty"
    return None


def check_row(row: Mapping[str, Any], columns: Sequence[str], what: str) -> str:
    """The TSV line of a row about to be written; a row that would not read back (a non-finite radius,
    a missing value) is an error naming ``what`` (never a certificate)."""
    fields = [str(row.get(c, "")) for c in columns]
    why = check_fields(fields, columns)
    if why is not None:
        raise MsrsError(f"{what}: refusing to write a row for idx {row.get('idx')}: {why}")
    return "\t".join(fields) + "\n"


@dataclass
class ExistingRows:
    """What an existing TSV holds: ``count`` valid rows (the first ``count`` of the expected indices),
    ending at byte ``end``; ``header`` False when the file holds no complete header yet."""
    count: int
    end: int
    header: bool


def check_existing_rows(path: str, columns: Sequence[str], expected: Sequence[int], advice: str) -> ExistingRows:
    """Read an existing result TSV without changing it; every complete line must be the header, then rows
    in selection order (``expected``) that parse; a trailing partial line (a kill mid-write) is ignored.

    Anything else is a one-line refusal naming the file, the line and what is wrong, ending in ``advice``.
    """
    if os.path.isdir(path):
        raise MsrsError(f"{path} is a directory, not a result file; {advice}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MsrsError(f"cannot read {path}: {e.strerror or e}; {advice}") from None
    header = "\t".join(columns)
    end = data.rfind(b"\n") + 1
    if end == 0:  # no complete line: an empty file, or a header cut by a kill
        if header.encode().startswith(data):
            return ExistingRows(0, 0, False)
        raise MsrsError(f"{path} does not start with the header '{header}'; it is not a result of this command: "
                        f"{advice}")
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MsrsError(f"{path} line {line}: not text (byte {data[e.start]:#04x}); {advice}") from None
    lines = text.split("\n")[:-1]
    if lines[0] != header:
        raise MsrsError(f"{path} line 1: the header is not '{header}'; it is not a result of this command: "
                        f"{advice}")
    for n, line in enumerate(lines[1:]):
        lineno = n + 2
        fields = line.split("\t")
        if n >= len(expected):
            raise MsrsError(f"{path} line {lineno}: more rows than the {len(expected)} examples selected; {advice}")
        why = check_fields(fields, columns)
        if why is None and int(fields[0]) != expected[n]:
            why = f"idx {fields[0]} where the selection has idx {expected[n]}"
        if why is not None:
            raise MsrsError(f"{path} line {lineno}: {why}; the file is not a clean result of this run: {advice}")
    return ExistingRows(len(lines) - 1, end, True)


def read_complete_rows(path: str, columns: Sequence[str], expected: Sequence[int], advice: str) -> list[str]:
    """The data lines of a finished TSV (a part of a sharded run): exactly one valid row per expected idx."""
    got = check_existing_rows(path, columns, expected, advice)
    with open(path, "rb") as f:
        data = f.read()
    if got.end != len(data):
        raise MsrsError(f"{path} ends in a partial row; {advice}")
    if got.count != len(expected):
        raise MsrsError(f"{path} has {got.count} of its {len(expected)} rows ({len(expected) - got.count} "
                        f"missing); {advice}")
    return data[:got.end].decode("utf-8").split("\n")[1:-1]


# ---------------------------------------------------------------------------------- output paths
def check_output_path(path: str, *, resume: bool, kind: str = "file", flag: str = "OUTFILE") -> None:
    """Refuse, before any work, an output that cannot be written: ``path`` a directory (``kind`` "file")
    or a file (``kind`` "dir"), an ancestor that is a file, a folder we cannot create files in; an
    existing file without --resume. Missing folders are fine (created when the run starts). Writes
    nothing (the writability probe is a temporary file, removed at once)."""
    if kind == "file" and os.path.isdir(path):
        raise MsrsError(f"{flag} {path} is a directory: give a file name")
    if kind == "dir" and os.path.exists(path) and not os.path.isdir(path):
        raise MsrsError(f"{flag} {path} is a file: here {flag} is a directory of result files")
    if kind == "file" and os.path.exists(path) and not resume:
        raise MsrsError(f"{path} already exists: pass --resume to continue it, or choose another OUTFILE")
    folder = os.path.dirname(os.path.abspath(path)) if kind == "file" else os.path.abspath(path)
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise MsrsError(f"{flag} {path}: {probe} is a file, not a folder; choose another OUTFILE")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".msrs-write-check-"):
            pass
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why += " (no permission to create files there)"
        raise MsrsError(f"{flag} {path}: cannot create files in {probe}: {why}; choose another OUTFILE") from None


def sidecar_path(path: str) -> str:
    return f"{path}.json"


def remove_if_created(paths: Iterable[str], created: set[str]) -> None:
    """Remove the files of ``paths`` this run created (a run stopped before its first row leaves nothing)."""
    for p in paths:
        if p in created and os.path.exists(p):
            os.remove(p)
