"""`digits`: scikit-learn's bundled 8×8 handwritten digits (1797 images, no files), the embedded default.

Pixels in [0,16] are scaled to [0,1], upsampled to 16×16 by nearest neighbour (each source pixel
becomes a 2×2 block) and repeated to 3 channels so that the RGB pipeline (denoiser, classifier) runs
unchanged. Every source pixel is thus seen by 12 input values, so Gaussian noise of σ per value is
σ/√12 on the 8×8 digit for an ideal denoiser (bilinear upsampling would attenuate the digit's high
frequencies and leave them as noisy as σ ≈ 1.04·σ). The split is fixed:
stratified `train_test_split(test_size=0.2, random_state=0)` → 1437 train / 360 test.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .registry import DatasetInfo, check_opts, check_split, register_dataset

IMAGE_SIZE = 16


@functools.cache
def _digits_tensors() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Built once per process (~10 ms): split → (x float32 [N,3,16,16] in [0,1], y int64 [N])."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)            # [N,1,8,8]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest-exact")
    x = x.repeat(1, 3, 1, 1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
    return {s: (x[torch.from_numpy(i)], y[torch.from_numpy(i)]) for s, i in
            (("train", idx_train), ("test", idx_test))}


class DigitsDataset(Dataset):
    """The tensors of one split; `__getitem__` returns a copy so callers may modify x in place."""

    def __init__(self, split: str):
        self.x, self.y = _digits_tensors()[split]
        self.targets = self.y.tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i].clone(), self.targets[i]


@register_dataset("digits", lambda: DatasetInfo("digits", 10, IMAGE_SIZE, 3))
def digits(split: str, data_path: str = "datasets", **opts) -> Dataset:
    split = check_split("digits", split, ("train", "test"))
    check_opts("digits", opts)
    return DigitsDataset(split)
