"""Integrity (issue 13): a resume or a merge never mixes runs, a data file never runs code, nonsense never
certifies, and bad input is one line and exit 2 before any work -- each case as a hostile user would try
it, on the command line (in-process, see tests/integrity.py), with its exact outcome: the exit status,
the one line on stderr, and the md5 of every file before and after (nothing written or changed).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

from tests.integrity import ROOT, assert_refused, cli, rows, snapshot

# 6 digits test examples (idx 0, 60, ..., 300), fast on CPU
RUN = ["--N", "100", "--N0", "10", "--batch", "50", "--device", "cpu", "--denoiser", "none", "--skip", "60"]
SELECTION = [0, 60, 120, 180, 240, 300]


def certify(clf, out, *extra):
    return cli("certify.py", "digits", clf, out, "--sigmas", "0.25", *RUN, *extra)


def ok(res):
    assert res.rc == 0, f"exit {res.rc}\n{res.err[-3000:]}"
    return res


def keep_rows(path, k):
    """Cut a finished TSV back to its header and first k rows: what a kill after k rows leaves."""
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    with open(path, "w") as f:
        f.writelines(lines[:1 + k])


@pytest.fixture(scope="module")
def finished(digits_classifier, tmp_path_factory):
    """A finished 6-row run: its folder, with its own copy of the classifier (clf.pt), out.tsv, out.tsv.json."""
    d = tmp_path_factory.mktemp("finished")
    shutil.copy(digits_classifier, d / "clf.pt")
    ok(certify(d / "clf.pt", d / "out.tsv"))
    return d


@pytest.fixture(scope="module")
def reference(finished):
    """The rows every resume below must reproduce."""
    return finished / "out.tsv"


def copy_run(src, dst, names):
    for n in names:
        shutil.copy(src / n, dst / n)


@pytest.fixture
def partial(finished, tmp_path):
    """A run killed after 3 of its 6 rows (TSV + sidecar), with its classifier, in tmp_path."""
    copy_run(finished, tmp_path, ["clf.pt", "out.tsv", "out.tsv.json"])
    keep_rows(tmp_path / "out.tsv", 3)
    return tmp_path / "clf.pt", tmp_path / "out.tsv"


@pytest.fixture(scope="module")
def sharded(digits_classifier, tmp_path_factory):
    """Finished parts of the same run: 2 and 3 shards ({W: folder with m.tsv.part{r}of{W}[.json]})."""
    out = {}
    for w in (2, 3):
        d = tmp_path_factory.mktemp(f"shards{w}")
        shard_runs(digits_classifier, d / "m.tsv", [[]] * w)
        out[w] = d
    return out


def parts_in(sharded, w, tmp_path):
    copy_run(sharded[w], tmp_path, [f"m.tsv.part{r}of{w}{ext}" for r in range(w) for ext in ("", ".json")])
    return tmp_path / "m.tsv"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if any model file is unpickled (torch.load): the refusal must come before."""
    calls = []

    def guarded(*a, **k):
        calls.append(a[0] if a else k.get("f"))
        raise AssertionError(f"a model was loaded ({calls[-1]}) before the bad input was refused")
    monkeypatch.setattr(torch, "load", guarded)
    return calls


# ------------------------------------------------------------------------------- positive controls
def test_resume_of_the_same_run_completes_it_identically(partial, reference):
    clf, out = partial
    ok(certify(clf, out, "--resume"))
    assert rows(out) == rows(reference)


def test_resume_ignores_batch_and_device(partial, reference):
    """--batch and --device do not change rows, so they are no part of a run's identity."""
    clf, out = partial
    ok(certify(clf, out, "--resume", "--batch", "7", "--device", "auto"))
    assert rows(out) == rows(reference)


# ------------------------------------------------------------------ silently mixed results (exit 0)
SIDECARS = {
    "missing": None,
    "{}": "{}",
    "{ (truncated JSON)": "{",
    "a JSON list": "[1, 2]",
    "null": "null",
    "binary": b"\x00\xff\xfe\x80junk",
    "no args": json.dumps({"checkpoints": {}}),
}


