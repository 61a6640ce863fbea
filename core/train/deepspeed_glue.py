"""DeepSpeed glue: the config FT-CLIP writes (``utils.create_ds_config``) from our flags, and the
checkpoint layout of its ``save_checkpoint`` (``OUTPUT/<tag>/mp_rank_00_model_states.pt``), which MDDS's
certify.py and ``models.classifiers.load_classifier`` read. deepspeed itself is imported only when
``--deepspeed`` is asked for."""
from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn

from core.train.distributed import unwrap, world
from core.train.optim import merged_state_dict
from core.train.state import plain_dict
from models.checkpoint import save_checkpoint
from models.classifiers import to_mdds_clip_state_dict

DS_FILE = "mp_rank_00_model_states.pt"


def ds_config(args: argparse.Namespace, micro_batch: int, lr: float, world: int, device: torch.device,
              amp_dtype: torch.dtype | None) -> dict:
    """The DeepSpeed config FT-CLIP writes (utils.create_ds_config), from our flags; fp16/bf16 weights on CUDA
    only, at the autocast dtype of --amp (``core.runs.setup.amp_dtype``)."""
    if args.deepspeed_config:
        with open(args.deepspeed_config) as f:
            return json.load(f)
    cuda = device.type == "cuda"
    return {
        "train_batch_size": micro_batch * args.update_freq * world,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": args.update_freq,
        "steps_per_print": 10 ** 9,
        "optimizer": {"type": "AdamW" if not cuda else "Adam",
                      "params": {"lr": lr, "weight_decay": args.weight_decay, "betas": list(args.opt_betas),
                                 "eps": args.opt_eps,
                                 **({"adam_w_mode": True, "bias_correction": True} if cuda else {"torch_adam": True})}},
        "fp16": {"enabled": cuda and amp_dtype == torch.float16, "loss_scale": 0, "initial_scale_power": 7,
                 "loss_scale_window": 128, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": cuda and amp_dtype == torch.bfloat16},
        "gradient_clipping": float(args.clip_grad or 0.0),
        "zero_optimization": {"stage": 0},
        "wall_clock_breakdown": False,
    }


def export_weights(model: nn.Module, mdds_layout: bool) -> dict[str, torch.Tensor]:
    """Plain (LoRA-merged) weights; CLIP ViTs in the MDDS / FT-CLIP key layout when `mdds_layout`."""
    sd = merged_state_dict(model)
    return to_mdds_clip_state_dict(sd) if mdds_layout else sd


def is_clip(model: nn.Module) -> bool:
    return type(getattr(unwrap(model), "net", None)).__name__ == "ClipViT"


def save_deepspeed_layout(out_dir: str, model: nn.Module, ema, epoch, args: argparse.Namespace, step: int) -> str:
    """OUTPUT/<tag>/mp_rank_00_model_states.pt as FT-CLIP's DeepSpeed save_checkpoint lays it out (module,
    model_ema, epoch, args); what MDDS's certify.py and models.classifiers.load_classifier read."""
    clip = is_clip(model)
    ns = argparse.Namespace(**plain_dict(args))
    obj = {"module": export_weights(model, clip), "model_ema": export_weights(ema.module, clip) if ema else None,
           "epoch": epoch, "args": ns, "global_steps": step, "dp_world_size": world()[1], "mp_world_size": 1,
           "optimizer": None, "lr_scheduler": None, "buffer_names": [], "param_shapes": None}
    if ema is None:
        del obj["model_ema"]
    path = os.path.join(out_dir, DS_FILE)
    save_checkpoint(obj, path)
    return path
