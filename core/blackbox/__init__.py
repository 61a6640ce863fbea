"""Smoothing a classifier that is only a function, or only a log of its answers (Salman et al.'s
offline API mode).

- ``FunctionClassifier(fn, num_classes)``: any function of uint8 images [B,H,W,C] (what an image API
  receives) to integer labels, as a base classifier for ``Smooth``. Clipping and quantizing x + delta
  first is part of the base classifier, so the certificate is unchanged.
- ``LogReplay(answers, num_classes)``: replays an API's answers ({idx: labels in query order}) as a base
  classifier; the first n0 answers of an example are its selection draws, the next n its estimation
  draws (never reused). ``certify.py DATASET querylog:LOG OUT`` certifies from a query log file.

The files of this mode (query logs, the noisy query images to send, recording a live run) are the run
machinery's: ``core.runs.blackbox``; ``python -m core.blackbox export`` writes the query images.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from core.errors import MsrsError


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """[B,C,H,W] pixels -> uint8 [B,H,W,C] (clipped to [0,1], rounded), the form an image API takes."""
    return (batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class FunctionClassifier:
    """Base classifier around ``fn(uint8 images [B,H,W,C]) -> labels [B]``; returns one-hot scores."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], num_classes: int):
        self.fn, self.num_classes = fn, num_classes

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(np.asarray(self.fn(to_uint8_images(batch))), dtype=torch.long).reshape(-1)
        if labels.numel() != batch.shape[0] or (labels < 0).any() or (labels >= self.num_classes).any():
            raise MsrsError(f"the black-box classifier must return {batch.shape[0]} labels in [0, {self.num_classes})")
        return torch.nn.functional.one_hot(labels, self.num_classes).float().to(batch.device)


class LogReplay:
    """A base classifier that answers from a query log, in order, for the current example.

    ``answers``: {idx: labels in query order}; ``path`` names where they came from (error messages).
    Used with ``Smooth``: the noise it is given is ignored (it was applied when the queries were made);
    the first n0 answers are the selection draws, the next n the estimation draws.
    """

    def __init__(self, answers: Mapping[int, np.ndarray], num_classes: int, path: str = "the query log"):
        self.path, self.num_classes, self.answers = path, num_classes, dict(answers)
        bad = [int(a.max()) for a in self.answers.values() if len(a) and (a.max() >= num_classes or a.min() < 0)]
        if bad:
            raise MsrsError(f"{path}: label {bad[0]} outside [0, {num_classes})")
        self.idx, self.j = None, 0

    def set_example(self, seed: int, idx: int) -> None:
        if idx not in self.answers:
            raise MsrsError(f"{self.path} has no answers for example {idx}; query it first (or adjust --skip/--max)")
        self.idx, self.j = idx, 0

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        a = self.answers[self.idx]
        b = batch.shape[0]
        if self.j + b > len(a):
            raise MsrsError(f"{self.path}: example {self.idx} has {len(a)} answers, the run needs more "
                            f"(N0 + N = at least {self.j + b}); lower --N/--N0 or query more")
        labels = torch.as_tensor(a[self.j:self.j + b])
        self.j += b
        return torch.nn.functional.one_hot(labels, self.num_classes).float().to(batch.device)
