"""The per-example loop every certify-family script runs: progress (``core.runs.progress``), one checked
and flushed row per example (a non-finite logit stops the run before its row), resume, torchrun ranks and
``--shard I/N`` part files (merged by ``core.runs.shards``), ``--split_n``. What is left to do was decided,
and checked, by ``setup.setup`` (the job's plan) before any model was built."""
from __future__ import annotations

import argparse
import datetime
import os
import time
from typing import Any, Callable

import torch
import torch.distributed as dist

from core.runs import files
from core.runs.progress import progress
from core.runs.setup import Job
from core.runs.shards import merge_run


def execute(job: Job, process: Callable[[int, torch.Tensor, int], dict], desc: str = "certify") -> str | None:
    """Run ``process(idx, x, label) -> row`` over the examples the job's plan has left, and write them.

    Single process: rows go straight to OUTFILE. torchrun: each rank writes OUTFILE.part{r}of{W}; rank 0
    merges when all are done. --shard I/N: this process writes its part only (merge with core.shards).
    Returns the path written: OUTFILE (single process, torchrun rank 0), the part file (--shard), or None
    (the other torchrun ranks).
    """
    args, plan = job.args, job.plan
    rank, world, distributed = job.world
    if job.split is not None:  # every rank works on every example; rank 0 alone writes
        return _execute_split(job, process, desc)
    meta = _sidecar_meta(job, **(dict(rank=rank, world=world, indices=plan.expected) if world > 1 else {}))
    _write_rows(job, files.ResultWriter(plan, meta, job.model_name), process,
                f"{desc} [{rank}/{world}]" if world > 1 else desc)
    if not distributed or world == 1:
        return plan.path
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    if rank == 0:
        if args.resume and os.path.exists(job.outfile):
            os.remove(job.outfile)  # re-merge from the (complete) parts
        merge_run(job.outfile, world)
    dist.barrier()
    return job.outfile if rank == 0 else None


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def _sidecar_meta(job: Job, **extra: Any) -> dict[str, Any]:
    """What the sidecar records beside the run's identity: the resolved arguments, the model hashes, the
    numerics flags, the resolved protocol, and the process's place in a sharded or split run."""
    return {"args": _resolved(job.args), "checkpoints": job.plan.identity["models"], "flags": job.flags,
            "protocol": getattr(job.args, "protocol_record", None), **extra}


def _write_rows(job: Job, writer: files.ResultWriter | None, process: Callable, desc: str, show: bool = True,
                todo: list[int] | None = None) -> None:
    """Each example's row, written as soon as it is done; a run stopped by an error (or a signal) before
    its first row removes the files it created."""
    plan = job.plan
    todo = plan.todo if todo is None else todo
    try:
        for idx in progress(todo, total=len(plan.expected), done=len(plan.expected) - len(todo), desc=desc,
                            show=show):
            row = _row(job, idx, process)
            if writer is not None:
                writer.write(row)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.close()


def _row(job: Job, idx: int, process: Callable) -> dict[str, Any]:
    """One example's row: data to the device, per-example hooks, the non-finite check, timing."""
    x, label = job.dataset[idx]
    x = x.to(job.device)
    job.set_example(idx)
    t0 = time.time()
    row = process(idx, x, int(label))
    job.check_finite(idx)
    if job.device.type == "cuda":
        torch.cuda.synchronize(job.device)
    row["time"] = files.format_time(time.time() - t0)
    return row


def _execute_split(job: Job, process: Callable, desc: str) -> str | None:
    """--split_n: all ranks go through the same examples (their draws are summed inside Smooth); rank 0
    writes the rows. Every rank checked the same files in its plan; rank 0's list of what is left is used."""
    rank = job.split.rank
    dist.barrier()  # every rank has checked OUTFILE before rank 0 writes
    writer = None
    if rank == 0:
        writer = files.ResultWriter(job.plan, _sidecar_meta(job, split_n_world=job.split.world), job.model_name)
    todo = [job.plan.todo]
    dist.broadcast_object_list(todo, src=0)
    _write_rows(job, writer, process, desc, show=rank == 0, todo=todo[0])
    dist.barrier()
    return job.plan.path if rank == 0 else None
