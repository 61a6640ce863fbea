"""The seed repositories' command lines on msrs: recognize a paper's form of a command and map it to
the msrs-native argv (argv level only, so each native parser stays the one definition of its flags).

    FT-CADIS   certify.py --seed 0 --dataset cifar10 --sigma 0.50 --skip 1 --N0 100 --N 100000
                   --batch_size 400 --finetuned_path CKPT --outfile OUT                  (or --off-the-shelf)
    Salman     certify.py --dataset cifar10 --base_classifier CLF --sigma 0.25 --outfile OUT --skip 20
                   [--denoiser DEN]                                  (their code/certify.py)
               train_denoiser.py --dataset cifar10 --arch cifar_dncnn --outdir DIR --noise 0.25
    DensePure  eval_certified_densepure.py --exp exp --config cifar10.yml --domain cifar10 --sigma 0.25
                   --N 100000 --N0 100 --certified_batch 100 --sample_id 0 --use_id --certify_mode purify
                   --advanced_classifier vit --use_t_steps --num_t_steps 2 --outfile OUT ...

MDDS's own lines are the native positional form (``certify.py DATASET CLASSIFIER OUTFILE --sigma25 ...``)
and pass through untouched. Each paper form has its reference script's flag names, types and defaults
(read from that script's argparse), selects that paper's ``--protocol`` and names its files as the paper
does; msrs-native optional flags (``--device``, ``--data_path``, ``--denoiser``, ``--protocol``, ...) may
be added and win over the translated values. The positional form and a paper form cannot be mixed.
Every mapping and every difference of meaning is listed in docs/FROM_THE_PAPERS.md.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Callable

from core.errors import MsrsError

PAGE = "docs/FROM_THE_PAPERS.md"

# Off-the-shelf classifiers the papers name instead of passing a file: read from the same variables
# (and defaults under $CKPT_DIR) as scripts/lib.sh. (variable, file under CKPT_DIR, --arch, what it is)
NAMED_CLASSIFIERS = {
    "VIT_CIFAR10": ("vit_b16_cifar10.pt", "timm:vit_base_patch16_224",
                    "the DDS CIFAR-10 ViT-B/16 (HF aaraki/vit-base-patch16-224-in21k-finetuned-cifar10)"),
    "VIT_IMAGENET": ("vit_base_patch16_clip_384.pt", "timm:vit_base_patch16_clip_384.laion2b_ft_in12k_in1k",
                     "timm vit_base_patch16_clip_384.laion2b_ft_in12k_in1k"),
    "BEIT_IMAGENET": ("beit_large_patch16_512.pt", "timm:beit_large_patch16_512", "timm beit_large_patch16_512"),
    "RESNET110_CIFAR10": ("cohen_cifar10/noise_{sigma}/checkpoint.pth.tar", None,
                          "Cohen et al.'s CIFAR-10 ResNet-110 trained at noise {sigma}"),
}


def named_classifier(var: str, flag: str, sigma: str | None = None) -> tuple[str, str | None]:
    """(path, arch) of a classifier a paper names by a flag: $VAR, else scripts/lib.sh's default file."""
    name, arch, what = NAMED_CLASSIFIERS[var]
    default = os.path.join(os.environ.get("CKPT_DIR", "checkpoints"), name)
    path = os.environ.get(var, default)
    if sigma is not None:
        path, what = path.replace("{sigma}", sigma), what.replace("{sigma}", sigma)
    if not os.path.exists(path):
        raise MsrsError(f"{flag} reads {what} from {path}: put the file there or set {var}=PATH "
                        "(msrs never downloads; see scripts/lib.sh)")
    return path, arch


@dataclass
class Translation:
    """What a command line runs: the native argv of each run of ``entry`` (the msrs script that does it)."""
    form: str                                   # "native" or a key of FORMS
    entry: str                                  # the msrs entry module run: certify, finetune_diffusion
    runs: list[list[str]]
    no_effect: list[str] = field(default_factory=list)   # paper flags given that change nothing here

    def describe(self, prog: str) -> list[str]:
        """Lines telling the user what runs (printed on stderr before the run)."""
        if self.form == "native":
            return []
        form = FORMS[self.form]
        lines = [f"{prog}: {form.paper} command line, run as: python {self.entry}.py {shlex.join(r)}"
                 for r in self.runs]
        if self.no_effect:
            lines.append(f"{prog}: note: accepted with no effect in msrs: {', '.join(self.no_effect)} (see {PAGE})")
        return lines


