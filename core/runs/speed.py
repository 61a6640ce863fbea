"""Speed of the certify loop: the batch size that fits device memory (``--batch auto``) and the
memory-layout rule of the fast path.

The fast path (``core.runs.setup.build_base_classifier`` + ``Smooth.sample_counts``) draws the noise on the
device from the example's generator, counts on the device, and syncs with the host once per
``sample_counts`` call. Numerics rule (issue 5): with ``--amp off`` it computes exactly what the plain
modules compute. channels_last is therefore used only *with* autocast on CUDA (NHWC convolutions run
other kernels, whose float32 results differ in the last bits), and torch.compile is opt-in (``--compile``;
fused kernels are not bit-identical either).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Callable

import torch

from core.errors import MsrsError

CPU_BATCH = 256     # CPU: larger batches stop paying off (measured on the digits models, 2 cores)
MAX_BATCH = 8192    # CUDA: beyond this the per-batch launch overhead is already negligible
START_BATCH = 64    # CUDA probe: first size tried (smaller ones only if it does not fit)
HEADROOM = 0.8      # CUDA: a probe's peak must stay within this fraction of the free memory


def use_channels_last(device: torch.device | str, amp: torch.dtype | None) -> bool:
    """channels_last conv weights for the fast path: on CUDA with autocast only (see the module docstring)."""
    return torch.device(device).type == "cuda" and amp is not None


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Convert the 4-D parameters and buffers (conv weights) in place; convolutions then propagate NHWC."""
    return module.to(memory_format=torch.channels_last)


CPU_MALLOC_KEEP = 1 << 30   # bytes: glibc keeps freed blocks up to this size for the next batch


def keep_freed_memory() -> bool:
    """CPU: let glibc's malloc keep the large blocks a batch frees (the activations of the next batch have the
    same sizes) instead of returning them to the OS and faulting fresh pages in on every batch.

    glibc serves blocks above its mmap threshold (at most 32 MiB by its own rule, less than one activation of a
    500-image batch) with mmap and unmaps them on free; raising M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
    (mallopt) turns that into reuse: 27 s -> 20 s for a digits certify run on 2 cores, system time 11 s -> 1 s
    (measured in this session). Numbers are unchanged: only where the memory comes from. Returns whether it
    was applied (False off glibc: macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3      # glibc's <malloc.h> constants
    return bool(mallopt(m_mmap_threshold, CPU_MALLOC_KEEP)) and bool(mallopt(m_trim_threshold, CPU_MALLOC_KEEP))


def synchronize(device: torch.device | str) -> None:
    """Wait for the device (CUDA); a no-op on CPU. For timing only: the sampling loop never calls it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_candidates(cap: int, max_batch: int = MAX_BATCH) -> list[int]:
    """Powers of two <= min(cap, max_batch), plus cap itself when cap <= max_batch (one batch for n0 = 100)."""
    limit = max(1, min(int(cap), int(max_batch)))
    sizes = [1 << k for k in range(limit.bit_length()) if (1 << k) <= limit]
    if limit == int(cap) and sizes[-1] != limit:
        sizes.append(limit)
    return sizes


def search_batch(probe: Callable[[int], int | None], candidates: list[int], budget: float,
                 start: int = START_BATCH) -> int:
    """The largest candidate whose ``probe(bs)`` (peak bytes, or None for out-of-memory) is <= budget.

    Goes up by doubling from the largest candidate <= ``start`` and stops at the first that does not fit
    (memory grows with the batch); if ``start`` itself does not fit, goes down instead. 0 if none fits.
    """
    def fits(bs: int) -> bool:
        peak = probe(bs)
        return peak is not None and peak <= budget

    i0 = max([i for i, bs in enumerate(candidates) if bs <= start] or [0])
    if not fits(candidates[i0]):
        return next((bs for bs in reversed(candidates[:i0]) if fits(bs)), 0)
    best = candidates[i0]
    for bs in candidates[i0 + 1:]:
        if not fits(bs):
            break
        best = bs
    return best


def _probe_cuda(module: Callable[[torch.Tensor], torch.Tensor], x_shape: tuple[int, ...],
                device: torch.device, bs: int) -> int | None:
    """Peak bytes allocated (above the current allocation) by one noisy batch through ``module``; None on OOM."""
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    oom = False
    try:
        batch = torch.randn((bs, *x_shape), device=device).mul_(0.25).add_(torch.rand(x_shape, device=device))
        module(batch).argmax(1)
        torch.cuda.synchronize(device)
    except torch.OutOfMemoryError:
        oom = True
    batch = None
    if oom:  # outside the except block: the traceback no longer pins the failed batch's tensors
        torch.cuda.empty_cache()
        return None
    return torch.cuda.max_memory_allocated(device) - start


@torch.no_grad()
def auto_batch_size(base: Callable[[torch.Tensor], torch.Tensor], x_shape: tuple[int, ...],
                    device: torch.device | str, cap: int, max_batch: int = MAX_BATCH,
                    headroom: float = HEADROOM) -> int:
    """``--batch auto``: a noise batch size for ``base`` on ``device``, in [1, cap].

    CUDA: the largest power of two (or ``cap`` itself) <= min(cap, max_batch) whose forward pass through
    ``base`` peaks within ``headroom`` x the free device memory; out-of-memory probes are caught and the
    cache emptied. CPU: min(cap, CPU_BATCH). ``base`` is the assembled base classifier (its autocast
    included); a compiled module is probed through its eager original. Call it before ``set_example``:
    a stochastic (DensePure) denoiser's reverse stream advances during the probes.
    """
    device = torch.device(device)
    cap = max(1, int(cap))
    if device.type != "cuda":
        return min(cap, CPU_BATCH)
    module = getattr(base, "_orig_mod", base)  # compiling every probe size would take minutes
    if hasattr(module, "eval"):
        module.eval()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    best = search_batch(lambda bs: _probe_cuda(module, tuple(x_shape), device, bs), batch_candidates(cap, max_batch),
                        headroom * free)
    torch.cuda.empty_cache()
    if best == 0:
        raise MsrsError(f"not even one noise sample of shape {tuple(x_shape)} fits in {device}'s free memory "
                        f"({free / 2**30:.1f} GiB); free the device or use a smaller model")
    return best
