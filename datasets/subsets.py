"""Example subsets the papers certify on, as index lists into a dataset (rows keep the dataset's index).

`one_per_class`: FT-CADIS certifies ImageNet on one random validation image per class
(suhyeok-jang/FT-CADIS certify.py + utils/utils.py ``sample_1_per_class_imagenet``): after
``random.seed(seed)`` it groups the indices by label, shuffles each group in class order with Python's
``random.shuffle`` and keeps the first of each, class 0 first. The same Mersenne-Twister stream gives the
same picks here (Python's shuffle and int seeding are unchanged since 3.2); no other RNG is touched.
"""
from __future__ import annotations

import random
from typing import Sequence


def one_per_class(targets: Sequence[int], num_classes: int, seed: int = 0) -> list[int]:
    """Indices of one image per class, in class order (classes without an image are skipped)."""
    groups: list[list[int]] = [[] for _ in range(num_classes)]
    for i, y in enumerate(targets):
        groups[int(y)].append(i)
    rng = random.Random(seed)
    picked = []
    for group in groups:
        rng.shuffle(group)
        picked.extend(group[:1])
    return picked