@dataclass(frozen=True)
class Form:
    """One paper's form of one script: its parser, its translation, and what it must not be mixed with."""
    paper: str
    entry: str                                                  # msrs module that runs it
    protocol: str | None
    parser: Callable[[str], argparse.ArgumentParser]
    to_native: Callable[[argparse.Namespace], list[list[str]]]
    no_effect: tuple[str, ...] = ()                             # flags with no effect in msrs
    conflicts: tuple[str, ...] = ()                             # native flags meaning something else here


def _paper_parser(prog: str) -> argparse.ArgumentParser:
    # no abbreviations: an unknown token is left for the native parser, never taken as a prefix
    return argparse.ArgumentParser(prog, allow_abbrev=False)


def _num(v: float | int) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _need(value, flag: str, form: str) -> None:
    if value is None or value == "":
        raise MsrsError(f"{form}: {flag} is required")


# ---------------------------------------------------------------------------------- FT-CADIS certify
# suhyeok-jang/FT-CADIS certify.py: the DDS pipeline (improved-/guided-diffusion one-shot denoising) with
# the HF ViT-B/16 (CIFAR-10) or timm CLIP ViT-B/16 at 384 (ImageNet); --finetuned_path loads fine-tuned
# weights into it, --off-the-shelf (or no path) keeps the pretrained ones.
FTCADIS_ARCH = {"cifar10": "VIT_CIFAR10", "imagenet": "VIT_IMAGENET"}


def _ftcadis_certify_parser(prog: str) -> argparse.ArgumentParser:
    p = _paper_parser(prog)
    p.add_argument("--seed", "-seed", type=int, default=0)   # "-seed": the README's ImageNet line
    p.add_argument("--dataset", choices=["cifar10", "imagenet"])
    p.add_argument("--sigma", type=float)
    p.add_argument("--skip", type=int, default=10)
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--N", type=int, default=100000)
    p.add_argument("--batch_size", "--batch", dest="batch_size", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--finetuned_path", default=None)
    p.add_argument("--off-the-shelf", dest="off_the_shelf", action="store_true")
    p.add_argument("--outfile", default=None)
    return p


def _ftcadis_certify(a: argparse.Namespace) -> list[list[str]]:
    form = "FT-CADIS certify.py"
    _need(a.dataset, "--dataset", form)
    _need(a.sigma, "--sigma", form)
    _need(a.outfile, "--outfile", form)
    if a.finetuned_path and a.off_the_shelf:
        raise MsrsError(f"{form}: give --finetuned_path PATH or --off-the-shelf, not both")
    var = FTCADIS_ARCH[a.dataset]
    arch = NAMED_CLASSIFIERS[var][1]
    classifier = a.finetuned_path or named_classifier(var, "--off-the-shelf")[0]
    return [[a.dataset, classifier, a.outfile, "--sigmas", _num(a.sigma), "--seed", _num(a.seed),
             "--skip", _num(a.skip), "--N0", _num(a.N0), "--N", _num(a.N), "--batch", _num(a.batch_size),
             "--alpha", _num(a.alpha), "--arch", arch, "--columns", "cadis"]]


# FT-CADIS certify.py's TSV: `correct_num` is the running count of correct rows, `correct` True/False
CADIS_COLUMNS = ["idx", "label", "predict", "radius", "correct_num", "correct", "time"]


def ftcadis_columns(args: argparse.Namespace, single: bool, columns: list[str]) -> list[str]:
    """certify.py's columns under ``--columns cadis`` (FT-CADIS's file; ``running_correct`` fills it). A running
    total is one file's: the examples cannot be split over processes (torchrun, --shard; --split_n is fine,
    rank 0 writes every row)."""
    from core.runs.parsers import parse_shard
    from core.runs.setup import torchrun_world
    if not single:
        raise MsrsError("--columns cadis is FT-CADIS's one-sigma file: give one sigma, or --columns mdds")
    parts = parse_shard(args.shard)[1] if args.shard else 1 if args.split_n else torchrun_world()[1]
    if parts > 1:
        raise MsrsError("--columns cadis (FT-CADIS's running correct_num) is one file written by one process: "
                        "drop --shard / torchrun (or use --split_n), or add --columns cohen")
    return CADIS_COLUMNS[:-1] + columns[columns.index("correct") + 1:]


def running_correct(args: argparse.Namespace, process: Callable[..., dict]) -> Callable[..., dict]:
    """``process`` with FT-CADIS's ``correct`` (True/False) and ``correct_num``, the running count of correct
    rows of OUTFILE (continued from its complete rows on --resume)."""
    count = [0]
    if args.resume and os.path.exists(args.outfile):
        with open(args.outfile) as f:
            header = f.readline().rstrip("\n").split("\t")
            if header[:len(CADIS_COLUMNS) - 1] == CADIS_COLUMNS[:-1]:
                col = header.index("correct")
                count[0] = sum(line.split("\t")[col] == "True" for line in f if line.endswith("\n"))

    def row(idx, x, label):
        r = process(idx, x, label)
        r["correct"] = bool(r["correct"])
        count[0] += r["correct"]
        r["correct_num"] = count[0]
        return r
    return row


# ------------------------------------------------------------------------------------ Salman certify
# microsoft/denoised-smoothing code/certify.py (Cohen's certify.py plus --denoiser).
SALMAN_TORCHVISION = ("resnet18", "resnet34", "resnet50")   # their IMAGENET_CLASSIFIERS: pretrained downloads


def _salman_certify_parser(prog: str) -> argparse.ArgumentParser:
    p = _paper_parser(prog)
    p.add_argument("--dataset")
    p.add_argument("--base_classifier")
    p.add_argument("--sigma", type=float)
    p.add_argument("--outfile")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--skip", type=int, default=1)
    p.add_argument("--max", type=int, default=-1)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--N", type=int, default=10000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--denoiser", default="")
    p.add_argument("--azure_datastore_path", default="")
    p.add_argument("--philly_imagenet_path", default="")
    return p


