"""torchvision-backed classes, in their own module so that `import datasets` does not import
torchvision (~1 s) and instances stay picklable for spawned DataLoader workers."""
from __future__ import annotations

import hashlib
import os

import numpy as np
from torchvision.datasets import CIFAR10
from torchvision.datasets.vision import VisionDataset

from core.errors import MsrsError

from .safe_pickle import load_data_pickle

CIFAR10_HOW = "re-extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class CheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 (same pickles, keys, HWC layout and ``__getitem__``), read as data.

    The batch files are unpickled with ``DataUnpickler`` (builtin containers and numpy arrays only;
    torchvision's ``pickle.load`` would run whatever a file names), and each is checked to hold a
    uint8 ``data`` array of 3072-pixel rows with as many labels. torchvision's md5 checks are replaced:
    the builder has already checked that every file exists (naming a missing one), and `verify=True`
    compares the md5 sums of the files this split reads with torchvision's table. Without that
    replacement any copy that is not byte-identical to the official archive (e.g. the small synthetic
    ones of the tests) fails with torchvision's generic "not found or corrupted".
    """

    def __init__(self, root: str, train: bool, transform=None, verify: bool = False):
        VisionDataset.__init__(self, root, transform=transform)
        self.train, self._verify = train, verify
        self._check_integrity()
        data, self.targets = [], []
        for filename, _ in self.train_list if train else self.test_list:
            path = os.path.join(self.root, self.base_folder, filename)
            entry = load_data_pickle(path, "CIFAR-10 file", CIFAR10_HOW)
            x, y = self._batch_arrays(entry, path)
            data.append(x)
            self.targets.extend(y)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        self._load_meta()

    @staticmethod
    def _batch_arrays(entry, path: str) -> tuple[np.ndarray, list[int]]:
        def bad(what: str) -> MsrsError:
            return MsrsError(f"CIFAR-10 file {path} is not a CIFAR-10 batch ({what}); {CIFAR10_HOW}")
        if not isinstance(entry, dict):
            raise bad(f"a {type(entry).__name__}, expected a dict")
        labels = entry.get("labels", entry.get("fine_labels"))
        x = entry.get("data")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
            raise bad("its 'data' is not a uint8 array of 3072-pixel rows")
        if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(x):
            raise bad(f"it needs {len(x)} labels")
        if not all(isinstance(v, (int, np.integer)) and 0 <= v <= 9 for v in labels):
            raise bad("labels must be integers in 0..9")
        labels = [int(v) for v in labels]
        return x, labels

    def _check_integrity(self) -> bool:
        if self._verify:
            files = (self.train_list if self.train else self.test_list) + [[self.meta["filename"], self.meta["md5"]]]
            for filename, md5 in files:
                path = os.path.join(self.root, self.base_folder, filename)
                with open(path, "rb") as f:
                    if hashlib.md5(f.read()).hexdigest() != md5:
                        raise MsrsError(f"CIFAR-10 file {path} has the wrong md5 (corrupt or not the official "
                                        f"copy); {CIFAR10_HOW}")
        return True

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        meta = load_data_pickle(path, "CIFAR-10 file", CIFAR10_HOW)
        classes = meta.get(self.meta["key"]) if isinstance(meta, dict) else None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise MsrsError(f"CIFAR-10 file {path} has no list of class names under "
                            f"'{self.meta['key']}'; {CIFAR10_HOW}")
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
