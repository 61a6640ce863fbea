"""Certify-loop throughput, measured side by side in one run on the same models and device (issue 5).

    python bench/certify_throughput.py --small                       # CPU: digits UNet + digits_cnn, < 2 min
    python bench/certify_throughput.py --device cuda --config cifar  # improved-diffusion 52M UNet + CLIP_B16@224

Random weights (speed does not depend on them). Three ways to get noise samples through the same
denoise-then-classify networks, interleaved in rounds (medians reported):
  (1) floor: the bare forward pass of our assembled base classifier on pre-made noisy batches;
  (2) ours: ``Smooth.sample_counts`` on it (noise from the example's generator on the device, counts on the
      device, one host sync per call) -- the default path of certify.py (``--amp auto``: under the default
      mdds protocol fp16 on CUDA);
  (3) reference-style: the locuslab / DDS ``_sample_noise`` loop on plain fp32 copies of the networks with
      PyTorch's default backend flags: ``x.repeat`` on the host, ``.to(device)`` per batch,
      ``torch.randn_like(batch, device=...)``, ``.cpu().numpy()`` and a Python loop counting the predictions.
      It reuses our one-shot denoiser, which is cheaper than DDS's full ``p_sample``: (2)/(3) is conservative.
With ``--sound``, also (2s): the same path with the exact grid noise of ``--sound`` (core/noise.py: integer
uniforms and an inverse-CDF table instead of ``randn``), and (d) its cost, (2s)/(2).
Printed: (a) (2)/(1), goal >= 0.95; (b) (2)/(3), goal >= 1.5 on GPU; (c) the peak memory of each path over
a separate, untimed pass, above the memory in use at its start (weights excluded; CUDA:
torch.cuda.max_memory_allocated; CPU: the process RSS sampled from /proc/self/statm every millisecond).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import math
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.denoise import DenoiseThenClassify, DiffusionDenoiser  # noqa: E402
from core.runs import speed  # noqa: E402
from core.runs.protocols import DEFAULT_PROTOCOL, auto_amp, get_protocol  # noqa: E402
from core.runs.setup import amp_dtype, build_base_classifier, resolve_device, set_backend_flags  # noqa: E402
from core.smoothing import Smooth, example_generator  # noqa: E402

# name: (diffusion config, classifier arch, input shape, classes)
CONFIGS = {
    "small": ("digits-ddpm", "digits_cnn", (3, 16, 16), 10),
    "improved-small": ("improved-small", "CLIP_B16_tiny", (3, 32, 32), 10),
    "cifar": ("improved-cifar10-uncond", "CLIP_B16", (3, 32, 32), 10),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("certify_throughput.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="same as --config small (CPU-sized models)")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None,
                   help="models (random weights); default: cifar on CUDA, small otherwise")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--batch", default="auto", help="our batch size, or 'auto' (core.runs.speed.auto_batch_size)")
    p.add_argument("--ref_batch", default="auto",
                   help="the reference loop's batch size; 'auto': ours, or what fits its fp32 models if smaller "
                        "(DDS's README uses 200 on CIFAR-10)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="our path's autocast (auto: certify.py's under the default protocol: fp16 on CUDA, off on "
                        "CPU); the reference is fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile our base classifier (floor and ours)")
    p.add_argument("--sound", action="store_true", help="also time our path with --sound's exact grid noise")
    p.add_argument("--channels_last", choices=["auto", "on", "off"], default="auto",
                   help="our networks' layout (auto: the pipeline's rule, on with autocast on CUDA)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of one floor measurement; sets N for the others (default 5 CPU, 10 CUDA)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    return p


# ---------------------------------------------------------------------------------------------- models
def build_models(config: str, sigma: float, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(denoiser, classifier) with random weights, on the CPU. The UNet's zero-initialized output layers get
    small random weights, so that the denoiser's output depends on its input as a trained one's does."""
    from models.classifiers import create_model
    from models.diffusion import NAMED_CONFIGS, create_model_and_diffusion
    diff_config, arch, shape, classes = CONFIGS[config]
    torch.manual_seed(seed)
    unet, diffusion = create_model_and_diffusion(**NAMED_CONFIGS[diff_config])
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    kwargs = {"img_size": 224} if arch == "CLIP_B16" else {}
    classifier = create_model(arch, num_classes=classes, **kwargs)
    return DiffusionDenoiser(unet.eval(), diffusion, sigma).eval(), classifier.eval()


