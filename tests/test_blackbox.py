"""Black-box smoothing: a function classifier, its recorded query log, and certification from the log."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.blackbox import FunctionClassifier, LogReplay
from core.runs.blackbox import QueryRecorder, export_queries, read_query_log
from core.errors import MsrsError
from core.smoothing import Smooth, example_generator
from core.stats import floor_radius
from datasets import get_dataset
from tests.conftest import run_script

SIGMA, N0, N, BATCH = 0.25, 10, 60, 25


def api(images: np.ndarray) -> np.ndarray:
    """A stand-in image API: the class is the brightness decile of the image."""
    return np.clip((images.astype(np.float64).mean(axis=(1, 2, 3)) / 255 * 10).astype(int), 0, 9)


def test_certify_from_recorded_log_matches_online(tmp_path):
    ds = get_dataset("digits", "test")
    log = tmp_path / "answers.csv"
    recorder = QueryRecorder(FunctionClassifier(api, 10), str(log))
    smooth = Smooth(recorder, 10, SIGMA)
    expected = []
    for idx in (0, 5, 10):
        x, y = ds[idx]
        recorder.set_example(0, idx)
        pred, radius = smooth.certify(x, N0, N, 0.01, BATCH, example_generator(0, idx))
        expected.append((idx, y, pred, float(floor_radius(radius))))
    recorder.f.close()
    assert {k: len(v) for k, v in read_query_log(str(log)).items()} == {0: N0 + N, 5: N0 + N, 10: N0 + N}
    out = tmp_path / "out.tsv"
    run_script("certify.py", "digits", f"querylog:{log}", str(out), "--sigmas", str(SIGMA), "--N", str(N),
               "--N0", str(N0), "--alpha", "0.01", "--batch", str(BATCH), "--skip", "5", "--max", "11",
               "--device", "cpu", check=True)
    df = pd.read_csv(out, sep="\t")
    assert list(zip(df["idx"], df["label"], df["predict"], df["radius"])) == expected
    # asking for more samples than were logged: one-line error
    r = run_script("certify.py", "digits", f"querylog:{log}", str(tmp_path / "more.tsv"), "--sigmas", str(SIGMA),
                   "--N", str(N + 1), "--N0", str(N0), "--skip", "5", "--max", "11", "--device", "cpu")
    assert r.returncode == 2 and "answers" in r.stderr and "Traceback" not in r.stderr


def test_export_draws_the_same_queries(tmp_path):
    ds = get_dataset("digits", "test")
    log = tmp_path / "answers.csv"
    recorder = QueryRecorder(FunctionClassifier(api, 10), str(log))
    x, _ = ds[3]
    recorder.set_example(0, 3)
    Smooth(recorder, 10, SIGMA).certify(x, N0, N, 0.01, BATCH, example_generator(0, 3))
    recorder.f.close()
    assert export_queries(ds, [3], SIGMA, N0, N, 0, str(tmp_path / "q"), BATCH) == N0 + N
    imgs = np.stack([np.asarray(Image.open(tmp_path / "q" / "3" / f"{j:06d}.png")) for j in range(N0 + N)])
    assert (api(imgs) == read_query_log(str(log))[3]).all()


def test_bad_logs(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("idx,j,label\n0,0,1\n0,2,1\n")
    with pytest.raises(MsrsError, match="misses query 1"):
        read_query_log(str(p))
    p.write_text("idx,j,label\n0,0,11\n")
    with pytest.raises(MsrsError, match="outside"):
        LogReplay(read_query_log(str(p)), 10, str(p))
    p.write_text("a,b\n")
    with pytest.raises(MsrsError, match="header"):
        read_query_log(str(p))
    with pytest.raises(MsrsError, match="not found"):
        read_query_log(str(tmp_path / "none.csv"))


@pytest.mark.parametrize("protocol,order", [("cohen", "skip_first"), ("mdds", "max_first")])
def test_export_selects_what_certify_selects(tmp_path, protocol, order):
    """The export resolves the certify run's protocol: --max 20 with --skip 7 never stops under Cohen's
    skip-first loop (all 52 kept digits), stops at 20 under MDDS's max-first one (0, 7, 14)."""
    import os

    from core.runs import blackbox
    from core.runs.files import select_indices
    out = tmp_path / "q"
    blackbox.main(blackbox.get_args_parser().parse_args(
        ["export", "digits", str(out), "--sigma", "0.25", "--N0", "1", "--N", "1", "--skip", "7", "--max", "20",
         "--protocol", protocol]))
    expected = select_indices(360, 0, 7, 20, order)
    assert sorted(int(d) for d in os.listdir(out)) == expected
    assert len(expected) == (52 if order == "skip_first" else 3)
