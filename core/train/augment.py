"""Training augmentations (clean images, pixels in [0,1]): the digits shifts, MDDS's timm RandAugment
pipeline for the classifier (train_clip.py), the crop + flip of the denoiser recipes (finetune_diffusion.py),
and the training split each script trains on."""
from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn

from core.errors import MsrsError
from datasets import get_dataset
from datasets.transforms import ToPixels


class RandomShift:
    """Translate a [C,H,W] image by up to `shift` pixels (zero fill): the digits augmentation."""

    def __init__(self, shift: int):
        self.shift = int(shift)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift <= 0:
            return x
        s = self.shift
        padded = nn.functional.pad(x, (s, s, s, s))
        i, j = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, i:i + x.shape[1], j:j + x.shape[2]]


class Augmented(torch.utils.data.Dataset):
    """A (x, y) dataset with a tensor transform applied to x."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.transform(x), y


class Unnormalize:
    """Back from timm's normalized tensors to pixels: x·std + mean (random-erasing noise stays as drawn)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def classifier_transform(args: argparse.Namespace, image_size: int):
    """MDDS ``build_transform(is_train=True)``: timm RandAugment + random erasing, with RandomCrop(pad 4) for
    32-pixel images; built at MDDS's mean/std 0.5 (so erasing noise has their scale) and mapped back to pixels."""
    from timm.data import create_transform
    from torchvision import transforms as T
    half = (0.5, 0.5, 0.5)
    tf = create_transform(input_size=image_size, is_training=True, scale=(args.crop_scale, 1.0),
                          color_jitter=args.color_jitter, auto_augment=None if args.aa in ("", "none") else args.aa,
                          interpolation=args.train_interpolation, re_prob=args.reprob, re_mode=args.remode,
                          re_count=args.recount, mean=half, std=half)
    if image_size <= 32:
        tf.transforms[0] = T.RandomCrop(image_size, padding=4)
    tf.transforms.append(Unnormalize(half, half))
    return tf


def crop_flip_transform(dataset: str, imagenet_scale: tuple[float, float] = (0.08, 1.0)) -> Callable | None:
    """Crop + flip, then ToTensor; no RandAugment, colour jitter or random erasing. CIFAR RandomCrop(32,
    padding=4), ImageNet RandomResizedCrop(224) (bilinear) with ``imagenet_scale``; None for other datasets
    (digits: ``RandomShift``). FT-CADIS's classifier augmentation (datasets.py) is the default, torchvision's
    scale (0.08, 1); the denoiser recipes (Salman / improved-diffusion) use `denoiser_transform`."""
    from torchvision import transforms as T
    if dataset == "cifar10":
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), ToPixels()])
    if dataset == "imagenet":
        return T.Compose([T.RandomResizedCrop(224, scale=imagenet_scale), T.RandomHorizontalFlip(), ToPixels()])
    return None


def denoiser_transform(dataset: str) -> Callable | None:
    """The denoiser recipes' augmentation: crop + flip, ImageNet's random-resized crop at scale (0.35, 1)."""
    return crop_flip_transform(dataset, imagenet_scale=(0.35, 1.0))


def train_split(dataset: str, data_path: str, digits_shift: int, transform: Callable | None):
    """The training split: digits with random shifts of up to ``digits_shift`` pixels; CIFAR-10 / ImageNet
    through ``transform``; anything else is a one-line error."""
    if dataset == "digits":
        return Augmented(get_dataset("digits", "train"), RandomShift(digits_shift))
    if dataset in ("cifar10", "imagenet"):
        return get_dataset(dataset, "train", data_path, transform=transform)
    raise MsrsError(f"training on {dataset!r} is not supported (use digits, cifar10 or imagenet)")
