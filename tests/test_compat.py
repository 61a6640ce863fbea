"""core/compat.py: the papers' command lines mapped to msrs's native argv (pure argv logic).

Defaults and flag names pinned here were read from the reference scripts' argparse code:
FT-CADIS certify.py, Salman et al. code/certify.py and code/train_denoiser.py, DensePure
eval_certified_densepure.py. The end-to-end runs of the README lines are tests/test_from_the_papers.py.
"""
from __future__ import annotations

import argparse
import shlex

import pytest

import certify
import finetune_diffusion
from core.runs import compat
from core.errors import MsrsError

CERTIFY = certify.get_args_parser()
FINETUNE = finetune_diffusion.get_args_parser()


def parser_of(entry: str):
    return FINETUNE if entry in ("train_denoiser", "test_denoiser") else CERTIFY


def runs(entry: str, line: str) -> list[list[str]]:
    return compat.translate(entry, shlex.split(line), parser_of(entry)).runs


def native(entry: str, line: str) -> list:
    return compat.parse(entry, parser_of(entry), shlex.split(line))[1]


def without_protocol(argv: list[str]) -> list[str]:
    if "--protocol" in argv:
        i = argv.index("--protocol")
        return argv[:i] + argv[i + 2:]
    return argv


@pytest.fixture
def named_vit(tmp_path, monkeypatch):
    """The file FT-CADIS's --off-the-shelf / DensePure's --advanced_classifier vit read (VIT_CIFAR10)."""
    path = tmp_path / "vit.pt"
    path.write_bytes(b"")
    monkeypatch.setenv("VIT_CIFAR10", str(path))
    return str(path)


# ---- the native (MDDS) form ------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "cifar10 CKPT OUT.tsv --sigma25 --sigma50 --sigma100 --N=10000 --skip=1 --batch 5000 --arch CLIP_B16",
    "digits zoo:digits_cnn out.tsv --sigmas 0.25 --denoiser zoo:digits_ddpm --seed 3",
    "--help",
])
def test_native_form_passes_through_unchanged(line):
    t = compat.translate("certify", shlex.split(line), CERTIFY)
    assert t.form == "native" and t.runs == [shlex.split(line)] and t.describe("certify.py") == []


# ---- FT-CADIS certify.py -----------------------------------------------------------------------------

def test_ftcadis_certify_maps_every_flag():
    (r,) = runs("certify", "--seed 3 --dataset cifar10 --sigma 0.50 --skip 2 --N0 50 --N 1000 --batch_size 400 "
                           "--alpha 0.01 --finetuned_path CKPT --outfile OUT")
    assert without_protocol(r) == ["cifar10", "CKPT", "OUT", "--sigmas", "0.5", "--seed", "3", "--skip", "2",
                                   "--N0", "50", "--N", "1000", "--batch", "400", "--alpha", "0.01",
                                   "--arch", "timm:vit_base_patch16_224", "--columns", "cadis"]
    (ns,) = native("certify", "--dataset imagenet --sigma 0.25 --finetuned_path C --outfile O")
    assert (ns.dataset, ns.classifier, ns.outfile, ns.sigmas, ns.batch) == ("imagenet", "C", "O", [0.25], "1000")
    assert ns.arch == "timm:vit_base_patch16_clip_384.laion2b_ft_in12k_in1k"
    assert ns.paper_form == "ftcadis"


def test_ftcadis_reference_defaults():
    """FT-CADIS certify.py: --seed 0, --skip 10, --N0 100, --N 100000, --batch_size 1000, --alpha 0.001."""
    (ns,) = native("certify", "--dataset cifar10 --sigma 0.5 --finetuned_path C --outfile O")
    assert (ns.seed, ns.skip, ns.N0, ns.N, ns.batch, ns.alpha) == (0, 10, 100, 100000, "1000", 0.001)


