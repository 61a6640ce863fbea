"""msrs datasets: `get_dataset(name, split, data_path)` → torch Dataset of (x float32 [C,H,W] in [0,1], int y).

Pixel space, never normalized (classifiers normalize themselves). Nothing is ever downloaded; a
missing file raises `core.errors.MsrsError` naming the expected path and where to get it.

    digits      sklearn's bundled 8×8 digits → 3×16×16, 10 classes, fixed 80/20 split (no files)
    cifar10     data_path/cifar-10-batches-py/                      (torchvision format)
    cifar10c    data_path/CIFAR-10-C/{corruption}.npy + labels.npy   (corruption=, severity=; default: the
                15 benchmark corruptions, all 5 severities, i.e. each file read whole, as MDDS)
    cifar10.1   data_path/cifar10.1_v6_data.npy + cifar10.1_v6_labels.npy
    imagenet    data_path/imagenet/val/<wnid>/*.JPEG       (transform='resize256'|'mdds'|'densepure')
    imagenet-a  data_path/imagenet-a/<wnid>/*   200 classes, labels= 'imagenet' (1k indices) | 'subset' (0..199)
    imagenet-r  data_path/imagenet-r/<wnid>/*   200 classes, labels= 'imagenet' (1k indices) | 'subset' (0..199)

Also accepted: the MDDS spellings imagenet_a, imagenet_r and cifar10c_<corruption> (see ALIASES).
"""
from .registry import ALIASES, DATASETS, DatasetInfo, dataset_info, get_dataset, register_dataset
from . import digits as _digits, cifar as _cifar, imagenet as _imagenet  # noqa: F401  (register builders)
from .cifar import CORRUPTION_GROUPS, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, resolve_corruptions
from .imagenet import IMAGENET_TRANSFORMS, class_subset, imagenet_wnids
from .subsets import one_per_class

__all__ = ["get_dataset", "dataset_info", "DatasetInfo", "DATASETS", "ALIASES", "CORRUPTIONS", "SEVERITIES",
           "CORRUPTION_GROUPS", "EXTRA_CORRUPTIONS", "resolve_corruptions", "IMAGENET_TRANSFORMS",
           "register_dataset", "imagenet_wnids", "class_subset", "one_per_class"]
