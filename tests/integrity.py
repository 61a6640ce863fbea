"""Helpers of the integrity tests (issue 13): run an entry script's command line in-process, as
``python certify.py ...`` would (same ``__main__`` code, same exit status), and fingerprint files.

In-process runs keep the suite fast; they go through the scripts' ``__main__`` block, so they test the
command line a user types whatever module the run machinery lives in.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import runpy
import sys
import traceback
import warnings
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def cli(target: str, *argv) -> Result:
    """Run ``target`` (an entry script such as ``certify.py``, or ``-m core.shards``) with ``argv``.

    The exit status is SystemExit's code (0 when the script returns); an uncaught exception counts as
    exit 1 with its traceback on stderr, as in a real process. Warnings are silenced (they are not the
    one-line errors under test).
    """
    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if target.startswith("-m "):
                    sys.argv = [target[3:], *argv]
                    runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = [target, *argv]
                    runpy.run_path(os.path.join(ROOT, target), run_name="__main__")
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 - what a user would see: a traceback and exit 1
                traceback.print_exc()
                rc = 1
    finally:
        sys.argv = old_argv
    return Result(rc, out.getvalue(), err.getvalue())


def md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def snapshot(*roots) -> dict[str, str]:
    """{path: md5} of every file under the given folders (or of the given files)."""
    files = {}
    for root in map(str, roots):
        if os.path.isfile(root):
            files[root] = md5(root)
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                files[p] = md5(p)
    return files


def assert_refused(res: Result, before: dict[str, str], roots, *needles: str) -> None:
    """The exact outcome of a refusal: exit 2, one line on stderr (no traceback) holding every needle,
    and nothing written or changed (same files, same md5) under ``roots``."""
    assert res.rc == 2, f"exit {res.rc}, expected a refusal (2)\nstdout: {res.out[-2000:]}\nstderr: {res.err[-3000:]}"
    assert "Traceback" not in res.err, res.err
    assert len(res.err_lines) == 1, f"expected one line on stderr, got:\n{res.err}"
    for n in needles:
        assert n.lower() in res.err_lines[0].lower(), f"{n!r} not in: {res.err_lines[0]}"
    assert snapshot(*roots) == before, "a refused command wrote or changed files"


def rows(path) -> list[list[str]]:
    """The data rows of a result TSV, without the time column (the only one that may differ)."""
    with open(path) as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t")
    keep = [i for i, c in enumerate(header) if c != "time"]
    return [[r.split("\t")[i] for i in keep] for r in lines[1:]]
