"""The one training engine shared by train_clip.py and finetune_diffusion.py.

    state = TrainState()
    stats = train_one_epoch(model, objective, loader, optimizer, state, ...)
    # objective(model, x, y) -> (loss, metrics)
    test = evaluate(model, loader, device)

What it provides (the FT-CLIP / BEiT / MAE engine, condensed):
  - per-step cosine schedule with linear warm-up from 0 and a floor `min_lr` (`cosine_scheduler`), set on
    every optimizer step as ``lr = schedule[step] · group["lr_scale"]`` (layer-wise decay, `param_groups_lrd`);
  - gradient accumulation (`update_freq` micro-batches per optimizer step), gradient clipping;
  - AMP: autocast bf16 / fp16 (+ GradScaler for fp16); always off on CPU;
  - EMA of the weights (`ModelEma`, updated after every optimizer step);
  - plain torch, DDP (torchrun, gloo on CPU) or a DeepSpeed engine (backward/step delegated to it);
  - checkpoints with everything needed to continue bit-for-bit (`save_state` / `load_state`): model, EMA,
    optimizer, scaler, epoch, step and every RNG state; written atomically;
  - tqdm progress and a JSON-lines log (`JsonLog`, one line per epoch, as MDDS's ``log.txt``).

Data order is a function of (seed, epoch) only (`set_epoch`), so resuming at an epoch boundary replays
exactly the batches, noise and augmentations an uninterrupted run would have seen.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.errors import MsrsError
from models.checkpoint import load_checkpoint, save_checkpoint

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


# ---- schedules and parameter groups --------------------------------------------------------------

def cosine_scheduler(base_value: float, final_value: float, epochs: int, niter_per_ep: int,
                     warmup_epochs: float = 0, start_warmup_value: float = 0.0, warmup_steps: int = -1) -> np.ndarray:
    """Per-step values: linear warm-up start_warmup_value → base_value, then cosine down to final_value.

    BEiT / FT-CLIP ``utils.cosine_scheduler``; `warmup_steps` > 0 overrides `warmup_epochs`.
    Length epochs · niter_per_ep.
    """
    total = int(epochs * niter_per_ep)
    warm = int(warmup_steps) if warmup_steps > 0 else int(warmup_epochs * niter_per_ep)
    warm = min(warm, total)
    head = np.linspace(start_warmup_value, base_value, warm) if warm > 0 else np.array([])
    iters = np.arange(total - warm)
    tail = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    out = np.concatenate((head, tail))
    assert len(out) == total
    return out


def _strip(name: str) -> str:
    for p in ("module.", "_orig_mod.", "1."):   # DDP, torch.compile, PixelClassifier's network
        if name.startswith(p):
            name = name[len(p):]
    return name


def layer_id(name: str, num_layers: int) -> int:
    """BEiT/FT-CLIP layer index: 0 = embeddings (cls/pos/patch_embed/ln_pre), block i → i + 1, the rest
    (fc_norm, head) → num_layers + 1."""
    n = _strip(name)
    if n in ("cls_token", "pos_embed", "mask_token", "dist_token", "reg_token") or n.startswith(
            ("patch_embed.", "norm_pre.")):
        return 0
    if n.startswith("blocks."):
        return int(n.split(".")[1]) + 1
    return num_layers + 1


def num_blocks(model: nn.Module) -> int:
    """Number of transformer blocks (``blocks.i``) in a model; 0 for models without them."""
    ids = {layer_id(n, 10 ** 6) for n, _ in model.named_parameters()}
    return max((i for i in ids if 0 < i < 10 ** 6 + 1), default=0)


def param_groups_lrd(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                     no_weight_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay: scale = layer_decay^(L + 1 − layer_id) (the head gets 1).

    No weight decay on 1-D tensors (norms, biases) and on `no_weight_decay` names (pos_embed, cls_token,
    ...; matched after stripping wrapper prefixes). Frozen parameters are left out. Each group carries
    ``lr_scale`` and its ``weight_decay``.
    """
    skip = {_strip(n) for n in no_weight_decay}
    inner = getattr(model, "net", model)
    if hasattr(inner, "no_weight_decay"):
        skip |= set(inner.no_weight_decay())
    L = num_blocks(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or _strip(name) in skip
        lid = layer_id(name, L)
        g = groups.setdefault((lid, no_wd), {"params": [], "names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                                              "lr_scale": layer_decay ** (L + 1 - lid)})
        g["params"].append(p)
        g["names"].append(name)
    out = [groups[k] for k in sorted(groups)]
    for g in out:
        g.pop("names")
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float | None, wd: float | None = None) -> None:
    """lr · lr_scale on every group; the scheduled weight decay on the groups that have decay."""
    for g in optimizer.param_groups:
        if lr is not None:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and g["weight_decay"] > 0:
            g["weight_decay"] = wd


# ---- EMA, AMP, wrappers --------------------------------------------------------------------------

class ModelEma(nn.Module):
    """Exponential moving average of a model's state: ema ← decay·ema + (1 − decay)·model.

    Floating-point parameters and buffers are averaged, integer buffers (BN counters) copied.
    ``ema.module`` is an eval-mode copy with no gradients.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        super().__init__()
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.decay = float(decay)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[k].to(v.dtype), 1.0 - self.decay)
            else:
                v.copy_(src[k])

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / DeepSpeed / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif is_deepspeed(model) or isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_deepspeed(model: Any) -> bool:
    """True for a DeepSpeed engine (duck-typed: deepspeed is imported only when --deepspeed is asked for)."""
    return isinstance(model, nn.Module) and all(hasattr(model, a) for a in ("backward", "gradient_accumulation_steps",
                                                                             "module"))


def amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """'auto' → bf16 on CUDA; 'bf16' / 'fp16' / 'off'. Always off on CPU. fp16 comes with a GradScaler."""
    if device.type != "cuda" or amp == "off":
        return None, None
    if amp in ("auto", "bf16"):
        return torch.bfloat16, None
    if amp == "fp16":
        return torch.float16, torch.amp.GradScaler("cuda")
    raise MsrsError(f"unknown --amp {amp!r}: use auto, bf16, fp16 or off")


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# ---- distributed ---------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world size) of the current run (1 process unless launched by torchrun / deepspeed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> bool:
    """Initialize the default process group from the torchrun environment when WORLD_SIZE > 1 (gloo on
    CPU, nccl on CUDA). Returns True when this call created it (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def is_main() -> bool:
    return world()[0] == 0


# ---- data order ----------------------------------------------------------------------------------

def make_loader(dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False, drop_last: bool | None = None) -> torch.utils.data.DataLoader:
    """DataLoader whose order (and worker seeds) depend only on (seed, epoch): call `set_epoch` each epoch.

    Training loaders shuffle with a DistributedSampler (rank/world from the environment; one replica
    without torchrun) and drop the last incomplete batch; evaluation loaders keep order (sharded over
    ranks when distributed).
    """
    rank, n = world()
    if train or n > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=n, rank=rank, shuffle=train, seed=seed,
                                                      drop_last=train)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=train if drop_last is None else drop_last,
                                       generator=g, persistent_workers=False)


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int, seed: int = 0) -> None:
    """Reshuffle for `epoch` and reseed worker RNGs from (seed, epoch)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


# ---- RNG state -----------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (loads with weights_only=True)."""
    np_state = np.random.get_state()
    out = {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                    int(np_state[2]), int(np_state[3]), float(np_state[4])],
           "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
           "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: Mapping[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((s["python_version"], tuple(s["python"]), s.get("python_gauss")))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch / numpy / python RNGs (per rank: seed + rank)."""
    s = seed + world()[0]
    torch.manual_seed(s)
    np.random.seed(s % 2 ** 32)
    random.seed(s)


