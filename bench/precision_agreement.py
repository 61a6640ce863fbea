"""Do fp16 / bf16 (autocast) and torch.compile change the counts? Same models, same inputs, same noise seeds.

    python bench/precision_agreement.py --device cuda --config cifar     # part of bench/gpu_check.sh
    python bench/precision_agreement.py --small                           # CPU, tiny models

For each precision the base classifier is assembled exactly as certify.py does (``build_base_classifier``,
random weights as in bench/certify_throughput.py) from its own copy of the networks, and every input's
noise comes from the example's generator (``example_generator(seed, idx)``), so every precision sees
bit-identical noisy inputs. Reported, against fp32 (``--amp off``): the share of noise samples whose
predicted class differs, and the total-variation distance between the count vectors of
``Smooth.sample_counts`` (what CERTIFY uses). Random-weight networks have logits closer together than
trained ones, so these figures are an upper bound for trained models rather than an estimate.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.pipeline import build_base_classifier, resolve_device  # noqa: E402

from bench.certify_throughput import CONFIGS, build_models  # noqa: E402
from core.smoothing import Smooth, example_generator  # noqa: E402

VARIANTS = {"fp32": (None, False), "fp16": (torch.float16, False), "bf16": (torch.bfloat16, False),
            "bf16+compile": (torch.bfloat16, True)}


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    device = resolve_device(args.device)
    config = "small" if args.small else (args.config or ("cifar" if device.type == "cuda" else "small"))
    variants = args.variants or (list(VARIANTS) if device.type == "cuda" else ["fp32", "bf16"])
    variants = ["fp32"] + [v for v in variants if v != "fp32"]
    denoiser, classifier = build_models(config, args.sigma, args.seed)
    _, _, shape, classes = CONFIGS[config]
    xs = [torch.rand(shape, generator=torch.Generator().manual_seed(args.seed + i)).to(device)
          for i in range(args.inputs)]

    preds, counts = {}, {}
    for name in variants:
        amp, compile_ = VARIANTS[name]
        base = build_base_classifier(copy.deepcopy(classifier), copy.deepcopy(denoiser), args.sigma, device, amp,
                                     compile=compile_)
        smooth = Smooth(base, classes, args.sigma)
        preds[name], counts[name] = [], []
        for i, x in enumerate(xs):
            g = example_generator(args.seed, i, 0, device)
            noise = torch.randn((args.n, *shape), generator=g, device=device)
            preds[name].append(torch.cat([base(x + args.sigma * noise[b:b + args.batch]).argmax(1)
                                          for b in range(0, args.n, args.batch)]).cpu())
            counts[name].append(torch.as_tensor(smooth.sample_counts(x, args.n, args.batch,
                                                                     example_generator(args.seed, i, 0, device))))
    print(f"precision agreement | config {config} | device {device} | {args.inputs} inputs x {args.n} noise samples "
          f"| sigma {args.sigma}")
    print(f"| {'variant':<13} | {'samples whose class differs from fp32':>38} | "
          f"{'TV(counts, fp32 counts), mean / max':>36} |")
    print(f"|{'-' * 15}|{'-' * 40}|{'-' * 38}|")
    out = {}
    for name in variants:
        differ = sum(int((p != q).sum()) for p, q in zip(preds[name], preds["fp32"])) / (args.inputs * args.n)
        tv = [float((c - d).abs().sum()) / (2 * args.n) for c, d in zip(counts[name], counts["fp32"])]
        out[name] = {"differ": differ, "tv_mean": sum(tv) / len(tv), "tv_max": max(tv)}
        print(f"| {name:<13} | {differ:>38.4%} | {out[name]['tv_mean']:>17.4%} / {out[name]['tv_max']:>15.4%} |")
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("precision_agreement.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="same as --config small")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="default: all on CUDA, fp32 and bf16 on CPU (fp32 is always the reference)")
    p.add_argument("--inputs", type=int, default=8)
    p.add_argument("--n", type=int, default=1024, help="noise samples per input")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    main()
