"""Optimizers and their schedules: the per-step cosine schedule with warm-up (BEiT / FT-CLIP), Salman's
StepLR, layer-wise lr decay groups, the optimizer factories of both training scripts, and LoRA (a small
own implementation: peft is not a dependency)."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from core.errors import MsrsError
from core.train.distributed import unwrap


def cosine_scheduler(base_value: float, final_value: float, epochs: int, niter_per_ep: int,
                     warmup_epochs: float = 0, start_warmup_value: float = 0.0, warmup_steps: int = -1) -> np.ndarray:
    """Per-step values: linear warm-up start_warmup_value → base_value, then cosine down to final_value.

    BEiT / FT-CLIP ``utils.cosine_scheduler``; `warmup_steps` > 0 overrides `warmup_epochs`.
    Length epochs · niter_per_ep.
    """
    total = int(epochs * niter_per_ep)
    warm = int(warmup_steps) if warmup_steps > 0 else int(warmup_epochs * niter_per_ep)
    warm = min(warm, total)
    head = np.linspace(start_warmup_value, base_value, warm) if warm > 0 else np.array([])
    iters = np.arange(total - warm)
    tail = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    out = np.concatenate((head, tail))
    assert len(out) == total
    return out


def _strip(name: str) -> str:
    for p in ("module.", "_orig_mod.", "1."):   # DDP, torch.compile, PixelClassifier's network
        if name.startswith(p):
            name = name[len(p):]
    return name


def layer_id(name: str, num_layers: int) -> int:
    """BEiT/FT-CLIP layer index: 0 = embeddings (cls/pos/patch_embed/ln_pre), block i → i + 1, the rest
    (fc_norm, head) → num_layers + 1."""
    n = _strip(name)
    if n in ("cls_token", "pos_embed", "mask_token", "dist_token", "reg_token") or n.startswith(
            ("patch_embed.", "norm_pre.")):
        return 0
    if n.startswith("blocks."):
        return int(n.split(".")[1]) + 1
    return num_layers + 1


def num_blocks(model: nn.Module) -> int:
    """Number of transformer blocks (``blocks.i``) in a model; 0 for models without them."""
    ids = {layer_id(n, 10 ** 6) for n, _ in model.named_parameters()}
    return max((i for i in ids if 0 < i < 10 ** 6 + 1), default=0)


def param_groups_lrd(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                     no_weight_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay: scale = layer_decay^(L + 1 − layer_id) (the head gets 1).

    No weight decay on 1-D tensors (norms, biases) and on `no_weight_decay` names (pos_embed, cls_token,
    ...; matched after stripping wrapper prefixes). Frozen parameters are left out. Each group carries
    ``lr_scale`` and its ``weight_decay``.
    """
    skip = {_strip(n) for n in no_weight_decay}
    inner = getattr(model, "net", model)
    if hasattr(inner, "no_weight_decay"):
        skip |= set(inner.no_weight_decay())
    L = num_blocks(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or _strip(name) in skip
        lid = layer_id(name, L)
        g = groups.setdefault((lid, no_wd), {"params": [], "names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                                              "lr_scale": layer_decay ** (L + 1 - lid)})
        g["params"].append(p)
        g["names"].append(name)
    out = [groups[k] for k in sorted(groups)]
    for g in out:
        g.pop("names")
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float | None, wd: float | None = None) -> None:
    """lr · lr_scale on every group; the scheduled weight decay on the groups that have decay."""
    for g in optimizer.param_groups:
        if lr is not None:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and g["weight_decay"] > 0:
            g["weight_decay"] = wd


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B A x`` with A [r, in] (Kaiming-uniform), B [out, r] = 0: starts equal to base.

    The base Linear is frozen; `merged_weight` folds the update back so checkpoints keep plain keys.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if r <= 0:
            raise MsrsError(f"LoRA rank must be > 0, got {r}")
        self.base, self.r, self.scaling = base, int(r), float(alpha) / int(r)
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scaling


def apply_lora(model: nn.Module, r: int, alpha: float | None = None, targets: Iterable[str] = ("attn.qkv", "attn.proj"),
               trainable: Iterable[str] = ("head", "fc_norm")) -> int:
    """Freeze `model` and wrap every nn.Linear whose name ends with one of `targets` in a `LoRALinear`;
    parameters under `trainable` module names (the classification head) stay trainable. Returns the
    number of wrapped layers (an MsrsError when none matches)."""
    alpha = float(r if alpha is None else alpha)
    targets, trainable = tuple(targets), tuple(trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(targets)]
    if not names:
        raise MsrsError(f"--lora_r: no Linear layer named *{'/*'.join(targets)} in this model (LoRA is for ViTs)")
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha))
    for n, p in model.named_parameters():
        if any(f".{t}." in f".{_strip(n)}" for t in trainable):
            p.requires_grad_(True)
    return len(names)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with every LoRALinear folded into plain ``weight`` / ``bias`` keys (CPU tensors)."""
    model = unwrap(model)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for n, m in model.named_modules():
        if isinstance(m, LoRALinear):
            for k in ("base.weight", "base.bias", "lora_A", "lora_B"):
                sd.pop(f"{n}.{k}", None)
            sd[f"{n}.weight"] = m.merged_weight().detach().cpu()
            if m.base.bias is not None:
                sd[f"{n}.bias"] = m.base.bias.detach().cpu()
    return sd


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizers of the recipes: 'adamw', 'adam' (Salman's 'AdamThenSGD' starts as Adam; 'AdamThenSGD_ref'
    stays Adam, as Salman's code does), 'sgd' (with ``momentum``); names in any case (FT-CLIP's --opt adamw,
    Salman's --optimizer SGD). kwargs go to torch."""
    kind = name.lower()
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, **kwargs)
    if kind in ("adam", "adamthensgd", "adamthensgd_ref"):
        return torch.optim.Adam(params, lr=lr, **kwargs)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **kwargs)
    raise MsrsError(f"unknown optimizer {name!r}: use AdamW, Adam, AdamThenSGD, AdamThenSGD_ref or SGD")


def step_lr_schedule(lr: float, gamma: float, step_size: int, n_steps: int, epochs: int) -> np.ndarray:
    """Salman's StepLR(step_size, gamma) per epoch, as per-step values."""
    return np.array([lr * gamma ** (e // step_size) for e in range(epochs) for _ in range(n_steps)])
