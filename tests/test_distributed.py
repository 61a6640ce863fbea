"""Sharded certification gives the same rows as one process: Slurm-style --shard I/N and torchrun."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import ROOT, run_script

FLAGS = ["--skip", "9", "--max", "90", "--N", "200", "--N0", "20", "--batch", "100", "--device", "cpu", "--seed", "1",
         "--denoiser", "none"]


def free_port() -> str:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def rows(path):
    return pd.read_csv(path, sep="\t").drop(columns=["time"])


@pytest.fixture(scope="module")
def reference(digits_classifier, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for mode, sig in (("cascade", ["--sigma25", "--sigma50", "--sigma100"]), ("single", ["--sigmas", "0.5"])):
        out[mode] = d / f"{mode}.tsv"
        run_script("certify.py", "digits", digits_classifier, str(out[mode]), *sig, *FLAGS, check=True)
    out["predict"] = d / "predict.tsv"
    run_script("predict_mdds.py", "digits", digits_classifier, str(out["predict"]), "--sigma25", "--sigma100",
               *FLAGS, check=True)
    return out


@pytest.mark.parametrize("mode", ["cascade", "single"])
def test_shards_merge_identical(mode, reference, digits_classifier, tmp_path):
    sig = ["--sigma25", "--sigma50", "--sigma100"] if mode == "cascade" else ["--sigmas", "0.5"]
    out = tmp_path / "run.tsv"
    for i in range(2):
        run_script("certify.py", "digits", digits_classifier, str(out), *sig, *FLAGS, "--shard", f"{i}/2", check=True)
    assert not out.exists()
    run_script("-m", "core.shards", "merge", str(out), "--num_shards", "2", check=True)
    pd.testing.assert_frame_equal(rows(out), rows(reference[mode]))


def test_killed_shard_resumes_then_merges(reference, digits_classifier, tmp_path):
    out = tmp_path / "run.tsv"
    sig = ["--sigma25", "--sigma50", "--sigma100"]
    run_script("certify.py", "digits", digits_classifier, str(out), *sig, *FLAGS, "--shard", "0/2", check=True)
    part1 = tmp_path / "run.tsv.part1of2"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "certify.py", "digits", digits_classifier, str(out), *sig, *FLAGS,
                             "--shard", "1/2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (part1.exists() and len(part1.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(part1.read_text().splitlines()) - 1 < 5
    # merging now fails with a clear message, and writes nothing
    r = run_script("-m", "core.shards", "merge", str(out), "--num_shards", "2")
    assert r.returncode != 0 and "missing" in r.stderr and not out.exists()
    run_script("certify.py", "digits", digits_classifier, str(out), *sig, *FLAGS, "--shard", "1/2", "--resume",
               check=True)
    run_script("-m", "core.shards", "merge", str(out), "--num_shards", "2", check=True)
    pd.testing.assert_frame_equal(rows(out), rows(reference["cascade"]))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_torchrun_two_ranks_identical(reference, digits_classifier, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "tr.tsv"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={free_port()}", "--", "predict_mdds.py", "digits",
                        digits_classifier, str(out), "--sigma25", "--sigma100", *FLAGS], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    pd.testing.assert_frame_equal(rows(out), rows(reference["predict"]))


def test_split_n_sums_worker_counts(digits_classifier, tmp_path):
    """--split_n under torchrun: each rank draws its share of N0/N from its own stream, counts are summed,
    one bound. The rows equal an in-process computation of exactly that."""
    from core.smoothing import Smooth, SplitCounts, certify_from_counts, example_generator
    from core.stats import floor_radius
    from datasets import get_dataset
    from models.classifiers import load_classifier
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "split.tsv"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    n0, n, sigma = 21, 201, 0.5
    r = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={free_port()}", "--", "certify.py", "digits",
                        digits_classifier, str(out), "--sigmas", str(sigma), "--N0", str(n0), "--N", str(n),
                        "--skip", "40", "--batch", "64", "--device", "cpu", "--split_n", "--alpha", "0.01",
                        "--denoiser", "none", "--protocol", "cohen"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out, sep="\t")
    assert df["idx"].tolist() == list(range(0, 360, 40))
    f = load_classifier(digits_classifier)
    ds = get_dataset("digits", "test")
    for idx, pred, radius in zip(df["idx"], df["predict"], df["radius"]):
        x, _ = ds[idx]
        sel = est = 0
        for rank in range(2):
            smooth = Smooth(f, 10, sigma, split=None)
            share = SplitCounts(rank, 2).share
            g = example_generator(0, idx, 0, "cpu", rank)
            sel = sel + smooth.sample_counts(x, share(n0), 64, g)
            est = est + smooth.sample_counts(x, share(n), 64, g)
        assert int(sel.sum()) == n0 and int(est.sum()) == n
        p, rad, _ = certify_from_counts(sel, est, 0.01, sigma)
        assert (pred, radius) == (p, float(floor_radius(rad)))
