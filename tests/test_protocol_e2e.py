"""Every --protocol end to end on tiny models (certify.py, predict_ddpm.py, predict_mdds.py in-process), the
sidecar's record of the resolved protocol, and the entry-script behaviours of issue 12 pinned against the
reference scripts: one-sigma MDDS columns (item 12), Cohen's PREDICT (item 9), MDDS's accuracy CSV and
CIFAR-10-C groups (item 1), ImageNet-A/R labels and 200-class prior (item 2), FT-CADIS's subset (item 7)."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.runs.protocols import PROTOCOLS
from tests.conftest import run_main
from tests.test_scripts import SCRIPTS, script_runs

CASCADE = ["idx", "label", "predict", "radius", "r_neg", "correct", "pred_uc", "corr_uc", "stage", "time"]
COHEN = ["idx", "label", "predict", "radius", "correct", "time"]
FAST = ["--N0", "10", "--N", "30", "--batch", "30", "--device", "cpu", "--skip", "1", "--max", "3"]


@pytest.fixture(scope="module")
def memnet_file(tmp_path_factory):
    """A Salman-layout MemNet checkpoint (the salman protocol's denoiser)."""
    from tests.test_memnet import salman_state_dict
    path = tmp_path_factory.mktemp("den") / "memnet.pth.tar"
    torch.save({"epoch": 1, "arch": "memnet", "state_dict": salman_state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_certify_every_protocol(tmp_path, protocol, memnet_file):
    out = tmp_path / f"{protocol}.tsv"
    den = {"cohen": ["--denoiser", "none"], "salman": ["--denoiser", memnet_file],
           "densepure": ["--denoiser", "zoo:digits_ddpm", "--num_t_steps", "2"]}.get(
        protocol, ["--denoiser", "zoo:digits_ddpm"])
    r = run_main("certify.py", "digits", "zoo:digits_cnn", str(out), "--sigmas", "0.5", "--protocol", protocol,
                 *FAST, *den)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == (CASCADE if protocol == "mdds" else COHEN)
    assert df["idx"].tolist() == [0, 1, 2]
    meta = json.loads((tmp_path / f"{protocol}.tsv.json").read_text())
    rec = meta["protocol"]
    assert rec["name"] == protocol and rec["row"] == PROTOCOLS[protocol].as_dict()
    p = PROTOCOLS[protocol]
    assert rec["resolved"]["noise_construction"] == p.noise and rec["resolved"]["t_star"] == p.t_star
    assert rec["resolved"]["resize_antialias"] == p.resize_antialias and rec["resolved"]["alpha"] == p.certify.alpha
    assert sorted(rec["from_flags"]) == ["N", "N0", "batch", "skip"]
    assert meta["args"]["protocol"] == protocol and meta["args"]["noise_construction"] == p.noise


def test_single_sigma_mdds_is_its_cascade(tmp_path):
    """Item 12 (MDDS certify.py:99-170): one sigma goes through the cascade with one level: the same row as
    --sigmas s with the cascade forced, skip_p honoured, r_neg -100 (no earlier stage), stage 0."""
    common = ["digits", "zoo:digits_cnn"]
    flags = ["--sigmas", "0.5", "--denoiser", "none", "--N0", "20", "--N", "60", "--batch", "60", "--device", "cpu",
             "--skip", "40", "--seed", "2"]
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    assert run_main("certify.py", *common, str(a), *flags).returncode == 0
    assert run_main("certify.py", *common, str(b), *flags, "--skip_p", "0.7").returncode == 0
    da, db = pd.read_csv(a, sep="\t"), pd.read_csv(b, sep="\t")
    assert list(da.columns) == CASCADE and (da["stage"] == 0).all() and (da["r_neg"] == -100).all()
    assert set(da["predict"]) <= set(range(-2, 10))
    # a higher p0 never certifies more, and shrinks radii: R = s(Φ⁻¹(p̲) − Φ⁻¹(p0))
    ok = (da["predict"] >= 0) & (db["predict"] >= 0)
    assert (db.loc[ok, "radius"] < da.loc[ok, "radius"]).all() and ok.any()
    assert (db["predict"] >= 0).sum() <= (da["predict"] >= 0).sum()
    c = tmp_path / "c.tsv"
    assert run_main("certify.py", *common, str(c), *flags, "--columns", "cohen").returncode == 0
    assert list(pd.read_csv(c, sep="\t").columns) == COHEN


def test_cohen_predict_counts_abstention_as_wrong(tmp_path):
    """Item 9 (locuslab code/predict.py:53-56): `correct = int(prediction == label)` with -1 on abstain and
    columns idx label predict correct time; MDDS predict_ddpm.py falls back to the clean argmax. With N = 10
    even 10 votes of 10 abstain (binomial p = 2/1024 > alpha = 0.001), so abstentions are certain."""
    flags = ["--N", "10", "--batch", "10", "--device", "cpu", "--denoiser", "none", "--skip", "10", "--max", "200"]
    c, m = tmp_path / "cohen.tsv", tmp_path / "mdds.tsv"
    assert run_main("predict_ddpm.py", "digits", "zoo:digits_cnn", "1.0", str(c), *flags, "--protocol",
                    "cohen").returncode == 0
    assert run_main("predict_ddpm.py", "digits", "zoo:digits_cnn", "1.0", str(m), *flags).returncode == 0
    dc, dm = pd.read_csv(c, sep="\t"), pd.read_csv(m, sep="\t")
    assert list(dc.columns) == ["idx", "label", "predict", "correct", "time"]
    assert list(dm.columns) == ["idx", "label", "pred0", "pred1", "correct", "time", "conf"]
    abstain = dc["predict"] == -1
    assert abstain.all()
    assert (dc.loc[abstain, "correct"] == 0).all()
    assert (dc["correct"] == (dc["predict"] == dc["label"]).astype(int)).all()
    assert (dm["pred0"] == dc["predict"]).all()                   # the same draws decide the same way
    assert (dm.loc[abstain.values, "pred1"] >= 0).all()           # MDDS: the clean prediction instead
    # both write MDDS's accuracy CSV beside the TSV: accuracy_{dataset}_{corr_type}_N{N}_{sigma}_sk.._st...csv
    csvs = sorted(p.name for p in tmp_path.glob("accuracy_*.csv"))
    assert csvs == ["accuracy_digits_all_N10_1.0_sk10_st0.csv"]


def test_cifar10c_groups_all_severities_and_csv(tmp_path):
    """Item 1: --corr_type takes MDDS's groups; each .npy is read whole (all severities) by default; one
    {corruption}.tsv per corruption and the accuracy CSV in the directory."""
    d = tmp_path / "data" / "CIFAR-10-C"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for c in ("gaussian_noise", "shot_noise", "impulse_noise"):
        np.save(d / f"{c}.npy", rng.integers(0, 256, (5 * 2, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", rng.integers(0, 10, 10).astype(np.uint8))
    out = tmp_path / "c10c"
    r = run_main("predict_ddpm.py", "cifar10c", "zoo:digits_cnn", "0.25", str(out), "--corr_type", "noise",
                 "--data_path", str(tmp_path / "data"), "--N", "10", "--batch", "10", "--device", "cpu",
                 "--denoiser", "none")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy_cifar10c_noise_N10_0.25_sk1_st0.csv", "gaussian_noise.tsv", "gaussian_noise.tsv.json",
                     "impulse_noise.tsv", "impulse_noise.tsv.json", "shot_noise.tsv", "shot_noise.tsv.json"]
    assert len(pd.read_csv(out / "shot_noise.tsv", sep="\t")) == 10             # 5 severities x 2 images
    rows = (out / "accuracy_cifar10c_noise_N10_0.25_sk1_st0.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["cifar10c_gaussian_noise", "cifar10c_shot_noise",
                                               "cifar10c_impulse_noise"]


def _imagenet_a(root, classes, per_class=1):
    from datasets import imagenet_wnids
    sub = imagenet_wnids("imagenet-a")
    for k in classes:
        for j in range(per_class):
            (root / "imagenet-a" / sub[k]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(10 * k + j).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                root / "imagenet-a" / sub[k] / f"{j}.jpg")


@pytest.fixture(scope="module")
def tiny_1k(tmp_path_factory):
    """A random 1000-class timm test_vit in our format (pixel input, its own resize)."""
    from models.classifiers import create_model, save_classifier
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("clf") / "test_vit_1k.pt")
    save_classifier(create_model("timm:test_vit", num_classes=1000).eval(), "timm:test_vit", {"num_classes": 1000},
                    path)
    return path


def test_imagenet_a_labels_and_prior_over_200(tmp_path, tiny_1k):
    """Item 2: ImageNet-A labels 0..199 (MDDS's ImageFolder), predictions over the 200 classes, the mdds
    transform applied to A/R too."""
    _imagenet_a(tmp_path, [0, 57, 199])
    out = tmp_path / "a.tsv"
    r = run_main("predict_mdds.py", "imagenet-a", tiny_1k, str(out), "--sigma25", "--N", "8", "--batch", "8",
                 "--data_path", str(tmp_path), "--device", "cpu", "--denoiser", "none")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, sep="\t")
    assert df["label"].tolist() == [0, 57, 199]
    assert df["predict"].between(0, 199).all()
    meta = json.loads((tmp_path / "a.tsv.json").read_text())
    assert meta["args"]["imagenet_transform"] == "mdds"


def mdds_prior_prediction(logits, counts, n, unif_w):
    """predict_mdds.py:173-179 with conf_con = counts / N over the dataset's n_classes (200 for A/R)."""
    conf_con = counts / n
    prior = (1 - unif_w) * conf_con + unif_w * (1. / len(conf_con))
    return int((logits + np.log(prior.clip(min=1e-20))).argmax())


def test_prior_uses_the_200_classes():
    """Item 2: with MDDS's K = 200 the prior is w/200; the 1000-way version (w/1000 over a masked head) picks
    another class here, so the class count matters."""
    from core.cascade import MultiScaleSmooth
    K, n, w = 200, 20, 0.1
    logits = np.zeros(K)
    logits[3] = 7.7                         # the clean favourite: above log(w/200) + 7.6, below log(w/1000) + 9.2
    counts = np.zeros(K)
    counts[7] = 11                          # the accepted stage's top class (>= p0 n)
    counts[3] = 0
    counts[8:17] = 1
    ref = mdds_prior_prediction(logits, counts, n, w)
    masked = np.full(1000, -np.inf)
    masked[:K] = logits
    with_1000 = mdds_prior_prediction(masked, np.concatenate([counts, np.zeros(800)]), n, w)
    assert ref != with_1000
    script = torch.tensor(sum(([c] * int(m) for c, m in enumerate(counts)), []))

    def base(x):
        return torch.nn.functional.one_hot(script[:x.shape[0]], K).float()
    ms = MultiScaleSmooth({0.25: base}, K, p0=0.5)
    res = ms.predict_detailed(torch.zeros(3, 2, 2), n, n, None, clean_logits=torch.tensor(logits), unif_w=w)
    assert res.pred0 == 7 and res.prediction == ref == 3


def test_ftcadis_one_image_per_class(tmp_path, tiny_1k):
    """Item 7: under --protocol cadis, ImageNet certifies one random val image per class (Python random
    seeded with --seed, FT-CADIS utils.sample_1_per_class_imagenet), then every --skip-th."""
    from datasets import get_dataset, imagenet_wnids, one_per_class
    wn = imagenet_wnids()
    for k in (0, 5, 9):
        for j in range(3):
            (tmp_path / "imagenet" / "val" / wn[k]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(k + 10 * j).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "imagenet" / "val" / wn[k] / f"{j}.JPEG")
    out = tmp_path / "cadis.tsv"
    r = run_main("certify.py", "imagenet", tiny_1k, str(out), "--sigmas", "0.25", "--protocol", "cadis",
                 "--skip", "1", "--N0", "4", "--N", "8", "--batch", "8", "--data_path", str(tmp_path),
                 "--device", "cpu", "--denoiser", "none", "--seed", "0")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, sep="\t")
    ds = get_dataset("imagenet", "test", str(tmp_path))
    assert df["idx"].tolist() == one_per_class(ds.targets, 1000, 0) and df["label"].tolist() == [0, 5, 9]


# each paper's script names its paper's protocol on every certify / predict / training command it prints
SCRIPT_PAPERS = {"mdds": "mdds", "ftclip": "mdds", "dds": "dds", "ftcadis": "cadis", "densepure": "densepure",
                 "cohen": "cohen", "salman": "salman"}
PROTOCOL_SCRIPTS = {"certify", "predict_ddpm", "predict_mdds", "train_clip", "finetune_diffusion"}


def paper_scripts():
    return [s for s in SCRIPTS if os.path.basename(s).split("_")[0] in SCRIPT_PAPERS]


@pytest.mark.parametrize("script", paper_scripts(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_scripts_name_their_protocol(script):
    paper = SCRIPT_PAPERS[os.path.basename(script).split("_")[0]]
    runs = [(m, list(a), shown) for m, a, shown in script_runs(script) if m in PROTOCOL_SCRIPTS]
    assert runs, f"{script} prints no certify / predict / training command"
    for module, args, shown in runs:
        given = [args[i + 1] for i, a in enumerate(args) if a == "--protocol"]
        assert given == [paper], f"{os.path.basename(script)} should pass --protocol {paper} once:\n  {shown}"


def test_max_order_through_certify(tmp_path):
    """Item 13 / pitfall 14 through certify.py: with --skip 100 --max 150, MDDS's certify.py checks max first
    (rows 0, 100); Cohen's (and DDS's, DensePure's, Salman's) loop checks skip first and, 150 not being a
    multiple of 100, never stops (rows 0, 100, 200, 300 of the 360 digits)."""
    flags = ["--sigmas", "0.5", "--denoiser", "none", "--N0", "4", "--N", "8", "--batch", "8", "--device", "cpu",
             "--skip", "100", "--max", "150"]
    for protocol, rows in (("mdds", [0, 100]), ("cohen", [0, 100, 200, 300])):
        out = tmp_path / f"{protocol}.tsv"
        r = run_main("certify.py", "digits", "zoo:digits_cnn", str(out), *flags, "--protocol", protocol)
        assert r.returncode == 0, r.stderr
        assert pd.read_csv(out, sep="\t")["idx"].tolist() == rows
