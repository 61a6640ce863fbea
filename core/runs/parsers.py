"""Parent argument parsers: every flag of the entry scripts is defined once, here or (the training
family's own) in ``core.train.parsers``; the shared argument checks; ``run_cli``, the error wrapper.

Flag names and defaults follow the reference scripts (locuslab/smoothing, MDDS, DDS, DensePure, FT-CLIP,
FT-CADIS, Salman). Two names keep the meaning their reference gives them in each script family, and
each is defined once per family (docs/ARCHITECTURE.md): ``--batch`` is the noise batch of the certify
family (``noise_parser``) and FT-CADIS's per-process batch (an alias of ``--batch_size``) in training;
``--resume`` is a switch in the certify family (``certify_parser``: continue OUTFILE) and an optional
checkpoint path in training (FT-CLIP's ``--resume [PATH]``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable

from core.errors import MsrsError
from core.runs import compat
from core.runs.protocols import (
    ABSTAINS,
    COLUMNS,
    DEFAULT_PROTOCOL,
    IMAGENET_SUBSETS,
    IMAGENET_TRANSFORMS,
    MAX_ORDERS,
    NOISES,
    NORMALIZATIONS,
    PROTOCOLS,
    RESPACINGS,
    T_STARS,
)


def str2bool(v: str) -> bool:
    if str(v).lower() in ("1", "true", "yes", "on"):
        return True
    if str(v).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")

SIGMA_FLAGS = {"sigma25": 0.25, "sigma50": 0.5, "sigma100": 1.0}
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def data_parser(examples: bool = True) -> argparse.ArgumentParser:
    """--data_path; with ``examples`` the selection of the examples a run goes through (certify family)."""
    p = _parser()
    g = p.add_argument_group("data")
    g.add_argument("--data_path", default="datasets", help="folder holding the datasets (see README)")
    if not examples:
        return p
    g.add_argument("--split", choices=["train", "test"], default="test", help="train or test set")
    g.add_argument("--skip", type=int, default=None, help="only every SKIP-th example (default: the protocol's)")
    g.add_argument("--start", type=int, default=0, help="first example index")
    g.add_argument("--max", type=int, default=-1, help="stop at this example index (-1: to the end); see --max_order")
    g.add_argument("--max_order", choices=MAX_ORDERS, default=None,
                   help="max_first (MDDS certify/predict_mdds: stop at --max) or skip_first (Cohen, MDDS predict_ddpm, "
                        "DensePure, Salman: --max is only seen on a kept index, so max %% skip != 0 never stops)")
    g.add_argument("--subset", choices=IMAGENET_SUBSETS, default=None,
                   help="ImageNet: skip (every --skip-th image) or one_per_class (FT-CADIS: one random image per "
                        "class, seeded with --seed, then every --skip-th of those); default: the protocol's")
    g.add_argument("--corr_type", default="all",
                   help="cifar10c: 'all' (the 15 benchmark corruptions), a group (noise, blur, weather, digital), "
                        "corruption names, comma-separated")
    g.add_argument("--severity", default="all", help="cifar10c severity: 1..5, a comma list, or 'all' (each file "
                                                     "read whole, as MDDS)")
    g.add_argument("--imagenet_transform", choices=IMAGENET_TRANSFORMS, default=None,
                   help="ImageNet / -A / -R preprocessing: resize256 (Resize256+Crop224: Cohen, DDS, FT-CADIS), mdds "
                        "(tensor Resize224 without antialias), densepure (Resize256 bicubic + Crop256); default: the "
                        "protocol's")
    return p


def model_parser(smoothing: bool = True) -> argparse.ArgumentParser:
    """The models a script reads; with ``smoothing`` the denoise-then-classify options of the certify family."""
    p = _parser()
    g = p.add_argument_group("models")
    g.add_argument("--arch", default=None,
                   help="classifier architecture (a registered name such as CLIP_B16, timm:NAME, tv:NAME) for files "
                        "that do not name one; train_clip.py: the classifier it trains (FT-CADIS's name for --model); "
                        "finetune_diffusion.py --mode dncnn: the DnCNN architecture (Salman's)")
    g.add_argument("--denoiser", default="auto" if smoothing else None,
                   help="a diffusion checkpoint, a DnCNN checkpoint or zoo:NAME; certify family also 'auto' (the "
                        "dataset's diffusion model at its MDDS path, see README) and 'none' (plain Cohen smoothing)")
    g.add_argument("--denoiser_config", default=None,
                   help="named diffusion config for raw OpenAI checkpoints (improved-cifar10-uncond, guided-256-uncond, "
                        "digits-ddpm, ...) or a JSON file of kwargs")
    g.add_argument("--ddpm_path", default=None, help="MDDS alias: diffusion weights (same as --denoiser)")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="allow full unpickling of checkpoints that need more than tensors (can run code!)")
    if not smoothing:
        return p
    g.add_argument("--use_module", action="store_true",
                   help="DeepSpeed checkpoints: load 'module' instead of the default 'model_ema'")
    g.add_argument("--pad_to", type=int, default=None,
                   help="reflection-pad inputs to this size before denoising and crop back (default: the protocol's: "
                        "256 on ImageNet under mdds; 0 feeds the image unpadded as DDS / FT-CADIS do)")
    g.add_argument("--resize_antialias", type=str2bool, default=None,
                   help="antialias the classifier's input resize (true: DDS / FT-CADIS; false: MDDS, DensePure); "
                        "default: the protocol's")
    g.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                   help="classifier input normalization: model (its own) or half (mean = std = 0.5: FT-CADIS)")
    g.add_argument("--noise_construction", choices=NOISES, default=None,
                   help="x_t from a noisy image: add (MDDS), q_sample (DDS / FT-CADIS: the schedule's noise at t*), "
                        "densepure (exact scale); default: the protocol's")
    g.add_argument("--t_star", choices=T_STARS, default=None,
                   help="sigma -> timestep: first (DDS / MDDS) or densepure (float / nearest t*)")
    g.add_argument("--respacing", choices=RESPACINGS, default=None,
                   help="--num_t_steps > 1: discrete betas, or densepure's (continuous cosine alphas on CIFAR)")
    g.add_argument("--unet_fp16", type=str2bool, default=None,
                   help="the guided-diffusion UNet in its use_fp16 mode on CUDA (MDDS, DensePure ImageNet); default: "
                        "the protocol's")
    g.add_argument("--num_t_steps", type=int, default=1, help="DensePure: reverse steps from t* (1 = one-shot DDS)")
    g.add_argument("--reverse_seeds", type=int, default=1, help="DensePure: reverse runs majority-voted per sample")
    return p


def sigma_parser(cascade: bool = True) -> argparse.ArgumentParser:
    """Noise levels (pixel space, images in [0,1]): the cascade's set (``cascade``), or one ``--sigma``."""
    p = _parser()
    g = p.add_argument_group("noise levels")
    if not cascade:
        g.add_argument("--sigma", "--train_noise_sd", "--gaussian_std", dest="sigma", type=float, default=None,
                       help="the Gaussian noise level (pixels in [0,1]): of the queries (core.blackbox export), "
                            "of the training copies (train_clip.py)")
        return p
    for name, s in SIGMA_FLAGS.items():
        g.add_argument(f"--{name}", action="store_true", help=f"add sigma={s} (several: the MDDS cascade)")
    g.add_argument("--sigmas", type=float, nargs="+", default=[], help="any sigma values")
    return p