def test_ftcadis_readme_spellings():
    """`-seed 0` (the README's ImageNet line) is --seed; --batch (an abbreviation their argparse takes)
    is --batch_size, the later one winning as in argparse."""
    (ns,) = native("certify", "-seed 7 --dataset cifar10 --sigma 0.5 --batch_size 400 --batch 32 "
                              "--finetuned_path C --outfile O")
    assert ns.seed == 7 and ns.batch == "32"


def test_ftcadis_off_the_shelf(named_vit, monkeypatch, tmp_path):
    for line in ("--dataset cifar10 --sigma 0.5 --off-the-shelf --outfile O", "--dataset cifar10 --sigma 0.5 --outfile O --off-the-shelf"):
        (r,) = runs("certify", line)
        assert r[:3] == ["cifar10", named_vit, "O"]
    with pytest.raises(MsrsError, match="not both"):
        runs("certify", "--dataset cifar10 --sigma 0.5 --off-the-shelf --finetuned_path C --outfile O")
    monkeypatch.setenv("VIT_CIFAR10", str(tmp_path / "missing.pt"))
    with pytest.raises(MsrsError, match="VIT_CIFAR10=PATH.*never downloads"):
        runs("certify", "--dataset cifar10 --sigma 0.5 --off-the-shelf --outfile O")
    monkeypatch.delenv("VIT_CIFAR10")
    monkeypatch.setenv("CKPT_DIR", str(tmp_path))
    with pytest.raises(MsrsError, match=str(tmp_path / "vit_b16_cifar10.pt")):  # scripts/lib.sh's default file
        runs("certify", "--dataset cifar10 --sigma 0.5 --off-the-shelf --outfile O")


@pytest.mark.parametrize("missing", ["--dataset cifar10", "--sigma 0.5", "--outfile O"])
def test_ftcadis_required(missing):
    line = "--dataset cifar10 --sigma 0.5 --outfile O --finetuned_path C".replace(missing, "")
    with pytest.raises(MsrsError, match=missing.split()[0] + " is required"):
        runs("certify", line)


# ---- Salman et al. code/certify.py -------------------------------------------------------------------

def test_salman_certify_maps_every_flag_and_defaults():
    (r,) = runs("certify", "--dataset cifar10 --base_classifier CLF --sigma 0.25 --outfile OUT --skip 20 --denoiser DEN")
    assert without_protocol(r) == ["cifar10", "CLF", "OUT", "--sigmas", "0.25", "--batch", "1000", "--skip", "20",
                                   "--max", "-1", "--split", "test", "--N0", "100", "--N", "10000",
                                   "--alpha", "0.001", "--denoiser", "DEN"]
    (ns,) = native("certify", "--dataset cifar10 --base_classifier CLF --sigma 0.25 --outfile OUT")
    assert ns.denoiser == "none" and ns.N == 10000 and ns.skip == 1    # theirs: no denoiser unless given
    (ns,) = native("certify", "--dataset cifar10 --base_classifier CLF --sigma 0.25 --outfile OUT --max 40 "
                              "--split train --batch 64 --N0 10 --N 200 --alpha 0.05")
    assert (ns.max, ns.split, ns.batch, ns.N0, ns.N, ns.alpha) == (40, "train", "64", 10, 200, 0.05)


def test_salman_torchvision_names_are_refused():
    with pytest.raises(MsrsError, match="never downloads.*--arch tv:resnet50"):
        runs("certify", "--dataset imagenet --base_classifier resnet50 --sigma 0.25 --outfile O")


def test_no_effect_flags_are_named(capsys):
    t = compat.translate("certify", shlex.split("--dataset cifar10 --base_classifier C --sigma 0.25 --outfile O "
                                                "--philly_imagenet_path /p"), CERTIFY)
    assert t.no_effect == ["--philly_imagenet_path"]
    lines = t.describe("certify.py")
    assert lines[0].startswith("certify.py: Salman et al. command line, run as: python certify.py cifar10 C O --sigmas")
    assert "no effect in msrs: --philly_imagenet_path" in lines[1]


# ---- native flags beside a paper's form; what may not be mixed ----------------------------------------

