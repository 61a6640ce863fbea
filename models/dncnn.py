"""Salman et al.'s DnCNN denoiser (microsoft/denoised-smoothing code/archs/dncnn.py; ALGORITHMS §6).

Layout (kept key-for-key so their checkpoints load strictly): ``self.dncnn = Sequential(...)`` with
  dncnn.0      Conv2d(C, W, 3, bias=True),  dncnn.1 ReLU
  dncnn.{2+3j} Conv2d(W, W, 3, bias=False), dncnn.{3+3j} BatchNorm2d(W, eps=1e-4, momentum=0.95),
  dncnn.{4+3j} ReLU                                          for j = 0 .. depth−3
  dncnn.{3·depth−4} Conv2d(W, C, 3, bias=False)   (= dncnn.47 for depth 17)
forward(x̃) = x̃ − dncnn(x̃): the net predicts the noise residual. Input and output are pixels in [0,1]
scale: Salman's denoisers see the raw noisy image (no normalization - only their *classifiers* get a
NormalizeLayer) and their output is not clamped, so neither is ours. The last conv starts at 0, so a
fresh DnCNN is the identity. (BatchNorm momentum 0.95 is theirs: running stats follow the last batch.)

Checkpoints: Salman's ``{'epoch', 'arch': 'cifar_dncnn'|'cifar_dncnn_wide'|'imagenet_dncnn',
'state_dict', 'optimizer'}`` (imagenet_dncnn was wrapped in DataParallel: ``module.`` keys), and ours
``{"kind": "dncnn", "arch", "args", "state_dict"}``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from core.errors import MsrsError
from models.checkpoint import load_state_dict_strict, save_checkpoint, strip_prefixes

# Salman's names → constructor kwargs (all RGB, depth 17).
DNCNN_ARCHS: dict[str, dict[str, int]] = {
    "cifar_dncnn": dict(depth=17, n_channels=64),
    "cifar_dncnn_wide": dict(depth=17, n_channels=128),
    "imagenet_dncnn": dict(depth=17, n_channels=64),
}


class DnCNN(nn.Module):
    """Residual denoiser: noisy pixels [B,C,H,W] → denoised pixels [B,C,H,W] (= x̃ − predicted noise)."""

    def __init__(self, depth: int = 17, n_channels: int = 64, image_channels: int = 3):
        super().__init__()
        if depth < 3:
            raise MsrsError(f"DnCNN depth must be >= 3; got {depth}")
        self.depth, self.n_channels, self.image_channels = depth, n_channels, image_channels
        layers: list[nn.Module] = [nn.Conv2d(image_channels, n_channels, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(n_channels, n_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(n_channels, eps=1e-4, momentum=0.95), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(n_channels, image_channels, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        """Orthogonal convs, zero biases, BN = identity, last conv = 0 (start as the identity map)."""
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(convs[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.dncnn(x)

    def args(self) -> dict[str, int]:
        """Constructor kwargs (stored in our checkpoints)."""
        return dict(depth=self.depth, n_channels=self.n_channels, image_channels=self.image_channels)


def create_dncnn(arch: str = "cifar_dncnn", **kwargs: Any) -> DnCNN:
    """A fresh DnCNN by Salman's arch name (`DNCNN_ARCHS`); kwargs override depth / n_channels / image_channels."""
    if arch not in DNCNN_ARCHS:
        raise MsrsError(f"unknown DnCNN arch {arch!r}; valid names: {', '.join(DNCNN_ARCHS)}")
    return DnCNN(**{**DNCNN_ARCHS[arch], **kwargs})


_CONV_RE = re.compile(r"dncnn\.(\d+)\.weight")


def dncnn_args_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """(depth, n_channels, image_channels) read off a DnCNN state dict's conv shapes."""
    convs = sorted(int(m.group(1)) for k, v in sd.items() if (m := _CONV_RE.fullmatch(k)) and v.ndim == 4)
    if not convs or convs[0] != 0:
        raise MsrsError("not a DnCNN state dict (no 'dncnn.0.weight')")
    first = sd["dncnn.0.weight"]
    return dict(depth=len(convs), n_channels=int(first.shape[0]), image_channels=int(first.shape[1]))


def is_dncnn_checkpoint(obj: Any) -> bool:
    """True for our ``kind: dncnn`` files, Salman's ``*dncnn`` files and bare DnCNN state dicts."""
    if not isinstance(obj, Mapping):
        return False
    if obj.get("kind") == "dncnn":
        return True
    if isinstance(obj.get("arch"), str) and obj["arch"].endswith("dncnn") and "state_dict" in obj:
        return True
    keys = strip_prefixes({k: None for k in obj if isinstance(k, str)})
    return "dncnn.0.weight" in keys


def load_dncnn(ckpt_obj: Mapping[str, Any], path: str) -> DnCNN:
    """Build and strictly load a DnCNN (eval mode) from an already loaded checkpoint object.

    Accepts ours ``{"kind": "dncnn", "arch", "args", "state_dict"}``, Salman's ``{'arch': '*dncnn',
    'state_dict', ...}`` (``module.`` prefixes stripped) and a bare DnCNN state dict (shape-inferred).
    Any mismatch is an MsrsError naming `path` and the key.
    """
    if not isinstance(ckpt_obj, Mapping):
        raise MsrsError(f"{path}: not a DnCNN checkpoint (a {type(ckpt_obj).__name__})")
    if "kind" in ckpt_obj:
        if ckpt_obj["kind"] != "dncnn":
            raise MsrsError(f"{path}: a {ckpt_obj['kind']!r} checkpoint, not a DnCNN denoiser")
        model = create_dncnn(ckpt_obj.get("arch", "cifar_dncnn"), **dict(ckpt_obj.get("args") or {}))
        sd = ckpt_obj["state_dict"]
    elif "arch" in ckpt_obj and "state_dict" in ckpt_obj:
        arch = str(ckpt_obj["arch"])
        if arch not in DNCNN_ARCHS:
            raise MsrsError(f"{path}: denoiser arch {arch!r} is not supported; valid: {', '.join(DNCNN_ARCHS)}")
        sd = strip_prefixes(ckpt_obj["state_dict"])
        model = create_dncnn(arch)
    else:
        sd = strip_prefixes(ckpt_obj)
        try:
            model = DnCNN(**dncnn_args_from_state_dict(sd))
        except MsrsError as e:
            raise MsrsError(f"{path}: {e}") from None
    load_state_dict_strict(model, sd, path)
    return model.eval()


def save_dncnn(model: DnCNN, arch: str, path: str) -> None:
    """Write ``{"kind": "dncnn", "arch", "args", "state_dict"}`` (atomic)."""
    if arch not in DNCNN_ARCHS:
        raise MsrsError(f"unknown DnCNN arch {arch!r}; valid names: {', '.join(DNCNN_ARCHS)}")
    save_checkpoint({"kind": "dncnn", "arch": arch, "args": model.args(),
                     "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
