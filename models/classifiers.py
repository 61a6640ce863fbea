"""Classifiers: a timm-style registry, the reference architectures, and one loader for their files.

Contract (docs/ARCHITECTURE.md): every classifier takes **pixel-space** input [B,C,H,W] in [0,1] at the
dataset's native size and returns logits [B,K]. It owns its resize + normalization as its first layer:
each model here is a `PixelClassifier = Sequential(Preprocess, net)`, so its state-dict keys are the
network's own keys under ``1.`` - exactly the layout of Cohen's / Salman's checkpoints, whose models
are ``Sequential(NormalizeLayer, net)`` (``NormalizeLayer`` holds no tensors, nor does `Preprocess`).

Registered names (`list_models()`):
  digits_cnn                      small CNN for the embedded 16x16 RGB digits set (the zoo default)
  CLIP_B16, CLIP_B16_tiny         MDDS / FT-CLIP ViT-B/16 image tower (ALGORITHMS §3e); tiny = tests
  cifar_resnet20, cifar_resnet110 Cohen's CIFAR ResNets (locuslab/smoothing archs/cifar_resnet.py)
  resnet18, resnet34, resnet50    Cohen's / Salman's ImageNet torchvision ResNets
plus ``timm:NAME`` (any timm model) and ``tv:NAME`` (any torchvision classifier), never pretrained.

Checkpoint formats read by `load_classifier` (strict loads only; foreign layouts via named remaps):
  ours      {"kind": "classifier", "arch", "args", "state_dict"[, "state_dict_ema"]}
  DeepSpeed mp_rank_00_model_states.pt with "module" / "model_ema" (MDDS layout remapped)
  Cohen     {"arch": "cifar_resnet110" | "resnet50" | ..., "state_dict": {"1.…": …}}
  bare      a timm / torchvision state dict (needs ``arch``)
"""
from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import MsrsError
from models.checkpoint import load_checkpoint, load_state_dict_strict, resolve_zoo, save_checkpoint, strip_prefixes

DEEPSPEED_FILE = "mp_rank_00_model_states.pt"
FTCADIS_IMAGENET_ARCH = "vit_base_patch16_clip_384.laion2b_ft_in12k_in1k"   # FT-CADIS architecture.py

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)   # Cohen's NormalizeLayer
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)                                                             # MDDS: x -> 2x - 1


# ---- preprocessing ----------------------------------------------------------------------------

class Preprocess(nn.Module):
    """Pixel [0,1] → network input: resize to `size` (when the input differs), then (x − mean) / std.

    The resize is ``F.interpolate(mode=interpolation, align_corners=False, antialias=antialias)``, no
    clamping. ``antialias=False`` (the default) is MDDS's ``ResizeLayer`` (torchvision 0.13.1 ``Resize(224,
    BICUBIC)`` on tensors) and DensePure's; DDS and FT-CADIS interpolate with ``antialias=True``, which
    changes upsampling too (PyTorch's antialiased bicubic is PIL's kernel, a = −0.5, the plain one −0.75).
    `configure_preprocess` sets it from the protocol. Resizing and normalizing commute (interpolation
    weights sum to 1), so MDDS's normalize-then-resize order gives the same numbers. mean/std are
    non-persistent buffers: no state-dict keys.
    """

    def __init__(self, size: int | tuple[int, int] | None, mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic", antialias: bool = False):
        super().__init__()
        if size is not None:
            size = (int(size),) * 2 if isinstance(size, int) else tuple(int(s) for s in size)
            size = size * 2 if len(size) == 1 else size          # torchvision's crop_size is [S]
        self.size = size
        self.interpolation, self.antialias = interpolation, bool(antialias)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            align = False if self.interpolation in ("bilinear", "bicubic") else None
            aa = self.antialias and self.interpolation in ("bilinear", "bicubic")
            x = F.interpolate(x, size=self.size, mode=self.interpolation, align_corners=align, antialias=aa)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation}, antialias={self.antialias}, " \
               f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class PixelClassifier(nn.Sequential):
    """``Sequential(Preprocess, net)``: pixels in [0,1] [B,C,H,W] → logits [B,K]. Keys: ``1.<net key>``."""

    def __init__(self, preprocess: Preprocess, net: nn.Module):
        super().__init__(preprocess, net)

    @property
    def preprocess(self) -> Preprocess:
        return self[0]

    @property
    def net(self) -> nn.Module:
        return self[1]