# ---- checkpoints ---------------------------------------------------------------------------------

@dataclass
class TrainState:
    """Progress counters: `epoch` = completed epochs, `step` = optimizer steps so far, `best` = best eval metric."""
    epoch: int = 0
    step: int = 0
    best: float = -math.inf


def plain_dict(args: Any) -> dict[str, Any]:
    """argparse Namespace / dict → JSON-able plain dict (for checkpoints that load with weights_only)."""
    d = vars(args) if not isinstance(args, Mapping) else dict(args)
    ok = (int, float, str, bool, type(None))
    def plain(v):
        if isinstance(v, ok):
            return v
        if isinstance(v, (list, tuple)) and all(isinstance(e, ok) for e in v):
            return list(v)
        return str(v)
    return {k: plain(v) for k, v in d.items()}


def save_state(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
               ema: ModelEma | None = None, scaler: torch.amp.GradScaler | None = None, args: Any = None,
               extra: Mapping[str, Any] | None = None) -> None:
    """Atomically write a resumable training checkpoint. Call it on every rank: the RNG states of all ranks
    are gathered (each rank resumes its own streams); rank 0 writes the file."""
    rngs = [rng_state()]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        rngs = [None] * dist.get_world_size()
        dist.all_gather_object(rngs, rng_state())
    if not is_main():
        return
    obj = {"kind": "train_state", "model": unwrap(model).state_dict(),
           "model_ema": ema.module.state_dict() if ema is not None else None,
           "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
           "epoch": state.epoch, "step": state.step, "best": state.best, "rng": rngs[0], "rng_ranks": rngs,
           "args": plain_dict(args) if args is not None else None}
    obj.update(extra or {})
    save_checkpoint(obj, path)