@pytest.mark.parametrize("case", list(SIDECARS))
def test_resume_refuses_without_a_readable_sidecar(case, partial, tmp_path):
    """`rm OUT.tsv.json; certify.py ... --N 60 --resume` (and a sidecar of `{}`, `{`, a list, ...) used to
    continue an N=50 run; now a refusal that says how to proceed, nothing written."""
    clf, out = partial
    side = f"{out}.json"
    if SIDECARS[case] is None:
        os.remove(side)
    else:
        with open(side, "wb") as f:
            f.write(SIDECARS[case] if isinstance(SIDECARS[case], bytes) else SIDECARS[case].encode())
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--N", "60", "--resume"), before, [tmp_path], "out.tsv.json", "new OUTFILE")
    assert_refused(certify(clf, out, "--resume"), before, [tmp_path], "out.tsv.json", "new OUTFILE")


OTHER_ARGS = {"--N 60": "N=60", "--seed 1": "seed=1", "--alpha 0.01": "alpha=0.01", "--N0 20": "N0=20",
              "--sigmas 0.5": "sigmas=[0.5]", "--adaptive": "adaptive=True"}


@pytest.mark.parametrize("flags", list(OTHER_ARGS))
def test_resume_refuses_other_arguments(flags, partial, tmp_path):
    clf, out = partial
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--resume", *flags.split()), before, [tmp_path], OTHER_ARGS[flags],
                   "new OUTFILE")


@pytest.mark.parametrize("flags", [["--skip", "120"], ["--start", "1"], ["--max", "200"]],
                         ids=lambda f: " ".join(f))
def test_resume_refuses_another_selection(flags, partial, tmp_path):
    """`--resume --skip 20` on a `--skip 10` run used to append a second selection, out of order."""
    clf, out = partial
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--resume", *flags), before, [tmp_path], "selection", "new OUTFILE")


def perturbed_copy(src, dst):
    """A valid checkpoint of the same model with one weight changed (so its rows would differ)."""
    obj = torch.load(src, weights_only=True)
    for key in ("state_dict", "state_dict_ema"):
        if obj.get(key) is not None:
            name = next(k for k, v in obj[key].items() if v.is_floating_point())
            obj[key][name] = obj[key][name] + 0.05
    torch.save(obj, dst)


def test_resume_refuses_a_replaced_classifier(partial, tmp_path):
    """The classifier file replaced at the same path used to give rows of two models."""
    clf, out = partial
    perturbed_copy(clf, clf)
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--resume"), before, [tmp_path], "classifier", "changed")


def test_resume_refuses_a_replaced_denoiser(digits_classifier, tmp_path):
    den = tmp_path / "ddpm.pt"
    shutil.copy(os.path.join(ROOT, "models", "zoo", "digits_ddpm.pt"), den)
    out = tmp_path / "den.tsv"
    flags = ["--N", "20", "--N0", "10", "--batch", "20", "--device", "cpu", "--skip", "120"]
    ok(cli("certify.py", "digits", digits_classifier, out, "--sigmas", "0.25", *flags, "--denoiser", den))
    keep_rows(out, 1)
    perturbed_copy(den, den)
    before = snapshot(tmp_path)
    res = cli("certify.py", "digits", digits_classifier, out, "--sigmas", "0.25", *flags, "--denoiser", den, "--resume")
    assert_refused(res, before, [tmp_path], "denoiser", "changed")


