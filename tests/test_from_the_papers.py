"""docs/FROM_THE_PAPERS.md cannot rot: every command of the seed READMEs is on it, and every msrs
command on it is accepted, translated as the page says, runs on tiny files and writes the original's
columns (training: one step, or --dry-run where the recipe needs several GPUs).

The page is read, not copied: each "### ID · title" section has a "Paper:" block (the README's lines,
verbatim), a "**msrs: LABEL**" line (unchanged / script path changed / changed / setup / Python API),
the msrs block when it is not unchanged, and optional "Writes:" / "Runs as:" lines. Placeholders are
filled with files of a tiny workspace laid out at the paths the commands name.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import ROOT
from tests.test_scripts import CLEAN_ENV, check_parses, entry_commands

PAGE = Path(ROOT) / "docs" / "FROM_THE_PAPERS.md"
SEEDS = Path(ROOT) / "tests" / "data" / "seed_commands"
SALMAN_LOGS = Path(ROOT) / "tests" / "data" / "reference_results" / "salman"
LABELS = ("unchanged", "script path changed", "changed", "setup", "Python API")
DATE = "20240101_000000"

# The header each reference script writes, read from its code (the page's "Writes" must be it, and so
# must our file's): MDDS certify.py / predict_*.py, FT-CADIS certify.py, DensePure
# eval_certified_densepure.py, Salman code/certify.py (Cohen's).
REFERENCE_COLUMNS = {
    ("M", "certify.py"): "idx label predict radius r_neg correct pred_uc corr_uc stage time",
    ("M", "predict_ddpm.py"): "idx label pred0 pred1 correct time conf",
    ("M", "predict_mdds.py"): "idx label pred0 predict correct time stage c_max",
    ("F", "certify.py"): "idx label predict radius correct_num correct time",
    ("D", "eval_certified_densepure.py"): "idx label predict radius correct time",
    ("S", "code/certify.py"): "idx label predict radius correct time",
}
# msrs script -> (module with main/get_args_parser, compat entry name or None)
SCRIPTS = {"certify.py": ("certify", "certify"), "predict_ddpm.py": ("predict_ddpm", None),
           "predict_mdds.py": ("predict_mdds", None), "analyze.py": ("analyze", None),
           "eval_certified_densepure.py": ("certify", "eval_certified_densepure"),
           "train_denoiser.py": ("finetune_diffusion", "train_denoiser"),
           "test_denoiser.py": ("finetune_diffusion", "test_denoiser")}
# what makes a run take seconds (the page says so): fewer samples, CPU; MDDS's CLIP_B16 at toy size
TINY_SMOOTHING = ["--N", "16", "--N0", "8", "--batch", "16", "--device", "cpu"]


@dataclass
class Entry:
    id: str
    title: str
    paper: str
    label: str
    msrs: str | None
    writes: str | None
    runs_as: str | None


def read_page() -> list[Entry]:
    entries = []
    for sec in re.split(r"^### ", PAGE.read_text(), flags=re.M)[1:]:
        head, body = sec.split("\n", 1)
        ident, title = head.split(" · ", 1)
        paper = re.search(r"^Paper:\n```sh\n(.*?)```", body, re.S | re.M)
        label = re.search(r"^\*\*msrs: ([A-Za-z ]+?)\.?\*\*", body, re.M)
        assert paper and label, f"section {head!r}: needs a 'Paper:' ```sh block and a '**msrs: ...**' line"
        msrs = re.search(r"```bash\n(.*?)```", body, re.S)
        writes = re.search(r"^Writes: `([^`]*)`", body, re.M)
        runs_as = re.search(r"^Runs as: `([^`]*)`", body, re.M)
        entries.append(Entry(ident, title, paper.group(1), label.group(1), msrs and msrs.group(1),
                             writes and writes.group(1), runs_as and runs_as.group(1)))
    return entries


ENTRIES = read_page()


def units(block: str, join_dashes: bool = False) -> list[str]:
    """The command lines of a block: `\\` continuations joined (and, for the READMEs' blocks, lines that
    start with '-' joined to the line before: Salman's README breaks two commands without a `\\`)."""
    out: list[str] = []
    cont = False
    for line in block.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            cont = False
            continue
        piece = s[:-1].strip() if s.endswith("\\") else s
        if out and (cont or (join_dashes and s.startswith("-"))):
            out[-1] += " " + piece
        else:
            out.append(piece)
        cont = s.endswith("\\")
    return out


def run_units(e: Entry) -> list[str]:
    return units(e.msrs) if e.msrs else units(e.paper, join_dashes=True)


def is_assignment(unit: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*=\S+", unit))


def script_of(tokens: list[str]) -> str:
    return next(t for t in tokens if t.endswith((".py", ".sh")))


# commands to run: (entry, k-th command of the entry, the unit, shell variables set before it)
COMMANDS = []
for _repo in "MFDS":
    _vars: dict[str, str] = {}
    for _e in (e for e in ENTRIES if e.id[0] == _repo and e.label not in ("setup",)):
        _k = 0
        for _u in run_units(_e):
            if is_assignment(_u):
                name, value = shlex.split(_u)[0].split("=", 1)
                _vars[name] = value
            else:
                COMMANDS.append((_e, _k, _u, dict(_vars)))
                _k += 1
COMMAND_IDS = [f"{e.id}-{k}" for e, k, _, _ in COMMANDS]


# ---- the page covers the READMEs, and says what it does ----------------------------------------

def normalized(line: str) -> str:
    return " ".join(line.split())


def test_every_readme_command_is_on_the_page():
    on_page = {normalized(line) for e in ENTRIES for line in e.paper.splitlines()}
    missing = []
    for f in sorted(SEEDS.glob("*.txt")):
        for line in f.read_text().splitlines():
            if line.strip() and not line.strip().startswith("#") and normalized(line) not in on_page:
                missing.append(f"{f.name}: {line.strip()}")
    assert not missing, "README command lines with no entry on docs/FROM_THE_PAPERS.md:\n" + "\n".join(missing)
    assert len(ENTRIES) >= 20 and len(COMMANDS) >= 30


@pytest.mark.parametrize("e", ENTRIES, ids=[e.id for e in ENTRIES])
def test_label_says_what_changed(e):
    assert e.label in LABELS, f"{e.id}: label {e.label!r} is not one of {LABELS}"
    if e.label == "unchanged":
        assert e.msrs is None, f"{e.id}: an unchanged command needs no msrs block"
        return
    assert e.msrs, f"{e.id}: label {e.label!r} needs an msrs ```bash block"
    if e.label == "script path changed":
        paper, ours = units(e.paper, join_dashes=True), units(e.msrs)
        assert len(paper) == len(ours), f"{e.id}: not the same commands"
        for p, o in zip(paper, ours):
            pt, ot = shlex.split(p), shlex.split(o)
            if is_assignment(p):
                assert p == o
                continue
            i = pt.index(script_of(pt))
            assert pt[:i] + pt[i + 1:] == ot[:i] + ot[i + 1:] and pt[i] != ot[i], \
                f"{e.id}: more than the script path changed:\n  {p}\n  {o}"


# ---- the tiny workspace ---------------------------------------------------------------------------

def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"labels": rng.integers(0, 10, n).tolist(), "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"{seed}_{i}.png" for i in range(n)], "batch_label": f"batch {seed}"}


def _tiny_diffusion(image_size: int, steps: int, schedule: str, rescale: bool) -> dict:
    # enough downsamplings that the middle block's attention sees few tokens (4x4 / 7x7)
    mult = "1,1,1" if image_size <= 32 else "1,1,1,1,1,1"
    return dict(image_size=image_size, num_channels=32, num_res_blocks=0, channel_mult=mult, num_heads=1,
                attention_resolutions="", learn_sigma=True, diffusion_steps=steps, noise_schedule=schedule,
                rescale_timesteps=rescale, use_scale_shift_norm=True)


def build_workspace(root: Path) -> None:
    """Every file the page's commands read, tiny, at the paths they name (relative to `root`)."""
    from PIL import Image

    from datasets import imagenet_wnids
    from datasets.cifar import CORRUPTIONS
    from models.classifiers import create_model, save_classifier, to_mdds_clip_state_dict
    from models.diffusion import create_model_and_diffusion, save_diffusion
    from models.dncnn import create_dncnn
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def path(rel: str) -> Path:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # data (the real on-disk formats): CIFAR-10 pickles, CIFAR-10-C / CIFAR-10.1 .npy, ImageNet val JPEGs
    for name, obj in [*((f"data_batch_{i}", _cifar_batch(3, i)) for i in range(1, 6)),
                      ("test_batch", _cifar_batch(3, 0)), ("batches.meta", {"label_names": [str(i) for i in range(10)]})]:
        with open(path(f"datasets/cifar-10-batches-py/{name}"), "wb") as f:
            pickle.dump(obj, f)
    for c in CORRUPTIONS:
        np.save(path(f"datasets/CIFAR-10-C/{c}.npy"), rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    np.save(path("datasets/CIFAR-10-C/labels.npy"), np.arange(5, dtype=np.uint8))
    np.save(path("datasets/cifar10.1_v6_data.npy"), rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    np.save(path("datasets/cifar10.1_v6_labels.npy"), np.array([1, 7], dtype=np.int64))
    wnid = imagenet_wnids()[3]
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
        path(f"datasets/imagenet/val/{wnid}/ILSVRC2012_val_00000001.JPEG"))

    # classifiers: MDDS's DeepSpeed file (CLIP_B16 keys, at toy size), Salman's Cohen-layout ResNet,
    # msrs files where a paper's checkpoint is ours or a named off-the-shelf model
    clip = create_model("CLIP_B16_tiny", num_classes=10).eval()
    sd = to_mdds_clip_state_dict(clip.state_dict())
    torch.save({"module": sd, "model_ema": sd, "epoch": 0, "args": argparse.Namespace(model="CLIP_B16_tiny")},
               path(f"OUTPUT/CLIP_ft/CLIP_openai/cifar10/FT100_6E4_D06_NC/base/{DATE}/checkpoint-best/"
                    "mp_rank_00_model_states.pt"))
    resnet = create_model("cifar_resnet20", num_classes=10)
    torch.save({"arch": "cifar_resnet20", "epoch": 90, "state_dict": {
        "1.module." + k[2:]: v for k, v in resnet.state_dict().items()}},
        path("pretrained_models/cifar10_classifiers/ResNet110_90epochs/noise_0.00/checkpoint.pth.tar"))
    for rel, classes in (("checkpoints/vit_b16_cifar10.pt", 10), ("ftcadis/cifar10/checkpoint-best.pt", 10),
                         ("ftcadis/imagenet/checkpoint-best.pt", 1000)):
        save_classifier(create_model("digits_cnn", num_classes=classes), "digits_cnn", {"num_classes": classes},
                        str(path(rel)))
    # denoisers: Salman's DnCNN layout; diffusion models in msrs's self-describing format at the MDDS paths
    torch.save({"arch": "cifar_dncnn", "epoch": 90, "state_dict": create_dncnn("cifar_dncnn").state_dict(),
                "optimizer": {}},
               path("pretrained_models/trained_denoisers/cifar10/mse_obj/dncnn/epochs_90/noise_0.25/checkpoint.pth.tar"))
    for rel, kw in (("OUTPUT/denoising_models/cifar10_uncond_50M_500K.pt", _tiny_diffusion(32, 4000, "cosine", True)),
                    ("OUTPUT/denoising_models/imagenet/256x256_diffusion_uncond.pt",
                     _tiny_diffusion(256, 1000, "linear", False))):
        model, _ = create_model_and_diffusion(**kw)
        save_diffusion(model, kw, str(path(rel)))
    # Salman et al.'s published certification logs, where their data/ keeps them
    for s in ("0.12", "0.25", "0.50", "1.00"):
        src = SALMAN_LOGS / f"cifar10_whitebox_cohen_resnet110_noise_{s}_sigma_{s}_N10000.tsv"
        path(f"data/certify/cifar10/no_denoiser/MODEL_resnet110_90epochs/noise_{s}/test_N10000/sigma_{s}").write_bytes(
            src.read_bytes())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("papers_workspace")
    build_workspace(root)
    return root


@pytest.fixture
def workdir(workspace, tmp_path, monkeypatch) -> Path:
    """A fresh folder holding (links to) every workspace file: outputs never collide between commands."""
    for f in workspace.rglob("*"):
        if f.is_file():
            link = tmp_path / f.relative_to(workspace)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, link)
    monkeypatch.chdir(tmp_path)
    for var in ("CKPT_DIR", "VIT_CIFAR10", "VIT_IMAGENET", "BEIT_IMAGENET", "RESNET110_CIFAR10"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


# ---- from a unit of the page to a call --------------------------------------------------------------

def placeholders(e: Entry) -> dict[str, str]:
    fill = {"[DATE]": DATE, "[PATH_TO_DATA]": "datasets", "[NUM OF GPUS]": "4"}
    if e.id == "F2":
        fill["[CHECKPOINT LOCATION]"] = "checkpoints/ftcadis_cifar10/sigma_1.00/checkpoint-last.pt"
    elif e.id in ("F3", "F4"):
        dataset = "cifar10" if e.id == "F3" else "imagenet"
        fill["[CHECKPOINT LOCATION]"] = f"ftcadis/{dataset}/checkpoint-best.pt"
        fill["[OUTPUT LOCATION]"] = f"out/ftcadis_{dataset}.tsv"
    return fill


def tokens(e: Entry, unit: str, shell_vars: dict[str, str]) -> list[str]:
    """The argv the shell would pass: placeholders filled, $VAR expanded (an unset one is empty)."""
    for k, v in placeholders(e).items():
        unit = unit.replace(k, v)
    expand = lambda t: re.sub(r"\$\{?(\w+)\}?", lambda m: shell_vars.get(m.group(1), ""), t)  # noqa: E731
    return [expand(t) for t in shlex.split(unit)]


@dataclass
class Call:
    env: dict[str, str]
    program: str                  # python / bash
    script: str                   # certify.py, scripts/ft_clip/cifar10.sh, -m core.blackbox
    args: list[str]


def call_of(argv: list[str]) -> Call:
    env = {}
    while re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
        k, v = argv.pop(0).split("=", 1)
        env[k] = v
    if argv[1] == "-m":
        return Call(env, argv[0], f"-m {argv[2]}", argv[3:])
    return Call(env, argv[0], argv[1], argv[2:])


def translated(script: str, args: list[str]):
    """(module, [Namespace...]) for a python command of the page, read as the script reads it."""
    from core.runs import compat
    module, entry = SCRIPTS[script]
    parser = importlib.import_module(module).get_args_parser()
    if entry is None:
        return module, [parser.parse_args(args)]
    return module, compat.parse(entry, parser, args)[1]


def tiny(e: Entry, call: Call) -> list[str]:
    args = list(call.args)
    if e.id[0] == "M":
        args = ["CLIP_B16_tiny" if a == "CLIP_B16" and args[i - 1] == "--arch" else a for i, a in enumerate(args)]
    if "imagenet" in args:                     # a 224-pixel UNet pass is the slow part: fewer samples
        return args + ["--N", "4", "--N0", "2", "--batch", "6", "--device", "cpu"]
    extra = {"certify.py": TINY_SMOOTHING, "eval_certified_densepure.py": TINY_SMOOTHING,
             "predict_ddpm.py": ["--N", "16", "--batch", "16", "--device", "cpu"],
             "predict_mdds.py": ["--N", "16", "--batch", "16", "--device", "cpu"],
             "train_denoiser.py": ["--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu"],
             "test_denoiser.py": ["--workers", "0", "--device", "cpu"]}.get(call.script, [])
    if "cifar10c" in args:                     # a file per corruption: the noise group's 3, one image each
        extra = extra + ["--corr_type", "noise", "--max", "1"]
    return args + extra


def header(path: str) -> str:
    with open(path) as f:
        return " ".join(f.readline().rstrip("\n").split("\t"))


# ---- every command: accepted, translated as the page says ----------------------------------------

@pytest.mark.parametrize("e,k,unit,shell_vars", COMMANDS, ids=COMMAND_IDS)
def test_command_accepted(e, k, unit, shell_vars, workdir):
    from core.runs import compat
    call = call_of(tokens(e, unit, shell_vars))
    shown = f"{e.id}: {unit}"
    if call.program == "bash":
        for module, args, line in dry_run(call)[0]:
            check_parses(module, args, line)
        return
    if call.script == "-m core.blackbox":
        from core.runs.blackbox import get_args_parser
        get_args_parser().parse_args(call.args)
        return
    module, entry = SCRIPTS[call.script]
    if entry is None:
        check_parses(module, call.args, shown)
        return
    t = compat.translate(entry, call.args, importlib.import_module(module).get_args_parser())
    for run in t.runs:
        check_parses(module, run, shown)
    if e.runs_as:
        assert ["python", f"{t.entry}.py", *t.runs[0]] == tokens(e, e.runs_as, shell_vars), \
            f"{e.id}: the page's 'Runs as' line is not what msrs runs"


# ---- the ones that run: end to end on the tiny workspace ---------------------------------------------

RUNNABLE = [(e, k, u, v) for e, k, u, v in COMMANDS
            if e.label != "Python API" and not u.lstrip().startswith(("bash", "DATA="))]


@pytest.mark.parametrize("e,k,unit,shell_vars", RUNNABLE, ids=[f"{e.id}-{k}" for e, k, _, _ in RUNNABLE])
def test_command_runs(e, k, unit, shell_vars, workdir, capsys):
    call = call_of(tokens(e, unit, shell_vars))
    module, nss = translated(call.script, tiny(e, call))
    mod = importlib.import_module(module)
    for ns in nss:
        mod.main(ns)
    out = capsys.readouterr().out
    paper_script = script_of(shlex.split([u for u in units(e.paper, True) if not is_assignment(u)][k]))
    if call.script in ("certify.py", "eval_certified_densepure.py", "predict_ddpm.py", "predict_mdds.py"):
        expected = REFERENCE_COLUMNS[(e.id[0], paper_script)]
        assert e.writes == expected, f"{e.id}: the page's 'Writes' is not the original's columns"
        for ns in nss:
            files = sorted(Path(ns.outfile).glob("*.tsv")) if Path(ns.outfile).is_dir() else [Path(ns.outfile)]
            assert files, f"{e.id}: nothing written at {ns.outfile}"
            for f in files:
                assert header(str(f)) == expected, f"{e.id}: {f} has columns {header(str(f))!r}, not the original's"
                df = pd.read_csv(f, sep="\t")
                assert len(df) > 0
                if "correct_num" in df:        # FT-CADIS: analyze.py's `df["correct"] & (df["radius"] >= r)`
                    assert df["correct"].dtype == bool and (df["correct_num"] == df["correct"].cumsum()).all()
    elif call.script == "train_denoiser.py":
        ckpt = torch.load(Path(nss[0].output_dir) / "checkpoint.pth.tar", weights_only=True)
        assert {"epoch", "arch", "state_dict", "optimizer"} <= set(ckpt) and ckpt["arch"] == "cifar_dncnn"
        assert ckpt["epoch"] == 1
    elif call.script == "test_denoiser.py":
        # the workspace DnCNN is Salman's fresh init, whose last conv is 0: the identity, so the MSE is the
        # noise's sigma^2 (within sampling error) and the accuracies with and without it agree
        mse = float(re.search(r"^MSE of the denoiser is (\S+)$", out, re.M).group(1))
        with_ = re.search(r"^Accuracy WITH denoiser at noise of 0.25 is (\S+)$", out, re.M).group(1)
        without = re.search(r"^Accuracy WITHOUT denoiser at noise of 0.25 is (\S+)$", out, re.M).group(1)
        assert mse == pytest.approx(0.25 ** 2, rel=0.1) and with_ == without
        assert (Path(nss[0].output_dir) / "clean.png").is_file() and (Path(nss[0].output_dir) / "denoised.png").is_file()
    elif call.script == "analyze.py":
        published = SALMAN_LOGS / "published_analysis_latex_cifar10_certified_outer_envelop_whitebox.tex"
        assert out == published.read_text(), f"{e.id}: not their published table"
    else:
        pytest.fail(f"{e.id}: no check for {call.script}")


# ---- the training scripts: --dry-run, every printed command accepted ------------------------------------

def dry_run(call: Call) -> tuple[list[tuple[str, list[str], str]], str]:
    """(module, argv, printed line) of each entry-script command a script's --dry-run prints, and its stdout."""
    env = dict(CLEAN_ENV, CKPT_DIR="/nonexistent/ckpts", **call.env)
    r = subprocess.run(["bash", call.script, *call.args, "--dry-run"], check=False, cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"{call.script} --dry-run failed:\n{r.stderr}"
    runs = [(m, a, line[2:]) for line in r.stdout.splitlines() if line.startswith("+ ")
            for m, a in entry_commands(shlex.split(line[2:]))]
    assert runs, f"{call.script} printed no command"
    return runs, r.stdout


@pytest.mark.parametrize("e,k,unit,shell_vars", [c for c in COMMANDS if c[0].id in ("M1", "F1", "F2")],
                         ids=[f"{c[0].id}-{c[1]}" for c in COMMANDS if c[0].id in ("M1", "F1", "F2")])
def test_training_script_dry_run(e, k, unit, shell_vars, workdir):
    from core.train.classifier import check_args
    from train_clip import get_args_parser
    call = call_of(tokens(e, unit, shell_vars))
    runs, stdout = dry_run(call)
    train = [(a, line) for m, a, line in runs if m == "train_clip" and "--eval" not in a]
    assert len(train) == 1, f"{e.id}: expected one training command"
    args, line = train[0]
    ns = get_args_parser().parse_args(args)
    check_args(ns)
    if e.id == "M1":
        dataset = "cifar10" if "cifar10" in call.script else "imagenet"
        assert ns.data_path == call.env["DATA"]
        key = "cifar10/FT100_6E4_D06_NC" if dataset == "cifar10" else "imagenet/FT50_6E4_P16"
        assert re.fullmatch(rf"OUTPUT/CLIP_ft/CLIP_openai/{key}/base/\d{{8}}_\d{{6}}", ns.output_dir), ns.output_dir
        return
    # FT-CADIS: their flags, and their effective batch rule ngpus x batch x accum_iter // num_noises
    flags = dict(zip(call.args, call.args[1:]))                         # flag -> the token after it
    ngpus, batch, accum = int(flags["--ngpus"]), int(flags["--batch"]), int(flags["--accum_iter"])
    world = int(re.search(r"--nproc_per_node=(\d+)", line).group(1))
    assert world == ngpus and ns.batch_size == batch and ns.update_freq == accum
    assert ns.sigma == float(flags["--noise"]) and ns.blr == float(flags["--blr"]) and ns.lbd == float(flags["--lbd"])
    rule = ngpus * batch * accum // ns.num_noises
    printed = int(re.search(r"^# effective batch (\d+)", stdout, re.M).group(1))
    ours = (ns.batch_size // ns.num_noises) * ns.update_freq * world       # what train_clip.py computes
    assert printed == rule == ours == 128
    if e.id == "F2":
        assert ns.load_from == placeholders(e)["[CHECKPOINT LOCATION]"]
        assert ns.output_dir == os.path.dirname(ns.load_from)


@pytest.mark.parametrize("script,flags,rule", [
    ("scripts/ftcadis_cifar10.sh", "--ngpus 2 --noise 0.50 --batch 16 --accum_iter 3 --num_noises 2", 48),
    ("scripts/ftcadis_imagenet.sh", "--ngpus 1 --noise 0.25 --batch 12 --accum_iter 5 --num_noises 4", 15),
    ("scripts/ftcadis_cifar10.sh", "--ngpus 8 --noise 1.00 --batch 32", 128),   # no --accum_iter: 16/GPUS
])
def test_ftcadis_effective_batch_rule(script, flags, rule, workdir):
    """ngpus x batch x accum_iter // num_noises (their README), printed and what train_clip.py steps with."""
    from train_clip import get_args_parser
    runs, stdout = dry_run(Call({}, "bash", script, shlex.split(flags)))
    ((args, line),) = [(a, line) for m, a, line in runs if m == "train_clip" and "--eval" not in a]
    ns = get_args_parser().parse_args(args)
    world = int(re.search(r"--nproc_per_node=(\d+)", line).group(1)) if "--nproc_per_node" in line else 1
    assert world == int(flags.split()[1])
    assert int(re.search(r"^# effective batch (\d+)", stdout, re.M).group(1)) == rule
    assert (ns.batch_size // ns.num_noises) * ns.update_freq * world == rule


# ---- the same rows as the msrs-native command ------------------------------------------------------------

@pytest.mark.parametrize("ident", ["F3", "S1"])
def test_paper_form_gives_the_native_rows(ident, workspace, workdir, tmp_path_factory, monkeypatch):
    """The paper's certify line and the native command of its "Runs as" line, same seed: same rows."""
    import certify
    e, _, unit, shell_vars = next(c for c in COMMANDS if c[0].id == ident)
    call = call_of(tokens(e, unit, shell_vars))
    _, nss = translated(call.script, tiny(e, call))
    certify.main(nss[0])
    ours = pd.read_csv(workdir / nss[0].outfile, sep="\t")
    native_dir = tmp_path_factory.mktemp("native")           # same relative paths, another folder
    for f in workspace.rglob("*"):
        if f.is_file():
            (native_dir / f.relative_to(workspace)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, native_dir / f.relative_to(workspace))
    monkeypatch.chdir(native_dir)
    native = tokens(e, e.runs_as, shell_vars)
    assert native[:2] == ["python", "certify.py"]
    ns = certify.get_args_parser().parse_args(native[2:] + TINY_SMOOTHING)   # the native parser alone
    certify.main(ns)
    theirs = pd.read_csv(native_dir / ns.outfile, sep="\t")
    assert list(ours.columns) == list(theirs.columns) and len(ours) > 0
    pd.testing.assert_frame_equal(ours.drop(columns="time"), theirs.drop(columns="time"))


def test_setup_commands_exist():
    for e in (e for e in ENTRIES if e.label == "setup"):
        for u in units(e.msrs):
            argv = shlex.split(u)
            assert argv[0] == "bash" and (Path(ROOT) / argv[1]).is_file(), f"{e.id}: {u}"
            r = subprocess.run(["bash", "-n", argv[1]], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
