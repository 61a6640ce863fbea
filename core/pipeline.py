"""What every entry script does around the math: device and AMP set-up, loading the dataset, the
classifier and the denoiser, and running the per-example loop (progress, rows, resume, shards, merge)."""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm

from core import cli
from core import run as runlib
from core.errors import MsrsError
from core.smoothing import SplitCounts, example_generator


# ----------------------------------------------------------------------------------------- devices
def resolve_device(spec: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif spec == "cuda" and "LOCAL_RANK" in os.environ:
        spec = f"cuda:{local_rank}"
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MsrsError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def set_backend_flags(device: torch.device) -> dict[str, Any]:
    """Set (in main, never at import) and return the numerics flags recorded in the sidecar."""
    flags: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        flags.update(tf32=True, cudnn_benchmark=True, gpu=torch.cuda.get_device_name(device))
    return flags


class Autocast(torch.nn.Module):
    """Runs a module under autocast (bf16/fp16) and returns float32 scores; a no-op when dtype is None."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.module(x)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.module(x).float()

    def set_example(self, seed: int, idx: int) -> None:
        if hasattr(self.module, "set_example"):
            self.module.set_example(seed, idx)


# ------------------------------------------------------------------------------------------ models
# --denoiser auto: the diffusion model each dataset family is smoothed with, where the MDDS scripts keep it
# (path, named config for raw OpenAI state dicts, reflection-pad size).
DEFAULT_DENOISERS = {
    "digits": ("zoo:digits_ddpm", "digits-ddpm", None),
    "cifar10": ("OUTPUT/denoising_models/cifar10_uncond_50M_500K.pt", "improved-cifar10-uncond", None),
    "imagenet": ("OUTPUT/denoising_models/imagenet/256x256_diffusion_uncond.pt", "guided-256-uncond", 256),
}


def dataset_family(name: str) -> str | None:
    name = name.replace("_", "-")
    for fam in ("digits", "imagenet", "cifar10"):
        if name.startswith(fam):
            return fam
    return None


def resolve_denoiser_args(args: argparse.Namespace, dataset: str) -> None:
    """Fill --denoiser auto, --denoiser_config and --pad_to from the dataset family (MDDS defaults)."""
    fam = DEFAULT_DENOISERS.get(dataset_family(dataset))
    if args.denoiser == "auto":
        if args.classifier.startswith("querylog:"):
            args.denoiser = "none"
        elif fam is None:
            raise MsrsError(f"no default denoiser for dataset {dataset!r}: pass --denoiser PATH or --denoiser none")
        else:
            args.denoiser = fam[0]
            if not fam[0].startswith("zoo:") and not os.path.isfile(fam[0]):
                raise MsrsError(f"the default {dataset} denoiser is not at {fam[0]}: put the OpenAI checkpoint "
                                "there, pass --denoiser PATH (--ddpm_path), or --denoiser none for plain smoothing")
    if args.denoiser != "none" and fam is not None:
        if args.denoiser_config is None:
            args.denoiser_config = fam[1]
        if args.pad_to is None:
            args.pad_to = fam[2]
    if args.pad_to == 0:
        args.pad_to = None


def build_base_classifier(classifier: Callable[[torch.Tensor], torch.Tensor], denoiser: torch.nn.Module | None,
                          sigma: float, device: torch.device, amp: torch.dtype | None, compile: bool = False,
                          reverse_seeds: int = 1, channels_last: bool | None = None) -> torch.nn.Module:
    """The one place a base classifier f_sigma is assembled (entry scripts via Job, and bench/):
    DenoiseThenClassify(denoiser, classifier) -- or the classifier alone -- under Autocast, on device, eval.

    Fast-path switches (core.speed): channels_last weights on CUDA with autocast only (``channels_last=None``),
    so that with amp None the result computes exactly what the plain modules do; torch.compile only when
    asked. The networks are converted in place (shared by every sigma, and by clean_logits).
    """
    from core import speed
    from core.denoise import DenoiseThenClassify
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
    _bases: dict | None = None
    _denoisers: dict | None = None

    def base_classifier(self, sigma: float) -> torch.nn.Module:
        """f_sigma: noisy pixel batch -> logits (denoise-then-classify, or the classifier itself)."""
        from core.denoise import load_denoisers
        a = self.args
        if self._bases is None:
            self._bases = {}
        if sigma not in self._bases:
            den = None
            if self.denoiser_spec != "none":
                # one denoiser per sigma the run uses, sharing one network (loaded once)
                if self._denoisers is None or sigma not in self._denoisers:
                    self._denoisers = load_denoisers(self.denoiser_spec, self.sigmas, config=a.denoiser_config,
                                                     trust=a.trust_checkpoint, num_t_steps=a.num_t_steps,
                                                     pad_to=a.pad_to)
                den = self._denoisers[sigma]
            self._bases[sigma] = build_base_classifier(self.classifier, den, sigma, self.device, self.amp,
                                                       compile=a.compile, reverse_seeds=a.reverse_seeds)
        return self._bases[sigma]

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return Autocast(self.classifier, self.amp)(x.unsqueeze(0))[0].float()

    def set_example(self, idx: int) -> None:
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
        from core.speed import auto_batch_size
        x, _ = self.dataset[0]
        return auto_batch_size(self.base_classifier(sigma), tuple(x.shape), self.device, cap=n)


def setup(args: argparse.Namespace, sigmas: list[float], dataset_name: str | None = None) -> Job:
    """Device, dataset and classifier for one run (denoisers are built lazily, per sigma)."""
    from datasets import dataset_info, get_dataset
    from models.classifiers import LogitMask, load_classifier
    name = dataset_name or args.dataset
    device = resolve_device(args.device)
    flags = set_backend_flags(device)
    split = None
    if getattr(args, "split_n", False):
        rank, world, distributed = _world()
        if not distributed:
            raise MsrsError("--split_n splits each example across torchrun ranks: launch with torchrun --nproc_per_node=K")
        import datetime
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
        split = SplitCounts(rank, world)
    opts = {}
    if name == "cifar10c":
        names = [c for c in args.corr_type.split(",") if c]
        corruption = None if "all" in names else (names[0] if len(names) == 1 else names)
        opts = {"corruption": corruption, "severity": args.severity}
    elif name == "imagenet" and args.imagenet_transform == "mdds":
        opts = {"transform": "mdds"}
    dataset = get_dataset(name, args.split, args.data_path, **opts)
    info = dataset_info(name)
    resolve_denoiser_args(args, name)  # after the dataset: a missing dataset is reported first
    if args.classifier.startswith("querylog:"):  # answers of a black-box classifier to logged queries
        from core.blackbox import LogReplay
        if args.denoiser != "none" or len(sigmas) != 1:
            raise MsrsError("a querylog: classifier answered the noisy queries of one sigma: use one sigma "
                            "and --denoiser none")
        return Job(args, device, dataset, info, LogReplay(args.classifier[len("querylog:"):], info.num_classes),
                   "none", None, flags, sorted(sigmas, reverse=True), split)
    classifier = load_classifier(args.classifier, arch=args.arch, num_classes=info.num_classes,
                                 trust=args.trust_checkpoint, ema=not args.use_module)
    if getattr(info, "class_subset", None):
        classifier = LogitMask(classifier, info.class_subset)
    classifier = classifier.to(device).eval()
    return Job(args, device, dataset, info, classifier, args.denoiser, amp_dtype(args.amp, device), flags,
               sorted(sigmas, reverse=True), split)


def checkpoint_hashes(args: argparse.Namespace) -> dict[str, str | None]:
    """sha256 of the files the run read, resolved by the loaders' own rules (zoo:, checkpoint dirs, logs)."""
    from models.classifiers import resolve_classifier_path
    from models.diffusion import resolve_path
    clf = args.classifier
    clf = clf[len("querylog:"):] if clf.startswith("querylog:") else resolve_classifier_path(clf)
    den = None if args.denoiser == "none" else resolve_path(args.denoiser)
    return {"classifier": runlib.file_sha256(clf), "denoiser": runlib.file_sha256(den)}


# ---------------------------------------------------------------------------------------- the loop
def check_outfile(outfile: str, resume: bool) -> None:
    """Fail before any model is loaded if OUTFILE exists and --resume was not given."""
    if os.path.exists(outfile) and not resume:
        raise MsrsError(f"{outfile} already exists: pass --resume to continue it, or choose another OUTFILE")


def _world() -> tuple[int, int, bool]:
    """(rank, world, launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


def execute(job: Job, outfile: str, columns: list[str], process: Callable[[int, torch.Tensor, int], dict],
            desc: str = "certify") -> str | None:
    """Run ``process(idx, x, label) -> row`` over the selected examples and write OUTFILE.

    Single process: rows go straight to OUTFILE. torchrun: each rank writes OUTFILE.part{r}of{W}; rank 0
    merges when all are done. --shard I/N: this process writes its part only (merge with core.shards).
    Returns the path written (the merged OUTFILE on rank 0 / single process, the part file otherwise).
    """
    args = job.args
    rank, world, distributed = _world()
    if distributed and args.shard:
        raise MsrsError("use either torchrun or --shard I/N, not both")
    if args.shard:
        rank, world = cli.parse_shard(args.shard)
    if world > 1:  # parts are written beside OUTFILE; OUTFILE itself only by the merge
        check_outfile(outfile, args.resume)
    indices = runlib.select_indices(len(job.dataset), args.start, args.skip, args.max)
    if job.split is not None:  # every rank works on every example; rank 0 alone writes
        return _execute_split(job, outfile, columns, process, desc, indices)
    mine = runlib.shard_indices(indices, rank, world)
    path = runlib.part_path(outfile, rank, world)
    writer = runlib.ResultWriter(path, columns, resume=args.resume)
    runlib.write_sidecar(path, _resolved(args), checkpoint_hashes(args),
                         {"flags": job.flags, "rank": rank, "world": world, "indices": mine}, resume=args.resume)
    todo = [i for i in mine if i not in writer.done]
    with writer:
        for idx, row in _rows(job, todo, process, f"{desc} [{rank}/{world}]" if world > 1 else desc):
            writer.write(row)
    if not distributed or world == 1:
        return path
    import torch.distributed as dist
    import datetime
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    if rank == 0:
        if args.resume and os.path.exists(outfile):
            os.remove(outfile)  # re-merge from the (complete) parts
        merge_run(outfile, world)
    dist.barrier()
    return outfile if rank == 0 else path


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def _rows(job: Job, todo: list[int], process: Callable, desc: str, show: bool = True):
    """(idx, row) for each example to do: data to the device, per-example hooks, timing; tqdm progress."""
    for idx in tqdm(todo, desc=desc, dynamic_ncols=True, disable=None if show else True):
        x, label = job.dataset[idx]
        x = x.to(job.device)
        job.set_example(idx)
        t0 = time.time()
        row = process(idx, x, int(label))
        if job.device.type == "cuda":
            torch.cuda.synchronize(job.device)
        row["time"] = runlib.format_time(time.time() - t0)
        yield idx, row


def _execute_split(job: Job, outfile: str, columns: list[str], process: Callable, desc: str,
                   indices: list[int]) -> str | None:
    """--split_n: all ranks go through the same examples (their draws are summed inside Smooth); rank 0
    writes the rows and decides, on resume, which examples are left."""
    import torch.distributed as dist
    rank = job.split.rank
    dist.barrier()  # every rank has checked that OUTFILE does not exist before rank 0 creates it
    writer = None
    todo = [None]
    if rank == 0:
        writer = runlib.ResultWriter(outfile, columns, resume=job.args.resume)
        runlib.write_sidecar(outfile, _resolved(job.args), checkpoint_hashes(job.args),
                             {"flags": job.flags, "split_n_world": job.split.world}, resume=job.args.resume)
        todo = [[i for i in indices if i not in writer.done]]
    dist.broadcast_object_list(todo, src=0)
    for idx, row in _rows(job, todo[0], process, desc, show=rank == 0):
        if writer is not None:
            writer.write(row)
    if writer is not None:
        writer.close()
    dist.barrier()
    return outfile if rank == 0 else None


def merge_run(outfile: str, world: int, remove_parts: bool = False) -> int:
    """Merge the W part files of OUTFILE (checking every selected index is there) and its sidecar."""
    parts = [runlib.part_path(outfile, r, world) for r in range(world)]
    expected, meta = [], None
    for p in parts:
        if os.path.exists(p + ".json"):
            with open(p + ".json") as f:
                m = json.load(f)
            expected += m.get("indices", [])
            meta = meta or m
    n = runlib.merge_parts(outfile, parts, expected or None)
    if meta is not None:
        meta = dict(meta, rank=None, indices=None, merged_from=parts)
        runlib.atomic_write_text(outfile + ".json", json.dumps(meta, indent=1, default=str) + "\n")
    if remove_parts:
        for p in parts:
            for f in (p, p + ".json"):
                if os.path.exists(f):
                    os.remove(f)
    return n


def print_summary(path: str, radii: list[float]) -> None:
    """Print the certified-accuracy table of a finished result file (the analyze.py markdown table)."""
    from core.analysis import analyze
    text, _, _ = analyze([path], radii=radii, fmt="markdown")
    print(text, flush=True)