JUNK = {
    "42\\tjunk": "42\tjunk\n",
    "a duplicated row": None,  # filled in from the file
    "a row out of order": None,
    "a text line": "this is not a row\n",
    "an empty line": "\n",
    "a row with a wrong column count": "60\t4\t4\n",
    "a row of another selection": "61\t4\t4\t0.5\t1\t0:00:00.001\n",
    "a non-numeric radius": "60\t4\t4\tbig\t1\t0:00:00.001\n",
    "an infinite radius": "60\t4\t4\tinf\t1\t0:00:00.001\n",
    "a negative radius": "60\t4\t4\t-0.5\t1\t0:00:00.001\n",
    "an idx spelled +60": "+60\t4\t4\t0.5\t1\t0:00:00.001\n",
    "a time that is not H:MM:SS": "60\t4\t4\t0.5\t1\tsoon\n",
}


@pytest.mark.parametrize("case", list(JUNK))
def test_resume_refuses_a_tsv_with_junk_in_the_middle(case, partial, tmp_path):
    """A line `42\\tjunk` in the middle used to be kept, the run continued, and exit 2 came at the very end."""
    clf, out = partial
    with open(out) as f:
        lines = f.read().splitlines(keepends=True)
    junk = {"a duplicated row": lines[1], "a row out of order": lines[3]}.get(case, JUNK[case])
    lines.insert(2, junk)  # after the first row: line 3 of the file
    with open(out, "w") as f:
        f.writelines(lines)
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--resume"), before, [tmp_path], "out.tsv", "line 3")


def test_resume_refuses_a_binary_tsv(partial, tmp_path):
    clf, out = partial
    with open(out, "r+b") as f:
        f.seek(40)
        f.write(b"\xff\xfe\x00\x81")
    before = snapshot(tmp_path)
    assert_refused(certify(clf, out, "--resume"), before, [tmp_path], "out.tsv")


# ------------------------------------------------------------------------------------- merge
def shard_runs(clf, out, per_shard_flags):
    for i, flags in enumerate(per_shard_flags):
        ok(certify(clf, out, "--shard", f"{i}/{len(per_shard_flags)}", *flags))


def test_merge_refuses_parts_of_different_runs(digits_classifier, tmp_path):
    """Parts made with different N and seed used to merge under a sidecar claiming one of them."""
    out = tmp_path / "m.tsv"
    shard_runs(digits_classifier, out, [[], ["--N", "60"], ["--seed", "1"]])
    before = snapshot(tmp_path)
    assert_refused(cli("-m core.shards", "merge", out, "--num_shards", "3"), before, [tmp_path], "differ")


def test_merge_refuses_parts_with_another_classifier(digits_classifier, tmp_path):
    other = tmp_path / "other.pt"
    perturbed_copy(digits_classifier, other)
    out = tmp_path / "m.tsv"
    ok(certify(digits_classifier, out, "--shard", "0/2"))
    ok(certify(other, out, "--shard", "1/2"))
    before = snapshot(tmp_path)
    assert_refused(cli("-m core.shards", "merge", out, "--num_shards", "2"), before, [tmp_path], "classifier")


@pytest.mark.parametrize("which", ["all", "one"])
def test_merge_refuses_parts_without_sidecars(which, sharded, tmp_path):
    """With the part sidecars missing, a part that lost its last row used to merge (35 of 36 rows)."""
    out = parts_in(sharded, 3, tmp_path)
    keep_rows(f"{out}.part1of3", 1)
    for r in ([0, 1, 2] if which == "all" else [1]):
        os.remove(f"{out}.part{r}of3.json")
    before = snapshot(tmp_path)
    assert_refused(cli("-m core.shards", "merge", out, "--num_shards", "3"), before, [tmp_path],
                   "part0of3.json" if which == "all" else "part1of3.json")


def test_merge_refuses_an_incomplete_part(sharded, tmp_path):
    out = parts_in(sharded, 3, tmp_path)
    keep_rows(f"{out}.part2of3", 1)
    before = snapshot(tmp_path)
    assert_refused(cli("-m core.shards", "merge", out, "--num_shards", "3"), before, [tmp_path], "part2of3")


PARTS = {
    "a garbage part": ("part", "idx\tlabel\tpredict\tradius\tcorrect\ttime\nthis is no row\n"),
    "a binary part": ("part", b"\x80\x04\x95\xff\x00junk\x00\xfe"),
    "a part JSON `{`": ("json", "{"),
    "a part JSON list": ("json", "[]"),
}