def _salman_certify(a: argparse.Namespace) -> list[list[str]]:
    form = "Salman et al. code/certify.py"
    for flag in ("dataset", "base_classifier", "sigma", "outfile"):
        _need(getattr(a, flag), f"--{flag}", form)
    if a.base_classifier in SALMAN_TORCHVISION:
        raise MsrsError(f"{form}: --base_classifier {a.base_classifier} means torchvision's pretrained weights, "
                        "which msrs never downloads: save them to a file and pass --base_classifier FILE "
                        f"--arch tv:{a.base_classifier}")
    return [[a.dataset, a.base_classifier, a.outfile, "--sigmas", _num(a.sigma), "--batch", _num(a.batch),
             "--skip", _num(a.skip), "--max", _num(a.max), "--split", a.split, "--N0", _num(a.N0),
             "--N", _num(a.N), "--alpha", _num(a.alpha), "--denoiser", a.denoiser or "none"]]


# ------------------------------------------------------------------------- Salman train_denoiser.py
SALMAN_OBJECTIVES = {"denoising": "mse", "classification": "classification", "stability": "stability"}


def _salman_train_parser(prog: str) -> argparse.ArgumentParser:
    p = _paper_parser(prog)
    p.add_argument("--dataset")
    p.add_argument("--arch", choices=["cifar_dncnn", "cifar_dncnn_wide", "memnet", "imagenet_dncnn",
                                      "imagenet_memnet"])
    p.add_argument("--outdir")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1e-3)
    p.add_argument("--lr_step_size", type=int, default=30)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=1e-4)
    p.add_argument("--gpu", default=None)
    p.add_argument("--print-freq", dest="print_freq", type=int, default=10)
    p.add_argument("--noise_sd", "--noise", dest="noise_sd", type=float, default=0.0)  # --noise: the README's
    p.add_argument("--objective", choices=list(SALMAN_OBJECTIVES), default="denoising")
    p.add_argument("--classifier", default="")
    p.add_argument("--pretrained-denoiser", dest="pretrained_denoiser", default="")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamThenSGD"], default="Adam")
    p.add_argument("--start-sgd-epoch", dest="start_sgd_epoch", type=int, default=50)
    p.add_argument("--start-sgd-lr", dest="start_sgd_lr", type=float, default=1e-3)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--azure_datastore_path", default="")
    p.add_argument("--philly_imagenet_path", default="")
    return p


