"""Job set-up of the certify family: the device, autocast (one definition of each, also used by the
training scripts), the numerics flags, the base classifier f_sigma of each sigma, and the ``Job`` a
script's per-example function works on (dataset, classifier, denoisers, generators, batch size, and
the plan of its file: ``setup`` checks every argument, path and input file before any model is built)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from core.blackbox import LogReplay
from core.cascade import MultiScaleSmooth
from core.denoise import DenoiseThenClassify
from core.errors import MsrsError
from core.noise import grid_indices
from core.runs import files, integrity, speed
from core.runs.blackbox import read_query_log
from core.runs.loaders import checkpoint_hashes, load_denoisers, resolve_denoiser_args
from core.runs.parsers import check_denoiser_args, parse_shard
from core.runs.protocols import is_imagenet_family, resolve_protocol
from core.smoothing import Smooth, SplitCounts, example_generator
from datasets import dataset_info, get_dataset, resolve_corruptions
from models.classifiers import LogitMask, configure_preprocess, load_classifier


# ----------------------------------------------------------------------------------------- devices
def resolve_device(spec: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif spec == "cuda" and "LOCAL_RANK" in os.environ:
        spec = f"cuda:{local_rank}"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise MsrsError(f"--device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise MsrsError(f"--device {spec!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MsrsError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MsrsError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """--amp: 'bf16' / 'fp16' on any device; 'off' and 'auto' = None (float32). The scripts turn 'auto' into
    the paper's precision first (certify family: --protocol; train_clip: fp16 on CUDA); bf16 is never a
    default (it changes the numbers: bench/precision_agreement.py)."""
    if amp == "auto":
        amp = "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def set_backend_flags(device: torch.device, tf32: bool = False) -> dict[str, Any]:
    """Set (in main, never at import) and return the numerics flags recorded in the sidecar.

    TF32 matmuls are opt-in (``--tf32``): off is torch's default since 1.12, under which the references
    ran; cuDNN's TF32 convolutions stay torch's default (on), as in the references."""
    flags: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.benchmark = True
        flags.update(tf32_matmul=bool(tf32), cudnn_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=True,
                     gpu=torch.cuda.get_device_name(device))
    elif device.type == "cpu":
        flags["cpu_malloc_keep"] = speed.keep_freed_memory()
    return flags


def resolve_run(args: argparse.Namespace, script: str, dataset: str | None = None) -> dict[str, Any]:
    """``--protocol``: fill the unset choices of `args` from the paper's row (core.runs.protocols) for this
    script, dataset and device; the record goes to the sidecar (``args.protocol_record``)."""
    device_type = resolve_device(args.device).type if hasattr(args, "device") else "cpu"
    args.protocol_record = resolve_protocol(args, script, dataset or getattr(args, "dataset", ""), device_type)
    return args.protocol_record


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context of --amp (bf16/fp16) on `device`; a null context for float32 (dtype None)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class Autocast(torch.nn.Module):
    """Runs a module under autocast (bf16/fp16) and returns float32 scores; a no-op when dtype is None."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.module(x)
        with autocast(x.device, self.dtype):
            return self.module(x).float()

    def set_example(self, seed: int, idx: int) -> None:
        if hasattr(self.module, "set_example"):
            self.module.set_example(seed, idx)


