"""Checkpoints in other repos' layouts, read through named key remaps into timm models (as timm does).

- HuggingFace ``ViTForImageClassification`` (DDS's and FT-CADIS's CIFAR-10 classifier,
  ``aaraki/vit-base-patch16-224-in21k-finetuned-cifar10``): a directory with ``config.json`` and
  ``model.safetensors`` or ``pytorch_model.bin`` (or either file beside its ``config.json``).
  `hf_vit_timm_kwargs` maps the config to a timm ``VisionTransformer`` (CLS-token pooling after the
  final LayerNorm, exact GELU, LayerNorm eps 1e-12); `remap_hf_vit_state_dict` maps the keys (q, k, v
  concatenated into timm's qkv), for both the hub layout (``vit.encoder.layer.{i}.attention.attention.query``)
  and the module layout of transformers ≥ 5 (``vit.layers.{i}.attention.q_proj``).
- FT-CADIS fine-tunes (``{'epoch', 'arch', 'state_dict': {'classifier.…'}, 'optimizer'}``): the CIFAR one
  is the HF layout under ``classifier.``; the ImageNet one is timm ``vit_base_patch16_clip_384`` (full
  fine-tune) or its LoRA wrap (``classifier.lora_vit.…``, rank r on q and v, scale alpha // r with
  FT-CADIS's alpha = 4), which `remap_ftcadis_state_dict` merges into plain timm weights.
- timm models from original-repo files (e.g. BEiT's ``beit_large_patch16_512_pt22k_ft22kto1k.pth``):
  `timm_filtered_state_dict` applies the model module's own ``checkpoint_filter_fn`` and refuses any
  filter that would resample a tensor (a resolution mismatch must not pass silently).

Files are read with ``models.checkpoint.load_checkpoint`` (``.safetensors`` through the safetensors
library, anything else through the safe pickle loader): nothing in a file can run code.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from core.errors import MsrsError
from models.checkpoint import load_checkpoint, load_state_dict_strict

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# transformers' ViTConfig() defaults: google/vit-base-patch16-224(-in21k), the base of aaraki's CIFAR-10 model
HF_VIT_BASE_CONFIG: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3, qkv_bias=True)
# transformers' ViTImageProcessor defaults (IMAGENET_STANDARD_MEAN/STD = 0.5)
HF_VIT_MEAN = HF_VIT_STD = (0.5, 0.5, 0.5)
_HF_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu",
            "relu": "relu"}
FTCADIS_LORA_ALPHA = 4   # FT-CADIS certify.py / classifier.py: LoRA_ViT_timm(r=4, alpha=4)


# ---------------------------------------------------------------------------------------------- files
def hub_files(spec: str) -> tuple[str, str] | None:
    """(config.json, weights file) of a hub-style model folder (HF transformers or timm), given as the folder
    or its weights file; None if `spec` is not one. Safetensors wins over ``pytorch_model.bin``."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        folder, names = spec, HF_WEIGHT_FILES
    elif os.path.basename(spec) in HF_WEIGHT_FILES or spec.endswith(".safetensors"):
        folder, names = os.path.dirname(spec) or ".", (os.path.basename(spec),)
    else:
        return None
    cfg = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg):
        return None
    for n in names:
        if os.path.isfile(os.path.join(folder, n)):
            return cfg, os.path.join(folder, n)
    return None


