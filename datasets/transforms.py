"""Picklable image → pixel-tensor transforms (DataLoader workers may be spawned, so no lambdas)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import MsrsError


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """[C,H,W] pixels → [C,size,size] (bicubic, antialias), clamped back to [0,1] because bicubic overshoots.

    A convenience of the CIFAR datasets' ``resize=`` option; no reference resizes CIFAR images in the dataset
    (MDDS's ``Resize(32)`` of a 32×32 image is the identity; ImageNet's MDDS resize is Resize(224) without antialias)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False,
                         antialias=True)[0].clamp_(0.0, 1.0)


class ToPixels:
    """uint8 HWC image (PIL or ndarray) → float32 [C,H,W] in [0,1]; equal to torchvision's ToTensor.

    resize: optional square size (bicubic, see `resize_square`); None keeps the native size.
    """

    def __init__(self, resize: Optional[int] = None):
        self.resize = resize

    def __call__(self, img: Any) -> torch.Tensor:
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[:, :, None]
        x = torch.from_numpy(np.array(a, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
        return resize_square(x, self.resize) if self.resize else x

    def __repr__(self) -> str:
        return f"ToPixels(resize={self.resize})"


class PILThen:
    """ndarray HWC uint8 → PIL RGB image → a user transform (so user transforms always see PIL)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, a: np.ndarray) -> Any:
        from PIL import Image
        return self.transform(Image.fromarray(np.asarray(a)))


def cifar_transform(name: str, resize: Optional[int], transform: Optional[Callable]) -> Callable:
    """The transform of the 32×32 CIFAR-family datasets: ToPixels(resize), or a user callable."""
    if transform is not None:
        if resize is not None:
            raise MsrsError(f"dataset {name!r}: give either resize= or transform=, not both")
        if not callable(transform):
            raise MsrsError(f"dataset {name!r}: transform must be a callable (PIL image -> tensor)")
        return transform
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize <= 0):
        raise MsrsError(f"dataset {name!r}: resize must be a positive int or None, got {resize!r}")
    return ToPixels(resize)
