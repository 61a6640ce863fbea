"""Agreement of the opt-in precisions with fp32 on the same noise (issue 12): per-sample labels, counts and
certified results of the denoise-then-classify pipeline under autocast bf16 / fp16 vs fp32.

    python bench/precision_agreement.py                       # CPU: zoo digits DDPM + digits_cnn, ~30 min
    python bench/precision_agreement.py --device cuda --modes fp32 fp16 bf16 tf32 compile

Every mode sees the same noise draws (the example generators of certify.py, drawn in fp32 before autocast),
so each difference comes from the arithmetic. Printed per sigma (single-sigma CERTIFY) and for the MDDS
cascade: the fraction of noise samples whose label differs from fp32's, the mean total-variation distance
of the count vectors, the fraction of examples whose (prediction, radius) row differs, and the certified
accuracy at r = 0, .25, .5, .75, 1 for every mode, against each --references mode (fp32: the precision of
DDS, FT-CADIS, Cohen, Salman; fp16: MDDS's autocast). `tf32` (CUDA only) is fp32 with TF32 matmul/cudnn;
`compile` is fp32 through torch.compile (inductor), as certify.py --compile.
CPU fp16 autocast runs PyTorch's CPU half kernels: the rounding of inputs and weights is the paper's
(MDDS's torch.cuda.amp fp16), the accumulation order is not the GPU's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cascade import MultiScaleSmooth  # noqa: E402
from core.runs.loaders import load_denoisers  # noqa: E402
from core.runs.setup import build_base_classifier, set_backend_flags  # noqa: E402
from core.smoothing import Smooth, certify_from_counts, example_generator  # noqa: E402
from core.stats import floor_radius  # noqa: E402
from datasets import get_dataset  # noqa: E402
from models.classifiers import load_classifier  # noqa: E402

DTYPES = {"fp32": None, "tf32": None, "compile": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


class Recorder(torch.nn.Module):
    """Passes logits through and keeps each sample's label (the order is the sampling order)."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.base, self.labels = base, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        self.labels.append(out.argmax(1).cpu())
        return out

    def take(self) -> torch.Tensor:
        labels, self.labels = torch.cat(self.labels), []
        return labels


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", default="zoo:digits_cnn")
    p.add_argument("--denoiser", default="zoo:digits_ddpm")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--skip", type=int, default=9, help="every SKIP-th test image (digits: 40 of 360)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--N", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=["fp32", "fp16", "bf16", "compile"], choices=list(DTYPES))
    p.add_argument("--references", nargs="+", default=["fp32", "fp16"], choices=list(DTYPES),
                   help="compare every mode with each of these (the papers' precisions: fp32 for DDS / FT-CADIS / "
                        "Cohen / Salman, fp16 autocast for MDDS)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if "tf32" in args.modes and device.type != "cuda":
        raise SystemExit("tf32 is a CUDA mode; drop it on CPU")
    ds = get_dataset(args.dataset, "test")
    idxs = list(range(0, len(ds), args.skip))
    clf = load_classifier(args.classifier).to(device).eval()
    labels_true = [int(ds[i][1]) for i in idxs]
    sig = sorted(args.sigmas, reverse=True)
    res: dict = {"args": vars(args), "n_examples": len(idxs), "modes": {}}
    for mode in args.modes:
        set_backend_flags(device, tf32=mode == "tf32")     # certify.py's numerics flags (--tf32 for tf32)
        dtype = DTYPES[mode]
        dens = load_denoisers(args.denoiser, sig)
        rec = {s: Recorder(build_base_classifier(clf, dens[s], s, device, dtype,
                                                 compile=mode == "compile")) for s in sig}   # certify.py's path
        single, samples, cascade = {s: [] for s in sig}, {s: [] for s in sig}, []
        counts = {s: [] for s in sig}
        ms = MultiScaleSmooth({s: rec[s] for s in sig}, 10, p0=0.5)
        t0 = time.time()
        for i in idxs:
            x = ds[i][0].to(device)
            for s in sig:
                sm = Smooth(rec[s], 10, s)
                g = example_generator(args.seed, i, 0, device)
                c0 = sm.sample_counts(x, args.N0, args.batch, g)
                c = sm.sample_counts(x, args.N, args.batch, g)
                pred, radius, _ = certify_from_counts(c0, c, args.alpha, s)
                single[s].append((pred, float(floor_radius(radius))))
                samples[s].append(rec[s].take())
                counts[s].append(c)
            r = ms.certify(x, args.N0, args.N, args.alpha, args.batch, lambda k: example_generator(args.seed, i, k, device))
            for s in sig:
                rec[s].labels.clear()      # the cascade's draws are compared through its rows
            cascade.append((r.prediction, float(floor_radius(r.radius))))
        res["modes"][mode] = {"seconds": time.time() - t0, "single": single, "samples": samples, "counts": counts,
                              "cascade": cascade}
        print(f"{mode}: {time.time() - t0:.0f} s", flush=True)
    set_backend_flags(device)
    refs = [r for r in args.references if r in args.modes]
    report = {r: summarize(res, labels_true, sig, r) for r in refs}
    for r in refs:
        print(f"\n== against {r}")
        print(format_report(report[r], args.modes, sig, r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "n_examples": len(idxs), "torch": torch.__version__,
                       "seconds": {m: res["modes"][m]["seconds"] for m in args.modes}, "report": report}, f, indent=1)
    return report


def summarize(res: dict, labels: list[int], sig: list[float], reference: str = "fp32") -> dict:
    """Each mode against `reference` on the same draws."""
    ref = res["modes"][reference]
    out: dict = {}
    for mode, m in res["modes"].items():
        row: dict = {}
        for s in sig:
            flips = float(np.mean([float((a != b).float().mean()) for a, b in zip(m["samples"][s], ref["samples"][s])]))
            tv = float(np.mean([0.5 * np.abs(a - b).sum() / a.sum() for a, b in zip(m["counts"][s], ref["counts"][s])]))
            rows_diff = float(np.mean([a != b for a, b in zip(m["single"][s], ref["single"][s])]))
            acc = certified_accuracy(m["single"][s], labels)
            row[f"sigma={s}"] = {"label_flip_rate": flips, "count_tv": tv, "rows_differ": rows_diff, "cert_acc": acc}
        row["cascade"] = {"rows_differ": float(np.mean([a != b for a, b in zip(m["cascade"], ref["cascade"])])),
                          "cert_acc": certified_accuracy(m["cascade"], labels)}
        out[mode] = row
    return out


def certified_accuracy(rows: list[tuple[int, float]], labels: list[int]) -> list[float]:
    return [float(np.mean([p == y and r >= rad for (p, r), y in zip(rows, labels)])) for rad in RADII]


def format_report(report: dict, modes: list[str], sig: list[float], reference: str = "fp32") -> str:
    lines = [f"certified accuracy at r = {', '.join(map(str, RADII))}"]
    for key in [f"sigma={s}" for s in sig] + ["cascade"]:
        lines.append(f"\n{key}")
        lines.append(f"| mode | label flips vs {reference} | count TV | rows differ | certified accuracy |")
        lines.append("|---|---|---|---|---|")
        for mode in modes:
            r = report[mode][key]
            flips = f"{r['label_flip_rate']:.2e}" if "label_flip_rate" in r else "-"
            tv = f"{r['count_tv']:.2e}" if "count_tv" in r else "-"
            lines.append(f"| {mode} | {flips} | {tv} | {r['rows_differ']:.3f} | "
                         f"{' '.join(f'{a:.3f}' for a in r['cert_acc'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
