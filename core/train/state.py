"""Training state: progress counters, the EMA of the weights, every RNG state, and resumable checkpoints
(``save_state`` / ``load_state``: model, EMA, optimizer, scaler, epoch, step and the RNG states of every
rank, written atomically), so that a resumed run continues bit for bit."""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.errors import MsrsError
from core.train.distributed import is_main, unwrap, world
from models.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint


@dataclass
class TrainState:
    """Progress counters: `epoch` = completed epochs, `step` = optimizer steps so far, `best` = best eval metric."""
    epoch: int = 0
    step: int = 0
    best: float = -math.inf


class ModelEma(nn.Module):
    """Exponential moving average of a model's state: ema ← decay·ema + (1 − decay)·model.

    Floating-point parameters and buffers are averaged, integer buffers (BN counters) copied.
    ``ema.module`` is an eval-mode copy with no gradients.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None):
        super().__init__()
        self.module = copy.deepcopy(unwrap(model)).eval()
        if device is not None:             # FT-CLIP's --model_ema_force_cpu: the average lives on the CPU
            self.module.to(device)
        self.decay = float(decay)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[k].to(device=v.device, dtype=v.dtype), 1.0 - self.decay)
            else:
                v.copy_(src[k])

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


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


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