def test_native_optional_flags_are_kept_and_win():
    (ns,) = native("certify", "--dataset cifar10 --sigma 0.5 --finetuned_path C --outfile O --device cpu "
                              "--arch CLIP_B16 --data_path data/cifar10 --denoiser D.pt --resume --N 50")
    assert (ns.device, ns.arch, ns.data_path, ns.denoiser, ns.resume, ns.N) == \
        ("cpu", "CLIP_B16", "data/cifar10", "D.pt", True, 50)


@pytest.mark.parametrize("line,match", [
    ("cifar10 CLF OUT --sigma 0.5", "positional form .* cannot be mixed"),
    ("--dataset cifar10 --sigma 0.5 --outfile O --finetuned_path C cifar10", "cannot be mixed in one call: got cifar10"),
    ("cifar10 CLF OUT --sigma25 --base_classifier C", "cannot be mixed"),
    ("--dataset cifar10 --sigma 0.5 --outfile O --finetuned_path C --sigma25", "--sigma25 is msrs's own form"),
    ("--dataset cifar10 --sigma 0.5 --outfile O --base_classifier C --sigmas 0.25 0.5", "--sigmas is msrs's own form"),
    ("--dataset cifar10 --sigma 0.5 --outfile O --base_classifier C --finetuned_path D", "two papers' forms"),
    ("--dataset cifar10 --sigma 0.5 --outfile O", "name the classifier with --finetuned_path"),
])
def test_mixing_forms_is_one_clear_error(line, match):
    with pytest.raises(MsrsError, match=match):
        runs("certify", line)


def test_unknown_flag_is_argparse_own_error(capsys):
    with pytest.raises(SystemExit) as e:
        runs("certify", "--dataset cifar10 --sigma 0.5 --outfile O --finetuned_path C --bogus 3")
    assert e.value.code == 2 and "unrecognized arguments: --bogus 3" in capsys.readouterr().err


def test_run_cli_prints_one_line_and_exits_2(capsys):
    from core.runs.parsers import run_cli
    with pytest.raises(SystemExit) as e:
        run_cli(certify.main, CERTIFY, ["digits", "C", "O", "--sigma", "0.5"], form="certify")
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "cannot be mixed" in err


# ---- DensePure eval_certified_densepure.py -----------------------------------------------------------

DP = ("--exp exp --config cifar10.yml --domain cifar10 --seed 0 --diffusion_type ddpm --lp_norm L2 --outfile res/o "
      "--sigma 0.25 --N 1000 --N0 10 --certified_batch 100 --advanced_classifier vit --use_t_steps --num_t_steps 2")


def test_densepure_maps_every_flag(named_vit):
    (r,) = runs("eval_certified_densepure", DP + " --sample_id 0 --use_id --certify_mode purify --reverse_seed 0")
    assert without_protocol(r) == [
        "cifar10", named_vit, "res/o_diffpure", "--sigmas", "0.25", "--seed", "0", "--N0", "10", "--N", "1000",
        "--alpha", "0.001", "--batch", "100", "--start", "0", "--skip", "1", "--max", "1",
        "--arch", "timm:vit_base_patch16_224", "--num_t_steps", "2", "--reverse_seeds", "1"]


def test_densepure_reference_defaults(named_vit):
    """eval_certified_densepure.py: --seed 1234, --skip 100, --max -1, --N0 100, --N 5000, --sigma 0.5,
    --certified_batch 400, --outfile results/test5000, --certify_mode purify."""
    (ns,) = native("eval_certified_densepure", "--config c.yml --domain cifar10 --advanced_classifier vit --use_t_steps "
                                               "--num_t_steps 3")
    assert (ns.seed, ns.skip, ns.max, ns.N0, ns.N, ns.sigmas, ns.batch, ns.outfile, ns.num_t_steps) == \
        (1234, 100, -1, 100, 5000, [0.5], "400", "results/test5000_diffpure", 3)


