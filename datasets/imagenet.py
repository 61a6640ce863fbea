"""ImageNet-1k (val in class folders) and its 200-class shifted sets ImageNet-A and ImageNet-R.

Labels are always indices in the ImageNet-1k order (the 1000 wnids sorted), read from the shipped
`imagenet_classes.json`, never from the folders found on disk: a partial copy (or the 200 folders
of ImageNet-A/R) keeps the labels a 1000-way classifier predicts. For ImageNet-A/R,
`dataset_info(name).class_subset` lists the 200 indices to which the logits are masked.
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


def imagenet_transform(transform: Union[str, Callable, None]) -> Callable:
    """'default' (Cohen, DDS, FT-CADIS): Resize(256) + CenterCrop(224) + ToTensor, bilinear on the PIL image.
    'mdds': ToTensor + Resize(224, bicubic, antialias) + CenterCrop(224) on the tensor, clamped to [0,1]
    (ALGORITHMS.md §3a; pitfall 6). A callable (PIL image → [C,H,W] in [0,1]) is used as given."""
    from torchvision import transforms as T

    from .transforms import Clamp01

    if transform is None or transform == "default":
        return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    if transform == "mdds":
        return T.Compose([T.ToTensor(), T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                          T.CenterCrop(224), Clamp01()])
    if callable(transform):
        return transform
    raise MsrsError(f"ImageNet transform must be 'default', 'mdds' or a callable; got {transform!r}")


def _wnid_folder(name: str, candidates: list[str], allowed: tuple[str, ...], transform, how: str) -> Dataset:
    """ImageFolder over <wnid>/ subfolders with targets = ImageNet-1k indices of the wnids."""
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
    # relabel: folder position → ImageNet-1k index (ImageFolder numbers only the folders it found)
    index = {w: i for i, w in enumerate(_class_lists()["imagenet"])}
    ds.class_to_idx = {w: index[w] for w in ds.classes}
    ds.samples = [(p, index[ds.classes[t]]) for p, t in ds.samples]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    return ds


@register_dataset("imagenet", lambda: DatasetInfo("imagenet", 1000, 224, 3))
def imagenet(split: str, data_path: str = "datasets", transform: Union[str, Callable, None] = "default",
             **opts) -> Dataset:
    """ImageNet-1k from `data_path/imagenet/{val,train}/<wnid>/*.JPEG` (also MDDS's `ImageNet/val/`).

    split 'test' (or 'val') reads val/, 'train' reads train/. transform: 'default' | 'mdds' | callable.
    """
    split = check_split("imagenet", split, ("train", "test"))
    check_opts("imagenet", opts)
    sub = "val" if split == "test" else "train"
    cands = [os.path.join(data_path, d, sub) for d in ("imagenet", "ImageNet")]
    return _wnid_folder(f"ImageNet {sub}", cands, _class_lists()["imagenet"], transform, _how("imagenet", data_path))


def _shifted(name: str):
    def build(split: str = "test", data_path: str = "datasets",
              transform: Union[str, Callable, None] = "default", **opts) -> Dataset:
        split = check_split(name, split, ("test",))
        check_opts(name, opts)
        return _wnid_folder(name, [os.path.join(data_path, name)], _class_lists()[name], transform,
                            _how(name, data_path))
    build.__name__ = name.replace("-", "_")
    build.__doc__ = (f"{name} from `data_path/{name}/<wnid>/*` (200 class folders); labels are ImageNet-1k "
                     f"indices, `dataset_info('{name}').class_subset` the 200 of them. transform as for imagenet.")
    return build


def _shifted_info(name: str) -> Callable[[], DatasetInfo]:
    return lambda: DatasetInfo(name, 1000, 224, 3, class_subset=class_subset(name))


imagenet_a = register_dataset("imagenet-a", _shifted_info("imagenet-a"))(_shifted("imagenet-a"))
imagenet_r = register_dataset("imagenet-r", _shifted_info("imagenet-r"))(_shifted("imagenet-r"))
