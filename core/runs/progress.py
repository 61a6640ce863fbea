"""Progress of the per-example loop: a tqdm bar on a terminal; on a redirected stderr (a Slurm log, a
file, a pipe) a plain line every ``every_s`` seconds or every ``every_rows`` rows, so that a log shows a
live run:

    certify: 120/500 rows (24%), 3.41 s/row, elapsed 0:06:49, ETA 0:21:35
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def progress(todo: Iterable[T], total: int, done: int, desc: str, show: bool = True, stream: TextIO | None = None,
             every_s: float = 30.0, every_rows: int | None = None) -> Iterator[T]:
    """Iterate over ``todo`` (the rows left of ``total``; ``done`` already written) reporting progress.

    every_rows: default 1/20 of the run (at least 1). Nothing is printed when ``show`` is False (ranks
    other than 0 of a --split_n run).
    """
    todo = list(todo)
    stream = sys.stderr if stream is None else stream
    if not show:
        yield from todo
        return
    if getattr(stream, "isatty", lambda: False)():
        yield from tqdm(todo, desc=desc, dynamic_ncols=True, file=stream, initial=done, total=total)
        return
    every_rows = every_rows or max(1, total // 20)
    t0 = last_t = time.time()
    last_n = 0
    for n, item in enumerate(todo, start=1):
        yield item
        now = time.time()
        if n - last_n >= every_rows or now - last_t >= every_s or n == len(todo):
            per_row = (now - t0) / n
            left = len(todo) - n
            print(f"{desc}: {done + n}/{total} rows ({100 * (done + n) / max(total, 1):.0f}%), {per_row:.3g} s/row, "
                  f"elapsed {_clock(now - t0)}, ETA {_clock(per_row * left)}", file=stream, flush=True)
            last_t, last_n = now, n
