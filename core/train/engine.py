"""The one training loop shared by train_clip.py and finetune_diffusion.py, and the one evaluation loop.

    state = TrainState()
    stats = train_one_epoch(model, objective, loader, optimizer, state, ...)
    # objective(model, x, y) -> (loss, metrics)
    test = evaluate(model, loader, device)

What it provides (the FT-CLIP / BEiT / MAE engine, condensed):
  - the per-step lr / wd schedules (``core.train.optim``), set on every optimizer step as
    ``lr = schedule[step] · group["lr_scale"]`` (layer-wise decay);
  - gradient accumulation (`update_freq` micro-batches per optimizer step), gradient clipping;
  - AMP: autocast at the dtype of ``core.runs.setup.amp_dtype`` (+ GradScaler for fp16, ``grad_scaler``);
  - EMA of the weights (``core.train.state.ModelEma``, updated after every optimizer step);
  - plain torch, DDP (torchrun, gloo on CPU) or a DeepSpeed engine (backward/step delegated to it);
  - tqdm progress and a JSON-lines log (`JsonLog`, one line per epoch, as MDDS's ``log.txt``);
  - ``sum_over``: sums of per-batch statistics over a loader, all-reduced across ranks (``evaluate`` and
    the denoiser evaluation of finetune_diffusion are built on it).

Data order is a function of (seed, epoch) only (`set_epoch`), so resuming at an epoch boundary replays
exactly the batches, noise and augmentations an uninterrupted run would have seen.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.errors import MsrsError
from core.runs.setup import autocast
from core.train.distributed import is_deepspeed, is_main, world
from core.train.optim import set_lr
from core.train.state import ModelEma, TrainState

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 training needs (None for bf16 / float32)."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def make_loader(dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False, drop_last: bool | None = None,
                shard_eval: bool = True) -> torch.utils.data.DataLoader:
    """DataLoader whose order (and worker seeds) depend only on (seed, epoch): call `set_epoch` each epoch.

    Training loaders shuffle with a DistributedSampler (rank/world from the environment; one replica
    without torchrun) and drop the last incomplete batch; evaluation loaders keep order, sharded over
    ranks when distributed and ``shard_eval`` (FT-CLIP's --dist_eval: a DistributedSampler, whose padding
    repeats a few examples), else the whole set on every rank (``evaluate(..., reduce=False)``).
    """
    rank, n = world()
    if train or (n > 1 and shard_eval):
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
                    on_step: Callable[[int, float, dict], None] | None = None) -> dict[str, float]:
    """One epoch (epoch index = ``state.epoch``); advances ``state.step`` per optimizer step, not ``state.epoch``.

    ``objective(model, x, y) -> (loss, metrics)`` runs under autocast when `amp_dtype` is set. With a
    DeepSpeed engine as `model`, backward/step (accumulation, clipping, loss scaling) are the engine's;
    otherwise the loss is divided by `update_freq` and stepped every `update_freq` micro-batches (DDP
    skips the all-reduce on the others). The lr / wd of step s are ``lr_schedule[s]`` (· lr_scale) /
    ``wd_schedule[s]``. ``on_step(step, loss, metrics)`` after each optimizer step (e.g. TensorBoard).
    Returns the epoch's mean metrics (``loss`` and the objective's own).
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
                on_step(state.step, loss_value, metrics)
    bar.close()
    out = meter.means()
    out.update(lr=max(g["lr"] for g in optimizer.param_groups), time=time.time() - t0)
    return out


@torch.no_grad()
def sum_over(loader: torch.utils.data.DataLoader, device: torch.device,
             batch_sums: Callable[[torch.Tensor, torch.Tensor], Sequence[float]], size: int,
             desc: str = "eval", reduce: bool = True) -> torch.Tensor:
    """Float64 sums of the ``size`` numbers ``batch_sums(x, y)`` over the loader (x, y on ``device``),
    all-reduced across ranks when distributed and ``reduce`` (each rank sees its shard of the loader)."""
    tot = torch.zeros(size, dtype=torch.float64)
    for x, y in tqdm(loader, desc=desc, dynamic_ncols=True, disable=None if is_main() else True, leave=False):
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        tot += torch.tensor(batch_sums(x, y), dtype=torch.float64)
    if reduce and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = tot.to(device)
        dist.all_reduce(t)
        tot = t.cpu()
    return tot


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None,
             input_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, desc: str = "eval") -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean CE of ``model(input_fn(x))`` (input_fn: e.g. noise + denoise);
    summed over the ranks when the loader is sharded (a DistributedSampler), else this rank's whole set."""
    was = model.training
    model.eval()

    def batch_sums(x: torch.Tensor, y: torch.Tensor) -> list[float]:
        if input_fn is not None:
            x = input_fn(x)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        top5 = logits.topk(min(5, logits.shape[1]), 1).indices
        return [(logits.argmax(1) == y).sum().item(),
                torch.nn.functional.cross_entropy(logits, y, reduction="sum").item(), len(y),
                (top5 == y[:, None]).any(1).sum().item()]
    sharded = isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    tot = sum_over(loader, device, batch_sums, 4, desc, reduce=sharded)
    model.train(was)
    n = max(tot[2].item(), 1)
    return {"acc1": 100.0 * tot[0].item() / n, "acc5": 100.0 * tot[3].item() / n, "loss": tot[1].item() / n,
            "n": int(tot[2].item())}