def _config(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise MsrsError(f"cannot read model config {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise MsrsError(f"{path}: not a model config (expected a JSON object)")
    return cfg


def hf_vit_files(spec: str) -> tuple[str, str] | None:
    """`hub_files` of an HF ViT (config.json with ``model_type: vit``); None otherwise."""
    files = hub_files(spec)
    return files if files is not None and _config(files[0]).get("model_type") == "vit" else None


def timm_hub_arch(spec: str) -> str | None:
    """``timm:NAME`` of a timm hub folder (config.json with ``architecture``, e.g. the beit_large_patch16_512 or
    vit_base_patch16_clip_384.laion2b_ft_in12k_in1k releases); None for anything else."""
    files = hub_files(spec)
    if files is None:
        return None
    cfg = _config(files[0])
    name = cfg.get("architecture")
    return f"timm:{name}" if isinstance(name, str) and "model_type" not in cfg else None


def read_hf_config(path: str) -> dict[str, Any]:
    """config.json of an HF ViTForImageClassification, checked; MsrsError for another model type."""
    cfg = _config(path)
    if cfg.get("model_type") != "vit":
        raise MsrsError(f"{path}: model_type {cfg.get('model_type')!r} is not an HF ViT ('vit'); only "
                        "ViTForImageClassification checkpoints are read")
    return cfg


def read_hf_preprocessor(folder: str) -> dict[str, Any]:
    """image_mean / image_std of ``preprocessor_config.json`` when present, else the ViT processor's 0.5."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return {"mean": HF_VIT_MEAN, "std": HF_VIT_STD}
    pre = _config(path)
    return {"mean": tuple(pre.get("image_mean", HF_VIT_MEAN)), "std": tuple(pre.get("image_std", HF_VIT_STD))}


# ---------------------------------------------------------------------------------------------- HF ViT
def hf_num_labels(cfg: Mapping[str, Any]) -> int | None:
    if "num_labels" in cfg:
        return int(cfg["num_labels"])
    return len(cfg["id2label"]) if cfg.get("id2label") else None


def hf_vit_timm_kwargs(cfg: Mapping[str, Any], num_classes: int | None = None) -> dict[str, Any]:
    """HF ``ViTConfig`` fields → timm ``VisionTransformer`` kwargs computing the same function."""
    from functools import partial
    full = {**HF_VIT_BASE_CONFIG, **{k: v for k, v in cfg.items() if k in HF_VIT_BASE_CONFIG}}
    act = full["hidden_act"]
    if act not in _HF_ACTS:
        raise MsrsError(f"HF ViT hidden_act {act!r} has no timm equivalent here; known: {', '.join(_HF_ACTS)}")
    if full["intermediate_size"] % full["hidden_size"]:
        raise MsrsError(f"HF ViT intermediate_size {full['intermediate_size']} is not a multiple of hidden_size "
                        f"{full['hidden_size']}")
    n = num_classes if num_classes is not None else hf_num_labels(cfg)
    if n is None:
        raise MsrsError("HF ViT config names no labels (num_labels / id2label); pass num_classes")
    return dict(img_size=int(full["image_size"]), patch_size=int(full["patch_size"]),
                in_chans=int(full["num_channels"]), num_classes=int(n), embed_dim=int(full["hidden_size"]),
                depth=int(full["num_hidden_layers"]), num_heads=int(full["num_attention_heads"]),
                mlp_ratio=full["intermediate_size"] / full["hidden_size"], qkv_bias=bool(full["qkv_bias"]),
                class_token=True, global_pool="token", fc_norm=False,
                norm_layer=partial(nn.LayerNorm, eps=float(full["layer_norm_eps"])), act_layer=_HF_ACTS[act])


def create_hf_vit(cfg: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """A timm VisionTransformer shaped like the HF config (random weights)."""
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**hf_vit_timm_kwargs(cfg, num_classes))


_HF_TOP = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "vit.layernorm.weight": "norm.weight", "vit.layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight", "classifier.bias": "head.bias",
}
# per layer i: HF suffix → timm suffix under blocks.{i}. (q/k/v are concatenated into attn.qkv)
_HF_BLOCK = {
    # hub / transformers < 5 layout
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
    # transformers >= 5 module layout
    "attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {"attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
           "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v"}
_HF_LAYER_RE = re.compile(r"vit\.(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")
HF_DROPPED = frozenset({"vit.embeddings.mask_token"})   # only used for masked-image modelling


def is_hf_vit_state_dict(sd: Mapping[str, Any]) -> bool:
    return "vit.embeddings.cls_token" in sd and "vit.embeddings.position_embeddings" in sd


def remap_hf_vit_state_dict(sd: Mapping[str, torch.Tensor], path: str = "<state dict>") -> dict[str, torch.Tensor]:
    """HF ViTForImageClassification keys → timm VisionTransformer keys, one to one (q, k, v → qkv).

    Every key is mapped or explicitly dropped (`HF_DROPPED`); anything else (e.g. a pooler: a ViTModel, not a
    classifier) is an MsrsError naming `path` and the key. Missing keys are left to the strict load.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k in HF_DROPPED:
            continue
        if k in _HF_TOP:
            out[_HF_TOP[k]] = v
            continue
        m = _HF_LAYER_RE.fullmatch(k)
        if m is None or (m.group(2) not in _HF_BLOCK and m.group(2) not in _HF_QKV):
            raise MsrsError(f"{path}: unexpected key '{k}' for an HF ViTForImageClassification "
                            "- is this the right checkpoint?")
        i, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if name in _HF_BLOCK:
            out[f"blocks.{i}.{_HF_BLOCK[name]}.{kind}"] = v
        else:
            qkv.setdefault((i, kind), {})[_HF_QKV[name]] = v
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise MsrsError(f"{path}: layer {i} has {kind}s for {''.join(sorted(parts))} only; expected q, k and v")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def load_hf_vit(spec: str, num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(timm VisionTransformer in eval mode with the file's weights, preprocessing) from an HF ViT directory
    (or weights file beside its config.json). preprocessing: ``size`` (H, W), ``mean``, ``std`` (the
    processor's, 0.5 by default); the resize kernel is the protocol's (DDS / FT-CADIS: bicubic + antialias)."""
    files = hub_files(spec)
    if files is None:
        raise MsrsError(f"{spec}: not an HF ViT checkpoint (expected a directory with config.json and "
                        f"{' or '.join(HF_WEIGHT_FILES)})")
    cfg_path, weights = files
    cfg = read_hf_config(cfg_path)          # read once; MsrsError unless model_type is 'vit'
    found = hf_num_labels(cfg)
    if num_classes is not None and found is not None and found != num_classes:
        raise MsrsError(f"{weights}: the classifier has {found} classes but {num_classes} are expected "
                        "- is this the right checkpoint for this dataset?")
    sd = load_checkpoint(weights)
    if not isinstance(sd, Mapping) or not is_hf_vit_state_dict(sd):
        raise MsrsError(f"{weights}: not an HF ViT state dict (no 'vit.embeddings.cls_token')")
    net = create_hf_vit(cfg, num_classes)
    load_state_dict_strict(net, remap_hf_vit_state_dict(sd, weights), weights)
    size = int(cfg.get("image_size", HF_VIT_BASE_CONFIG["image_size"]))
    return net.eval(), {"size": (size, size), **read_hf_preprocessor(os.path.dirname(cfg_path))}


# ---------------------------------------------------------------------------------------------- FT-CADIS
FTCADIS_ARCHS = {"cifar10_vit_base": "hf", "imagenet_vit_base": "timm"}
_LORA_RE = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(linear_[ab]_[qv])\.weight")


def is_ftcadis_checkpoint(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and obj.get("arch") in FTCADIS_ARCHS and isinstance(obj.get("state_dict"), Mapping)
            and all(isinstance(k, str) and k.startswith("classifier.") for k in obj["state_dict"]))


def merge_ftcadis_lora(sd: Mapping[str, torch.Tensor], alpha: int = FTCADIS_LORA_ALPHA,
                       path: str = "<state dict>") -> dict[str, torch.Tensor]:
    """FT-CADIS ``LoRA_ViT_timm`` keys (``blocks.{i}.attn.qkv.qkv.*`` + ``linear_{a,b}_{q,v}.weight``) → plain
    timm keys with W_q += (alpha // r)·B_q A_q and W_v += (alpha // r)·B_v A_v (their _LoRA_qkv_timm; the
    integer division is theirs)."""
    out: dict[str, torch.Tensor] = {}
    lora: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = _LORA_RE.fullmatch(k)
        if m:
            lora.setdefault(int(m.group(1)), {})[m.group(2)] = v
        elif ".attn.qkv.qkv." in k:
            out[k.replace(".attn.qkv.qkv.", ".attn.qkv.")] = v
        else:
            out[k] = v
    for i, parts in sorted(lora.items()):
        if set(parts) != {"linear_a_q", "linear_b_q", "linear_a_v", "linear_b_v"}:
            raise MsrsError(f"{path}: block {i} has LoRA weights {sorted(parts)}; expected a/b for q and v")
        key = f"blocks.{i}.attn.qkv.weight"
        if key not in out:
            raise MsrsError(f"{path}: LoRA weights for block {i} but no '{key}'")
        w = out[key].clone()
        d, r = w.shape[1], parts["linear_a_q"].shape[0]
        scale = alpha // r
        w[:d] += scale * (parts["linear_b_q"].float() @ parts["linear_a_q"].float()).to(w.dtype)
        w[-d:] += scale * (parts["linear_b_v"].float() @ parts["linear_a_v"].float()).to(w.dtype)
        out[key] = w
    return out


def remap_ftcadis_state_dict(obj: Mapping[str, Any], path: str = "<checkpoint>") -> tuple[str, dict[str, torch.Tensor]]:
    """An FT-CADIS train.py checkpoint → ("hf" | "timm", state dict in that layout's keys).

    CIFAR (``cifar10_vit_base``): the HF model under ``classifier.`` (FT-CADIS certify strips the first
    ``classifier.``), remapped to timm. ImageNet (``imagenet_vit_base``): timm keys under ``classifier.``,
    with the LoRA wrap (``lora_vit.``) merged.
    """
    kind = FTCADIS_ARCHS[obj["arch"]]
    sd = {k.split("classifier.", 1)[1]: v for k, v in obj["state_dict"].items()}
    if kind == "hf":
        return "hf", remap_hf_vit_state_dict(sd, path)
    if any(k.startswith("lora_vit.") for k in sd):
        sd = merge_ftcadis_lora({k[len("lora_vit."):]: v for k, v in sd.items()}, path=path)
    return "timm", sd


# ---------------------------------------------------------------------------------------------- timm
def timm_filtered_state_dict(net: nn.Module, sd: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """`sd` through the timm model module's own ``checkpoint_filter_fn`` (original-repo layouts, e.g. BEiT's
    ``relative_position_index`` buffers or a ``{'model': ...}`` wrapper). A filter that changes any tensor's
    shape (resampled position / patch embeddings: weights made for another resolution) is refused."""
    import importlib
    module = importlib.import_module(type(net).__module__)
    filt = getattr(module, "checkpoint_filter_fn", None)
    if filt is None:
        return dict(sd)
    out = filt(dict(sd), net)
    for k, v in out.items():
        if k in sd and tuple(sd[k].shape) != tuple(v.shape):
            raise MsrsError(f"{path}: '{k}' has shape {tuple(sd[k].shape)} but the model needs {tuple(v.shape)} "
                            "(weights for another input size?); give the matching --arch / checkpoint")
    return out