@pytest.mark.parametrize("case", list(PARTS))
def test_merge_refuses_bad_part_files(case, sharded, tmp_path):
    out = parts_in(sharded, 2, tmp_path)
    kind, content = PARTS[case]
    path = f"{out}.part1of2" + (".json" if kind == "json" else "")
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    before = snapshot(tmp_path)
    assert_refused(cli("-m core.shards", "merge", out, "--num_shards", "2"), before, [tmp_path],
                   os.path.basename(path))


@pytest.mark.parametrize("w", [2, 3])
def test_merge_of_a_clean_sharded_run_equals_one_process(w, sharded, reference, tmp_path):
    out = parts_in(sharded, w, tmp_path)
    ok(cli("-m core.shards", "merge", out, "--num_shards", w))
    assert rows(out) == rows(reference)


# ------------------------------------------------------------------------ code execution from data
class _RunsCode:
    """An object whose unpickling calls os.mkdir(marker): what a hostile batch file can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {"batch_label": f"batch {seed}", "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}


def write_cifar(root, protocol=pickle.DEFAULT_PROTOCOL, **override):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(3, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(4, 0)
    batches["batches.meta"] = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck"], "num_cases_per_batch": 10000,
                               "num_vis": 3072}
    batches.update(override)
    for name, obj in batches.items():
        with open(d / name, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    return batches


@pytest.mark.parametrize("file", ["test_batch", "batches.meta"])
def test_a_cifar_batch_with_reduce_never_runs_its_code(file, digits_classifier, tmp_path):
    """`cifar-10-batches-py/test_batch` built with __reduce__ used to run its code when unpickled."""
    marker = tmp_path / "pwned"
    data = tmp_path / "data"
    evil = dict(cifar_batch(4, 0) if file == "test_batch" else {"label_names": ["a"] * 10}, x=_RunsCode(marker))
    write_cifar(data, **{file: evil})
    before = snapshot(tmp_path)
    res = cli("certify.py", "cifar10", digits_classifier, tmp_path / "out.tsv", "--sigmas", "0.25", "--data_path",
              data, "--device", "cpu", "--denoiser", "none")
    assert not marker.exists(), "the batch file ran code"
    assert_refused(res, before, [tmp_path], os.path.join("cifar-10-batches-py", file), "posix.mkdir")


def test_restricted_unpickler_refuses_any_other_name(tmp_path):
    """Only plain-data names resolve: a harmless but non-data class is refused too (by name), and the
    latin-1 byte codec of old pickles cannot be turned into another codec."""
    from collections import OrderedDict
    from core.errors import MsrsError
    from datasets.safe_pickle import load_data_pickle
    p = tmp_path / "f"
    p.write_bytes(pickle.dumps({"a": OrderedDict(x=1)}, protocol=2))
    with pytest.raises(MsrsError, match=r"collections\.OrderedDict.*not plain data"):
        load_data_pickle(str(p), "CIFAR-10 file", "re-extract it")
    p.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")  # _codecs.encode('abc', 'rot13')
    with pytest.raises(MsrsError, match="rot13"):
        load_data_pickle(str(p), "CIFAR-10 file", "re-extract it")
    p.write_bytes(b"cposix\nsystem\n(Vtrue\ntR.")
    with pytest.raises(MsrsError, match=r"refusing to load CIFAR-10 file .*/f: it names posix\.system"):
        load_data_pickle(str(p), "CIFAR-10 file", "re-extract it")


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING), as the official CIFAR-10 files (cPickle) do."""

    def _py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = _py2_str
    dispatch[bytes] = _py2_str


def _py2_dumps(obj) -> bytes:
    import io
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")  # the module name numpy 1 wrote


