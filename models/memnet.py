"""Salman et al.'s MemNet denoiser (microsoft/denoised-smoothing code/archs/memnet.py; ALGORITHMS §6).

Layout (key-for-key, so their ``memnet`` / ``imagenet_memnet`` checkpoints load strictly): every unit is
``BNReLUConv = Sequential(bn: BatchNorm2d(in), relu, conv: Conv2d(in, out, k, bias=False))``;
  feature_extractor                      BNReLUConv(C, W, 3)
  dense_memory.{m}.recursive_unit.{r}    ResidualBlock: x + relu_conv2(relu_conv1(x)), both BNReLUConv(W, W, 3)
  dense_memory.{m}.gate_unit             BNReLUConv((R + m + 1)·W, W, 1): the R short-term outputs of
                                         block m, then the long-term memory (feature_extractor output and
                                         the gates of blocks 0..m−1), concatenated in that order
  reconstructor                          BNReLUConv(W, C, 3)
forward(x̃) = reconstructor(last gate) + x̃ (a residual on the noisy input; not clamped). Their archs:
``memnet`` and ``imagenet_memnet`` are MemNet(3, 64, num_memblock=3, num_resblock=6); the ImageNet one was
wrapped in DataParallel (``module.`` keys). BatchNorm has PyTorch's defaults (eps 1e-5, momentum 0.1).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from core.errors import MsrsError
from models.checkpoint import load_state_dict_strict, strip_prefixes

MEMNET_ARCHS: dict[str, dict[str, int]] = {
    "memnet": dict(in_channels=3, channels=64, num_memblock=3, num_resblock=6),
    "imagenet_memnet": dict(in_channels=3, channels=64, num_memblock=3, num_resblock=6),
}


class BNReLUConv(nn.Sequential):
    def __init__(self, in_channels: int, channels: int, k: int = 3, s: int = 1, p: int = 1):
        super().__init__()
        self.add_module("bn", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU(inplace=True))   # acts on bn's output, never on the block input
        self.add_module("conv", nn.Conv2d(in_channels, channels, k, s, p, bias=False))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.relu_conv1 = BNReLUConv(channels, channels)
        self.relu_conv2 = BNReLUConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relu_conv2(self.relu_conv1(x))


class MemoryBlock(nn.Module):
    """Block m (0-based): R residual blocks, then a 1×1 gate over their outputs and the long-term memory."""

    def __init__(self, channels: int, num_resblock: int, index: int):
        super().__init__()
        self.recursive_unit = nn.ModuleList([ResidualBlock(channels) for _ in range(num_resblock)])
        self.gate_unit = BNReLUConv((num_resblock + index + 1) * channels, channels, 1, 1, 0)

    def forward(self, x: torch.Tensor, memory: list[torch.Tensor]) -> torch.Tensor:
        short = []
        for unit in self.recursive_unit:
            x = unit(x)
            short.append(x)
        gate = self.gate_unit(torch.cat(short + memory, 1))
        memory.append(gate)
        return gate


class MemNet(nn.Module):
    """Noisy pixels [B,C,H,W] → denoised pixels [B,C,H,W] (Tai et al. 2017 MemNet, Salman's variant)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_memblock: int = 3, num_resblock: int = 6):
        super().__init__()
        self.in_channels, self.channels = in_channels, channels
        self.num_memblock, self.num_resblock = num_memblock, num_resblock
        self.feature_extractor = BNReLUConv(in_channels, channels)
        self.reconstructor = BNReLUConv(channels, in_channels)
        self.dense_memory = nn.ModuleList([MemoryBlock(channels, num_resblock, m) for m in range(num_memblock)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.feature_extractor(x)
        memory = [out]
        for block in self.dense_memory:
            out = block(out, memory)
        return self.reconstructor(out) + x

    def args(self) -> dict[str, int]:
        return dict(in_channels=self.in_channels, channels=self.channels, num_memblock=self.num_memblock,
                    num_resblock=self.num_resblock)


def create_memnet(arch: str = "memnet", **kwargs: Any) -> MemNet:
    if arch not in MEMNET_ARCHS:
        raise MsrsError(f"unknown MemNet arch {arch!r}; valid names: {', '.join(MEMNET_ARCHS)}")
    return MemNet(**{**MEMNET_ARCHS[arch], **kwargs})


def is_memnet_checkpoint(obj: Any) -> bool:
    """Salman's ``{'arch': 'memnet' | 'imagenet_memnet', 'state_dict', ...}`` or ours ``kind: memnet``."""
    return isinstance(obj, Mapping) and (obj.get("kind") == "memnet" or (
        obj.get("arch") in MEMNET_ARCHS and "state_dict" in obj))


def load_memnet(ckpt_obj: Mapping[str, Any], path: str) -> MemNet:
    """Build and strictly load a MemNet (eval mode) from Salman's file (``module.`` stripped) or ours
    ``{"kind": "memnet", "arch", "args", "state_dict"}``; a mismatch is an MsrsError naming `path`."""
    if not is_memnet_checkpoint(ckpt_obj):
        raise MsrsError(f"{path}: not a MemNet checkpoint (expected arch memnet or imagenet_memnet)")
    if ckpt_obj.get("kind") == "memnet":
        model = create_memnet(ckpt_obj.get("arch", "memnet"), **dict(ckpt_obj.get("args") or {}))
    else:
        model = create_memnet(str(ckpt_obj["arch"]))
    load_state_dict_strict(model, strip_prefixes(ckpt_obj["state_dict"]), path)
    return model.eval()