def noise_parser(n_default: int | None = None) -> argparse.ArgumentParser:
    """How many noise draws, in which batches (certify family and the black-box export); None: the protocol's."""
    p = _parser()
    g = p.add_argument_group("noise draws")
    g.add_argument("--N", type=int, default=n_default, help="number of estimation samples (default: the protocol's)")
    g.add_argument("--N0", type=int, default=None, help="number of selection samples (default: the protocol's, 100)")
    g.add_argument("--batch", default=None, help="noise batch size, or 'auto' to fit device memory (default: the "
                                                 "protocol's)")
    return p


def runtime_parser(device: bool = True) -> argparse.ArgumentParser:
    """The run's seed; with ``device`` the device and autocast, one meaning in every script
    (``core.runs.setup.resolve_device`` / ``amp_dtype``)."""
    p = _parser()
    g = p.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=0,
                   help="the run's seed (certify family: noise streams per (seed, idx), so rows never depend on "
                        "sharding or resume; training: data order, noise, initialization)")
    g.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                   help="the paper whose protocol fills every choice left unset (docs/PROTOCOLS.md): "
                        f"{', '.join(PROTOCOLS)}; default {DEFAULT_PROTOCOL}")
    if device:
        g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        g.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                       help="autocast of the forward passes: auto = the protocol's precision on CUDA (fp16 for mdds, "
                            "fp32 for the others) and off elsewhere; bf16 / fp16 as given (opt-in speed: "
                            "bench/precision_agreement.py measures it); off = float32")
        g.add_argument("--tf32", type=str2bool, default=None,
                       help="TF32 matmuls on CUDA (opt-in speed; the references ran with torch's default, off; "
                            "training scripts too)")
    return p


