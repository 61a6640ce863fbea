"""ImageNet-1k (val in class folders) and its 200-class shifted sets ImageNet-A and ImageNet-R.

Labels are indices in the ImageNet-1k order (the 1000 wnids sorted), read from the shipped
`imagenet_classes.json`, never from the folders found on disk: a partial copy (or the 200 folders
of ImageNet-A/R) keeps the labels a 1000-way classifier predicts. For ImageNet-A/R,
`dataset_info(name).class_subset` lists the 200 indices to which the logits are masked; with
``labels='subset'`` their labels are instead 0..199 (the position among the 200 sorted wnids), which is
what MDDS writes (its logits, counts and prior are over the 200 classes).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Callable, Union

from torch.utils.data import Dataset

from core.errors import MsrsError

from .registry import DatasetInfo, check_opts, check_split, find_path, register_dataset

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _how(name: str, data_path: str) -> str:
    if name == "imagenet":
        return ("get ILSVRC2012 from https://www.image-net.org/ and sort the images into <wnid>/ class folders "
                "(val: soumith/imagenetloader.torch valprep.sh); we never download")
    return (f"download https://people.eecs.berkeley.edu/~hendrycks/{name}.tar and extract it into {data_path}/; "
            "we never download")


@functools.cache
def _class_lists() -> dict[str, tuple[str, ...]]:
    with open(os.path.join(os.path.dirname(__file__), "imagenet_classes.json")) as f:
        d = json.load(f)
    return {k: tuple(v) for k, v in d.items() if not k.startswith("_")}


def imagenet_wnids(subset: str = "imagenet") -> list[str]:
    """Sorted wnids: the 1000 of ImageNet-1k (index = label), or the 200 of 'imagenet-a' / 'imagenet-r'."""
    return list(_class_lists()[subset])


def class_subset(subset: str) -> list[int]:
    """The sorted ImageNet-1k indices of the classes of 'imagenet-a' or 'imagenet-r'."""
    index = {w: i for i, w in enumerate(_class_lists()["imagenet"])}
    return sorted(index[w] for w in _class_lists()[subset])


def _is_image(path: str) -> bool:
    base = os.path.basename(path)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


IMAGENET_TRANSFORMS = ("resize256", "mdds", "densepure")


def imagenet_transform(transform: Union[str, Callable, None]) -> Callable:
    """The papers' ImageNet (and ImageNet-A/R) preprocessing, PIL image → [C,H,W] pixels:

    'resize256' (= 'default'; Cohen, DDS, FT-CADIS): PIL Resize(256) bilinear + CenterCrop(224) + ToTensor.
    'mdds': ToTensor + Resize(224, bicubic, antialias=False: no antialias, no clamp on a float tensor) +
    CenterCrop(224), what
        MDDS's ``get_dataset`` does under torchvision 0.13.1 (ALGORITHMS §3a); values may leave [0, 1].
    'densepure': PIL Resize(256) bicubic + CenterCrop(256) + ToTensor (DensePure datasets.py), fed at 256.
    A callable (PIL image → [C,H,W] in [0,1]) is used as given."""
    from torchvision import transforms as T

    if transform is None or transform in ("default", "resize256"):
        return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    if transform == "mdds":
        # torchvision 0.13.1's tensor Resize (MDDS's pinned version) = today's with antialias off
        return T.Compose([T.ToTensor(), T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False),
                          T.CenterCrop(224)])
    if transform == "densepure":
        return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(256), T.ToTensor()])
    if callable(transform):
        return transform
    raise MsrsError(f"ImageNet transform must be one of {', '.join(IMAGENET_TRANSFORMS)} or a callable; "
                    f"got {transform!r}")


def _wnid_folder(name: str, candidates: list[str], allowed: tuple[str, ...], transform, how: str,
                 labels: str = "imagenet") -> Dataset:
    """ImageFolder over <wnid>/ subfolders; targets = ImageNet-1k indices of the wnids (``labels='imagenet'``)
    or positions in the sorted `allowed` list (``labels='subset'``: ImageNet-A/R's 0..199, as MDDS writes)."""
    from torchvision.datasets import ImageFolder

    tf = imagenet_transform(transform)
    root = find_path(candidates, name, how, is_dir=True)
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise MsrsError(f"{name}: no <wnid>/ class folders in {root}; {how}")
    unknown = [w for w in found if w not in allowed]
    if unknown:
        raise MsrsError(f"{name}: folder(s) {', '.join(unknown[:5])} in {root} are not classes of this dataset "
                        f"(expected <wnid>/ folders such as {allowed[0]}/)")
    ds = ImageFolder(root, transform=tf, is_valid_file=_is_image, allow_empty=True)
    if len(ds) == 0:
        raise MsrsError(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<wnid>/")
    # relabel: folder position → ImageNet-1k index or subset position (ImageFolder numbers only the
    # folders it found, so a partial copy would shift its labels)
    if labels not in ("imagenet", "subset"):
        raise MsrsError(f"{name}: labels must be 'imagenet' (1k indices) or 'subset' (0..{len(allowed) - 1}); "
                        f"got {labels!r}")
    index = {w: i for i, w in enumerate(_class_lists()["imagenet"] if labels == "imagenet" else allowed)}
    ds.class_to_idx = {w: index[w] for w in ds.classes}
    ds.samples = [(p, index[ds.classes[t]]) for p, t in ds.samples]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    return ds


@register_dataset("imagenet", lambda: DatasetInfo("imagenet", 1000, 224, 3))
def imagenet(split: str, data_path: str = "datasets", transform: Union[str, Callable, None] = "default",
             **opts) -> Dataset:
    """ImageNet-1k from `data_path/imagenet/{val,train}/<wnid>/*.JPEG` (also MDDS's `ImageNet/val/`).

    split 'test' (or 'val') reads val/, 'train' reads train/. transform: see `imagenet_transform`.
    """
    split = check_split("imagenet", split, ("train", "test"))
    check_opts("imagenet", opts)
    sub = "val" if split == "test" else "train"
    cands = [os.path.join(data_path, d, sub) for d in ("imagenet", "ImageNet")]
    return _wnid_folder(f"ImageNet {sub}", cands, _class_lists()["imagenet"], transform, _how("imagenet", data_path))


def _shifted(name: str):
    def build(split: str = "test", data_path: str = "datasets",
              transform: Union[str, Callable, None] = "default", labels: str = "imagenet", **opts) -> Dataset:
        split = check_split(name, split, ("test",))
        check_opts(name, opts)
        return _wnid_folder(name, [os.path.join(data_path, name)], _class_lists()[name], transform,
                            _how(name, data_path), labels)
    build.__name__ = name.replace("-", "_")
    build.__doc__ = (f"{name} from `data_path/{name}/<wnid>/*` (200 class folders). labels: 'imagenet' "
                     f"(ImageNet-1k indices; `dataset_info('{name}').class_subset` lists the 200) or 'subset' "
                     f"(0..199 in sorted-wnid order, MDDS's). transform as for imagenet.")
    return build


def _shifted_info(name: str) -> Callable[[], DatasetInfo]:
    return lambda: DatasetInfo(name, 1000, 224, 3, class_subset=class_subset(name))


imagenet_a = register_dataset("imagenet-a", _shifted_info("imagenet-a"))(_shifted("imagenet-a"))
imagenet_r = register_dataset("imagenet-r", _shifted_info("imagenet-r"))(_shifted("imagenet-r"))
