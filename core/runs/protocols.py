"""Each paper's evaluation protocol, as one table: what the reference code does around the math.

The math kernels (Clopper-Pearson, the cascade, the one-shot x̂0, ...) are shared; what differs between
the papers is the protocol around them: how images are read and resized, how the denoiser sees them,
how the noise is formed, which timestep is used, the precision, the subset and the output columns.
``--protocol NAME`` (default ``mdds``, the seeds' commands) selects one row; every choice keeps its own
flag, which overrides the row. The resolved row is recorded in each result's sidecar JSON.

API (stable; scripts, tests and other modules read only these names)::

    from core.runs.protocols import PROTOCOLS, DEFAULT_PROTOCOL, get_protocol, protocols_markdown
    p = get_protocol("dds")        # -> Protocol (frozen); MsrsError naming the valid names otherwise
    p.resize_antialias             # True: DDS upsamples with antialias=True
    p.certify.N                    # 100000 (the reference script's argparse default)
    p.as_dict()                    # plain JSON-able dict (what the sidecar records)
    PROTOCOLS["cohen"].predict_abstain   # "wrong"
    protocols_markdown()           # the table of docs/PROTOCOLS.md (a test keeps the file equal to it)
    resolve_protocol(args, "certify", dataset, device_type)   # fill unset flags from the row (see below)

Every value is pinned by a test written from the reference code (tests/test_protocols*.py); the
file and line each one comes from are listed in ``SOURCES``. No torch, no I/O.

``resolve_protocol`` fills every choice the user left at its default (None) from the row and says what
was resolved (the sidecar records it). A flag given on the command line always wins over the row. Choices
that only make sense for some datasets are resolved for the dataset at hand: the ImageNet transform,
denoiser padding and subset apply to the ImageNet family; on CPU the precision is fp32 whatever the row
says (the references' autocast fp16 and fp16 UNet are CUDA features), and bf16 / TF32 are never a row's
choice: they are opt-in (``--amp bf16``, ``--tf32``).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import MsrsError

DEFAULT_PROTOCOL = "mdds"

# ------------------------------------------------------------------------------------ vocabularies
# Every field takes one of these values; the text is what docs/PROTOCOLS.md prints.
IMAGENET_TRANSFORMS = {
    "mdds": "ToTensor, Resize(224) bicubic on the tensor without antialias or clamp (torchvision 0.13.1), "
            "CenterCrop(224)",
    "resize256": "PIL Resize(256) bilinear, CenterCrop(224), ToTensor",
    "densepure": "PIL Resize(256) bicubic, CenterCrop(256), ToTensor",
}
NORMALIZATIONS = {
    "model": "the classifier's own (its Preprocess layer)",
    "half": "mean = std = 0.5, i.e. the denoiser's [-1, 1] range, whatever the classifier's own",
}
NOISES = {
    "add": "x + σε in pixels (then, with a diffusion denoiser, x_t = √ᾱ_t*·(2(x+σε) − 1) as MDDS)",
    "q_sample": "x_t = q_sample(2x − 1, t*) = √ᾱ_t*·u + √(1−ᾱ_t*)·ε: pixel noise √(1/ᾱ_t* − 1)/2 ≥ σ "
                "(the radius uses σ)",
    "densepure": "x + σε in pixels, x_t = (2(x+σε) − 1)/√(1+4σ²) (the exact scale)",
}
T_STARS = {
    "first": "first t ≥ 1 with √((1−ᾱ_t)/ᾱ_t) ≥ 2σ",
    "densepure": "cosine schedules: the float t* = T(1 − (2·1.008/π)·asin(sin(π/(2·1.008))/√(1+4σ²))) "
                 "(one-shot at round(t*)); other schedules: the t whose √(1/ᾱ_t − 1) is nearest 2σ",
}
RESPACINGS = {
    "discrete": "betas from the discrete ᾱ at the grid points",
    "densepure": "cosine: betas from the continuous ᾱ(g/T) at the grid points; others: the discrete ᾱ, "
                 "ᾱ = 1 at g = 0, betas capped at 0.999",
}
PRECISIONS = {
    "fp16": "fp16 autocast (denoiser and classifier)",
    "fp32": "fp32",
}
COLUMNS = {
    "cohen": "idx label predict radius correct time",
    "mdds": "idx label predict radius r_neg correct pred_uc corr_uc stage time (also for one σ; −2 = undecided)",
    "cadis": "idx label predict radius correct_num correct time (FT-CADIS certify.py: running total, True/False)",
}
PREDICT_COLUMNS = {
    "cohen": "idx label predict correct time",
    "mdds": "idx label pred0 pred1 correct time conf",
}
MAX_ORDERS = {
    "max_first": "`if i == max: break` before `if i % skip: continue`",
    "skip_first": "`if i % skip: continue` before `if i == max: break` (never stops when max % skip ≠ 0)",
}
ABSTAINS = {
    "clean_fallback": "an abstention falls back to the clean prediction (pred1), which `correct` uses",
    "wrong": "an abstention (−1) counts as wrong",
}
IMAGENET_SUBSETS = {
    "skip": "every --skip-th image",
    "one_per_class": "one random image per class (Python random seeded with --seed, shuffled per class in "
                     "class order), then every --skip-th of those",
}


@dataclass(frozen=True)
class Defaults:
    """The reference script's argparse defaults (what a command line that omits a flag gets)."""
    N0: int
    N: int
    skip: int
    batch: int
    alpha: float = 0.001