@pytest.mark.parametrize("ids,expect", [("7", ["--start", "7", "--skip", "1", "--max", "8"]),
                                        ("0 20 40 60", ["--start", "0", "--skip", "20", "--max", "61"]),
                                        ("40 20 0", ["--start", "0", "--skip", "20", "--max", "41"])])
def test_densepure_sample_ids(named_vit, ids, expect):
    (r,) = runs("eval_certified_densepure", DP + f" --use_id --sample_id {ids}")
    i = r.index("--start")
    assert r[i:i + 6] == expect


@pytest.mark.parametrize("ids", ["0 5 20", "10 30 50"])
def test_densepure_sample_ids_msrs_cannot_select(named_vit, ids):
    with pytest.raises(MsrsError, match="arithmetic run"):
        runs("eval_certified_densepure", DP + f" --use_id --sample_id {ids}")


def test_densepure_certify_modes(named_vit):
    base, purify = runs("eval_certified_densepure", DP + " --certify_mode both")
    assert base[2] == "res/o" and base[base.index("--denoiser") + 1] == "none" and "--num_t_steps" not in base
    assert purify[2] == "res/o_diffpure" and "--denoiser" not in purify
    (one,) = runs("eval_certified_densepure", DP.replace("--use_t_steps --num_t_steps 2", "--use_one_step"))
    assert one[one.index("--num_t_steps") + 1] == "1"


@pytest.mark.parametrize("change,match", [
    (("--use_t_steps --num_t_steps 2", "--use_t_steps --num_t_steps 1"), "fails in DensePure itself"),
    (("--use_t_steps --num_t_steps 2", ""), "full reverse chain"),
    (("--diffusion_type ddpm", "--diffusion_type guided-ddpm"), "--diffusion_type ddpm"),
    (("--domain cifar10", "--domain celebahq"), "cifar10 or imagenet"),
    (("--advanced_classifier vit", "--advanced_classifier cifar-wrn"), "--classifier PATH"),
    (("--lp_norm L2", "--lp_norm L2 --t_plus 3"), "--t_plus"),
    (("--lp_norm L2", "--lp_norm L2 --use_clustering"), "--use_clustering"),
])
def test_densepure_unsupported_is_an_error(named_vit, change, match):
    with pytest.raises(MsrsError, match=match):
        runs("eval_certified_densepure", DP.replace(*change))


def test_densepure_own_classifier_and_notes(named_vit):
    t = compat.translate("eval_certified_densepure", shlex.split(
        DP.replace("--advanced_classifier vit", "--classifier my.pt --arch tv:resnet18") + " --data_seed 0 --save_predictions"),
        CERTIFY)
    (r,) = t.runs
    assert r[1] == "my.pt" and r[r.index("--arch") + 1] == "tv:resnet18"
    assert t.no_effect == ["--config", "--exp", "--lp_norm", "--save_predictions", "--data_seed"]


# ---- Salman et al. code/train_denoiser.py ---------------------------------------------------------------

def test_train_denoiser_maps_every_flag_and_defaults():
    """train_denoiser.py: --epochs 90, --batch 256, --lr 1e-3, --lr_step_size 30, --gamma 0.1, --momentum 0.9,
    --weight-decay 1e-4, --optimizer Adam, --start-sgd-epoch 50, --start-sgd-lr 1e-3, --workers 4."""
    (ns,) = native("train_denoiser", "--dataset cifar10 --arch cifar_dncnn --outdir D --noise 0.25")
    assert (ns.mode, ns.dataset, ns.arch, ns.output_dir, ns.noise_sd, ns.objective) == \
        ("dncnn", "cifar10", "cifar_dncnn", "D", 0.25, "mse")
    assert (ns.epochs, ns.batch_size, ns.lr, ns.lr_step_size, ns.gamma, ns.momentum, ns.weight_decay, ns.optimizer,
            ns.start_sgd_epoch, ns.start_sgd_lr, ns.num_workers) == (90, 256, 1e-3, 30, 0.1, 0.9, 1e-4, "Adam", 50,
                                                                     1e-3, 4)
    (ns,) = native("train_denoiser", "--dataset cifar10 --arch cifar_dncnn --outdir D --noise_sd 0.5 --objective "
                                     "stability --classifier C --pretrained-denoiser P --wd 0 --learning-rate 0.01 "
                                     "--resume --optimizer AdamThenSGD --start-sgd-epoch 5")
    assert (ns.objective, ns.classifier, ns.pretrained_denoiser, ns.weight_decay, ns.lr, ns.resume, ns.optimizer,
            ns.start_sgd_epoch) == ("stability", "C", "P", 0.0, 0.01, "auto", "AdamThenSGD", 5)


