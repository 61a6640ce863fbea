"""Entry scripts end to end on CPU: rows, resume after a real kill, slicing, bad inputs. One run of each
kind goes through a real interpreter (``run_script``); the others call ``main`` in-process (``run_main``)."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import ROOT, run_main, run_script

COMMON = ["--N", "200", "--N0", "20", "--batch", "100", "--device", "cpu", "--denoiser", "none"]


def rows(path):
    """Rows without the time column (the only column that may differ between runs)."""
    df = pd.read_csv(path, sep="\t")
    return df.drop(columns=["time"])


def test_certify_cascade_end_to_end(digits_classifier, tmp_path):
    out = tmp_path / "cascade.tsv"
    r = run_script("certify.py", "digits", digits_classifier, str(out), "--sigma25", "--sigma50", "--sigma100",
                   "--skip", "12", *COMMON, check=True)
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == ["idx", "label", "predict", "radius", "r_neg", "correct", "pred_uc", "corr_uc",
                                "stage", "time"]
    assert df["idx"].tolist() == list(range(0, 360, 12))
    assert set(df["predict"]) <= set(range(-2, 10))
    assert (df["radius"] >= 0).all() and ((df["radius"] > 0) <= (df["predict"] >= 0)).all()
    assert df["correct"].mean() > 0.5, "a trained digits classifier certifies most test digits"
    assert set(df["stage"]) <= {0, 1, 2}
    assert "certified accuracy" in r.stdout.lower() or "r=0" in r.stdout or "| " in r.stdout
    meta = pd.read_json(str(out) + ".json", typ="series")
    assert meta["args"]["N"] == 200 and meta["checkpoints"]["classifier"]


def test_certify_single_sigma_and_predict(digits_classifier, tmp_path):
    out = tmp_path / "single.tsv"
    assert run_main("certify.py", "digits", digits_classifier, str(out), "--sigmas", "0.25", "--max", "40", "--skip",
                    "8", "--columns", "cohen", *COMMON).returncode == 0
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == ["idx", "label", "predict", "radius", "correct", "time"]
    assert df["idx"].tolist() == [0, 8, 16, 24, 32]
    pout = tmp_path / "pred.tsv"
    assert run_main("predict_ddpm.py", "digits", digits_classifier, "0.25", str(pout), "--max", "40", "--skip", "8",
                    "--N", "50", "--device", "cpu", "--denoiser", "none").returncode == 0
    assert list(pd.read_csv(pout, sep="\t").columns) == ["idx", "label", "pred0", "pred1", "correct", "time", "conf"]
    mout = tmp_path / "mdds.tsv"
    assert run_main("predict_mdds.py", "digits", digits_classifier, str(mout), "--sigma25", "--sigma50", "--max", "40",
                    "--skip", "8", "--N", "50", "--device", "cpu", "--denoiser", "none").returncode == 0
    dm = pd.read_csv(mout, sep="\t")
    assert list(dm.columns) == ["idx", "label", "pred0", "predict", "correct", "time", "stage", "c_max"]
    assert dm["correct"].mean() >= 0.6


def test_same_rows_whatever_the_slicing_and_after_kill_resume(digits_classifier, tmp_path):
    args = ["digits", digits_classifier]
    flags = ["--sigma25", "--sigma50", "--sigma100", "--skip", "6", "--max", "120", "--seed", "3", *COMMON]
    full = tmp_path / "full.tsv"
    assert run_main("certify.py", *args, str(full), *flags).returncode == 0
    # the same rows in two slices
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    assert run_main("certify.py", *args, str(a), *flags[:-len(COMMON)], *COMMON, "--start", "0", "--max",
                    "60").returncode == 0
    assert run_main("certify.py", *args, str(b), *flags, "--start", "60").returncode == 0
    pd.testing.assert_frame_equal(pd.concat([rows(a), rows(b)], ignore_index=True), rows(full))
    # a real process killed mid-run, then --resume
    killed = tmp_path / "killed.tsv"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "certify.py", *args, str(killed), *flags], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if killed.exists() and len(killed.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(killed.read_text().splitlines()) - 1
    assert 0 < n_before < 20, "the kill must land mid-run"
    with open(killed, "a") as f:   # as if killed mid-write: a partial trailing row
        f.write("999\t3\t")
    assert run_main("certify.py", *args, str(killed), *flags, "--resume").returncode == 0
    pd.testing.assert_frame_equal(rows(killed), rows(full))


BAD = {
    "missing checkpoint": (["digits", "{tmp}/nope.pt", "{out}", "--sigma25"], "nope.pt"),
    "unknown dataset": (["mnist9", "{clf}", "{out}", "--sigma25"], "mnist9"),
    "unknown arch": (["digits", "{bare}", "{out}", "--sigma25", "--arch", "resnet9000"], "resnet9000"),
    "sigma <= 0": (["digits", "{clf}", "{out}", "--sigmas", "0"], "sigma"),
    "N0 <= 0": (["digits", "{clf}", "{out}", "--sigma25", "--N0", "0"], "--N0"),
    "N <= 0": (["digits", "{clf}", "{out}", "--sigma25", "--N", "-5"], "--N"),
    "alpha outside (0,1)": (["digits", "{clf}", "{out}", "--sigma25", "--alpha", "1.5"], "--alpha"),
    "existing outfile": (["digits", "{clf}", "{existing}", "--sigma25"], "already exists"),
    "missing dataset files": (["cifar10", "{clf}", "{out}", "--sigma25", "--data_path", "{tmp}/data"],
                              "cifar-10-batches-py"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_one_line_error(case, digits_classifier, tmp_path):
    import torch
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(digits_classifier, weights_only=True)["state_dict"], bare)
    existing = tmp_path / "existing.tsv"
    existing.write_text("precious results\n")
    argv, needle = BAD[case]
    argv = [a.format(tmp=tmp_path, out=tmp_path / "out.tsv", clf=digits_classifier, bare=bare, existing=existing)
            for a in argv]
    r = run_main("certify.py", *argv, "--device", "cpu")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert existing.read_text() == "precious results\n"
    assert not (tmp_path / "out.tsv").exists()