@pytest.mark.parametrize("protocol", ["py2", 0, 1, 2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_still_load(protocol, tmp_path):
    from datasets import get_dataset
    batches = write_cifar(tmp_path, protocol=2 if protocol == "py2" else protocol)
    if protocol == "py2":
        for name, obj in batches.items():
            raw = _py2_dumps(obj)
            if "data" in obj:  # Python 2 names and str, as in the official files
                assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"U\x04data" in raw
            (tmp_path / "cifar-10-batches-py" / name).write_bytes(raw)
    ds = get_dataset("cifar10", "test", str(tmp_path))
    tb = batches["test_batch"]
    for i in range(4):
        x, y = ds[i]
        ref = torch.from_numpy(tb["data"][i].reshape(3, 32, 32).astype(np.float32) / 255)
        assert torch.equal(x, ref) and y == tb["labels"][i]
    assert ds.classes[3] == "cat"
    assert len(get_dataset("cifar10", "train", str(tmp_path))) == 15


@pytest.mark.parametrize("case", ["not a dict", "labels of strings", "data of floats", "too few labels"])
def test_cifar_batches_of_the_wrong_shape_are_one_line_errors(case, tmp_path):
    from core.errors import MsrsError
    from datasets import get_dataset
    b = cifar_batch(4, 0)
    bad = {"not a dict": [1, 2, 3], "labels of strings": dict(b, labels=["a"] * 4),
           "data of floats": dict(b, data=b["data"].astype(np.float64)), "too few labels": dict(b, labels=[1])}[case]
    write_cifar(tmp_path, test_batch=bad)
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "cifar-10-batches-py" / "test_batch"))):
        get_dataset("cifar10", "test", str(tmp_path))


# ---------------------------------------------------------------- certificates for nonsense (exit 0)
@pytest.mark.parametrize("script", ["certify single", "certify cascade", "predict_ddpm", "predict_mdds"])
@pytest.mark.parametrize("sigma", ["inf", "nan", "1e400"])
def test_a_sigma_that_is_not_finite_is_refused(script, sigma, digits_classifier, tmp_path, no_model_load):
    """`--sigmas inf --denoiser none` used to certify every row at radius inf."""
    out = tmp_path / "out.tsv"
    argv = {"certify single": ("certify.py", "digits", digits_classifier, out, "--sigmas", sigma),
            "certify cascade": ("certify.py", "digits", digits_classifier, out, "--sigmas", "0.25", sigma),
            "predict_ddpm": ("predict_ddpm.py", "digits", digits_classifier, sigma, out),
            "predict_mdds": ("predict_mdds.py", "digits", digits_classifier, out, "--sigma25", "--sigmas", sigma)}
    before = snapshot(tmp_path)
    assert_refused(cli(*argv[script], *RUN), before, [tmp_path], "sigma")


def nan_classifier(src, dst):
    obj = torch.load(src, weights_only=True)
    for key in ("state_dict", "state_dict_ema"):
        if obj.get(key) is not None:
            obj[key] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in obj[key].items()}
    torch.save(obj, dst)


@pytest.mark.parametrize("script", ["certify single", "certify cascade", "predict_ddpm", "predict_mdds"])
def test_a_nan_classifier_never_certifies(script, digits_classifier, tmp_path):
    """A classifier whose weights are NaN used to certify class 0 at the maximum radius for every row."""
    clf = tmp_path / "nan.pt"
    nan_classifier(digits_classifier, clf)
    out = tmp_path / "out.tsv"
    argv = {"certify single": ("certify.py", "digits", clf, out, "--sigmas", "0.25"),
            "certify cascade": ("certify.py", "digits", clf, out, "--sigma25", "--sigma50"),
            "predict_ddpm": ("predict_ddpm.py", "digits", clf, "0.25", out),
            "predict_mdds": ("predict_mdds.py", "digits", clf, out, "--sigma25", "--sigma50")}
    before = snapshot(tmp_path)
    assert_refused(cli(*argv[script], *RUN), before, [tmp_path], "nan.pt", "non-finite", "example 0")