def load_state(path: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               ema: ModelEma | None = None, scaler: torch.amp.GradScaler | None = None,
               restore_rng: bool = True) -> tuple[TrainState, dict[str, Any]]:
    """Restore a `save_state` checkpoint (strict loads) into model / optimizer / EMA / scaler and the RNGs.

    Call it last, right before training, so nothing else consumes the restored RNG streams.
    """
    from models.checkpoint import load_state_dict_strict
    obj = load_checkpoint(path)
    if not isinstance(obj, Mapping) or obj.get("kind") != "train_state":
        raise MsrsError(f"{path} is not a training checkpoint written by this toolkit (no kind='train_state')")
    load_state_dict_strict(unwrap(model), obj["model"], path)
    if ema is not None:
        load_state_dict_strict(ema.module, obj["model_ema"] if obj.get("model_ema") is not None else obj["model"], path)
    if optimizer is not None and obj.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(obj["optimizer"])
        except (ValueError, KeyError) as e:
            raise MsrsError(f"{path}: optimizer state does not match this model/optimizer ({e})") from None
    if scaler is not None and obj.get("scaler") is not None:
        scaler.load_state_dict(obj["scaler"])
    if restore_rng and obj.get("rng") is not None:
        rank, n = world()
        ranks = obj.get("rng_ranks") or []
        set_rng_state(ranks[rank] if len(ranks) == n else obj["rng"])
        if len(ranks) != n and n > 1:       # another world size: keep the ranks' streams apart
            torch.manual_seed(int(torch.randint(0, 2 ** 62, ())) + rank)
    return TrainState(obj["epoch"], obj["step"], obj.get("best", -math.inf)), obj


# ---- logging -------------------------------------------------------------------------------------

class JsonLog:
    """Appends one JSON object per line (rank 0 only); `path` None disables it."""

    def __init__(self, path: str | None):
        self.path = path if is_main() else None
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def write(self, **row: Any) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")


class Meter:
    """Running means of scalar metrics."""

    def __init__(self):
        self.sum: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def update(self, **kv: Any) -> None:
        for k, v in kv.items():
            v = float(v.detach().float().mean()) if torch.is_tensor(v) else float(v)
            self.sum[k] = self.sum.get(k, 0.0) + v
            self.n[k] = self.n.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sum[k] / self.n[k] for k in self.sum}


# ---- the loops -----------------------------------------------------------------------------------

def steps_per_epoch(loader_len: int, update_freq: int, max_steps: int = 0) -> int:
    """Optimizer steps per epoch: len(loader) // update_freq, capped by max_steps (> 0)."""
    n = loader_len // update_freq
    if max_steps > 0:
        n = min(n, max_steps)
    if n <= 0:
        raise MsrsError(f"an epoch has no optimizer step: {loader_len} batches for --update_freq {update_freq}; "
                        "use a smaller --batch_size or --update_freq")
    return n