# ------------------------------------------------------------------------------------- the three paths
@torch.no_grad()
def reference_counts(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num: int, batch_size: int,
                     sigma: float, num_classes: int, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> np.ndarray:
    """The locuslab / DDS ``Smooth._sample_noise`` loop (x on the host). With ``generator`` (on ``device``) the
    noise is drawn from it instead of the global stream, so that the counts can be compared bit for bit."""
    counts = np.zeros(num_classes, dtype=int)
    for _ in range(math.ceil(num / batch_size)):
        this_batch_size = min(batch_size, num)
        num -= this_batch_size
        batch = x.repeat((this_batch_size, 1, 1, 1)).to(device)
        if generator is None:
            noise = torch.randn_like(batch, device=device) * sigma
        else:
            noise = torch.randn(batch.shape, generator=generator, device=device, dtype=batch.dtype) * sigma
        predictions = model(batch + noise).argmax(1)
        for idx in predictions.cpu().numpy():
            counts[idx] += 1
    return counts


@contextlib.contextmanager
def pytorch_default_flags(device: torch.device) -> Iterator[None]:
    """PyTorch's default backend flags, as a reference script that sets none runs with (CUDA only)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = \
        False, True, False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def timed(fn: Callable[[], object], device: torch.device) -> float:
    speed.synchronize(device)
    t0 = time.perf_counter()
    fn()
    speed.synchronize(device)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- memory
class RssPeak:
    """Peak resident memory of this process above its value at entry (after glibc's malloc_trim), sampled
    from /proc/self/statm every ``interval`` seconds by a thread; without /proc: the growth of the lifetime
    maximum (ru_maxrss)."""

    PAGE = resource.getpagesize()

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.method = "RSS sampled from /proc/self/statm every 1 ms" if Path("/proc/self/statm").exists() \
            else "growth of ru_maxrss (process lifetime maximum)"

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(self.interval)

    def __enter__(self) -> "RssPeak":
        with contextlib.suppress(OSError, AttributeError):  # glibc: hand freed memory back, so growth shows
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if Path("/proc/self/statm").exists():
            self.start = self._rss()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        else:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if Path("/proc/self/statm").exists():
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.start)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.start


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str]:
    """(peak bytes, what was measured) over one call of fn."""
    if device.type == "cuda":
        speed.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        speed.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, \
            "torch.cuda.max_memory_allocated above the allocation at the start of each pass (weights excluded)"
    with RssPeak() as rss:
        fn()
    return rss.peak, f"peak process RSS above the start of each pass ({rss.method})"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return f"{name}, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = "small" if args.small else (args.config or ("cifar" if device.type == "cuda" else "small"))
    seconds = args.seconds if args.seconds is not None else (10.0 if device.type == "cuda" else 5.0)
    flags = set_backend_flags(device)           # what certify.py sets for our path
    amp = amp_dtype(auto_amp(get_protocol(DEFAULT_PROTOCOL).precision, device.type) if args.amp == "auto"
                    else args.amp, device)                  # certify.py's --amp auto under the default protocol
    _, _, shape, classes = CONFIGS[config]

    denoiser, classifier = build_models(config, args.sigma, args.seed)
    # the reference gets its own plain fp32 copies: our assembly may convert the networks in place
    reference = DenoiseThenClassify(copy.deepcopy(denoiser), copy.deepcopy(classifier), args.sigma).to(device).eval()
    channels_last = speed.use_channels_last(device, amp) if args.channels_last == "auto" else args.channels_last == "on"
    ours = build_base_classifier(classifier, denoiser, args.sigma, device, amp, compile=args.compile,
                                 channels_last=channels_last)
    smooth = Smooth(ours, classes, args.sigma)
    sound = Smooth(ours, classes, args.sigma, sound=True) if args.sound else None
    # an 8-bit image (on the grid, as --sound needs)
    x_host = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(args.seed)).float() / 255
    x = x_host.to(device)

    bs = speed.auto_batch_size(ours, shape, device, cap=10**9) if args.batch == "auto" else int(args.batch)
    if args.ref_batch == "auto":
        with pytorch_default_flags(device):
            ref_bs = min(bs, speed.auto_batch_size(reference, shape, device, cap=bs))
    else:
        ref_bs = int(args.ref_batch)

    g = example_generator(args.seed, 0, 0, device)
    premade = [x + args.sigma * torch.randn((bs, *shape), generator=g, device=device) for _ in range(2)]

    def floor(k: int) -> None:
        with torch.no_grad():
            for i in range(k):
                ours(premade[i % len(premade)])

    def run_ours(num: int) -> None:
        smooth.sample_counts(x, num, bs, g)

    def run_sound(num: int) -> None:
        sound.sample_counts(x, num, bs, g)

    def run_reference(num: int) -> None:
        with pytorch_default_flags(device):
            reference_counts(reference, x_host, num, ref_bs, args.sigma, classes, device)

    # warm-up (cudnn autotuning, compilation), then calibrate N so that one floor measurement takes `seconds`
    floor(1)
    run_ours(bs)
    if sound:
        run_sound(bs)
    run_reference(ref_bs)
    t1 = timed(lambda: floor(1), device)
    k = max(4, round(seconds / max(t1, 1e-6)))
    num = k * bs

    paths = {"floor": lambda: floor(k), "ours": lambda: run_ours(num), "reference": lambda: run_reference(num)}
    if sound:
        paths["sound"] = lambda: run_sound(num)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            rates[name].append(num / timed(fn, device))
    med = {name: statistics.median(r) for name, r in rates.items()}
    ratio_floor = statistics.median(o / f for o, f in zip(rates["ours"], rates["floor"]))
    ratio_ref = statistics.median(o / r for o, r in zip(rates["ours"], rates["reference"]))

    mem, mem_method = {}, ""
    for name, fn in (("floor", lambda: floor(2)), ("ours", lambda: run_ours(2 * bs)),
                     ("reference", lambda: run_reference(2 * ref_bs))) + ((("sound", lambda: run_sound(2 * bs)),)
                                                                           if sound else ()):
        mem[name], mem_method = peak_memory(fn, device)

    diff_config, arch, _, _ = CONFIGS[config]
    amp_name = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    print(f"certify throughput | config {config}: {diff_config} UNet + {arch}, {shape[1]}x{shape[2]} input, "
          f"random weights | sigma {args.sigma}")
    print(f"device: {device} ({device_name(device)}) | torch {torch.__version__}")
    print(f"ours: amp {amp_name}, channels_last {'on' if channels_last else 'off'}, "
          f"compile {'on' if args.compile else 'off'}, flags {flags}, batch {bs}"
          f"{' (auto)' if args.batch == 'auto' else ''}")
    print(f"reference: fp32, PyTorch default flags, batch {ref_bs}")
    print(f"N = {num} samples per measurement, median of {args.rounds} interleaved round(s)\n")
    rows = [("(1) bare forward floor (pre-made noisy batches)", "floor"),
            ("(2) ours: Smooth.sample_counts, default path", "ours"),
            ("(3) reference-style loop (locuslab/DDS)", "reference")] + \
        ([("(2s) ours with --sound (exact grid noise)", "sound")] if sound else [])
    print(f"| {'path':<50} | {'samples/s':>10} | {'rounds: min-max':>17} | {'peak memory (MiB)':>17} |")
    print(f"|{'-' * 52}|{'-' * 12}|{'-' * 19}|{'-' * 19}|")
    for label, name in rows:
        spread = f"{min(rates[name]):.1f}-{max(rates[name]):.1f}"
        print(f"| {label:<50} | {med[name]:>10.1f} | {spread:>17} | {mem[name] / 2**20:>17.1f} |")
    def per_round(a: str, b: str) -> str:
        return " ".join(f"{x / y:.3f}" for x, y in zip(rates[a], rates[b]))
    print(f"\n(a) ours / floor     = {ratio_floor:.3f}   (goal >= 0.95; per round: {per_round('ours', 'floor')})")
    print(f"(b) ours / reference = {ratio_ref:.3f}   (goal >= 1.5 on GPU; per round: {per_round('ours', 'reference')})")
    if sound:
        ratio_sound = statistics.median(a / b for a, b in zip(rates["sound"], rates["ours"]))
        print(f"(d) --sound / ours   = {ratio_sound:.3f}   (the cost of exact grid noise; per round: "
              f"{per_round('sound', 'ours')})")
    weights = sum(t.numel() * t.element_size() for m in (denoiser, classifier) for t in m.state_dict().values())
    print(f"(c) memory: {mem_method}; weights: {weights / 2**20:.1f} MiB per copy")
    return {"config": config, "device": str(device), "device_name": device_name(device), "batch": bs,
            "ref_batch": ref_bs, "num": num, "samples_per_s": med, "rates": rates, "ratio_floor": ratio_floor,
            "ratio_reference": ratio_ref, "peak_memory": mem, "memory_method": mem_method,
            "weights_bytes": weights}


if __name__ == "__main__":
    main()