@dataclass(frozen=True)
class Protocol:
    """One paper's protocol. Field values are keys of the vocabularies above (``None``: not applicable)."""
    name: str
    paper: str
    repo: str
    imagenet_transform: str            # dataset transform of imagenet / -a / -r (CIFAR: ToTensor, never resized)
    resize_kernel: str                 # classifier input resize (DenoiseThenClassify / Preprocess)
    resize_antialias: bool
    normalization: str
    imagenet_pad_to: int | None        # ImageNet denoiser input: reflection-pad to this size, crop back
    noise: str
    t_star: str
    respacing: str                     # DensePure multi-step reverse schedule
    precision: str                     # certify / predict on CUDA (CPU: always fp32)
    unet_fp16: bool                    # guided-diffusion ImageNet UNet in use_fp16 mode (torso weights fp16)
    tf32_matmul: bool                  # torch.backends.cuda.matmul.allow_tf32 (cudnn TF32 stays torch's default)
    imagenet_subset: str
    columns: str                       # certify TSV
    predict_columns: str               # predict_ddpm TSV
    predict_abstain: str
    max_order: str                     # certify.py
    predict_max_order: str             # predict_ddpm.py (predict_mdds: max_first, MDDS only)
    certify: Defaults
    predict_N: int                     # predict_ddpm --N default
    train_precision: str
    train_augment: str
    checkpoint_selection: str
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able): what the sidecar records under ``protocol``."""
        return asdict(self)


def _row(**kw: Any) -> Protocol:
    p = Protocol(**kw)
    for name, vocab in (("imagenet_transform", IMAGENET_TRANSFORMS), ("normalization", NORMALIZATIONS),
                        ("noise", NOISES), ("t_star", T_STARS), ("respacing", RESPACINGS),
                        ("precision", PRECISIONS), ("columns", COLUMNS), ("predict_columns", PREDICT_COLUMNS),
                        ("predict_abstain", ABSTAINS), ("max_order", MAX_ORDERS),
                        ("predict_max_order", MAX_ORDERS), ("imagenet_subset", IMAGENET_SUBSETS)):
        if getattr(p, name) not in vocab:
            raise ValueError(f"protocol {p.name}: {name}={getattr(p, name)!r} not in {sorted(vocab)}")
    return p


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    _row(name="mdds", paper="Jeong & Shin 2023, multi-scale diffusion denoised smoothing (+ FT-CLIP)",
         repo="jh-jeong/smoothing-multiscale",
         imagenet_transform="mdds", resize_kernel="bicubic", resize_antialias=False, normalization="model",
         imagenet_pad_to=256, noise="add", t_star="first", respacing="discrete", precision="fp16",
         unet_fp16=True,
         tf32_matmul=False, imagenet_subset="skip", columns="mdds", predict_columns="mdds",
         predict_abstain="clean_fallback", max_order="max_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=100000, skip=1, batch=1000), predict_N=200,
         train_precision="fp16 (DeepSpeed, dynamic loss scale, initial scale 2^7, window 128)",
         train_augment="timm RandAugment m9 + random erasing .25 + label smoothing .1 (CIFAR: RandomCrop 32 "
                       "pad 4 + flip)",
         checkpoint_selection="checkpoint-best: best eval acc1, the EMA model's with --eval_all",
         notes="CIFAR-10-C: the 15 standard corruptions, each .npy read whole (all 5 severities); "
               "ImageNet-A/R: logits, counts and labels over the 200 classes (labels 0..199)"),
    _row(name="dds", paper="Carlini et al. 2023, (Certified!!) adversarial robustness for free",
         repo="ethz-spylab/diffusion_denoised_smoothing",
         imagenet_transform="resize256", resize_kernel="bicubic", resize_antialias=True, normalization="model",
         imagenet_pad_to=None, noise="q_sample", t_star="first", respacing="discrete", precision="fp32",
         unet_fp16=False,
         tf32_matmul=False, imagenet_subset="skip", columns="cohen", predict_columns="cohen",
         predict_abstain="wrong", max_order="skip_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=100000, skip=10, batch=1000), predict_N=100000,
         train_precision="-", train_augment="- (off-the-shelf models)", checkpoint_selection="-",
         notes="feeds [-1,1] to HF ViT / BEiT, whose own normalization is 0.5 (so 'model' is the same); "
               "README: CIFAR --skip 1 --N 100000, ImageNet --skip 50 --N 10000; its `correct` column is a "
               "running total (we write 0/1); no --max flag"),
    _row(name="cadis", paper="Jang et al. TMLR'24, FT-CADIS", repo="suhyeok-jang/FT-CADIS",
         imagenet_transform="resize256", resize_kernel="bicubic", resize_antialias=True, normalization="half",
         imagenet_pad_to=None, noise="q_sample", t_star="first", respacing="discrete", precision="fp32",
         unet_fp16=False,
         tf32_matmul=False, imagenet_subset="one_per_class", columns="cohen", predict_columns="cohen",
         predict_abstain="wrong", max_order="skip_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=100000, skip=10, batch=1000), predict_N=100000,
         train_precision="fp16 AMP (GradScaler), --use_fp16 true",
         train_augment="CIFAR: RandomCrop 32 pad 4 + flip; ImageNet: RandomResizedCrop 224 + flip",
         checkpoint_selection="checkpoint-{epoch}.pth.tar after epoch 1, every 5th and the last; the last is "
                              "certified",
         notes="ImageNet classifier input is [-1,1] (not the timm CLIP mean/std); its TSV has "
               "`correct_num` (running total) and a boolean `correct`, and numbers idx within the subset "
               "(we write the dataset index); README: --skip 1, CIFAR N 100000, ImageNet N 10000"),
    _row(name="densepure", paper="Xiao et al. 2023, DensePure", repo="Jayfeather1024/DensePure",
         imagenet_transform="densepure", resize_kernel="bicubic", resize_antialias=False, normalization="model",
         imagenet_pad_to=None, noise="densepure", t_star="densepure", respacing="densepure", precision="fp32",
         unet_fp16=True,
         tf32_matmul=False, imagenet_subset="skip", columns="cohen", predict_columns="cohen",
         predict_abstain="wrong", max_order="skip_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=5000, skip=100, batch=400), predict_N=5000,
         train_precision="-", train_augment="- (off-the-shelf models)", checkpoint_selection="-",
         notes="the CIFAR ViT goes through the HF "
               "feature extractor (PIL bilinear resize to 224), not modelled here; scripts: CIFAR ids "
               "0:20:9980 with N 100000, ImageNet ids 0:500:49500 with N 10000"),
    _row(name="cohen", paper="Cohen et al. 2019, randomized smoothing", repo="locuslab/smoothing",
         imagenet_transform="resize256", resize_kernel="bicubic", resize_antialias=False, normalization="model",
         imagenet_pad_to=None, noise="add", t_star="first", respacing="discrete", precision="fp32",
         unet_fp16=False,
         tf32_matmul=False, imagenet_subset="skip", columns="cohen", predict_columns="cohen",
         predict_abstain="wrong", max_order="skip_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=100000, skip=1, batch=1000), predict_N=100000,
         train_precision="fp32", train_augment="CIFAR: RandomCrop 32 pad 4 + flip; ImageNet: "
                                                 "RandomSizedCrop 224 + flip; Gaussian noise σ",
         checkpoint_selection="the last epoch (checkpoint.pth.tar)",
         notes="no denoiser: the noise is added to the classifier's input; classifiers run at their native "
               "resolution (no resize)"),
    _row(name="salman", paper="Salman et al. 2020, denoised smoothing", repo="microsoft/denoised-smoothing",
         imagenet_transform="resize256", resize_kernel="bicubic", resize_antialias=False, normalization="model",
         imagenet_pad_to=None, noise="add", t_star="first", respacing="discrete", precision="fp32",
         unet_fp16=False,
         tf32_matmul=False, imagenet_subset="skip", columns="cohen", predict_columns="cohen",
         predict_abstain="wrong", max_order="skip_first", predict_max_order="skip_first",
         certify=Defaults(N0=100, N=10000, skip=1, batch=1000), predict_N=100000,
         train_precision="fp32", train_augment="CIFAR: RandomCrop 32 pad 4 + flip",
         checkpoint_selection="the last epoch (checkpoint.pth.tar)",
         notes="DnCNN / MemNet denoiser on the noisy pixels (output not clamped); its AdamThenSGD never "
               "switches to SGD (a trailing space in the check): ours switches, theirs is "
               "--optimizer AdamThenSGD_ref"),
)}

# Where each value comes from (file:line at the reference repos' HEAD, as read for issue 12).
SOURCES: dict[str, str] = {
    "mdds": "predict_utils.py:164-169 (transform), :68-75 ResizeLayer (Resize(224, 3) on tensors), :92-104 + "
            ":254-255 CropWrapper(256, 224); certify.py:57-70 (t*, scale), :120 + :139-170 (columns, autocast), "
            ":126-129 (max first); predict_ddpm.py:127-130 (skip first), :146-149 (clean fallback), :41 (N 200), "
            ":136 (autocast); "
            "environments.sh (torch 1.12.1, torchvision 0.13.1); utils.py:596-601 (DeepSpeed fp16); "
            "run_class_finetuning.py:538-551 (best on the EMA with --eval_all)",
    "dds": "cifar10/DRM.py:59 + imagenet/DRM.py:73 (interpolate bicubic antialias=True), :66-71 / :81-86 "
           "(q_sample); imagenet/certify.py:16 (Resize256/Crop224); cifar10/certify.py:18-26 (t*), :36-38 (skip), "
           ":60-64 (defaults)",
    "cadis": "architecture.py:121, :189 (bicubic antialias=True), :185-194 ([-1,1] into timm); denoiser.py:107-113 "
             "(q_sample); datasets.py:37-74 (crop + flip); certify.py:41-43 + utils/utils.py:537-548 (one per "
             "class), :70 (columns), :105-109 (defaults); train.py:326-328 + :481 (fp16 AMP), :422-436 (checkpoints)",
    "densepure": "runners/diffpure_ddpm_densepure.py:83-87 (scale, float t*), :110 (round), :137-138 (grid); "
                 "improved_diffusion/gaussian_diffusion.py:370-392 (continuous cosine betas); "
                 "runners/diffpure_guided_densepure.py:42-57 (nearest t); datasets.py:95-101 (Resize256 bicubic, "
                 "Crop256); eval_certified_densepure.py:95 (interpolate, no antialias), :362-365 (skip first), "
                 ":435-440 (defaults); configs/imagenet.yml (use_fp16)",
    "cohen": "code/certify.py:21-23 + :43-46 (defaults, skip first); code/predict.py:53-56 (abstain is wrong), "
             ":36 (columns)",
    "salman": "code/certify.py:22 (N 10000), :79-83 (skip first); code/train_denoiser.py:114-134, :188 "
              "('AdamThenSGD ' never matches)",
}

# Rows of docs/PROTOCOLS.md: (label, how to render the field of a protocol).
_TABLE = (
    ("ImageNet transform (A/R too)", lambda p: IMAGENET_TRANSFORMS[p.imagenet_transform]),
    ("classifier resize", lambda p: f"{p.resize_kernel}, antialias={p.resize_antialias}"),
    ("classifier normalization", lambda p: NORMALIZATIONS[p.normalization]),
    ("ImageNet denoiser input", lambda p: (f"reflection-pad to {p.imagenet_pad_to}, denoise, center-crop back"
                                           if p.imagenet_pad_to else "as read (no padding)")),
    ("noise construction", lambda p: NOISES[p.noise]),
    ("t* rule", lambda p: T_STARS[p.t_star]),
    ("multi-step respacing", lambda p: RESPACINGS[p.respacing]),
    ("precision (certify/predict, CUDA)", lambda p: PRECISIONS[p.precision]
     + ("; ImageNet UNet in use_fp16 mode" if p.unet_fp16 else "")
     + ("" if p.tf32_matmul else "; TF32 matmul off (torch ≥ 1.12 default)")),
    ("ImageNet subset", lambda p: IMAGENET_SUBSETS[p.imagenet_subset]),
    ("certify TSV columns", lambda p: COLUMNS[p.columns]),
    ("predict TSV columns", lambda p: PREDICT_COLUMNS[p.predict_columns]),
    ("predict abstention", lambda p: ABSTAINS[p.predict_abstain]),
    ("--max (certify / predict)", lambda p: f"{p.max_order} / {p.predict_max_order}"),
    ("certify defaults", lambda p: f"N0={p.certify.N0} N={p.certify.N} skip={p.certify.skip} "
                                   f"batch={p.certify.batch} alpha={p.certify.alpha}"),
    ("predict N default", lambda p: str(p.predict_N)),
    ("training precision", lambda p: p.train_precision),
    ("training augmentation", lambda p: p.train_augment),
    ("checkpoint selection", lambda p: p.checkpoint_selection),
    ("notes", lambda p: p.notes),
)


@dataclass(frozen=True)
class TrainRecipe:
    """What train_clip.py does under a protocol (the rows' train_* text, as machine values).

    augment: 'timm' (FT-CLIP / MDDS: RandAugment, erasing, colour jitter) or 'crop_flip' (FT-CADIS);
    checkpoints: 'best' (checkpoint-best by eval acc1) or 'epochs' (FT-CADIS: checkpoint-{e} after epoch 1,
    every 5th and the last; the last is certified); evaluation: 'ftclip' (run_class_finetuning.py: every
    5th epoch and after 70 % of them, the EMA after half, everything every epoch with --eval_all) or
    'every' (FT-CADIS); amp: the CUDA autocast of --amp auto; auto_resume: the default of --auto_resume."""
    augment: str
    checkpoints: str
    evaluation: str
    amp: str
    auto_resume: bool


TRAIN_RECIPES: dict[str, TrainRecipe] = {
    "mdds": TrainRecipe(augment="timm", checkpoints="best", evaluation="ftclip", amp="fp16", auto_resume=True),
    "cadis": TrainRecipe(augment="crop_flip", checkpoints="epochs", evaluation="every", amp="fp16",
                         auto_resume=False),
}


def get_protocol(name: str) -> Protocol:
    """The protocol row ``name`` (one of PROTOCOLS); MsrsError naming the valid names otherwise."""
    if name not in PROTOCOLS:
        raise MsrsError(f"unknown --protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_fields() -> list[str]:
    """The names of the choices a protocol fixes (the sidecar keys under ``protocol``)."""
    return [f.name for f in fields(Protocol)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def protocols_markdown() -> str:
    """docs/PROTOCOLS.md: one column per protocol, one row per choice (a test keeps the file equal)."""
    names = list(PROTOCOLS)
    out = [
        "# Protocols: what each paper's code does around the math",
        "",
        "Generated from `core/runs/protocols.py` (`python -c \"from core.runs.protocols import protocols_markdown; "
        "print(protocols_markdown(), end='')\" > docs/PROTOCOLS.md`); `tests/test_protocols.py` keeps this "
        "file equal to the table. Select a row with `--protocol NAME` (default `mdds`); each choice keeps its "
        "own flag, which overrides the row, and the resolved row is written to the result's sidecar JSON.",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| paper | " + " | ".join(_cell(PROTOCOLS[n].paper) for n in names) + " |",
        "| reference | " + " | ".join(_cell(PROTOCOLS[n].repo) for n in names) + " |",
    ]
    for label, render in _TABLE:
        out.append(f"| {label} | " + " | ".join(_cell(render(PROTOCOLS[n])) for n in names) + " |")
    out += ["", "## Where each row comes from", ""]
    out += [f"- `{n}` ({PROTOCOLS[n].repo}): {SOURCES[n]}" for n in names]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ resolution
CERTIFY, PREDICT, PREDICT_MDDS = "certify", "predict_ddpm", "predict_mdds"


def dataset_family(name: str) -> str | None:
    """'digits', 'imagenet' (ImageNet and its variants) or 'cifar10' (CIFAR-10, -C, 10.1) by name; None otherwise."""
    name = name.replace("_", "-")
    for fam in ("digits", "imagenet", "cifar10"):
        if name.startswith(fam):
            return fam
    return None


def is_imagenet_family(dataset: str) -> bool:
    return dataset_family(dataset) == "imagenet"


def row_values(p: Protocol, script: str, dataset: str) -> dict[str, Any]:
    """The values of the row for one entry script and dataset, keyed by the flags' dest names."""
    imagenet = is_imagenet_family(dataset)
    v: dict[str, Any] = {
        "imagenet_transform": p.imagenet_transform,
        "pad_to": p.imagenet_pad_to if imagenet else None,
        "resize_antialias": p.resize_antialias,
        "normalization": p.normalization,
        "noise_construction": p.noise,
        "t_star": p.t_star,
        "respacing": p.respacing,
        "precision": p.precision,
        "unet_fp16": p.unet_fp16,
        "tf32": p.tf32_matmul,
        "subset": p.imagenet_subset if dataset.replace("_", "-") == "imagenet" else "skip",
        "alpha": p.certify.alpha,
        "batch": str(p.certify.batch),
        "skip": p.certify.skip,
        "N0": p.certify.N0,
    }
    if script == CERTIFY:
        v.update(columns=p.columns, max_order=p.max_order, N=p.certify.N)
    elif script == PREDICT:
        v.update(columns=p.predict_columns, abstain=p.predict_abstain, max_order=p.predict_max_order, N=p.predict_N)
    elif script == PREDICT_MDDS:   # only MDDS has it: its own defaults whatever the row
        v.update(max_order="max_first", N=200)
    return v


def auto_amp(precision: str, device_type: str) -> str:
    """``--amp auto`` under a row's precision: 'fp16' on CUDA for an fp16 row, else 'off' (CPU: always fp32)."""
    return "fp16" if precision == "fp16" and device_type == "cuda" else "off"


def resolve_protocol(args: argparse.Namespace, script: str, dataset: str | None = None,
                     device_type: str = "cpu") -> dict[str, Any]:
    """Set each protocol-governed attribute of `args` that is None to the row's value (in place).

    Returns ``{"name", "resolved": {dest: value}, "from_flags": [dest, ...], "row": Protocol.as_dict()}``:
    what the run uses, which of it the command line chose, and the whole row (for the sidecar).
    ``--amp auto`` becomes the row's precision on CUDA ('fp16' or 'off') and 'off' on CPU.
    """
    name = getattr(args, "protocol", None) or DEFAULT_PROTOCOL
    p = get_protocol(name)
    dataset = dataset or getattr(args, "dataset", "")
    resolved, from_flags = {}, []
    for dest, value in row_values(p, script, dataset).items():
        if dest == "precision":
            if not hasattr(args, "amp"):
                continue
            if args.amp in (None, "auto"):
                args.amp = auto_amp(value, device_type)
            else:
                from_flags.append("amp")
            resolved["amp"] = args.amp
            continue
        if not hasattr(args, dest):
            continue
        if dest == "unet_fp16" and device_type != "cuda":
            value = False            # the references' fp16 UNet is a CUDA runtime mode
        if getattr(args, dest) is None:
            setattr(args, dest, value)
        else:
            from_flags.append(dest)
        resolved[dest] = getattr(args, dest)
    args.protocol = name
    return {"name": name, "resolved": resolved, "from_flags": sorted(from_flags), "row": p.as_dict()}
