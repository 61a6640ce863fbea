"""Processes: rank and world of a torchrun / DeepSpeed launch, the default process group (``processes``),
and the bare module inside DDP / DeepSpeed / torch.compile wrappers."""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from core.errors import MsrsError


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def processes(device: torch.device, deepspeed: bool = False) -> Iterator[tuple[int, int]]:
    """(rank, world) of this run, with the default process group up when launched by torchrun / deepspeed
    (gloo on CPU, nccl on CUDA); a group this call created is destroyed on exit. With ``deepspeed`` a
    single process started without a launcher gets the environment of a world of one."""
    created = False
    if deepspeed:
        if "WORLD_SIZE" not in os.environ:   # a single process started without a launcher
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())))
        try:
            import deepspeed as ds
        except ImportError:
            raise MsrsError("--deepspeed needs the deepspeed package (pip install deepspeed)") from None
        # DeepSpeed caches its process groups module-wide, so the default group it starts here stays up
        # until the process exits (a second run in the same process reuses it)
        ds.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    else:
        created = init_distributed(device)
    try:
        yield world()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