class FiniteGuard(torch.nn.Module):
    """Notes whether a base classifier returned a non-finite logit for the current example (a flag on
    the device: no synchronisation per batch); ``Job.check_finite`` turns it into an error before the
    example's row is written, so NaN weights or an fp16 overflow never become a certificate."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module, self.bad = module, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        bad = ~torch.isfinite(out).all()
        self.bad = bad if self.bad is None else self.bad | bad
        return out

    def set_example(self, seed: int, idx: int) -> None:
        self.bad = None
        if hasattr(self.module, "set_example"):
            self.module.set_example(seed, idx)


def build_base_classifier(classifier: Callable[[torch.Tensor], torch.Tensor], denoiser: torch.nn.Module | None,
                          sigma: float, device: torch.device, amp: torch.dtype | None, compile: bool = False,
                          reverse_seeds: int = 1, channels_last: bool | None = None) -> torch.nn.Module:
    """The one place a base classifier f_sigma is assembled (entry scripts via Job, and bench/):
    DenoiseThenClassify(denoiser, classifier) -- or the classifier alone -- under Autocast, on device, eval.

    Fast-path switches (core.runs.speed): channels_last weights on CUDA with autocast only (``channels_last=None``),
    so that with amp None the result computes exactly what the plain modules do; torch.compile only when
    asked. The networks are converted in place (shared by every sigma, and by clean_logits).
    """
    base = classifier if denoiser is None else DenoiseThenClassify(denoiser, classifier, sigma,
                                                                   reverse_seeds=reverse_seeds)
    base = Autocast(base, amp).to(device).eval()
    if channels_last is None:
        channels_last = speed.use_channels_last(device, amp)
    if channels_last:
        speed.to_channels_last(base)
    return torch.compile(base) if compile else base


@dataclass
class Job:
    args: argparse.Namespace
    device: torch.device
    dataset: Any
    info: Any
    classifier: torch.nn.Module
    denoiser_spec: str
    amp: torch.dtype | None
    flags: dict[str, Any]
    sigmas: list[float]
    split: SplitCounts | None = None
    plan: files.OutfilePlan | None = None
    world: tuple[int, int, bool] = (0, 1, False)  # (rank, world, launched by torchrun) of the examples' split
    outfile: str = ""
    _bases: dict | None = None
    _denoisers: dict | None = None
    _idx: int | None = None

    def base_classifier(self, sigma: float) -> torch.nn.Module:
        """f_sigma: noisy pixel batch -> logits (denoise-then-classify, or the classifier itself)."""
        a = self.args
        if self._bases is None:
            self._bases = {}
        if sigma not in self._bases:
            den = None
            if self.denoiser_spec != "none":
                # one denoiser per sigma the run uses, sharing one network (loaded once)
                if self._denoisers is None or sigma not in self._denoisers:
                    self._denoisers = load_denoisers(
                        self.denoiser_spec, self.sigmas, config=a.denoiser_config, trust=a.trust_checkpoint,
                        num_t_steps=a.num_t_steps, pad_to=a.pad_to, noise=a.noise_construction or "add",
                        t_rule=a.t_star or "first", respacing=a.respacing or "discrete",
                        unet_fp16=bool(a.unet_fp16) and self.device.type == "cuda")
                den = self._denoisers[sigma]
            self._bases[sigma] = FiniteGuard(build_base_classifier(self.classifier, den, sigma, self.device, self.amp,
                                                                   compile=a.compile, reverse_seeds=a.reverse_seeds))
        return self._bases[sigma]

    def noise_sigma(self, sigma: float) -> float:
        """The noise Smooth draws at level sigma: the denoiser's (q_sample: the schedule's, ≥ sigma), else sigma."""
        if self.denoiser_spec == "none":
            return sigma
        self.base_classifier(sigma)
        return float(getattr(self._denoisers[sigma], "noise_sigma", sigma))

    def smooth(self, sigma: float) -> Smooth:
        """Cohen's smoothed classifier at level sigma over this run's base classifier (its noise level,
        --sound, --split_n)."""
        return Smooth(self.base_classifier(sigma), self.info.num_classes, sigma, split=self.split,
                      noise_sigma=self.noise_sigma(sigma), sound=self.args.sound)

    def cascade(self, p0: float, **kw: Any) -> MultiScaleSmooth:
        """The MDDS cascade over the run's sigmas (largest first), as `smooth` builds each level."""
        return MultiScaleSmooth({s: self.base_classifier(s) for s in self.sigmas}, self.info.num_classes, p0=p0,
                                split=self.split, noise_sigmas={s: self.noise_sigma(s) for s in self.sigmas},
                                sound=self.args.sound, **kw)

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = Autocast(self.classifier, self.amp)(x.unsqueeze(0))[0].float()
        if not torch.isfinite(out).all():
            raise self._nonfinite(self._idx)
        return out

    @property
    def model_name(self) -> str:
        den = "" if self.denoiser_spec == "none" else f" + denoiser {self.denoiser_spec}"
        return f"classifier {self.args.classifier}{den}"

    def _nonfinite(self, idx: int | None) -> MsrsError:
        hint = " or run with --amp off" if self.amp is not None else ""
        return MsrsError(f"{self.model_name}: non-finite logits (NaN or inf) on example {idx}; no row is written "
                         f"for it: check the checkpoint (NaN weights?){hint}")

    def check_finite(self, idx: int) -> None:
        """An error if a base classifier returned a non-finite logit while example idx was processed."""
        if any(g.bad is not None and bool(g.bad) for g in (self._bases or {}).values()):
            raise self._nonfinite(idx)

    def set_example(self, idx: int) -> None:
        self._idx = idx
        for base in (self._bases or {}).values():
            if hasattr(base, "set_example"):
                base.set_example(self.args.seed, idx)

    def generator(self, idx: int, stage: int = 0) -> torch.Generator:
        return example_generator(self.args.seed, idx, stage, self.device, self.split.rank if self.split else 0)

    def stage_generators(self, idx: int):
        """k -> the generator of cascade stage k of example idx (this worker's stream under --split_n)."""
        return lambda k: self.generator(idx, k)

    def batch_size(self, sigma: float, n: int) -> int:
        if self.args.batch != "auto":
            return int(self.args.batch)
        x, _ = self.dataset[0]
        return speed.auto_batch_size(self.base_classifier(sigma), tuple(x.shape), self.device, cap=n)