class LogitMask(nn.Module):
    """The logits of `class_subset` only, in its order (e.g. ImageNet-A/R's 200 ImageNet-1k classes → 200
    logits): MDDS's ``LogitMaskingLayer`` (``outputs[:, mask]``). The certify driver wraps the model with this
    when ``dataset_info(name).class_subset`` is set, reads those datasets with labels 0..199, and smooths
    over the 200 classes (counts, prior and argmax), as MDDS.
    """

    def __init__(self, model: nn.Module, class_subset: Sequence[int]):
        super().__init__()
        if len(class_subset) == 0:
            raise MsrsError("LogitMask: empty class_subset")
        self.model = model
        self.register_buffer("class_subset", torch.as_tensor(list(class_subset), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if int(self.class_subset.max()) >= logits.shape[-1]:
            raise MsrsError(f"LogitMask: class index {int(self.class_subset.max())} >= {logits.shape[-1]} logits")
        return logits[:, self.class_subset]


def configure_preprocess(model: nn.Module, antialias: bool | None = None, normalization: str | None = None) -> None:
    """Set the protocol's choices on the classifier's own preprocessing (in place): the resize's antialias and,
    with ``normalization='half'``, mean = std = 0.5 (FT-CADIS feeds [-1, 1] whatever the model's own
    statistics). None leaves a choice as it is; a model without a `Preprocess` is left alone."""
    pre = next((m for m in model.modules() if isinstance(m, Preprocess)), None)
    if pre is None:
        return
    if antialias is not None:
        pre.antialias = bool(antialias)
    if normalization == "half":
        pre.mean.fill_(0.5)
        pre.std.fill_(0.5)
    elif normalization not in (None, "model"):
        raise MsrsError(f"unknown normalization {normalization!r} (model or half)")


# ---- registry ---------------------------------------------------------------------------------

_MODELS: dict[str, Callable[..., PixelClassifier]] = {}


def register_model(fn: Callable[..., PixelClassifier]) -> Callable[..., PixelClassifier]:
    """Decorator: register a constructor ``fn(num_classes=..., **kwargs) -> PixelClassifier`` by its name
    (a name registered twice is an error: the second would silently replace the first)."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"classifier {fn.__name__!r} is registered already (by {_MODELS[fn.__name__].__module__})")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Registered names (``timm:NAME`` and ``tv:NAME`` are accepted on top of these)."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> PixelClassifier:
    """Build `name` with random weights (never pretrained, never downloads); unknown → MsrsError."""
    if name.startswith("timm:"):
        return _create_timm(name[len("timm:"):], **kwargs)
    if name.startswith("tv:"):
        return _create_tv(name[len("tv:"):], **kwargs)
    if name not in _MODELS:
        raise MsrsError(f"unknown classifier arch {name!r}; valid names: {', '.join(list_models())}, "
                        "timm:NAME (any timm model), tv:NAME (any torchvision classifier)")
    return _MODELS[name](**kwargs)


# ---- digits_cnn -------------------------------------------------------------------------------

class DigitsCNN(nn.Module):
    """3 × (conv3x3 + BN + ReLU) with 2 max-pools, global average pool, dropout, linear.

    At 16x16 RGB: 16·16·16·27 + 8·8·32·144 + 4·4·64·288 + 64·K ≈ 0.70 M MACs (≈ 1.4 MFLOP) per sample.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16, drop_rate: float = 0.2):
        super().__init__()
        w = width
        self.conv1, self.bn1 = nn.Conv2d(in_chans, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w)
        self.conv3, self.bn3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


@register_model
def digits_cnn(num_classes: int = 10, img_size: int = 16, in_chans: int = 3, width: int = 16,
               drop_rate: float = 0.2) -> PixelClassifier:
    """The zoo's digits classifier: 16x16 RGB input, normalization mean = std = 0.5."""
    return PixelClassifier(Preprocess(img_size, HALF[:in_chans], HALF[:in_chans]),
                           DigitsCNN(num_classes, in_chans, width, drop_rate))


# ---- CLIP ViT-B/16 (MDDS / FT-CLIP, ALGORITHMS §3e) ---------------------------------------------

def _vit_class():
    from timm.models.vision_transformer import VisionTransformer

    class ClipViT(VisionTransformer):
        """timm ViT with FT-CLIP's head: ``head(mean_patches(fc_norm(tokens)))``.

        FT-CLIP layer-normalizes every patch token and *then* averages them (no CLS token); timm's
        ``global_pool='avg'`` would average first, which is a different function. conv1 (the patch
        embedding) is frozen, as in FT-CLIP's ``freeze_conv1``.
        """

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            x = self.fc_norm(x[:, self.num_prefix_tokens:]).mean(dim=1)
            x = self.head_drop(x)
            return x if pre_logits else self.head(x)

    return ClipViT


def _clip_vit(num_classes: int, img_size: int, embed_dim: int, depth: int, num_heads: int,
              drop_path_rate: float, freeze_conv1: bool, init_scale: float = 0.001) -> PixelClassifier:
    from functools import partial

    from timm.layers import LayerNorm
    # == timm vit_base_patch16_clip_quickgelu_224 at ViT-B size: pre-norm (ln_pre), no patch-embed bias,
    # LayerNorm eps 1e-5 and QuickGELU as in OpenAI CLIP / FT-CLIP (plain vit_base_patch16_clip_224 uses
    # exact GELU, which would change the function of FT-CLIP weights); class token kept for the key layout.
    net = _vit_class()(img_size=img_size, patch_size=16, num_classes=num_classes, global_pool="avg",
                       embed_dim=embed_dim, depth=depth, num_heads=num_heads, pre_norm=True,
                       norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu",
                       drop_path_rate=drop_path_rate)
    with torch.no_grad():                      # FT-CLIP: trunc_normal(.02) head, then × init_scale
        net.head.weight.mul_(init_scale)
        net.head.bias.mul_(init_scale)
    if freeze_conv1:
        net.patch_embed.proj.weight.requires_grad_(False)
    return PixelClassifier(Preprocess(img_size, HALF, HALF, "bicubic"), net)


@register_model
def CLIP_B16(num_classes: int = 1000, img_size: int = 224, drop_path_rate: float = 0.0,
             freeze_conv1: bool = True, init_scale: float = 0.001) -> PixelClassifier:
    """FT-CLIP ViT-B/16 (768 wide, 12 layers, 12 heads) at 224, bicubic resize, mean/std 0.5.

    MDDS normalizes with ``IMAGENET_INCEPTION_MEAN/STD`` = 0.5/0.5 (not CLIP's own statistics), i.e. it
    feeds 2x − 1; their checkpoints were trained that way, so 0.5/0.5 is what reproduces them.
    """
    return _clip_vit(num_classes, img_size, 768, 12, 12, drop_path_rate, freeze_conv1, init_scale)


@register_model
def CLIP_B16_tiny(num_classes: int = 10, img_size: int = 32, drop_path_rate: float = 0.0,
                  freeze_conv1: bool = True, init_scale: float = 0.001) -> PixelClassifier:
    """CLIP_B16's key pattern at toy size (32 wide, 2 layers, 2 heads, 32x32): for tests."""
    return _clip_vit(num_classes, img_size, 32, 2, 2, drop_path_rate, freeze_conv1, init_scale)


# MDDS / FT-CLIP key → timm key. Per block i: transformer.resblocks.{i}.<a> → blocks.{i}.<b>.
_MDDS_TOP = {
    "conv1.weight": "patch_embed.proj.weight",
    "class_embedding": "cls_token",            # [D] → [1,1,D]
    "positional_embedding": "pos_embed",       # [L,D] → [1,L,D]
    "ln_pre.weight": "norm_pre.weight", "ln_pre.bias": "norm_pre.bias",
    "fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
    "head.weight": "head.weight", "head.bias": "head.bias",
}
_MDDS_BLOCK = {
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",   # same q,k,v row order
    "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
    "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
# FT-CLIP keeps an unused PatchEmbed ("provide the patch and seq_len to the main.py, not used").
MDDS_DROPPED = frozenset({"patch_embed.proj.weight", "patch_embed.proj.bias"})
# OpenAI CLIP's visual tower has the contrastive projection, which FT-CLIP does not use.
OPENAI_DROPPED = frozenset({"ln_post.weight", "ln_post.bias", "proj"})
CLIP_HEAD_KEYS = frozenset({"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"})
_BLOCK_RE = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_TIMM_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")


def is_mdds_clip_layout(sd: Mapping[str, Any]) -> bool:
    """True for FT-CLIP / MDDS (and OpenAI visual) key layouts."""
    return "conv1.weight" in sd and "class_embedding" in sd and "positional_embedding" in sd


def remap_mdds_clip_state_dict(sd: Mapping[str, torch.Tensor], path: str = "<state dict>") -> dict[str, torch.Tensor]:
    """MDDS / FT-CLIP ``CLIP_B16`` keys (ALGORITHMS §3e) → our timm ``ClipViT`` keys, one to one.

    Every source key is mapped or explicitly dropped (`MDDS_DROPPED`); anything else is an MsrsError
    naming `path` and the key. Missing keys are left to the strict load that follows.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k in MDDS_DROPPED:
            continue
        if k in _MDDS_TOP:
            new = _MDDS_TOP[k]
            if k == "class_embedding":
                v = v.reshape(1, 1, -1)
            elif k == "positional_embedding":
                v = v.unsqueeze(0)
        else:
            m = _BLOCK_RE.fullmatch(k)
            if m is None or m.group(2) not in _MDDS_BLOCK:
                raise MsrsError(f"{path}: unexpected key '{k}' for the MDDS/FT-CLIP CLIP layout "
                                "- is this the right checkpoint/--arch?")
            new = f"blocks.{m.group(1)}.{_MDDS_BLOCK[m.group(2)]}"
        out[new] = v
    return out


def to_mdds_clip_state_dict(sd: Mapping[str, torch.Tensor], patch_embed: bool = True) -> dict[str, torch.Tensor]:
    """Inverse of `remap_mdds_clip_state_dict`: our ClipViT keys (bare or ``1.``-prefixed) → MDDS keys.

    With `patch_embed`, adds FT-CLIP's unused ``patch_embed.proj.{weight,bias}`` as zeros so that MDDS's
    strict ``load_state_dict`` accepts the result.
    """
    if sd and all(k.startswith("1.") for k in sd):
        sd = {k[2:]: v for k, v in sd.items()}
    top = {v: k for k, v in _MDDS_TOP.items()}
    block = {v: k for k, v in _MDDS_BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k in top:
            new = top[k]
            if k == "cls_token":
                v = v.reshape(-1)
            elif k == "pos_embed":
                v = v.squeeze(0)
        else:
            m = _TIMM_BLOCK_RE.fullmatch(k)
            if m is None or m.group(2) not in block:
                raise MsrsError(f"to_mdds_clip_state_dict: key '{k}' has no MDDS counterpart")
            new = f"transformer.resblocks.{m.group(1)}.{block[m.group(2)]}"
        out[new] = v
    if patch_embed:
        w = out["conv1.weight"]
        out["patch_embed.proj.weight"] = torch.zeros_like(w)
        out["patch_embed.proj.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    return out


def init_from_openai_clip(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str = "<openai clip>") -> nn.Module:
    """Load OpenAI CLIP's visual tower (``visual.*`` keys) into a CLIP_B16; fc_norm and head stay fresh.

    `sd` is the CLIP model's state dict (e.g. ``clip.load("ViT-B/16", jit=False)[0].state_dict()``
    saved with torch.save; the JIT archive itself is TorchScript, not a state dict). ``ln_post`` and
    ``proj`` are dropped explicitly; the keys left missing must be exactly `CLIP_HEAD_KEYS`.
    """
    net = model.net if isinstance(model, PixelClassifier) else model
    vis = {k[len("visual."):]: v for k, v in strip_prefixes(sd).items() if k.startswith("visual.")}
    if not vis:
        raise MsrsError(f"{path}: no 'visual.*' keys - not an OpenAI CLIP state dict")
    vis = {k: v for k, v in vis.items() if k not in OPENAI_DROPPED}
    new = remap_mdds_clip_state_dict(vis, path)
    missing = set(net.state_dict()) - set(new)
    if missing != CLIP_HEAD_KEYS:
        bad = sorted(missing ^ CLIP_HEAD_KEYS)
        raise MsrsError(f"{path}: OpenAI CLIP init expected exactly {sorted(CLIP_HEAD_KEYS)} missing; "
                        f"mismatch at '{bad[0]}' - is this a ViT-B/16 CLIP?")
    load_state_dict_strict(net, new, path, allow_missing=CLIP_HEAD_KEYS)
    return model


@register_model
def hf_vit_base_patch16_224(num_classes: int = 10, drop_path_rate: float = 0.0) -> PixelClassifier:
    """HF ``ViTForImageClassification`` at ViTConfig() defaults (google/vit-base-patch16-224-in21k: the DDS /
    FT-CADIS CIFAR-10 classifier ``aaraki/vit-base-patch16-224-in21k-finetuned-cifar10``) as a timm ViT
    (models.foreign); mean = std = 0.5 (the ViT processor's), bicubic resize to 224 as DDS.

    ``drop_path_rate`` is what FT-CADIS's ``--drop_path`` does to this model (classifier.py
    ViT_base_patch16_224): the *attention-probability* dropout of layer i set to linspace(0, rate, 12)[i], not
    stochastic depth."""
    from models.foreign import HF_VIT_BASE_CONFIG, HF_VIT_MEAN, HF_VIT_STD, create_hf_vit
    net = create_hf_vit(HF_VIT_BASE_CONFIG, num_classes)
    for p, blk in zip(torch.linspace(0, drop_path_rate, len(net.blocks)).tolist(), net.blocks):
        blk.attn.attn_drop.p = p
    return PixelClassifier(Preprocess(224, HF_VIT_MEAN, HF_VIT_STD, "bicubic"), net)


# ---- Cohen / Salman CIFAR ResNet (locuslab/smoothing archs/cifar_resnet.py) ----------------------

def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x); shortcut = 1x1 conv + BN when the shape changes."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """Pre-2016 CIFAR ResNet: conv 16 → 3 stages (16, 32, 64 ch) of n=(depth−2)/6 blocks → avgpool(8) → fc."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise MsrsError(f"cifar ResNet depth must be 6n+2 (20, 56, 110, ...); got {depth}")
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1, self.bn1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():           # He init (fan-out), BN = identity: as in the reference
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


@register_model
def cifar_resnet20(num_classes: int = 10) -> PixelClassifier:
    """Cohen's cifar_resnet20 with CIFAR-10 normalization (32x32 input)."""
    return PixelClassifier(Preprocess(32, CIFAR10_MEAN, CIFAR10_STD), CifarResNet(20, num_classes))


@register_model
def cifar_resnet110(num_classes: int = 10) -> PixelClassifier:
    """Cohen's cifar_resnet110 (18 BasicBlocks per stage) with CIFAR-10 normalization (32x32 input)."""
    return PixelClassifier(Preprocess(32, CIFAR10_MEAN, CIFAR10_STD), CifarResNet(110, num_classes))


def _cohen_imagenet_resnet(name: str, num_classes: int) -> PixelClassifier:
    import torchvision
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return PixelClassifier(Preprocess(224, IMAGENET_MEAN, IMAGENET_STD), net)


@register_model
def resnet18(num_classes: int = 1000) -> PixelClassifier:
    """Salman's ImageNet torchvision resnet18 (Cohen layout: ``1.[module.]`` keys), ImageNet normalization."""
    return _cohen_imagenet_resnet("resnet18", num_classes)


@register_model
def resnet34(num_classes: int = 1000) -> PixelClassifier:
    """Salman's ImageNet torchvision resnet34, ImageNet normalization."""
    return _cohen_imagenet_resnet("resnet34", num_classes)


@register_model
def resnet50(num_classes: int = 1000) -> PixelClassifier:
    """Cohen's / Salman's ImageNet torchvision resnet50, ImageNet normalization (224 input)."""
    return _cohen_imagenet_resnet("resnet50", num_classes)


def remap_cohen_state_dict(sd: Mapping[str, torch.Tensor], path: str = "<state dict>") -> dict[str, torch.Tensor]:
    """Cohen/Salman ``Sequential(NormalizeLayer, [DataParallel(]net[)])`` keys → our PixelClassifier keys.

    ``1.module.<k>`` (ImageNet models were wrapped in DataParallel) → ``1.<k>``; ``1.<k>`` unchanged.
    NormalizeLayer (index 0) has no tensors, so any other key is an MsrsError.
    """
    out = {}
    for k, v in sd.items():
        if not k.startswith("1."):
            raise MsrsError(f"{path}: unexpected key '{k}' in a Cohen/Salman classifier (expected '1.*')")
        rest = k[2:]
        out["1." + (rest[len("module."):] if rest.startswith("module.") else rest)] = v
    return out


# ---- generic timm / torchvision ---------------------------------------------------------------

def _pop_preprocess(kwargs: dict, size, mean, std, interpolation) -> Preprocess:
    size = kwargs.pop("input_size", size)
    mean = kwargs.pop("mean", mean)
    std = kwargs.pop("std", std)
    interpolation = kwargs.pop("interpolation", interpolation)
    return Preprocess(size, mean, std, interpolation)


def _create_timm(name: str, num_classes: int = 1000, **kwargs: Any) -> PixelClassifier:
    """Any timm model, ``pretrained=False``. Preprocess from its pretrained_cfg (input size, mean, std,
    interpolation); override with ``input_size=``, ``mean=``, ``std=``, ``interpolation=``."""
    import timm
    from timm.data import resolve_model_data_config
    if not timm.is_model(name):
        raise MsrsError(f"unknown timm model {name!r} (see timm.list_models()); use timm:NAME")
    pre_kw = {k: kwargs.pop(k) for k in ("input_size", "mean", "std", "interpolation") if k in kwargs}
    net = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    cfg = resolve_model_data_config(net)
    interp = cfg.get("interpolation", "bicubic")
    interp = interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic"
    return PixelClassifier(_pop_preprocess(pre_kw, tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"], interp), net)


def _create_tv(name: str, num_classes: int = 1000, **kwargs: Any) -> PixelClassifier:
    """Any torchvision classifier, ``weights=None``. Preprocess from its default weights' (offline)
    metadata (crop size, mean, std, interpolation); ImageNet 224 / mean / std when it has none."""
    import torchvision
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise MsrsError(f"unknown torchvision classifier {name!r} (see torchvision.models.list_models()); use tv:NAME")
    pre_kw = {k: kwargs.pop(k) for k in ("input_size", "mean", "std", "interpolation") if k in kwargs}
    size, mean, std, interp = 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    try:
        tf = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        size, mean, std = tuple(tf.crop_size), tuple(tf.mean), tuple(tf.std)
        interp = tf.interpolation.value
    except Exception:  # noqa: BLE001 - metadata is optional; fall back to ImageNet defaults
        pass
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return PixelClassifier(_pop_preprocess(pre_kw, size, mean, std, interp), net)


# ---- loading and saving -----------------------------------------------------------------------

def resolve_classifier_path(spec: str) -> str:
    """``zoo:NAME`` → models/zoo/NAME.pt (``resolve_zoo``); an HF model directory → its weights file
    (model.safetensors or pytorch_model.bin); a directory → its mp_rank_00_model_states.pt; else `spec`."""
    from models.foreign import hub_files
    spec = os.fspath(spec)
    if spec.startswith("zoo:"):
        return resolve_zoo(spec)
    hub = hub_files(spec) if os.path.isdir(spec) else None
    if hub is not None:
        return hub[1]
    if os.path.isdir(spec):
        path = os.path.join(spec, DEEPSPEED_FILE)
        if not os.path.isfile(path):
            raise MsrsError(f"{spec} is a directory without {DEEPSPEED_FILE}; give a checkpoint file")
        return path
    return spec


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


_HEAD_SUFFIXES = ("head.weight", "fc.weight", "classifier.weight", "head.fc.weight")


def infer_num_classes(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes from a state dict's classifier weight (head / fc / classifier), if found."""
    for k in reversed(list(sd)):
        if k.endswith(_HEAD_SUFFIXES) and getattr(sd[k], "ndim", 0) == 2:
            return int(sd[k].shape[0])
    return None


def _build(arch: str, num_classes: int | None, sd: Mapping[str, torch.Tensor], path: str) -> PixelClassifier:
    found = infer_num_classes(sd)
    if found is not None and num_classes is not None and found != num_classes:
        raise MsrsError(f"{path}: the classifier has {found} classes but {num_classes} are expected "
                        "- is this the right checkpoint for this dataset?")
    n = found if found is not None else num_classes
    if n is None:
        raise MsrsError(f"{path}: cannot tell the number of classes; pass num_classes")
    return create_model(arch, num_classes=n)


def _load_weights(model: PixelClassifier, sd: Mapping[str, torch.Tensor], path: str) -> None:
    """Strictly load a foreign state dict, remapping by layout: MDDS CLIP → net; HF ViT → net
    (models.foreign); ``1.*`` (Cohen / ours) → whole model; anything else (timm / torchvision) → net, through
    the timm model's own checkpoint_filter_fn when its keys are not the model's (original-repo files)."""
    from models.foreign import is_hf_vit_state_dict, remap_hf_vit_state_dict, timm_filtered_state_dict
    sd = strip_prefixes(sd)
    if any(k.startswith("visual.") for k in sd):
        raise MsrsError(f"{path}: an OpenAI CLIP state dict has no classification head; use it only as an "
                        "initialization (init_from_openai_clip / train_clip.py), not as a classifier")
    if is_mdds_clip_layout(sd):
        load_state_dict_strict(model.net, remap_mdds_clip_state_dict(sd, path), path)
    elif is_hf_vit_state_dict(sd):
        load_state_dict_strict(model.net, remap_hf_vit_state_dict(sd, path), path)
    elif all(k.startswith("1.") for k in sd):
        load_state_dict_strict(model, remap_cohen_state_dict(sd, path), path)
    else:
        if type(model.net).__module__.startswith("timm.") and set(sd) != set(model.net.state_dict()):
            sd = timm_filtered_state_dict(model.net, sd, path)
        load_state_dict_strict(model.net, sd, path)


def _pick(obj: Mapping[str, Any], first: str, second: str, path: str) -> Mapping[str, torch.Tensor]:
    """`obj[first]` if present, else `obj[second]` with a warning (EMA vs raw weights)."""
    if obj.get(first) is not None:
        return obj[first]
    if obj.get(second) is not None:
        warnings.warn(f"{path}: no '{first}' weights in the checkpoint; using '{second}'")
        return obj[second]
    raise MsrsError(f"{path}: neither '{first}' nor '{second}' weights in the checkpoint")


def load_classifier(spec: str, arch: str | None = None, num_classes: int | None = None, trust: bool = False,
                    ema: bool = True) -> nn.Module:
    """Load a classifier (eval mode; pixel input in [0,1], logits out) from `spec`.

    spec: ``zoo:NAME`` (models/zoo/NAME.pt, ours) or a path (a DeepSpeed ``checkpoint-best/`` directory
    works too). Formats: ours (self-describing: `arch` is ignored); DeepSpeed ``module``/``model_ema``
    (``model_ema`` when `ema`, ALGORITHMS pitfall 12; the other with a warning when absent; arch from
    `arch`, else the file's ``args.model``, else CLIP_B16; MDDS layout remapped); Cohen/Salman
    ``{'arch', 'state_dict'}`` (their arch; a timm training checkpoint with the same keys works too);
    HF ViTForImageClassification directories (config.json + model.safetensors / pytorch_model.bin), timm
    hub folders (their config.json names the timm architecture) and
    FT-CADIS fine-tunes (models.foreign; fed [-1, 1] as FT-CADIS does); a bare state dict (needs `arch`;
    timm, torchvision or HF ViT keys; ``.safetensors`` files too). `num_classes` is checked against the file when it tells its own.
    Loads are strict: a mismatch is an MsrsError naming the file and the first bad key.
    """
    from models import foreign
    path = resolve_classifier_path(spec)
    if foreign.hf_vit_files(path) is not None:                            # HF ViTForImageClassification
        net, pre = foreign.load_hf_vit(path, num_classes)
        return PixelClassifier(Preprocess(pre["size"], pre["mean"], pre["std"], "bicubic"), net).eval()
    arch = arch or foreign.timm_hub_arch(path)                            # a timm hub folder names its model
    obj = load_checkpoint(path, trust=trust)
    if not isinstance(obj, Mapping):
        raise MsrsError(f"{path}: not a classifier checkpoint (a {type(obj).__name__}, expected a dict)")

    if foreign.is_ftcadis_checkpoint(obj):                                # FT-CADIS train.py
        kind, sd = foreign.remap_ftcadis_state_dict(obj, path)
        use = arch or ("hf_vit_base_patch16_224" if kind == "hf" else f"timm:{FTCADIS_IMAGENET_ARCH}")
        model = _build(use, num_classes, sd, path)
        configure_preprocess(model, normalization="half")   # FT-CADIS trains and certifies on [-1, 1] inputs
        load_state_dict_strict(model.net, sd, path)

    elif "kind" in obj:                                                   # ours
        if obj["kind"] != "classifier":
            raise MsrsError(f"{path}: a {obj['kind']!r} checkpoint, not a classifier")
        args = dict(obj.get("args") or {})
        if num_classes is not None and args.get("num_classes", num_classes) != num_classes:
            raise MsrsError(f"{path}: the classifier has {args['num_classes']} classes but {num_classes} "
                            "are expected - is this the right checkpoint for this dataset?")
        model = create_model(obj["arch"], **args)
        sd = obj["state_dict_ema"] if ema and obj.get("state_dict_ema") is not None else obj["state_dict"]
        load_state_dict_strict(model, sd, path)

    elif "module" in obj or "model_ema" in obj:                           # DeepSpeed
        sd = _pick(obj, "model_ema", "module", path) if ema else _pick(obj, "module", "model_ema", path)
        if not _is_state_dict(sd):
            raise MsrsError(f"{path}: DeepSpeed weights are not a state dict (ZeRO-3 shards are not supported)")
        file_args = obj.get("args")
        file_arch = getattr(file_args, "model", None) if isinstance(file_args, argparse.Namespace) else None
        known = file_arch in _MODELS or str(file_arch).startswith(("timm:", "tv:"))
        arch = arch or (file_arch if known else None) or "CLIP_B16"
        sd = strip_prefixes(sd)
        model = _build(arch, num_classes, sd, path)
        _load_weights(model, sd, path)

    elif "arch" in obj and "state_dict" in obj:                           # Cohen / Salman (or timm train.py)
        file_arch = str(obj["arch"])
        if file_arch.endswith("dncnn") or "memnet" in file_arch:
            raise MsrsError(f"{path}: a {file_arch} denoiser, not a classifier; pass it as --denoiser")
        sd = strip_prefixes(obj["state_dict_ema"] if ema and obj.get("state_dict_ema") is not None
                            else obj["state_dict"])
        if all(k.startswith("1.") for k in sd):
            use = file_arch
        else:                                                             # timm train.py: arch is a timm name
            use = arch or (file_arch if file_arch in _MODELS else f"timm:{file_arch}")
        model = _build(use, num_classes, sd, path)
        _load_weights(model, sd, path)

    else:                                                                 # bare state dict
        sd = next((obj[k] for k in ("state_dict", "model") if _is_state_dict(obj.get(k))), obj)
        if not _is_state_dict(sd):
            raise MsrsError(f"{path}: unrecognized checkpoint layout (keys: {', '.join(list(map(str, obj))[:6])})")
        if arch is None:
            raise MsrsError(f"{path}: a bare state dict does not name its architecture; pass --arch NAME "
                            "(e.g. timm:vit_base_patch16_224, tv:resnet50, cifar_resnet110)")
        sd = strip_prefixes(sd)
        model = _build(arch, num_classes, sd, path)
        _load_weights(model, sd, path)
    return model.eval()


def save_classifier(model: nn.Module, arch: str, args: Mapping[str, Any], path: str,
                    extra: Mapping[str, Any] | None = None) -> None:
    """Write our self-describing format ``{"kind": "classifier", "arch", "args", "state_dict", **extra}``.

    `args` are the constructor kwargs of ``create_model(arch, **args)`` (plain values only, so the
    file loads with ``weights_only=True``). A LogitMask wrapper is not saved (it comes from the dataset).
    """
    if isinstance(model, LogitMask):
        model = model.model
    plain = (int, float, str, bool, type(None), list, tuple)
    bad = [k for k, v in args.items() if not isinstance(v, plain)]
    if bad:
        raise MsrsError(f"save_classifier: arg {bad[0]!r} is not a plain value (int/float/str/bool/list)")
    obj = {"kind": "classifier", "arch": arch, "args": dict(args),
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    obj.update(extra or {})
    save_checkpoint(obj, path)