@pytest.mark.parametrize("radius", [float("inf"), float("nan"), -0.5])
def test_a_row_with_a_radius_that_is_not_a_certificate_is_never_written(radius, digits_classifier, tmp_path,
                                                                        monkeypatch):
    """The finite-radius sanity check on every row: a certify whose radius came out inf/nan/negative (here
    forced through the radius rounding) stops with an error before the row is written."""
    import core.stats
    monkeypatch.setattr(core.stats, "floor_radius", lambda r: radius)
    before = snapshot(tmp_path)
    assert_refused(certify(digits_classifier, tmp_path / "out.tsv"), before, [tmp_path], "radius", "idx 0")


def flip_bit(path, member_suffix="data/0"):
    """Flip one bit in the middle of a tensor of a torch.save zip (what bit rot or a bad copy does)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x08]))


@pytest.mark.parametrize("model", ["classifier", "denoiser"])
def test_bit_flipped_weights_are_refused(model, digits_classifier, tmp_path):
    """Bit-flipped weights used to load without a word (and certify with a different model)."""
    clf = tmp_path / "clf.pt"
    den = tmp_path / "ddpm.pt"
    shutil.copy(digits_classifier, clf)
    shutil.copy(os.path.join(ROOT, "models", "zoo", "digits_ddpm.pt"), den)
    flip_bit(clf if model == "classifier" else den)
    before = snapshot(tmp_path)
    res = cli("certify.py", "digits", clf, tmp_path / "out.tsv", "--sigmas", "0.25", *RUN, "--denoiser", den)
    assert_refused(res, before, [tmp_path], "clf.pt" if model == "classifier" else "ddpm.pt", "CRC")


# ----------------------------------------------------------------- tracebacks instead of a message
def test_a_text_file_as_checkpoint(tmp_path):
    clf = tmp_path / "model.pt"
    clf.write_text("hello, I am a README\n")
    before = snapshot(tmp_path)
    assert_refused(certify(clf, tmp_path / "out.tsv"), before, [tmp_path], "model.pt", "not a PyTorch checkpoint")


@pytest.mark.parametrize("first", [b"\x80", b"PK\x03\x04", b"\x13"], ids=["pickle-like", "zip-like", "other"])
def test_random_bytes_as_checkpoint_get_no_advice_to_trust_them(first, tmp_path):
    """Random bytes used to get the misleading advice "pass --trust_checkpoint"."""
    clf = tmp_path / "model.pt"
    clf.write_bytes(first + np.random.default_rng(0).bytes(4000))
    before = snapshot(tmp_path)
    res = certify(clf, tmp_path / "out.tsv")
    assert_refused(res, before, [tmp_path], "model.pt")
    assert "trust" not in res.err


def test_a_negative_seed_is_refused_and_does_not_block_the_rerun(digits_classifier, tmp_path, reference):
    """`--seed -1` used to die with a traceback after writing a header-only TSV that blocked the rerun."""
    out = tmp_path / "out.tsv"
    before = snapshot(tmp_path)
    assert_refused(certify(digits_classifier, out, "--seed", "-1"), before, [tmp_path], "--seed")
    ok(certify(digits_classifier, out, "--seed", "0"))
    assert rows(out) == rows(reference)


def _outfile_cases(tmp_path):
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "adir").mkdir()
    return {
        "OUTFILE whose parent is a file": ([tmp_path / "afile" / "out.tsv"], "afile"),
        "OUTFILE under /sys": (["/sys/msrs_out.tsv"], "/sys"),
        "OUTFILE a directory with --resume": ([tmp_path / "adir", "--resume"], "adir"),
        "OUTFILE a directory": ([tmp_path / "adir"], "adir"),
    }


@pytest.mark.parametrize("case", ["OUTFILE whose parent is a file", "OUTFILE under /sys",
                                  "OUTFILE a directory with --resume", "OUTFILE a directory"])
@pytest.mark.parametrize("script", ["certify.py", "predict_ddpm.py"])
def test_bad_outfiles_are_refused_before_any_model_loads(case, script, digits_classifier, tmp_path,
                                                         no_model_load):
    """These used to fail with a traceback, and only after the models had loaded."""
    (out, *more), needle = _outfile_cases(tmp_path)[case]
    argv = ("digits", digits_classifier, out, "--sigmas", "0.25") if script == "certify.py" else \
        ("digits", digits_classifier, "0.25", out)
    before = snapshot(tmp_path)
    assert_refused(cli(script, *argv, *RUN, *more), before, [tmp_path], needle)
    assert not os.path.exists("/sys/msrs_out.tsv")


BAD_ARGS = {
    "--pad_to -4": (["--pad_to", "-4", "--denoiser", "zoo:digits_ddpm"], "--pad_to"),
    "--device tpu": (["--device", "tpu"], "--device"),
    "--device cuda:x": (["--device", "cuda:x"], "--device"),
    "--summary_radii nan": (["--summary_radii", "nan"], "--summary_radii"),
    "--summary_radii -1": (["--summary_radii", "0", "-1"], "--summary_radii"),
    "--radius_grid inf": (["--adaptive", "--radius_grid", "inf"], "--radius_grid"),
    "--denoiser_config bogus": (["--denoiser_config", "bogus", "--denoiser", "zoo:digits_ddpm"],
                                "--denoiser_config"),
    "--denoiser_config with --denoiser none": (["--denoiser_config", "improved-cifar10-uncond"],
                                               "--denoiser_config"),
    "empty selection (--start past the end)": (["--start", "100000"], "no example"),
    "empty selection (--max 0)": (["--max", "0"], "no example"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_are_refused_before_any_model_loads(case, digits_classifier, tmp_path, no_model_load):
    flags, needle = BAD_ARGS[case]
    before = snapshot(tmp_path)
    assert_refused(certify(digits_classifier, tmp_path / "out.tsv", *flags), before, [tmp_path], needle)


@pytest.mark.parametrize("script", ["predict_ddpm.py", "predict_mdds.py"])
def test_predict_on_an_empty_selection_is_refused(script, digits_classifier, tmp_path, no_model_load):
    """An empty selection used to be silent, and predict printed "Accuracy: nan %"."""
    out = tmp_path / "out.tsv"
    argv = ("digits", digits_classifier, "0.25", out) if script == "predict_ddpm.py" else \
        ("digits", digits_classifier, out, "--sigma25")
    before = snapshot(tmp_path)
    res = cli(script, *argv, *RUN, "--start", "100000")
    assert_refused(res, before, [tmp_path], "no example")
    assert "nan" not in res.out


def test_analyze_on_a_binary_file(tmp_path):
    p = tmp_path / "results.tsv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    before = snapshot(tmp_path)
    assert_refused(cli("analyze.py", p), before, [tmp_path], "results.tsv")


# ------------------------------------------------------------------------- long runs on clusters
PROGRESS = re.compile(r"(\d+)/(\d+) rows\b.*s/row.*\bETA\b")


def test_progress_lines_when_stderr_is_not_a_terminal(digits_classifier, tmp_path):
    """With stderr redirected (Slurm logs) tqdm printed nothing until the end; now progress lines."""
    res = ok(certify(digits_classifier, tmp_path / "out.tsv"))
    done = [int(m.group(1)) for m in map(PROGRESS.search, res.err.splitlines()) if m]
    assert done and done == sorted(done) and done[-1] == len(SELECTION), res.err
    assert all(int(m.group(2)) == len(SELECTION) for m in map(PROGRESS.search, res.err.splitlines()) if m)


def test_progress_lines_reach_a_redirected_log_while_the_run_is_alive(digits_classifier, tmp_path):
    import subprocess
    import sys
    import time
    log = tmp_path / "slurm.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "certify.py", "digits", digits_classifier, str(tmp_path / "o.tsv"),
                                 "--sigmas", "0.25", "--N", "2000", "--N0", "10", "--batch", "1000", "--device", "cpu",
                                 "--denoiser", "none", "--skip", "12"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=f)
    seen_alive = False
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if PROGRESS.search(log.read_text()):
                seen_alive = proc.poll() is None
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:  # the point is made once a line is in the log: no need to finish the run
            proc.kill()
        proc.wait(timeout=60)
    assert seen_alive, f"no progress line while the run was alive (exit {proc.returncode}):\n{log.read_text()}"


def test_a_shard_prints_its_part_summary(digits_classifier, tmp_path):
    res = ok(certify(digits_classifier, tmp_path / "m.tsv", "--shard", "1/2"))
    assert "m.tsv.part1of2" in res.out and "| n |" in res.out
    assert re.search(r"\|\s*3\s*\|\s*$", res.out, re.M), res.out  # this part's 3 rows
    res = ok(cli("predict_ddpm.py", "digits", digits_classifier, "0.25", tmp_path / "p.tsv", *RUN, "--shard", "0/2"))
    assert re.search(r"Accuracy .*part0of2.*%", res.out), res.out


# ------------------------------------------------------------------------------- the sidecar
def test_sidecar_records_end_time_resume_history_and_dirty_tree(partial):
    clf, out = partial
    ok(certify(clf, out, "--resume"))
    with open(f"{out}.json") as f:
        meta = json.load(f)
    assert meta["ended"] and meta["started"] <= meta["ended"]
    assert [r["rows_before"] for r in meta["resumes"]] == [3]
    assert isinstance(meta["git_dirty"], (bool, type(None)))


def test_the_merged_sidecar_records_what_the_parts_agree_on(sharded, tmp_path):
    out = parts_in(sharded, 3, tmp_path)
    parts = [json.load(open(f"{out}.part{r}of3.json")) for r in range(3)]
    ok(cli("-m core.shards", "merge", out, "--num_shards", "3"))
    merged = json.load(open(f"{out}.json"))
    assert merged["identity"] == {k: v for k, v in parts[0]["identity"].items() if k != "part"}
    assert [p["identity"]["part"] for p in parts] == [{"rank": r, "world": 3} for r in range(3)]
    assert merged["identity"]["selection"]["count"] == len(SELECTION)
    assert merged["merged_from"] == [f"{out}.part{r}of3" for r in range(3)]
    assert merged["ended"] and len(merged["parts"]) == 3 and all(p["ended"] for p in merged["parts"])


def test_progress_lines_every_30_s_or_every_twentieth_of_the_rows(monkeypatch):
    """The two rules of the log lines, on a fake clock: a slow run reports every ~30 s, a fast one every
    1/20 of its rows, and the last row is always reported."""
    import io
    import core.runs.progress as prog
    clock = [0.0]
    monkeypatch.setattr(prog.time, "time", lambda: clock[0])

    def lines(n, seconds_per_row, done=0):
        out = io.StringIO()
        for _ in prog.progress(range(n), total=n + done, done=done, desc="certify", stream=out):
            clock[0] += seconds_per_row
        return [PROGRESS.search(ln) for ln in out.getvalue().splitlines()]
    slow = lines(10, 40.0)  # every row takes longer than 30 s
    assert [int(m.group(1)) for m in slow] == list(range(1, 11))
    fast = lines(100, 0.01)
    assert [int(m.group(1)) for m in fast] == list(range(5, 101, 5))
    some = lines(400, 7.0)  # every 20 rows by count, but every 5th row (35 s) by the clock
    assert [int(m.group(1)) for m in some][:3] == [5, 10, 15]
    resumed = lines(4, 40.0, done=6)
    assert [(int(m.group(1)), int(m.group(2))) for m in resumed] == [(7, 10), (8, 10), (9, 10), (10, 10)]
    assert "ETA 0:00:40" in resumed[2].string and "elapsed 0:02:00" in resumed[2].string