def _salman_train(a: argparse.Namespace) -> list[list[str]]:
    form = "Salman et al. code/train_denoiser.py"
    for flag in ("dataset", "arch", "outdir"):
        _need(getattr(a, flag), f"--{flag}", form)
    argv = ["--mode", "dncnn", "--dataset", a.dataset, "--arch", a.arch, "--output_dir", a.outdir,
            "--num_workers", _num(a.workers), "--epochs", _num(a.epochs), "--batch_size", _num(a.batch),
            "--lr", _num(a.lr), "--lr_step_size", _num(a.lr_step_size), "--gamma", _num(a.gamma),
            "--momentum", _num(a.momentum), "--weight_decay", _num(a.weight_decay), "--noise_sd", _num(a.noise_sd),
            "--objective", SALMAN_OBJECTIVES[a.objective], "--optimizer", a.optimizer,
            "--start_sgd_epoch", _num(a.start_sgd_epoch), "--start_sgd_lr", _num(a.start_sgd_lr)]
    if a.classifier:
        argv += ["--classifier", a.classifier]
    if a.pretrained_denoiser:
        argv += ["--pretrained-denoiser", a.pretrained_denoiser]
    if a.resume:
        argv += ["--resume"]
    return [argv]


# -------------------------------------------------------------------------- Salman test_denoiser.py
SUBSET_1PCT = {"cifar10": 100, "imagenet": 500}    # --test-subset: 1% of the test set (theirs random, ours spaced)


def _salman_test_parser(prog: str) -> argparse.ArgumentParser:
    p = _paper_parser(prog)
    p.add_argument("--dataset")
    p.add_argument("--denoiser")
    p.add_argument("--clf")
    p.add_argument("--outdir", default="tmp_out/")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--gpu", default=None)
    p.add_argument("--print-freq", dest="print_freq", type=int, default=10)
    p.add_argument("--noise_sd", "--noise", dest="noise_sd", type=float, default=0.0)   # --noise: the README's
    p.add_argument("--test-subset", dest="test_subset", action="store_true")
    return p


def _salman_test(a: argparse.Namespace) -> list[list[str]]:
    form = "Salman et al. code/test_denoiser.py"
    for flag in ("dataset", "denoiser"):
        _need(getattr(a, flag), f"--{flag}", form)
    if a.clf is None:
        raise MsrsError(f"{form}: --clf is required ('' for the MSE alone)")
    if a.test_subset and a.dataset not in SUBSET_1PCT:
        raise MsrsError(f"{form}: --test-subset is 1% of the cifar10 or imagenet test set; use --eval_max N")
    argv = ["--mode", "dncnn", "--eval", "--dataset", a.dataset, "--pretrained-denoiser", a.denoiser,
            "--output_dir", a.outdir, "--num_workers", _num(a.workers), "--batch_size", _num(a.batch),
            "--noise_sd", _num(a.noise_sd), "--eval_max", str(SUBSET_1PCT[a.dataset] if a.test_subset else 0)]
    return [argv + (["--classifier", a.clf] if a.clf else [])]


# ------------------------------------------------------------------ DensePure eval_certified_densepure.py
DENSEPURE_DOMAINS = {"cifar10": "ddpm", "imagenet": "guided-ddpm"}       # domain -> its --diffusion_type
DENSEPURE_CLASSIFIERS = {("cifar10", "vit"): "VIT_CIFAR10", ("imagenet", "beit"): "BEIT_IMAGENET",
                         ("cifar10", "rs"): "RESNET110_CIFAR10"}