def setup(args: argparse.Namespace, sigmas: list[float], dataset_name: str | None = None, *, outfile: str,
          columns: list[str]) -> Job:
    """Everything a run needs, checked before any model is built: the device, the dataset and the example
    selection, the denoiser arguments, the model files (hashed: the run's identity) and OUTFILE (a
    resume must continue this very run); then the classifier (denoisers are built lazily, per sigma)."""
    integrity.check_output_path(outfile, resume=args.resume)  # first: a wrong OUTFILE costs no dataset read
    name = dataset_name or args.dataset
    device = resolve_device(args.device)
    amp = amp_dtype(args.amp, device)
    rank, size, distributed = torchrun_world()
    if distributed and args.shard:
        raise MsrsError("use either torchrun or --shard I/N, not both")
    if args.shard:
        rank, size = parse_shard(args.shard)
    split = None
    if getattr(args, "split_n", False):
        if not distributed:
            raise MsrsError("--split_n splits each example across torchrun ranks: launch with torchrun --nproc_per_node=K")
        split = SplitCounts(rank, size)
    dataset = get_dataset(name, args.split, args.data_path, **dataset_options(args, name))
    info = dataset_info(name)
    resolve_denoiser_args(args, name)  # after the dataset: a missing dataset is reported first
    check_denoiser_args(args, info.image_size)
    querylog = args.classifier.startswith("querylog:")  # answers of a black-box classifier to logged queries
    if querylog and (args.denoiser != "none" or len(sigmas) != 1):
        raise MsrsError("a querylog: classifier answered the noisy queries of one sigma: use one sigma "
                        "and --denoiser none")
    indices = files.select_examples(dataset, args, info.num_classes)
    if not indices:
        raise MsrsError(f"--start {args.start} --skip {args.skip} --max {args.max} select no example of {name} "
                        f"({len(dataset)} examples, idx 0..{len(dataset) - 1})")
    if getattr(args, "sound", False):
        grid_indices(dataset[indices[0]][0])   # --sound: refuse an off-grid dataset before any row is written
    plan = plan_run(args, sigmas, amp, outfile, columns, indices, (rank, size), split)
    flags = set_backend_flags(device, bool(getattr(args, "tf32", False)))
    if split is not None and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    where = dict(split=split, plan=plan, world=(rank, size, distributed), outfile=outfile)
    if querylog:
        log = args.classifier[len("querylog:"):]
        return Job(args, device, dataset, info, LogReplay(read_query_log(log), info.num_classes, log),
                   "none", None, flags, sorted(sigmas, reverse=True), **where)
    classifier = load_classifier(args.classifier, arch=args.arch, num_classes=info.num_classes,
                                 trust=args.trust_checkpoint, ema=not args.use_module)
    configure_preprocess(classifier, antialias=args.resize_antialias, normalization=args.normalization)
    if getattr(info, "class_subset", None):      # ImageNet-A/R: 200 logits, labels 0..199 (MDDS)
        classifier = LogitMask(classifier, info.class_subset)
        info = dataclasses.replace(info, num_classes=len(info.class_subset))
    classifier = classifier.to(device).eval()
    return Job(args, device, dataset, info, classifier, args.denoiser, amp, flags, sorted(sigmas, reverse=True),
               **where)


def plan_run(args: argparse.Namespace, sigmas: list[float], amp: torch.dtype | None, outfile: str,
             columns: list[str], indices: list[int], world: tuple[int, int],
             split: SplitCounts | None) -> files.OutfilePlan:
    """The run's identity and what it will do with its file (OUTFILE, checked by `setup`, or this rank's
    part of it): checks a part's path and, on --resume, that the existing rows are this run's. Writes nothing."""
    rank, size = world
    sharded = size > 1 and split is None
    path = files.part_path(outfile, rank, size) if sharded else outfile
    if sharded:
        integrity.check_output_path(path, resume=args.resume)
    identity = integrity.run_identity(
        vars(args), sigmas=sigmas, amp={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "off"),
        selection=indices, models=checkpoint_hashes(args), columns=columns,
        split_world=split.world if split is not None else None, part=(rank, size) if sharded else None)
    mine = files.shard_indices(indices, rank, size) if sharded else indices
    return files.plan_outfile(path, columns, identity, mine, args.resume)


def dataset_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The dataset's options from the run's flags: CIFAR-10-C corruptions and severities, the ImageNet family's
    transform, ImageNet-A/R's 200-class labels."""
    from datasets.registry import ALIASES
    canonical = ALIASES.get(name, name)
    if canonical == "cifar10c":
        return {"corruption": resolve_corruptions(args.corr_type), "severity": args.severity}
    if name.startswith("cifar10c_"):
        return {"severity": args.severity}
    opts: dict[str, Any] = {}
    if is_imagenet_family(canonical):
        opts["transform"] = args.imagenet_transform or "resize256"
    if canonical in ("imagenet-a", "imagenet-r"):
        opts["labels"] = "subset"
    return opts


def torchrun_world() -> tuple[int, int, bool]:
    """(rank, world, launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1
