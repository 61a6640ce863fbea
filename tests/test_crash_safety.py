"""Crash safety (issue 13): a run stopped by SIGKILL, SIGINT or SIGTERM at a random moment -- while it
starts, between rows, or in the middle of writing one -- and then `--resume`d has exactly the rows of an
uninterrupted run: none lost, none duplicated, the same values (the time column aside)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.integrity import ROOT, cli, rows

RUN = ["--sigma25", "--sigma50", "--N", "200", "--N0", "20", "--batch", "100", "--device", "cpu", "--denoiser", "none",
       "--skip", "15", "--seed", "5"]  # 24 rows of the digits test set, a 2-stage cascade


@pytest.fixture(scope="module")
def reference(digits_classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("crash_ref") / "ref.tsv"
    res = cli("certify.py", "digits", digits_classifier, out, *RUN)
    assert res.rc == 0, res.err
    return rows(out)


def _sigint_default() -> None:
    """A job started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored,
    and Python then leaves it ignored: give the child the default disposition, as a terminal's Ctrl-C finds it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def n_rows(path) -> int:
    try:
        with open(path, "rb") as f:
            return max(0, f.read().count(b"\n") - 1)
    except FileNotFoundError:
        return -1


@pytest.mark.parametrize("phase", ["starting", "running"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_stopped_at_a_random_moment_then_resumed_gives_identical_rows(sig, phase, reference, digits_classifier,
                                                                     tmp_path):
    seed = f"{sig.name}-{phase}-{time.time()}"
    rng = random.Random(seed)
    out = tmp_path / "out.tsv"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "certify.py", "digits", digits_classifier, str(out), *RUN], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_sigint_default)
    if phase == "starting":  # anywhere from the launch to the first rows (imports, set-up, model loading)
        time.sleep(rng.uniform(0.0, 4.0))
        target = None
    else:  # after a random number of rows, at a random instant within the next one
        target = rng.randrange(1, len(reference) - 5)
        deadline = time.time() + 240
        while n_rows(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.03))
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    stopped_at = n_rows(out)
    if phase == "running":
        assert alive and 0 < stopped_at < len(reference), f"the signal must land mid-run ({stopped_at} rows, {seed})"
    if sig == signal.SIGINT and alive and stopped_at > 0:
        assert proc.returncode == 130 and b"--resume" in err and b"Traceback" not in err, err.decode()[-2000:]
    res = cli("certify.py", "digits", digits_classifier, out, *RUN, "--resume")
    assert res.rc == 0, f"{seed}, stopped at {stopped_at} rows: {res.err[-3000:]}"
    got = rows(out)
    assert [r[0] for r in got] == [r[0] for r in reference], f"rows lost or duplicated ({stopped_at} rows, {seed})"
    assert got == reference, seed
