"""--protocol resolution (core/runs/protocol.py): unset choices come from the row, flags win, per script and
dataset; the returned record is what the sidecar stores."""
import argparse
import json

import pytest

from core.errors import MsrsError
from core.runs.protocols import PROTOCOLS
from core.runs.protocols import resolve_protocol

KEYS = ("imagenet_transform", "pad_to", "resize_antialias", "normalization", "noise_construction", "t_star", "respacing",
        "unet_fp16", "tf32", "subset", "alpha", "batch", "skip", "N0", "N", "columns", "max_order", "abstain")


def ns(**kw):
    return argparse.Namespace(**{**{k: None for k in KEYS}, "amp": "auto", **kw})


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_certify_defaults_come_from_the_row(name):
    p = PROTOCOLS[name]
    a = ns(protocol=name)
    rec = resolve_protocol(a, "certify", "imagenet", device_type="cuda")
    assert (a.N0, a.N, a.skip, a.batch, a.alpha) == (p.certify.N0, p.certify.N, p.certify.skip,
                                                     str(p.certify.batch), p.certify.alpha)
    assert (a.pad_to, a.imagenet_transform, a.resize_antialias, a.normalization) == (
        p.imagenet_pad_to, p.imagenet_transform, p.resize_antialias, p.normalization)
    assert (a.noise_construction, a.t_star, a.respacing, a.columns, a.max_order, a.subset) == (
        p.noise, p.t_star, p.respacing, p.columns, p.max_order, p.imagenet_subset)
    assert a.amp == ("fp16" if p.precision == "fp16" else "off") and a.unet_fp16 == p.unet_fp16
    assert rec["name"] == name and rec["from_flags"] == [] and rec["row"] == p.as_dict()
    json.dumps(rec)


def test_flags_win_and_dataset_and_device_matter():
    a = ns(protocol="mdds", pad_to=0, N=10000, amp="bf16")
    rec = resolve_protocol(a, "certify", "imagenet", device_type="cuda")
    assert (a.pad_to, a.N, a.amp) == (0, 10000, "bf16") and rec["from_flags"] == ["N", "amp", "pad_to"]
    a = ns(protocol="mdds")
    resolve_protocol(a, "certify", "cifar10", device_type="cpu")
    assert a.pad_to is None and a.amp == "off" and a.unet_fp16 is False     # CPU: fp32; CIFAR: no padding
    a = ns(protocol="cadis")
    resolve_protocol(a, "certify", "imagenet-a")
    assert a.subset == "skip"                                               # one per class: ImageNet val only
    a = ns()
    assert resolve_protocol(a, "certify", "digits")["name"] == "mdds" and a.protocol == "mdds"


def test_per_script_rows():
    a = ns(protocol="cohen")
    resolve_protocol(a, "predict_ddpm", "cifar10")
    assert (a.columns, a.abstain, a.N, a.max_order) == ("cohen", "wrong", 100000, "skip_first")
    a = ns(protocol="mdds")
    resolve_protocol(a, "predict_ddpm", "cifar10")
    assert (a.columns, a.abstain, a.N, a.max_order) == ("mdds", "clean_fallback", 200, "skip_first")
    a = ns(protocol="mdds")
    resolve_protocol(a, "predict_mdds", "cifar10")
    assert (a.N, a.max_order) == (200, "max_first")
    with pytest.raises(MsrsError, match="unknown --protocol"):
        resolve_protocol(ns(protocol="x"), "certify", "cifar10")
