"""``--protocol NAME``: fill every choice the user left at its default (None) from the paper's row of
core/protocols.py, and say what was resolved (the sidecar records it).

A flag given on the command line always wins over the row. Choices that only make sense for some datasets
are resolved for the dataset at hand: the ImageNet transform, denoiser padding and subset apply to the
ImageNet family; on CPU the precision is fp32 whatever the row says (autocast fp16 is a CUDA feature of
the references), and bf16 / TF32 are never a row's choice: they are opt-in (``--amp bf16``, ``--tf32``).
"""
from __future__ import annotations

import argparse
from typing import Any

from core.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol

CERTIFY, PREDICT, PREDICT_MDDS = "certify", "predict_ddpm", "predict_mdds"


def is_imagenet_family(dataset: str) -> bool:
    return dataset.replace("_", "-").startswith("imagenet")


def row_values(p: Protocol, script: str, dataset: str) -> dict[str, Any]:
    """The values of the row for one entry script and dataset, keyed by the flags' dest names."""
    imagenet = is_imagenet_family(dataset)
    v: dict[str, Any] = {
        "imagenet_transform": p.imagenet_transform,
        "pad_to": p.imagenet_pad_to if imagenet else None,
        "resize_antialias": p.resize_antialias,
        "normalization": p.normalization,
        "noise": p.noise,
        "t_star": p.t_star,
        "respacing": p.respacing,
        "precision": p.precision,
        "unet_fp16": p.unet_fp16,
        "tf32": p.tf32_matmul,
        "subset": p.imagenet_subset if dataset.replace("_", "-") == "imagenet" else "skip",
        "alpha": p.certify.alpha,
        "batch": str(p.certify.batch),
        "skip": p.certify.skip,
        "N0": p.certify.N0,
    }
    if script == CERTIFY:
        v.update(columns=p.columns, max_order=p.max_order, N=p.certify.N)
    elif script == PREDICT:
        v.update(columns=p.predict_columns, abstain=p.predict_abstain, max_order=p.predict_max_order, N=p.predict_N)
    elif script == PREDICT_MDDS:   # only MDDS has it: its own defaults whatever the row
        v.update(max_order="max_first", N=200)
    return v


def resolve_protocol(args: argparse.Namespace, script: str, dataset: str | None = None,
                     device_type: str = "cpu") -> dict[str, Any]:
    """Set each protocol-governed attribute of `args` that is None to the row's value (in place).

    Returns ``{"name", "resolved": {dest: value}, "from_flags": [dest, ...], "row": Protocol.as_dict()}``:
    what the run uses, which of it the command line chose, and the whole row (for the sidecar).
    ``--amp auto`` becomes the row's precision on CUDA ('fp16' or 'off') and 'off' on CPU.
    """
    name = getattr(args, "protocol", None) or DEFAULT_PROTOCOL
    p = get_protocol(name)
    dataset = dataset or getattr(args, "dataset", "")
    resolved, from_flags = {}, []
    for dest, value in row_values(p, script, dataset).items():
        if dest == "precision":
            if not hasattr(args, "amp"):
                continue
            if args.amp in (None, "auto"):
                args.amp = ("fp16" if value == "fp16" else "off") if device_type == "cuda" else "off"
            else:
                from_flags.append("amp")
            resolved["amp"] = args.amp
            continue
        if not hasattr(args, dest):
            continue
        if dest == "unet_fp16" and device_type != "cuda":
            value = False            # the references' fp16 UNet is a CUDA runtime mode
        if getattr(args, dest) is None:
            setattr(args, dest, value)
        else:
            from_flags.append(dest)
        resolved[dest] = getattr(args, dest)
    args.protocol = name
    return {"name": name, "resolved": resolved, "from_flags": sorted(from_flags), "row": p.as_dict()}