def certify_parser() -> argparse.ArgumentParser:
    """The certify family's own: the decision rules' parameters, and how a run is executed."""
    p = _parser()
    g = p.add_argument_group("smoothing")
    g.add_argument("--alpha", type=float, default=None, help="failure probability (default: the protocol's, 0.001)")
    g.add_argument("--skip_p", type=float, default=0.5, help="MDDS p0: a stage abstains below it")
    g.add_argument("--cascade_alpha", choices=["mdds", "union"], default="mdds",
                   help="cascade levels: 'mdds' alpha/(k+1) per stage as the reference; 'union' 2*alpha/(K(K+1)) "
                        "per bound, which keeps the overall failure probability <= alpha (see README)")
    g.add_argument("--sound", action="store_true",
                   help="floating-point-sound noise: exact Gaussian noise on the 8-bit grid of the input (which "
                        "must be j/255), certifying f o round (Voracek & Hein 2023; README)")
    g.add_argument("--columns", choices=COLUMNS, default=None,
                   help="certify: cohen (one sigma: idx label predict radius correct time), mdds (the cascade's, "
                        "also for one sigma, as MDDS's certify.py) or cadis (one sigma, FT-CADIS's: idx label predict "
                        "radius correct_num correct time); predict_ddpm: cohen (idx label predict correct "
                        "time) or mdds (idx label pred0 pred1 correct time conf); default: the protocol's")
    g.add_argument("--abstain", choices=ABSTAINS, default=None,
                   help="predict_ddpm: an abstention counts as wrong (Cohen) or falls back to the clean prediction "
                        "(MDDS's pred1); default: the protocol's")
    g = p.add_argument_group("run")
    g.add_argument("--compile", action="store_true", help="torch.compile the denoiser and classifier (opt-in speed)")
    g.add_argument("--resume", action="store_true", help="continue an existing OUTFILE after its last complete row")
    g.add_argument("--split_n", action="store_true",
                   help="under torchrun: split each example's N0/N draws across the ranks (counts summed, one "
                        "bound) instead of splitting the examples; for models too slow for one GPU per example")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="process shard I of N (Slurm arrays); merge with `python -m core.shards merge OUTFILE`")
    return p


def certify_family() -> list[argparse.ArgumentParser]:
    """The parents of certify.py, predict_ddpm.py and predict_mdds.py."""
    return [data_parser(), model_parser(), sigma_parser(), noise_parser(), certify_parser(), runtime_parser()]


def sigmas_from_args(args: argparse.Namespace) -> list[float]:
    """The sigma levels asked for (flags and --sigmas), descending (the cascade order), validated."""
    sig = [s for name, s in SIGMA_FLAGS.items() if getattr(args, name, False)] + list(getattr(args, "sigmas", []))
    sig = sorted(set(float(s) for s in sig), reverse=True)
    if not sig:
        raise MsrsError("no sigma given: pass --sigma25/--sigma50/--sigma100 or --sigmas S [S ...]")
    bad = [s for s in sig if not (s > 0 and math.isfinite(s))]
    if bad:
        raise MsrsError(f"sigma must be a finite number > 0, got {bad[0]}")
    return sig


def need(cond: bool, msg: str) -> None:
    """Raise the one-line MsrsError ``msg`` unless ``cond``."""
    if not cond:
        raise MsrsError(msg)