def _densepure_parser(prog: str) -> argparse.ArgumentParser:
    p = _paper_parser(prog)
    p.add_argument("--config")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--exp", default="exp")
    p.add_argument("--verbose", default="info")
    p.add_argument("-i", "--image_folder", default="images")
    p.add_argument("--diffusion_type", default="ddpm")
    p.add_argument("--score_type", default="guided_diffusion")
    p.add_argument("--domain", default="celebahq")
    p.add_argument("--classifier_name", default="Eyeglasses")
    p.add_argument("--partition", default="val")
    p.add_argument("--lp_norm", choices=["Linf", "L2"], default="Linf")
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--classifier_sigma", default="0.00")
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--max", type=int, default=-1)
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--N", type=int, default=5000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--certified_batch", type=int, default=400)
    p.add_argument("--outfile", default="results/test5000")
    p.add_argument("--use_id", action="store_true")
    p.add_argument("--sample_id", type=int, nargs="+", default=[0])
    p.add_argument("--certify_mode", choices=["base", "purify", "both"], default="purify")
    p.add_argument("--advanced_classifier", default="none")
    p.add_argument("--vit_batch", type=int, default=0)
    p.add_argument("--use_one_step", action="store_true")
    p.add_argument("--use_parallel", action="store_true")
    p.add_argument("--save_predictions", action="store_true")
    p.add_argument("--predictions_path", default="../npy")
    p.add_argument("--reverse_seed", type=int, default=0)
    p.add_argument("--use_t_steps", action="store_true")
    p.add_argument("--num_t_steps", type=int, default=1)
    p.add_argument("--t_plus", type=int, default=0)
    p.add_argument("--t_total", type=int, default=4000)
    p.add_argument("--save_info", action="store_true")
    p.add_argument("--use_clustering", action="store_true")
    p.add_argument("--clustering_batch", type=int, default=100)
    p.add_argument("--clustering_method", default="none")
    p.add_argument("--data_seed", type=int, default=0)     # in the README's example, not in their parser
    # msrs extension: any classifier file instead of the named --advanced_classifier ones
    p.add_argument("--classifier", default=None)
    return p


def _id_range(ids: list[int]) -> list[str]:
    """--sample_id IDS as msrs's --start/--skip/--max (examples idx in [start, max) with idx % skip == 0)."""
    ids = sorted(set(ids))
    step = ids[1] - ids[0] if len(ids) > 1 else 1
    if ids[0] < 0 or step <= 0 or ids != list(range(ids[0], ids[-1] + 1, step)) or ids[0] % step:
        raise MsrsError("--sample_id: msrs selects examples with --start/--skip/--max, so the ids must be "
                        "one id or an arithmetic run a, a+d, ... with a % d == 0 (e.g. $(seq -s ' ' 0 20 9980)); "
                        "run other ids one per call")
    return ["--start", str(ids[0]), "--skip", str(step), "--max", str(ids[-1] + 1)]


def _densepure(a: argparse.Namespace) -> list[list[str]]:
    form = "DensePure eval_certified_densepure.py"
    _need(a.config, "--config", form)
    if a.domain not in DENSEPURE_DOMAINS:
        raise MsrsError(f"{form}: --domain must be cifar10 or imagenet (the certified domains), got {a.domain!r}")
    if a.diffusion_type != DENSEPURE_DOMAINS[a.domain]:
        raise MsrsError(f"{form}: --domain {a.domain} is denoised with --diffusion_type "
                        f"{DENSEPURE_DOMAINS[a.domain]}, got {a.diffusion_type!r}")
    unsupported = [(a.use_clustering, "--use_clustering (beta)"), (a.t_plus != 0, "--t_plus"),
                   (a.domain == "cifar10" and a.t_total != 4000, "--t_total other than 4000 (the CIFAR-10 diffusion's T)")]
    for bad, what in unsupported:
        if bad:
            raise MsrsError(f"{form}: {what} is not supported by msrs")
    if a.classifier:
        classifier, arch = a.classifier, None
    else:
        var = DENSEPURE_CLASSIFIERS.get((a.domain, a.advanced_classifier))
        if var is None:
            raise MsrsError(f"{form}: --advanced_classifier {a.advanced_classifier} on {a.domain} is not a file "
                            "msrs knows (vit on cifar10, beit on imagenet, rs on cifar10): pass --classifier PATH "
                            "[--arch NAME] for any other classifier")
        classifier, arch = named_classifier(var, f"--advanced_classifier {a.advanced_classifier}",
                                            a.classifier_sigma if var == "RESNET110_CIFAR10" else None)
    if a.use_one_step:
        steps = 1                                  # one-shot x0 at round(t*)
    elif a.use_t_steps:
        if a.num_t_steps < 2:
            raise MsrsError(f"{form}: --use_t_steps --num_t_steps {a.num_t_steps} fails in DensePure itself "
                            "(it needs >= 2 steps); use --use_one_step for one-shot denoising")
        steps = a.num_t_steps
    else:
        steps = None
    common = ["--sigmas", _num(a.sigma), "--seed", _num(a.seed), "--N0", _num(a.N0), "--N", _num(a.N),
              "--alpha", _num(a.alpha), "--batch", _num(a.certified_batch)]
    common += _id_range(a.sample_id) if a.use_id else ["--skip", _num(a.skip), "--max", _num(a.max)]
    if arch:
        common += ["--arch", arch]
    runs = []
    if a.certify_mode in ("base", "both"):                     # the classifier alone: OUTFILE
        runs.append([a.domain, classifier, a.outfile, *common, "--denoiser", "none"])
    if a.certify_mode in ("purify", "both"):                   # denoised: OUTFILE_diffpure
        if steps is None:
            raise MsrsError(f"{form}: the full reverse chain (neither --use_t_steps nor --use_one_step) is not "
                            "supported: pass --use_t_steps --num_t_steps S or --use_one_step")
        runs.append([a.domain, classifier, a.outfile + "_diffpure", *common, "--num_t_steps", str(steps),
                     "--reverse_seeds", "1"])
    return runs