def train_one_epoch(model: nn.Module, objective: Objective, loader: torch.utils.data.DataLoader,
                    optimizer: torch.optim.Optimizer, state: TrainState, *, device: torch.device,
                    lr_schedule: np.ndarray | None = None, wd_schedule: np.ndarray | None = None,
                    update_freq: int = 1, clip_grad: float | None = None, amp_dtype: torch.dtype | None = None,
                    scaler: torch.amp.GradScaler | None = None, ema: ModelEma | None = None,
                    max_steps: int = 0, seed: int = 0, desc: str = "train",
                    on_step: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """One epoch (epoch index = ``state.epoch``); advances ``state.step`` per optimizer step, not ``state.epoch``.

    ``objective(model, x, y) -> (loss, metrics)`` runs under autocast when `amp_dtype` is set. With a
    DeepSpeed engine as `model`, backward/step (accumulation, clipping, loss scaling) are the engine's;
    otherwise the loss is divided by `update_freq` and stepped every `update_freq` micro-batches (DDP
    skips the all-reduce on the others). The lr / wd of step s are ``lr_schedule[s]`` (· lr_scale) /
    ``wd_schedule[s]``. Returns the epoch's mean metrics (``loss`` and the objective's own).
    """
    ds = is_deepspeed(model)
    model.train()
    set_epoch(loader, state.epoch, seed)
    n_steps = steps_per_epoch(len(loader), update_freq, max_steps)
    meter = Meter()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not ds:
        optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_steps, desc=f"{desc} epoch {state.epoch}", dynamic_ncols=True,
               disable=None if is_main() else True, leave=False)
    t0 = time.time()
    for i, (x, y) in enumerate(loader):
        if i // update_freq >= n_steps:
            break
        boundary = (i + 1) % update_freq == 0
        if i % update_freq == 0 and (lr_schedule is not None or wd_schedule is not None):
            set_lr(optimizer, None if lr_schedule is None else float(lr_schedule[state.step]),
                   None if wd_schedule is None else float(wd_schedule[state.step]))
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        sync = contextlib.nullcontext()
        if not ds and not boundary and isinstance(model, nn.parallel.DistributedDataParallel):
            sync = model.no_sync()
        with sync:
            with autocast(device, amp_dtype):
                loss, metrics = objective(model, x, y)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise MsrsError(f"loss is {loss_value} at epoch {state.epoch} step {state.step}: lower --lr, "
                                "enable --clip_grad or use bf16 instead of fp16")
            if ds:
                model.backward(loss)
            elif scaler is not None:
                scaler.scale(loss / update_freq).backward()
            else:
                (loss / update_freq).backward()
        if ds:
            model.step()
        elif boundary:
            if scaler is not None:
                if clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                if clip_grad:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        meter.update(loss=loss_value, **metrics)
        if boundary:
            state.step += 1
            if ema is not None:
                ema.update(model)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{max(g['lr'] for g in optimizer.param_groups):.2e}")
            if on_step is not None:
                on_step(state.step, loss_value)
    bar.close()
    out = meter.means()
    out.update(lr=max(g["lr"] for g in optimizer.param_groups), time=time.time() - t0)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None,
             input_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, desc: str = "eval") -> dict[str, float]:
    """Top-1 accuracy (%) and mean CE of ``model(input_fn(x))`` (input_fn: e.g. noise + denoise).

    Sums are all-reduced across ranks when distributed (each rank sees its shard of the loader).
    """
    was = model.training
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64)
    for x, y in tqdm(loader, desc=desc, dynamic_ncols=True, disable=None if is_main() else True, leave=False):
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        if input_fn is not None:
            x = input_fn(x)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        tot += torch.tensor([(logits.argmax(1) == y).sum().item(),
                             torch.nn.functional.cross_entropy(logits, y, reduction="sum").item(), len(y)],
                            dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = tot.to(device)
        dist.all_reduce(t)
        tot = t.cpu()
    model.train(was)
    n = max(tot[2].item(), 1)
    return {"acc1": 100.0 * tot[0].item() / n, "loss": tot[1].item() / n, "n": int(tot[2].item())}


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}




# ---- LoRA (a small own implementation: peft is not a dependency) ---------------------------------

class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B A x`` with A [r, in] (Kaiming-uniform), B [out, r] = 0: starts equal to base.

    The base Linear is frozen; `merged_weight` folds the update back so checkpoints keep plain keys.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if r <= 0:
            raise MsrsError(f"LoRA rank must be > 0, got {r}")
        self.base, self.r, self.scaling = base, int(r), float(alpha) / int(r)
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scaling


def apply_lora(model: nn.Module, r: int, alpha: float | None = None, targets: Iterable[str] = ("attn.qkv", "attn.proj"),
               trainable: Iterable[str] = ("head", "fc_norm")) -> int:
    """Freeze `model` and wrap every nn.Linear whose name ends with one of `targets` in a `LoRALinear`;
    parameters under `trainable` module names (the classification head) stay trainable. Returns the
    number of wrapped layers (an MsrsError when none matches)."""
    alpha = float(r if alpha is None else alpha)
    targets, trainable = tuple(targets), tuple(trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(targets)]
    if not names:
        raise MsrsError(f"--lora_r: no Linear layer named *{'/*'.join(targets)} in this model (LoRA is for ViTs)")
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha))
    for n, p in model.named_parameters():
        if any(f".{t}." in f".{_strip(n)}" for t in trainable):
            p.requires_grad_(True)
    return len(names)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with every LoRALinear folded into plain ``weight`` / ``bias`` keys (CPU tensors)."""
    model = unwrap(model)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for n, m in model.named_modules():
        if isinstance(m, LoRALinear):
            for k in ("base.weight", "base.bias", "lora_A", "lora_B"):
                sd.pop(f"{n}.{k}", None)
            sd[f"{n}.weight"] = m.merged_weight().detach().cpu()
            if m.base.bias is not None:
                sd[f"{n}.bias"] = m.base.bias.detach().cpu()
    return sd
