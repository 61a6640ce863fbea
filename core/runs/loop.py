"""The per-example loop every certify-family script runs: progress, one flushed row per example, resume,
torchrun ranks and ``--shard I/N`` part files (merged by ``core.runs.shards``), ``--split_n``."""
from __future__ import annotations

import argparse
import datetime
import os
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from core.errors import MsrsError
from core.runs import files
from core.runs.loaders import checkpoint_hashes
from core.runs.parsers import parse_shard
from core.runs.setup import Job, torchrun_world
from core.runs.shards import merge_run


def check_outfile(outfile: str, resume: bool) -> None:
    """Fail before any model is loaded if OUTFILE exists and --resume was not given."""
    if os.path.exists(outfile) and not resume:
        raise MsrsError(f"{outfile} already exists: pass --resume to continue it, or choose another OUTFILE")


def execute(job: Job, outfile: str, columns: list[str], process: Callable[[int, torch.Tensor, int], dict],
            desc: str = "certify") -> str | None:
    """Run ``process(idx, x, label) -> row`` over the selected examples and write OUTFILE.

    Single process: rows go straight to OUTFILE. torchrun: each rank writes OUTFILE.part{r}of{W}; rank 0
    merges when all are done. --shard I/N: this process writes its part only (merge with core.shards).
    Returns the path written (the merged OUTFILE on rank 0 / single process, the part file otherwise).
    """
    args = job.args
    rank, world, distributed = torchrun_world()
    if distributed and args.shard:
        raise MsrsError("use either torchrun or --shard I/N, not both")
    if args.shard:
        rank, world = parse_shard(args.shard)
    if world > 1:  # parts are written beside OUTFILE; OUTFILE itself only by the merge
        check_outfile(outfile, args.resume)
    indices = files.select_indices(len(job.dataset), args.start, args.skip, args.max)
    if job.split is not None:  # every rank works on every example; rank 0 alone writes
        return _execute_split(job, outfile, columns, process, desc, indices)
    mine = files.shard_indices(indices, rank, world)
    path = files.part_path(outfile, rank, world)
    writer = files.ResultWriter(path, columns, resume=args.resume)
    files.write_sidecar(path, _resolved(args), checkpoint_hashes(args),
                        {"flags": job.flags, "rank": rank, "world": world, "indices": mine}, resume=args.resume)
    todo = [i for i in mine if i not in writer.done]
    with writer:
        for idx, row in _rows(job, todo, process, f"{desc} [{rank}/{world}]" if world > 1 else desc):
            writer.write(row)
    if not distributed or world == 1:
        return path
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
        row["time"] = files.format_time(time.time() - t0)
        yield idx, row


def _execute_split(job: Job, outfile: str, columns: list[str], process: Callable, desc: str,
                   indices: list[int]) -> str | None:
    """--split_n: all ranks go through the same examples (their draws are summed inside Smooth); rank 0
    writes the rows and decides, on resume, which examples are left."""
    rank = job.split.rank
    dist.barrier()  # every rank has checked that OUTFILE does not exist before rank 0 creates it
    writer = None
    todo = [None]
    if rank == 0:
        writer = files.ResultWriter(outfile, columns, resume=job.args.resume)
        files.write_sidecar(outfile, _resolved(job.args), checkpoint_hashes(job.args),
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
