"""Property (issue 13): whatever a crash, a disk or a user does to an existing OUTFILE and its sidecar --
random truncations, byte flips, junk lines -- `--resume` never leads to a mixed file. It either refuses
(exit 2, one line, nothing written or changed) or resumes cleanly: the rows it kept are the file's own
complete rows, verbatim and in selection order, and every row it added is the row a one-go run writes.

Hypothesis draws the damage; each example is one in-process `certify.py ... --resume` (~0.1 s).
MSRS_FUZZ_EXAMPLES raises the number of examples for a deeper run (CI keeps the default).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integrity import assert_refused, cli, rows, snapshot

RUN = ["--sigmas", "0.25", "--N", "100", "--N0", "10", "--batch", "50", "--device", "cpu", "--denoiser", "none",
       "--skip", "60"]
N_ROWS = 6
EXAMPLES = int(os.environ.get("MSRS_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def finished(digits_classifier, tmp_path_factory):
    """A finished run: (classifier, TSV bytes, sidecar bytes, its rows)."""
    d = tmp_path_factory.mktemp("fuzz_ref")
    clf = d / "clf.pt"
    shutil.copy(digits_classifier, clf)
    out = d / "out.tsv"
    res = cli("certify.py", "digits", clf, out, *RUN)
    assert res.rc == 0, res.err
    return clf, out.read_bytes(), (d / "out.tsv.json").read_bytes(), rows(out)


JUNK_LINES = st.one_of(
    st.sampled_from(["42\tjunk", "", "idx\tlabel\tpredict\tradius\tcorrect\ttime", "0\t7\t7\t0.5\t1\t0:00:00.1",
                     "60\t4\t4\t0.3\t1\t0:00:00.002", "61\t4\t4\t0.3\t1\t0:00:00.002", "\x00\x01", "300\t8"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30),
)


@st.composite
def damage(draw, data: bytes, kind: str):
    """One random mutation of ``data``: a truncation, a bit flip, a junk line, or a deleted file (None)."""
    how = draw(st.sampled_from(["truncate", "flip", "junk", "delete"] if kind == "sidecar" else
                               ["truncate", "flip", "junk", "keep"]))
    if how == "keep":
        return data
    if how == "delete":
        return None
    if how == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if how == "flip":
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        return data[:pos] + bytes([data[pos] ^ (1 << draw(st.integers(0, 7)))]) + data[pos + 1:] if data else data
    lines = data.split(b"\n")
    at = draw(st.integers(0, len(lines)))
    return b"\n".join(lines[:at] + [draw(JUNK_LINES).encode("utf-8", "surrogatepass")] + lines[at:])


@st.composite
def damaged_run(draw, tsv: bytes, sidecar: bytes):
    """A killed run (the header and the first k rows, maybe a half-written row), then 0-3 mutations."""
    lines = tsv.split(b"\n")
    k = draw(st.integers(0, N_ROWS))
    cut = b"\n".join(lines[:1 + k]) + b"\n"
    if k < N_ROWS and draw(st.booleans()):  # killed mid-write
        cut += lines[1 + k][:draw(st.integers(0, len(lines[1 + k])))]
    new_tsv, new_side = cut, sidecar
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            new_tsv = draw(damage(new_tsv, "tsv"))
        else:
            new_side = draw(damage(new_side, "sidecar")) if new_side is not None else None
    return new_tsv, new_side


def check_outcome(res, before, d, tsv_in: bytes, reference):
    out = os.path.join(d, "out.tsv")
    if res.rc != 0:
        assert_refused(res, before, [d])
        return "refused"
    with open(out, "rb") as f:
        final = f.read()
    # the rows kept: the input's complete lines (a trailing partial row is dropped), verbatim
    kept = tsv_in[: tsv_in.rfind(b"\n") + 1] if tsv_in else b""
    assert final.startswith(kept), "the existing rows were rewritten"
    got = rows(out)
    assert [r[0] for r in got] == [r[0] for r in reference], "a gap, a duplicate or a foreign row"
    n_kept = max(0, kept.count(b"\n") - 1)
    assert got[n_kept:] == reference[n_kept:], "a new row differs from the one-go run"
    with open(out + ".json") as f:
        assert json.load(f)["identity"]
    return "resumed"


@given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_a_damaged_outfile_is_resumed_cleanly_or_refused(data, finished):
    clf, tsv, sidecar, reference = finished
    new_tsv, new_side = data.draw(damaged_run(tsv, sidecar))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "out.tsv"), "wb") as f:
            f.write(new_tsv)
        if new_side is not None:
            with open(os.path.join(d, "out.tsv.json"), "wb") as f:
                f.write(new_side)
        before = snapshot(d)
        res = cli("certify.py", "digits", clf, os.path.join(d, "out.tsv"), *RUN, "--resume")
        event(check_outcome(res, before, d, new_tsv, reference))


def test_the_property_can_fail(finished, tmp_path):
    """The check is not vacuous: a resume that appends to a file with a foreign row in the middle is
    caught (what main did before issue 13), and so is one that rewrote the kept rows."""
    clf, tsv, sidecar, reference = finished
    lines = tsv.split(b"\n")
    foreign = b"61" + lines[1][lines[1].index(b"\t"):]  # a row of this run's columns, of an example it never selects
    bad = b"\n".join(lines[:2] + [foreign] + lines[2:])
    (tmp_path / "out.tsv").write_bytes(bad)
    with pytest.raises(AssertionError, match="foreign row"):
        check_outcome(type("R", (), {"rc": 0})(), {}, str(tmp_path), bad, reference)
    (tmp_path / "out.tsv").write_bytes(tsv)
    with pytest.raises(AssertionError, match="rewritten"):
        check_outcome(type("R", (), {"rc": 0})(), {}, str(tmp_path), tsv.replace(b"\t7\t", b"\t1\t", 1), reference)