@pytest.mark.parametrize("extra,match", [("--mode mdds", "--mode is msrs's own form"),
                                         ("--sigma25", "--sigma25 is msrs's own form"),
                                         ("cifar10", "cannot be mixed")])
def test_train_denoiser_mixing(extra, match):
    with pytest.raises(MsrsError, match=match):
        runs("train_denoiser", "--dataset cifar10 --arch cifar_dncnn --outdir D --noise 0.25 " + extra)


# ---- the thin scripts named after the papers' ------------------------------------------------------------

def test_thin_scripts_read_their_paper_form():
    from tests.conftest import run_script
    r = run_script("eval_certified_densepure.py", "--config", "cifar10.yml", "--domain", "cifar10", "stray")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "cannot be mixed" in r.stderr
    r = run_script("train_denoiser.py", "--help")
    assert r.returncode == 0 and "Salman et al.'s command line" in r.stdout and "--noise_sd" in r.stdout


# ---- Salman et al. code/test_denoiser.py --------------------------------------------------------------

def test_test_denoiser_maps_every_flag_and_defaults():
    """test_denoiser.py: --outdir tmp_out/, --workers 4, --batch 256, --noise_sd 0 (--noise), --test-subset."""
    (ns,) = native("test_denoiser", "--dataset cifar10 --denoiser D.pth.tar --clf C.pth.tar --noise 0.25")
    assert (ns.mode, ns.eval, ns.dataset, ns.pretrained_denoiser, ns.classifier, ns.noise_sd, ns.output_dir,
            ns.num_workers, ns.batch_size, ns.eval_max) == ("dncnn", True, "cifar10", "D.pth.tar", "C.pth.tar", 0.25,
                                                           "tmp_out/", 4, 256, 0)
    (ns,) = native("test_denoiser", "--dataset imagenet --denoiser D --clf '' --test-subset --outdir o --batch 8")
    assert (ns.classifier, ns.eval_max, ns.output_dir, ns.batch_size) == (None, 500, "o", 8)
    with pytest.raises(MsrsError, match="--clf is required"):
        runs("test_denoiser", "--dataset cifar10 --denoiser D")


# ---- each paper's form selects its protocol, unless the user names one -------------------------------

FORM_LINES = {
    "ftcadis": ("certify", "--dataset cifar10 --sigma 0.5 --finetuned_path C --outfile O"),
    "salman": ("certify", "--dataset cifar10 --base_classifier C --sigma 0.25 --outfile O"),
    "densepure": ("eval_certified_densepure", DP),
    "salman_train": ("train_denoiser", "--dataset cifar10 --arch cifar_dncnn --outdir D --noise 0.25"),
    "salman_test": ("test_denoiser", "--dataset cifar10 --denoiser D --clf C --noise 0.25"),
}


def test_form_protocols_are_the_papers():
    """The table's data: FT-CADIS -> cadis, DensePure -> densepure, Salman et al. -> salman (names of --protocol)."""
    from core.runs.protocols import PROTOCOLS
    assert {k: f.protocol for k, f in compat.FORMS.items()} == {
        "ftcadis": "cadis", "salman": "salman", "densepure": "densepure", "salman_train": "salman",
        "salman_test": "salman"}
    assert {f.protocol for f in compat.FORMS.values()} <= set(PROTOCOLS)