# ------------------------------------------------------------------------------------- the forms
CASCADE_FLAGS = ("--sigma25", "--sigma50", "--sigma100", "--sigmas")

FORMS: dict[str, Form] = {
    "ftcadis": Form("FT-CADIS", "certify", "cadis", _ftcadis_certify_parser, _ftcadis_certify,
                    conflicts=CASCADE_FLAGS),
    "salman": Form("Salman et al.", "certify", "salman", _salman_certify_parser, _salman_certify,
                   no_effect=("--azure_datastore_path", "--philly_imagenet_path"), conflicts=CASCADE_FLAGS),
    "densepure": Form("DensePure", "certify", "densepure", _densepure_parser, _densepure,
                      no_effect=("--config", "--exp", "-i/--image_folder", "--verbose", "--score_type",
                                 "--classifier_name", "--partition", "--lp_norm", "--vit_batch", "--use_parallel",
                                 "--save_predictions", "--predictions_path", "--reverse_seed", "--save_info",
                                 "--clustering_batch", "--clustering_method", "--data_seed"),
                      conflicts=CASCADE_FLAGS),
    "salman_train": Form("Salman et al.", "finetune_diffusion", "salman", _salman_train_parser, _salman_train,
                         no_effect=("--gpu", "--print-freq", "--azure_datastore_path", "--philly_imagenet_path"),
                         conflicts=("--mode", "--output_dir", *CASCADE_FLAGS)),
    "salman_test": Form("Salman et al.", "finetune_diffusion", "salman", _salman_test_parser, _salman_test,
                        no_effect=("--gpu", "--print-freq"),
                        conflicts=("--mode", "--output_dir", "--classifier", "--pretrained-denoiser")),
}

# certify.py: the flags that make a command line a paper's form (exact tokens, or TOKEN=value)
CERTIFY_MARKS = {"ftcadis": ("--finetuned_path", "--off-the-shelf", "--batch_size", "-seed"),
                 "salman": ("--base_classifier", "--azure_datastore_path", "--philly_imagenet_path")}
CERTIFY_COMMON = ("--dataset", "--sigma", "--outfile")

# msrs script (module name) -> how its command lines are read
ENTRIES = {"certify": None, "eval_certified_densepure": "densepure", "train_denoiser": "salman_train",
           "test_denoiser": "salman_test"}


def _has(argv: list[str], flags) -> list[str]:
    return [f for f in flags if any(t == f or t.startswith(f + "=") for t in argv)]


def detect(entry: str, argv: list[str]) -> str:
    """Which form a command line of ``entry`` is: 'native' or a key of FORMS."""
    if entry not in ENTRIES:
        return "native"
    if ENTRIES[entry] is not None:
        return ENTRIES[entry]
    found = {k: _has(argv, marks) for k, marks in CERTIFY_MARKS.items()}
    common = _has(argv, CERTIFY_COMMON)
    if found["ftcadis"] and found["salman"]:
        raise MsrsError(f"{' '.join(found['ftcadis'])} (FT-CADIS) and {' '.join(found['salman'])} (Salman et al.) "
                        "are two papers' forms of certify.py: use one of them")
    for name, flags in found.items():
        if flags:
            return name
    return "unnamed" if common else "native"     # --dataset/--sigma/--outfile only: which paper is unsaid


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings]