def resolve_ddpm_path(args: argparse.Namespace) -> None:
    """--ddpm_path (MDDS's name) is --denoiser: give the weights once."""
    if getattr(args, "ddpm_path", None):
        need(args.denoiser in (None, "auto", "none", args.ddpm_path),
             "give the diffusion weights once: --denoiser PATH or --ddpm_path PATH")
        args.denoiser = args.ddpm_path


def check_args(args: argparse.Namespace) -> None:
    """Range checks shared by every entry script; one-line MsrsError on the first bad value."""
    for name in ("N", "N0"):
        if hasattr(args, name):
            need(getattr(args, name) > 0, f"--{name} must be a positive integer, got {getattr(args, name)}")
    if hasattr(args, "alpha"):
        need(0 < args.alpha < 1, f"--alpha must be in (0, 1), got {args.alpha}")
    if hasattr(args, "skip_p"):
        need(0 < args.skip_p < 1, f"--skip_p must be in (0, 1), got {args.skip_p}")
    if hasattr(args, "skip"):
        need(args.skip >= 1, f"--skip must be >= 1, got {args.skip}")
        need(args.start >= 0, f"--start must be >= 0, got {args.start}")
    if hasattr(args, "seed"):
        need(args.seed >= 0, f"--seed must be an integer >= 0, got {args.seed}")
    if getattr(args, "pad_to", None) is not None:
        need(args.pad_to >= 0, f"--pad_to must be >= 0 (0: no padding), got {args.pad_to}")
    for flag in ("summary_radii", "radius_grid"):
        bad = [r for r in getattr(args, flag, None) or [] if not (math.isfinite(r) and r >= 0)]
        need(not bad, f"--{flag} must be finite radii >= 0, got {bad[0] if bad else ''}")
    if hasattr(args, "batch"):
        need(args.batch == "auto" or (str(args.batch).isdigit() and int(args.batch) > 0),
             f"--batch must be a positive integer or 'auto', got {args.batch}")
    if hasattr(args, "num_t_steps"):
        need(args.num_t_steps >= 1, f"--num_t_steps must be >= 1, got {args.num_t_steps}")
        need(args.reverse_seeds >= 1, f"--reverse_seeds must be >= 1, got {args.reverse_seeds}")
    resolve_ddpm_path(args)
    if getattr(args, "shard", None):
        parse_shard(args.shard)


def check_denoiser_args(args: argparse.Namespace, image_size: int) -> None:
    """Once --denoiser auto is resolved: --denoiser_config must name a config (and a denoiser must be
    used), --pad_to must be at least the image size."""
    if args.denoiser == "none":
        need(args.denoiser_config is None, f"--denoiser_config {args.denoiser_config} is given, but no denoiser "
                                           "is used (--denoiser none): drop it or pass --denoiser PATH")
        return
    if args.denoiser_config is not None:
        from models.diffusion import config_kwargs
        try:
            config_kwargs(args.denoiser_config)
        except MsrsError as e:
            raise MsrsError(f"--denoiser_config: {e}") from None
    need(args.pad_to is None or args.pad_to >= image_size,
         f"--pad_to {args.pad_to} is smaller than the {image_size}-pixel images: give a size >= {image_size}, "
         "or 0 for no padding")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise MsrsError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise MsrsError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: list[str] | None = None, form: str | None = None) -> None:
    """Parse, run main, and turn user errors into one line on stderr and exit status 2 (no traceback).

    ``form``: the script's name in ``core.runs.compat.ENTRIES``; its command line may then also be a
    paper's (FT-CADIS, Salman et al., DensePure), run as the native command(s) it translates to."""
    prog = os.path.basename(sys.argv[0]) if argv is None else ""
    prog = parser.prog if prog in ("", "__main__.py") else prog
    try:
        if form is None:
            runs = [parser.parse_args(argv)]
        else:
            t, runs = compat.parse(form, parser, argv)
            for line in t.describe(prog):
                print(line, file=sys.stderr)
        for args in runs:
            main(args)
    except MsrsError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rows written so far are kept; rerun with --resume to continue", file=sys.stderr)
        sys.exit(130)
