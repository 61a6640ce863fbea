"""bench/gpu_check.sh: valid bash, a CPU dry run of every step into one results file, bad arguments refused."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run(*args, out=None, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_syntax_and_bad_argument():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    r = run("--gpu-please")
    assert r.returncode == 2 and "unknown argument" in r.stderr


@pytest.mark.slow
def test_dry_run_passes_every_step(tmp_path):
    r = run("--dry-run", out=tmp_path)
    results = tmp_path / "gpu_check_dryrun.txt"
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:] + (results.read_text()[-3000:] if results.exists() else "")
    assert [p.name for p in tmp_path.iterdir()] == [results.name]           # one results file, nothing else
    text = results.read_text()
    summary = text[text.index("===== summary ====="):]
    steps = [line for line in summary.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(steps) >= 8 and all(s.startswith("PASS") for s in steps), summary
    for needle in ("pytest -m gpu", "throughput small amp=off", "throughput small amp=bf16", "precision agreement",
                   "certify torchrun 2 ranks", "torchrun rows == one-process rows", "(a) ours / floor",
                   "identical: ", "(d) --sound / ours"):
        assert needle in text, needle
