"""Dataset registry: names → builders, `get_dataset`, `dataset_info`, and the shared file checks.

Every dataset yields `(x, y)`: `x` a float32 tensor [C,H,W] of pixels in [0,1] (no normalization:
classifiers own theirs, see docs/ARCHITECTURE.md), `y` a Python int.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset

from core.errors import MsrsError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (at its native size; `resize=` options change `image_size`).

    class_subset: for the 200-class ImageNet-A/R, the sorted ImageNet-1k indices of their classes
    (labels are ImageNet-1k indices; mask the 1000 logits to these); None when all classes occur.
    """
    name: str
    num_classes: int
    image_size: int
    channels: int
    class_subset: Optional[list[int]] = None


# name → builder(split, data_path, **opts) -> Dataset; name → info factory (a fresh object per call)
DATASETS: dict[str, Callable[..., Dataset]] = {}
_INFO: dict[str, Callable[[], DatasetInfo]] = {}

# spellings used by the reference repos' command lines (MDDS: imagenet_a, imagenet_r, cifar10c_<corruption>)
ALIASES: dict[str, str] = {"imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r", "cifar10_1": "cifar10.1"}


def register_dataset(name: str, info: Callable[[], DatasetInfo]):
    """Decorator: register `builder(split, data_path, **opts)` under `name`."""
    def deco(builder: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = builder
        _INFO[name] = info
        return builder
    return deco


def _resolve(name: str) -> tuple[str, dict[str, Any]]:
    """Canonical name plus options implied by the name (MDDS's `cifar10c_<corruption>`)."""
    if name in DATASETS:
        return name, {}
    if name in ALIASES:
        return ALIASES[name], {}
    if name.startswith("cifar10c_") and "cifar10c" in DATASETS:
        return "cifar10c", {"corruption": name[len("cifar10c_"):]}
    raise MsrsError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def get_dataset(name: str, split: str, data_path: str = "datasets", **opts: Any) -> Dataset:
    """The dataset `name` ('train' or 'test' split) read from `data_path`, as (x in [0,1]^[C,H,W], int y).

    Options depend on the dataset (e.g. cifar10c: corruption, severity; imagenet: transform);
    an unknown option or a missing file raises MsrsError. Nothing is ever downloaded.
    """
    canonical, implied = _resolve(name)
    for k, v in implied.items():
        if k in opts and opts[k] != v:
            raise MsrsError(f"dataset {name!r} fixes {k}={v!r}, but {k}={opts[k]!r} was also given")
    return DATASETS[canonical](split, os.fspath(data_path), **{**implied, **opts})


def dataset_info(name: str) -> DatasetInfo:
    """`DatasetInfo(name, num_classes, image_size, channels, class_subset)` for a dataset name."""
    return _INFO[_resolve(name)[0]]()


# ---- helpers shared by the builders -------------------------------------------------------------

def check_split(name: str, split: str, allowed: Sequence[str]) -> str:
    """`split` if allowed ('val' is read as 'test'), else MsrsError."""
    split = "test" if split == "val" else split
    if split not in allowed:
        raise MsrsError(f"dataset {name!r} has splits {', '.join(allowed)}; got split {split!r}")
    return split


def check_opts(name: str, opts: dict[str, Any]) -> None:
    """Reject options a builder did not consume (typos would otherwise be silently ignored)."""
    if opts:
        raise MsrsError(f"unknown option(s) for dataset {name!r}: {', '.join(sorted(opts))}")


def find_path(candidates: Sequence[str], what: str, how: str, is_dir: bool = False) -> str:
    """The first existing path among `candidates`; else a one-line MsrsError naming the first one.

    Later candidates are the layouts the reference repos used (accepted so old data folders work).
    """
    for p in candidates:
        if (os.path.isdir(p) if is_dir else os.path.isfile(p)):
            return p
    alt = f" (or {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise MsrsError(f"{what} not found: expected {candidates[0]}{alt}; {how}")
