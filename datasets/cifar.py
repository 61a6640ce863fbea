"""CIFAR-10 and its shifted test sets (CIFAR-10-C, CIFAR-10.1), all 32×32 RGB pixels in [0,1].

All three give raw [0,1] pixels: no Normalize anywhere (classifiers and the denoiser wrapper own
their preprocessing). MDDS skipped its Normalize(.5,.5) for CIFAR-10.1 only (ALGORITHMS.md §8,
pitfall 5), so its CIFAR-10.1 inputs differed in range from its CIFAR-10/-C inputs; here every
dataset has the same [0,1] range.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import MsrsError

from .registry import DatasetInfo, check_opts, check_split, find_path, register_dataset
from .transforms import PILThen, ToPixels, cifar_transform

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10C_URL = "https://zenodo.org/record/2535967 (CIFAR-10-C.tar)"
CIFAR101_URL = "https://github.com/modestyachts/CIFAR-10.1 (datasets/cifar10.1_v6_*.npy)"

# CIFAR-10-C (Hendrycks & Dietterich 2019): the 15 benchmark corruptions in MDDS's order and groups
# (smoothing-multiscale predict_utils.py CORRUPTIONS / CORRUPTIONS_PER_TYPE); 'all' means these 15.
CORRUPTION_GROUPS = {
    "noise": ["gaussian_noise", "shot_noise", "impulse_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"],
    "weather": ["snow", "frost", "fog", "brightness"],
    "digital": ["contrast", "elastic_transform", "pixelate", "jpeg_compression"],
}
CORRUPTIONS = [c for group in CORRUPTION_GROUPS.values() for c in group]
# the 4 extra corruptions of the release (not in the benchmark): readable by name, never part of 'all'
EXTRA_CORRUPTIONS = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
SEVERITIES = (1, 2, 3, 4, 5)


def resolve_corruptions(spec: Union[str, Sequence[str], None]) -> list[str]:
    """``--corr_type`` → corruption names: 'all' (the 15, as MDDS), the groups noise / blur / weather /
    digital, single names (the 4 extras too), comma-separated or as a list; order kept, duplicates dropped."""
    items = [] if spec is None else ([spec] if isinstance(spec, str) else list(spec))
    names = [c.strip() for item in items for c in str(item).split(",") if c.strip()] or ["all"]
    if "all" in names:           # MDDS: 'all' anywhere in the list means the 15
        return list(CORRUPTIONS)
    out: list[str] = []
    for n in names:
        group = CORRUPTION_GROUPS.get(n, [n])
        bad = [c for c in group if c not in CORRUPTIONS + EXTRA_CORRUPTIONS]
        if bad:
            known = ", ".join(CORRUPTIONS + EXTRA_CORRUPTIONS)
            raise MsrsError(f"unknown CIFAR-10-C corruption {bad[0]!r}; use all, a group "
                            f"({', '.join(CORRUPTION_GROUPS)}) or names from: {known}")
        out += [c for c in group if c not in out]
    return out


def resolve_severities(severity: Union[int, str, Sequence[int], None]) -> list[int]:
    """1..5, a list of them, or None / 'all' for all five (each file read whole, as MDDS)."""
    if severity is None or (isinstance(severity, str) and severity.strip().lower() == "all"):
        return list(SEVERITIES)
    if isinstance(severity, str):
        try:
            severity = [int(s) for s in severity.split(",") if s.strip()]
        except ValueError:
            raise MsrsError(f"CIFAR-10-C severity must be 1..5, a comma list of them, or 'all'; "
                            f"got {severity!r}") from None
    sev = [int(severity)] if isinstance(severity, (int, np.integer)) else [int(s) for s in severity]
    if not sev or any(s not in SEVERITIES for s in sev):
        raise MsrsError(f"CIFAR-10-C severity must be in 1..5 (or a list of them, or 'all'); got {severity!r}")
    return sev


def _cifar_info(name: str) -> Callable[[], DatasetInfo]:
    return lambda: DatasetInfo(name, 10, 32, 3)


# ---- CIFAR-10 -----------------------------------------------------------------------------------

@register_dataset("cifar10", _cifar_info("cifar10"))
def cifar10(split: str, data_path: str = "datasets", resize: Optional[int] = None,
            transform: Optional[Callable] = None, verify: bool = False, **opts) -> Dataset:
    """torchvision CIFAR10 from `data_path/cifar-10-batches-py/` (download=False).

    resize: None (native 32; MDDS resizes inside the model) or a square size (bicubic).
    transform: optional callable PIL image → [C,H,W] in [0,1] (e.g. training augmentation).
    verify: check the md5 sums of the split's files against torchvision's table.
    """
    split = check_split("cifar10", split, ("train", "test"))
    check_opts("cifar10", opts)
    tf = cifar_transform("cifar10", resize, transform)
    how = f"download {CIFAR10_URL} and extract it into {data_path}/ (we never download)"
    folder = find_path([os.path.join(data_path, "cifar-10-batches-py")], "CIFAR-10", how, is_dir=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for n in names + ["batches.meta"]:
        find_path([os.path.join(folder, n)], "CIFAR-10 file", how)

    from ._torchvision import CheckedCIFAR10
    try:
        return CheckedCIFAR10(data_path, train=split == "train", transform=tf, verify=verify)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise MsrsError(f"CIFAR-10 files in {folder} are unreadable ({type(e).__name__}: {e}); {how}") from None


# ---- memory-mapped uint8 HWC image arrays (CIFAR-10-C, CIFAR-10.1) ---------------------------------

class NpyImages(Dataset):
    """Images stored as uint8 [N,H,W,3] .npy files, read memory-mapped.

    Item i is row `rows[i % len(rows)]` of file `files[i // len(rows)]`, with label
    `labels[i % len(rows)]`: the same rows of several files laid end to end (CIFAR-10-C:
    one file per corruption, all sharing `labels.npy`). `segment_names[i // len(rows)]` names the file
    an item comes from. Arrays are opened lazily per process (pickling sends paths, not data).
    """

    def __init__(self, files: Sequence[str], rows: np.ndarray, labels: np.ndarray,
                 transform: Callable, segment_names: Optional[Sequence[str]] = None):
        self.files = list(files)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = [int(v) for v in labels]
        self.transform = transform
        self.segment_names = list(segment_names) if segment_names is not None else list(self.files)
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files) * len(self.rows)

    def segment_of(self, i: int) -> str:
        return self.segment_names[i // len(self.rows)]

    def _array(self, k: int) -> np.ndarray:
        if k not in self._arrays:
            self._arrays[k] = np.load(self.files[k], mmap_mode="r")
        return self._arrays[k]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k, j = divmod(i, len(self.rows))
        return self.transform(self._array(k)[self.rows[j]]), self.targets[j]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}


def _load_images(path: str, what: str, how: str) -> np.ndarray:
    """Memory-map a uint8 [N,H,W,3] image array; one-line errors for unreadable or misshapen files."""
    try:
        a = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise MsrsError(f"{what} file {path} is unreadable ({e}); {how}") from None
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise MsrsError(f"{what} file {path} holds {a.dtype} {list(a.shape)}, expected uint8 [N,32,32,3]; {how}")
    return a


def _load_labels(path: str, n: int, what: str, how: str) -> np.ndarray:
    try:
        y = np.load(path)
    except (OSError, ValueError) as e:
        raise MsrsError(f"{what} file {path} is unreadable ({e}); {how}") from None
    if y.ndim != 1 or len(y) != n:
        raise MsrsError(f"{what} labels {path} have shape {list(y.shape)}, expected [{n}]; {how}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise MsrsError(f"{what} labels {path} are outside 0..9; {how}")
    return y.astype(np.int64)


def _npy_transform(name: str, resize: Optional[int], transform: Optional[Callable]) -> Callable:
    tf = cifar_transform(name, resize, transform)
    return tf if isinstance(tf, ToPixels) else PILThen(tf)


# ---- CIFAR-10-C ---------------------------------------------------------------------------------

@register_dataset("cifar10c", _cifar_info("cifar10c"))
def cifar10c(split: str = "test", data_path: str = "datasets",
             corruption: Union[str, Sequence[str], None] = None,
             severity: Union[int, str, Sequence[int], None] = None,
             resize: Optional[int] = None, transform: Optional[Callable] = None, **opts) -> NpyImages:
    """CIFAR-10-C from `data_path/CIFAR-10-C/{corruption}.npy` (uint8 [50000,32,32,3]) + `labels.npy`.

    Each file holds the 10000 test images at severities 1..5, in that order: severity s is rows
    (s-1)*10000 : s*10000 (in general N/5 rows per severity).
    corruption: a name, a group (noise, blur, weather, digital), a list or comma list of them, or None /
    'all' for the 15 of CORRUPTIONS (files laid end to end, in the order given; `ds.segment_of(i)` names
    an item's corruption). The 4 extras (EXTRA_CORRUPTIONS) are read by name only.
    severity: 1..5, a list of them, or None / 'all' for all five, i.e. whole files (what MDDS reads).
    """
    split = check_split("cifar10c", split, ("test",))
    check_opts("cifar10c", opts)
    tf = _npy_transform("cifar10c", resize, transform)
    corruptions = resolve_corruptions(corruption)
    severities = resolve_severities(severity)

    how = f"download {CIFAR10C_URL} and extract it into {data_path}/ (we never download)"
    folder = os.path.join(data_path, "CIFAR-10-C")
    files = [find_path([os.path.join(folder, f"{c}.npy")], "CIFAR-10-C", how) for c in corruptions]
    labels_path = find_path([os.path.join(folder, "labels.npy")], "CIFAR-10-C labels", how)

    n = None
    for f in files:
        a = _load_images(f, "CIFAR-10-C", how)
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise MsrsError(f"CIFAR-10-C file {f} has {a.shape[0]} images, {files[0]} has {n}; {how}")
    if n % 5:
        raise MsrsError(f"CIFAR-10-C file {files[0]} has {n} images, not 5 severities of equal size; {how}")
    labels = _load_labels(labels_path, n, "CIFAR-10-C", how)
    per = n // 5
    rows = np.concatenate([np.arange((s - 1) * per, s * per) for s in severities])
    return NpyImages(files, rows, labels[rows], tf, segment_names=corruptions)


# ---- CIFAR-10.1 ---------------------------------------------------------------------------------

@register_dataset("cifar10.1", _cifar_info("cifar10.1"))
def cifar10_1(split: str = "test", data_path: str = "datasets", resize: Optional[int] = None,
              transform: Optional[Callable] = None, **opts) -> NpyImages:
    """CIFAR-10.1 v6 from `data_path/cifar10.1_v6_data.npy` (uint8 [2000,32,32,3]) + `cifar10.1_v6_labels.npy`.

    Also found in MDDS's layout `data_path/CIFAR-10.1/datasets/`. Pixels are in [0,1] like every
    other dataset here (MDDS skipped Normalize for this set only, pitfall 5; we never normalize).
    """
    split = check_split("cifar10.1", split, ("test",))
    check_opts("cifar10.1", opts)
    tf = _npy_transform("cifar10.1", resize, transform)
    how = f"get {CIFAR101_URL} and put both files in {data_path}/ (we never download)"
    dirs = [data_path, os.path.join(data_path, "CIFAR-10.1", "datasets")]
    data = find_path([os.path.join(d, "cifar10.1_v6_data.npy") for d in dirs], "CIFAR-10.1", how)
    folder = os.path.dirname(data)
    labels_path = find_path([os.path.join(folder, "cifar10.1_v6_labels.npy")], "CIFAR-10.1 labels", how)
    n = _load_images(data, "CIFAR-10.1", how).shape[0]
    labels = _load_labels(labels_path, n, "CIFAR-10.1", how)
    return NpyImages([data], np.arange(n), labels, tf, segment_names=["cifar10.1"])