@pytest.mark.parametrize("name", list(FORM_LINES))
def test_paper_form_selects_its_protocol_unless_told(name, named_vit):
    entry, line = FORM_LINES[name]
    for ns in native(entry, line):
        assert ns.protocol == compat.FORMS[name].protocol
    for given in (["--protocol", "mdds"], ["--protocol=dds"]):
        for r, ns in zip(runs(entry, line + " " + shlex.join(given)), native(entry, line + " " + shlex.join(given))):
            assert sum(t.startswith("--protocol") for t in r) == 1          # the user's alone, not two
            assert ns.protocol == given[-1].split("=")[-1]


# ---- FT-CADIS's file: correct_num (running total) and True/False -------------------------------------

def _args(tmp_path, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"outfile": str(tmp_path / "o.tsv"), "resume": False, "shard": None, "split_n": False,
                                 **kw})


def _process(idx, x, label):
    return {"idx": idx, "label": label, "predict": x, "radius": 0.5, "correct": int(x == label)}


def test_cadis_rows_count_correct_and_continue_on_resume(tmp_path):
    columns = compat.ftcadis_columns(_args(tmp_path), True, list(certify.SINGLE_COLUMNS))
    assert columns == compat.CADIS_COLUMNS == ["idx", "label", "predict", "radius", "correct_num", "correct", "time"]
    row = compat.running_correct(_args(tmp_path), _process)
    got = [row(i, p, y) for i, (p, y) in enumerate([(1, 1), (2, 3), (4, 4), (0, 0)])]
    assert [(r["correct"], r["correct_num"]) for r in got] == [(True, 1), (False, 1), (True, 2), (True, 3)]
    (tmp_path / "o.tsv").write_text("\t".join(columns) + "\n" + "0\t1\t1\t0.5\t1\tTrue\t0:00:01\n"
                                    "1\t3\t2\t0.5\t1\tFalse\t0:00:01\n2\t4\t4\t0.5\t2\tTrue\t0:00:01\n2\t4\t4\t0.5\t3\tTr")
    row = compat.running_correct(_args(tmp_path, resume=True), _process)     # a partial last line is no row
    assert row(3, 5, 5)["correct_num"] == 3 and row(4, 5, 6)["correct_num"] == 3
    adaptive = ["idx", "label", "predict", "radius", "correct", "n_used", "time"]
    assert compat.ftcadis_columns(_args(tmp_path), True, adaptive)[-2:] == ["n_used", "time"]


def test_cadis_rows_are_one_file_by_one_process(tmp_path, monkeypatch):
    single = list(certify.SINGLE_COLUMNS)
    with pytest.raises(MsrsError, match="one process.*--columns cohen"):
        compat.ftcadis_columns(_args(tmp_path, shard="0/2"), True, single)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MsrsError, match="one process"):
        compat.ftcadis_columns(_args(tmp_path), True, single)
    compat.ftcadis_columns(_args(tmp_path, split_n=True), True, single)     # every row written by rank 0
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(MsrsError, match="one-sigma"):
        compat.ftcadis_columns(_args(tmp_path), False, list(certify.CASCADE_COLUMNS))


def test_cadis_rows_are_checked_as_theirs():
    """The row check before a write / resume reads FT-CADIS's file as theirs: True/False, an integer count."""
    from core.runs.integrity import check_fields
    cadis, cohen = compat.CADIS_COLUMNS, list(certify.SINGLE_COLUMNS)
    assert check_fields(["3", "1", "1", "0.5", "2", "True", "0:00:01"], cadis) is None
    assert "not True or False" in check_fields(["3", "1", "1", "0.5", "2", "1", "0:00:01"], cadis)
    assert "correct_num" in check_fields(["3", "1", "1", "0.5", "two", "True", "0:00:01"], cadis)
    assert "not an integer" in check_fields(["3", "1", "1", "0.5", "True", "0:00:01"], cohen)