def _protocol_flag(form: Form, parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """``--protocol <the form's paper>``, unless the user gave one or the msrs script has no such choice."""
    action = parser._option_string_actions.get("--protocol")
    if form.protocol is None or action is None or form.protocol not in (action.choices or ()) \
            or _has(rest, ("--protocol",)):
        return []
    return ["--protocol", form.protocol]


def translate(entry: str, argv: list[str], parser: argparse.ArgumentParser) -> Translation:
    """Map a command line of msrs script ``entry`` (e.g. 'certify') to native argv runs of ``parser``'s script.

    The native form passes through unchanged. A paper form is parsed with that paper's flags; any other
    token must be an msrs-native optional flag (appended after the translation, so it wins); a
    positional argument, or a native flag that contradicts the form (e.g. --sigma25 beside --sigma),
    is an MsrsError naming both forms.
    """
    argv = list(argv)
    name = detect(entry, argv)
    if name == "native":
        return Translation("native", entry, [argv])
    if name == "unnamed":                  # say "mixed" if it is, else ask which paper's form it is
        _, rest = _ftcadis_certify_parser(entry).parse_known_args(argv)
        _check_no_positionals(entry, "FT-CADIS / Salman et al.", rest, parser, _has(argv, CERTIFY_COMMON))
        raise MsrsError(f"{' '.join(_has(argv, CERTIFY_COMMON))} is the FT-CADIS / Salman et al. form of certify.py: "
                        "name the classifier with --finetuned_path PATH or --off-the-shelf (FT-CADIS) or "
                        "--base_classifier PATH (Salman), or use the positional form: certify.py DATASET CLASSIFIER "
                        "OUTFILE --sigmas S")
    form = FORMS[name]
    paper = form.parser(f"{entry}.py ({form.paper} form)")
    paper.description = (f"{form.paper}'s command line, run by msrs {form.entry}.py (see {PAGE}); any optional "
                         f"flag of {form.entry}.py may be added and wins over the translated values.")
    ns, rest = paper.parse_known_args(argv)
    marks = [t.split("=")[0] for t in argv if t.split("=")[0] in paper._option_string_actions][:3]
    clash = _has(rest, form.conflicts)
    if clash:
        raise MsrsError(f"{' '.join(clash)} is msrs's own form and cannot be mixed with the {form.paper} form "
                        f"({' '.join(marks)}): use one of them (see {PAGE})")
    _check_no_positionals(entry, form.paper, rest, parser, marks)
    runs = [r + _protocol_flag(form, parser, rest) for r in form.to_native(ns)]
    given = {a.dest for a in paper._actions if _has(argv, a.option_strings)}
    no_effect = [f for f in form.no_effect if paper._option_string_actions[f.split("/")[-1]].dest in given]
    return Translation(name, form.entry, [r + rest for r in runs], no_effect)


def _check_no_positionals(entry: str, paper: str, rest: list[str], parser: argparse.ArgumentParser,
                          marks: list[str]) -> None:
    """Tokens left after the paper's flags must be native optional flags: a positional means two forms mixed."""
    dummy = ["0"] * len(_positionals(parser))
    _, extras = parser.parse_known_args(dummy + rest)
    strays = [t for t in extras if not t.startswith("-")]
    if strays and not any(t.startswith("-") for t in extras):
        names = " ".join(a.dest.upper() for a in _positionals(parser))
        where = f"the positional form ({entry}.py {names} ...)" if names else f"{entry}.py"
        raise MsrsError(f"{where} and the {paper} form ({' '.join(marks)}) cannot be mixed in one call: got "
                        f"{' '.join(strays)}; name everything with the {paper} flags, or use the positional "
                        f"form alone (see {PAGE})")
    if extras:
        parser.parse_args(dummy + rest)            # argparse's own error for an unknown flag


def parse(entry: str, parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[Translation, list[argparse.Namespace]]:
    """``translate`` then the native parser: one Namespace per run (paper form and argv recorded on it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    t = translate(entry, argv, parser)
    out = []
    for run in t.runs:
        ns = parser.parse_args(run)
        if t.form != "native":
            ns.paper_form, ns.paper_argv = t.form, argv
        out.append(ns)
    return t, out
