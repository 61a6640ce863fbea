"""train_clip.py's task: fine-tune a classifier — FT-CLIP / MDDS (clean), FT-CADIS (denoised,
confidence-aware) or MDDS consistency — on the shared engine (``core.train.engine``).

``run(args)`` is the whole run: datasets (``core.train.augment``), the model (--finetune weights, a
re-initialized head for another number of classes, LoRA), the objective (``core.objectives``), the
optimizer or a DeepSpeed engine, resume, the epochs with their evaluations, and the saved files
(checkpoint-last.pt, the best model in our format or the DeepSpeed layout, --export).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from functools import partial
from typing import Any

import torch
from torch import nn

from core import objectives
from core.errors import MsrsError
from core.runs.loaders import load_denoisers
from core.runs.parsers import need, resolve_ddpm_path
from core.runs.protocols import TRAIN_RECIPES
from core.runs.setup import amp_dtype as resolve_amp
from core.runs.setup import resolve_device, set_backend_flags
from core.train import engine
from core.train.augment import classifier_transform, crop_flip_transform, train_split
from core.train.deepspeed_glue import ds_config, save_deepspeed_layout
from core.train.distributed import is_main, processes, unwrap
from core.train.optim import (
    LoRALinear,
    apply_lora,
    cosine_scheduler,
    make_optimizer,
    merged_state_dict,
    param_groups_lrd,
)
from core.train.parsers import resume_path
from core.train.state import ModelEma, TrainState, load_state, plain_dict, save_state, seed_everything
from datasets import dataset_info, get_dataset
from models.checkpoint import load_checkpoint, load_state_dict_strict, strip_prefixes
from models.classifiers import (
    create_model,
    init_from_openai_clip,
    load_classifier,
    resolve_classifier_path,
    save_classifier,
)

OBJECTIVES = ("clean", "cadis", "consistency")
DATA_SET_ALIASES = {"CIFAR": "cifar10", "IMNET": "imagenet"}   # FT-CLIP --data_set values
# reference flags with no effect here (FT-CLIP / BEiT options its CLIP_B16 ignores too, launcher and
# bookkeeping flags): accepted, and named in one warning
# {flag names: (argparse keywords, why it changes nothing)}: train_clip.py's parser and the warning both read it
IGNORED_FLAGS: dict[tuple[str, ...], tuple[dict[str, Any], str]] = {
    ("--model_prefix",): ({}, "OpenAI CLIP's 'visual.' prefix is detected"),
    ("--eval_data_path",): ({}, "not read"),
    ("--dist_url",): ({}, "torchrun's environment is used"),
    ("--abs_pos_emb",): ({"action": "store_true"}, "CLIP_B16 has absolute positions"),
    ("--disable_rel_pos_bias",): ({"action": "store_true"}, "CLIP_B16 has no relative position bias"),
    ("--layer_scale_init_value",): ({"type": float}, "CLIP_B16 has no layer scale"),
    ("--world_size",): ({"type": int}, "torchrun's WORLD_SIZE is used"),
    ("--id",): ({"type": int}, "FT-CADIS's run id only names its output folder"),
    ("--local_rank", "--local-rank"): ({"type": int}, "torchrun's LOCAL_RANK is used"),
}


def ignored_flags(args: argparse.Namespace) -> list[str]:
    """The reference flags given on the command line that change nothing here."""
    return [f"{names[0]} ({why})" for names, (_, why) in IGNORED_FLAGS.items()
            if getattr(args, names[0][2:], None) is not None]


def resolve_training_protocol(args: argparse.Namespace) -> None:
    """--protocol (default: cadis with --objective cadis, else mdds): the unset training choices."""
    args.protocol = args.protocol or ("cadis" if args.objective == "cadis" else "mdds")
    need(args.protocol in TRAIN_RECIPES, f"train_clip.py trains under --protocol {' or '.join(TRAIN_RECIPES)} "
                                         f"(FT-CLIP / FT-CADIS), not {args.protocol!r}")
    recipe = TRAIN_RECIPES[args.protocol]
    args.augment = args.augment or recipe.augment
    args.checkpoints = args.checkpoints or recipe.checkpoints
    args.evaluation = recipe.evaluation
    if args.auto_resume is None:
        args.auto_resume = recipe.auto_resume and bool(args.output_dir)


def check_args(args: argparse.Namespace) -> None:
    """Resolve the reference spellings (FT-CLIP, FT-CADIS) and check the flags; one-line MsrsError."""
    need(args.model is None or args.arch is None or args.model == args.arch,
         f"give the architecture once: --model {args.model} or --arch {args.arch}")
    args.model = args.model or args.arch or "CLIP_B16"
    need(args.objective in OBJECTIVES, f"--objective must be one of {', '.join(OBJECTIVES)}, got {args.objective}")
    resolve_ddpm_path(args)
    resolve_training_protocol(args)
    args.dataset = DATA_SET_ALIASES.get(args.dataset, args.dataset)
    if args.ft_method == "lora" and args.lora_r == 0:
        args.lora_r = 4
    if args.use_fp16 is not None:
        args.amp = "fp16" if args.use_fp16 else "off"
    if args.load_from:
        args.resume = args.load_from
    if args.num_noises is None:
        args.num_noises = {"cadis": 4, "consistency": 2}.get(args.objective, 1)
    need(not (args.deepspeed and args.opt != "adamw"), "--deepspeed trains with AdamW (FT-CLIP's config); drop --opt")
    need(args.mixup == 0 and args.cutmix == 0, "--mixup/--cutmix are not supported (MDDS and FT-CLIP use 0)")
    need(args.batch_size > 0 and args.epochs > 0 and args.update_freq > 0,
         "--batch_size, --epochs and --update_freq must be positive")
    need(0 < args.layer_decay <= 1, f"--layer_decay must be in (0, 1], got {args.layer_decay}")
    need(0 <= args.smoothing < 1, f"--smoothing must be in [0, 1), got {args.smoothing}")
    need(0 < args.model_ema_decay < 1, f"--model_ema_decay must be in (0, 1), got {args.model_ema_decay}")
    if args.objective in ("cadis", "consistency"):
        need(args.sigma is not None and args.sigma > 0, f"--objective {args.objective} needs --sigma > 0")
        need(args.num_noises >= (1 if args.objective == "cadis" else 2),
             f"--num_noises must be >= {1 if args.objective == 'cadis' else 2} for --objective {args.objective}")
    if args.objective == "cadis":
        need(bool(args.denoiser) and args.denoiser != "none", "--objective cadis needs --denoiser PATH|zoo:NAME")
        need(args.batch_size % args.num_noises == 0,
             f"--batch_size ({args.batch_size}) must be a multiple of --num_noises ({args.num_noises})")
        need(args.num_steps >= 1 and args.eps > 0, "--num_steps must be >= 1 and --eps > 0")
    elif args.denoiser:
        raise MsrsError("--denoiser is used by --objective cadis only")
    if args.test_sigma is None:
        args.test_sigma = args.sigma
    if args.resume == "auto" or args.auto_resume:
        need(bool(args.output_dir), "--resume without a path (or --auto_resume) needs --output_dir")
    ignored = ignored_flags(args)
    if ignored and is_main():
        warnings.warn("train_clip.py ignores " + "; ".join(ignored), stacklevel=2)


def build_datasets(args: argparse.Namespace):
    """(train, test, info): train with augmentation (clean images), test as certify sees it."""
    info = dataset_info(args.dataset)
    test = get_dataset(args.dataset, "test", args.data_path)
    if args.eval:
        return None, test, info
    tf = None
    if args.dataset in ("cifar10", "imagenet"):
        tf = classifier_transform(args, info.image_size) if args.augment == "timm" else crop_flip_transform(args.dataset)
    return train_split(args.dataset, args.data_path, args.digits_shift, tf), test, info


def build_model(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, dict]:
    """The classifier and the constructor kwargs stored with it; --finetune weights, then LoRA."""
    kw: dict = {"num_classes": num_classes}
    if args.init_scale is not None:
        kw["init_scale"] = args.init_scale
    if args.input_size is not None:
        kw["img_size"] = args.input_size
        if args.model.startswith("timm:"):           # the Preprocess resize follows the network's new size
            kw["input_size"] = [args.input_size, args.input_size]
    train_kw = {"drop_path_rate": args.drop_path} if args.drop_path > 0 else {}
    try:
        model = create_model(args.model, **kw, **train_kw)
    except TypeError as e:
        raise MsrsError(f"--model {args.model} does not take these options ({e}); "
                        "drop --input_size/--drop_path/--init_scale") from None
    if args.finetune:
        init_weights(model, args)
    if args.lora_r > 0:
        n = apply_lora(model, args.lora_r, args.lora_alpha)
        if is_main():
            print(f"LoRA r={args.lora_r}: {n} layers; "
                  f"{sum(p.numel() for p in model.parameters() if p.requires_grad)} trainable parameters")
    return model, kw


def init_weights(model: nn.Module, args: argparse.Namespace) -> None:
    """--finetune: OpenAI CLIP (visual.*) → init_from_openai_clip; else any classifier file (same arch)."""
    if args.finetune.lower() in ("true", "1"):
        raise MsrsError(f"--finetune {args.finetune}: not a file. We never download: save OpenAI CLIP's weights once "
                        "with torch.save(clip.load('ViT-B/16', jit=False)[0].state_dict(), 'clip_vit_b16.pt') "
                        "and pass that path")
    path = resolve_classifier_path(args.finetune)                 # zoo:NAME and checkpoint-best/ dirs too
    if not os.path.isfile(path):
        raise MsrsError(f"--finetune {path}: file not found (an OpenAI CLIP state dict or a classifier checkpoint)")
    obj = load_checkpoint(path, trust=args.trust_checkpoint)
    if isinstance(obj, dict) and any(isinstance(k, str) and k.startswith("visual.") for k in strip_prefixes(obj)):
        init_from_openai_clip(model, obj, path)
        return
    src = load_classifier(path, arch=args.model, trust=args.trust_checkpoint).state_dict()
    own = model.state_dict()
    head = {k for k in own if k in src and src[k].shape != own[k].shape}
    if head:                                   # a different number of classes: re-initialize the head only
        allowed = {k for k in own if k.rsplit(".", 2)[-2:][0] in ("head", "fc", "classifier")}
        if not head <= allowed:
            raise MsrsError(f"--finetune {path}: shape mismatch at '{sorted(head - allowed)[0]}' - wrong --model?")
        src = {k: v for k, v in src.items() if k not in head}
    load_state_dict_strict(model, src, path, allow_missing=frozenset(head))


def build_objective(args: argparse.Namespace, device: torch.device):
    """objective(model, x, y) -> (loss, metrics) and the eval input map (noise / noise+denoise) or None."""
    if args.objective == "clean":
        return (lambda model, x, y: objectives.clean_ce(model, x, y, args.smoothing)), None
    if args.objective == "consistency":
        obj = partial(objectives.consistency, sigma=args.sigma, num_noises=args.num_noises, lbd=args.consistency_lbd,
                      eta=args.eta, smoothing=args.smoothing)
        return (lambda model, x, y: obj(model, x, y)), noisy_input(args.test_sigma, None, args.seed)
    # the checkpoint read once; the training and the evaluation sigma's denoisers share its network
    dens = load_denoisers(args.denoiser, sorted({args.sigma, args.test_sigma}), config=args.denoiser_config,
                          trust=args.trust_checkpoint)
    den, test_den = (dens[float(s)].to(device).eval().requires_grad_(False) for s in (args.sigma, args.test_sigma))

    def cadis(model, x, y):
        return objectives.ft_cadis(model, den, x, y, args.sigma, args.num_noises, args.lbd, args.eps,
                                   args.num_steps, args.warm_start, attack_model=unwrap(model))
    return cadis, noisy_input(args.test_sigma, test_den, args.seed)


def noisy_input(sigma: float, denoiser, seed: int):
    """Eval input map x → [D](x + σδ) with its own generator (never the training RNG), reset per eval."""
    state = {}

    def reset(device):
        state["g"] = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        if "g" not in state:
            reset(x.device)
        noisy = x + sigma * torch.randn(x.shape, generator=state["g"], device=x.device, dtype=x.dtype)
        return noisy if denoiser is None else denoiser(noisy).float()
    fn.reset = lambda: state.clear()
    fn.sigma = sigma
    return fn


def save_ours(path: str, model: nn.Module, ema, arch: str, kw: dict, extra: dict) -> None:
    """Our self-describing classifier file (LoRA folded into plain weights; the EMA's beside them)."""
    plain = unwrap(model)
    if any(isinstance(m, LoRALinear) for m in plain.modules()):
        plain = create_model(arch, **kw)
        plain.load_state_dict(merged_state_dict(model))
    ex = dict(extra)
    if ema is not None:
        ex["state_dict_ema"] = merged_state_dict(ema.module)
    save_classifier(plain, arch, kw, path, extra=ex)


def run(args: argparse.Namespace) -> dict:
    """Train (or --eval); returns the last epoch's log row (the evaluation's numbers with --eval)."""
    check_args(args)
    device = resolve_device(args.device)
    set_backend_flags(device, bool(args.tf32))
    if args.amp == "auto":            # FT-CLIP (DeepSpeed fp16) and FT-CADIS (--use_fp16 true) train in fp16
        args.amp = TRAIN_RECIPES[args.protocol].amp if device.type == "cuda" else "off"
    with processes(device, deepspeed=args.deepspeed) as (rank, world):
        return _run(args, device, rank, world)


def _run(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict:
    seed_everything(args.seed)
    if args.output_dir and rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
    train_ds, test_ds, info = build_datasets(args)
    num_classes = args.nb_classes or info.num_classes
    model, kw = build_model(args, num_classes)
    model.to(device)
    objective, eval_input = build_objective(args, device)
    amp_dtype = resolve_amp(args.amp, device)
    scaler = None if args.deepspeed else engine.grad_scaler(amp_dtype, device)   # DeepSpeed scales its own loss

    micro = args.batch_size // args.num_noises if args.objective == "cadis" else args.batch_size
    eff_batch = micro * args.update_freq * world
    lr = args.lr if args.lr is not None else (args.blr * eff_batch / 256 if args.blr is not None else 5e-4)
    test_loader = engine.make_loader(test_ds, max(micro, 1) * 2 if args.objective == "clean" else micro,
                                     train=False, seed=args.seed, num_workers=min(args.num_workers, 2),
                                     shard_eval=args.dist_eval)
    ema = ModelEma(model, args.model_ema_decay, "cpu" if args.model_ema_force_cpu else None) if args.model_ema else None
    groups = param_groups_lrd(model, args.weight_decay, args.layer_decay)

    if args.eval:
        return _evaluate_only(args, model, ema, test_loader, eval_input, device, amp_dtype)

    train_loader = engine.make_loader(train_ds, micro, train=True, seed=args.seed, num_workers=args.num_workers,
                                      pin_memory=args.pin_mem)
    n_steps = engine.steps_per_epoch(len(train_loader), args.update_freq, args.steps_per_epoch)
    lr_schedule = cosine_scheduler(lr, args.min_lr, args.epochs, n_steps, args.warmup_epochs,
                                   warmup_steps=args.warmup_steps)
    wd_schedule = None if args.weight_decay_end is None else cosine_scheduler(
        args.weight_decay, args.weight_decay_end, args.epochs, n_steps)

    if args.deepspeed:
        import deepspeed
        cfg = ds_config(args, micro, lr, world, device, amp_dtype)
        if args.output_dir and rank == 0:
            with open(os.path.join(args.output_dir, "deepspeed_config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        model, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=cfg)
    else:
        adam = {"betas": tuple(args.opt_betas), "eps": args.opt_eps} if args.opt == "adamw" else {}
        optimizer = make_optimizer(args.opt, groups, lr, args.momentum, **adam)
        if world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

    state, resume = TrainState(), resume_path(args)
    last = os.path.join(args.output_dir, "checkpoint-last.pt") if args.output_dir else None
    if resume:
        state, _ = load_state(resume, model, optimizer, ema, scaler)
        if rank == 0:
            print(f"resumed from {resume}: epoch {state.epoch}, step {state.step}")

    log = engine.JsonLog(os.path.join(args.output_dir, "log.txt") if args.output_dir else None)
    tb = TensorboardLog(args.log_dir if rank == 0 else None, optimizer, scaler, model)
    n_params = sum(p.numel() for p in unwrap(model).parameters() if p.requires_grad)
    if rank == 0:
        print(f"{args.model} on {args.dataset}: {len(train_ds)} train images, {n_steps} steps/epoch, lr {lr:.3g} "
              f"(effective batch {eff_batch}), {n_params} trainable parameters, device {device}, world {world}")
    row: dict = {}
    for epoch in range(state.epoch, args.epochs):
        t0 = time.time()
        train_stats = engine.train_one_epoch(
            model, objective, train_loader, optimizer, state, device=device, lr_schedule=lr_schedule,
            wd_schedule=wd_schedule, update_freq=args.update_freq,
            clip_grad=None if args.deepspeed else args.clip_grad, amp_dtype=amp_dtype, scaler=scaler, ema=ema,
            max_steps=args.steps_per_epoch, seed=args.seed, desc=args.objective, on_step=tb.step)
        state.epoch = epoch + 1
        row = {"epoch": epoch, "step": state.step, **{f"train_{k}": v for k, v in train_stats.items()},
               "n_parameters": n_params}
        test_now, ema_now = eval_schedule(args, epoch)
        metric = None
        if test_now:
            stats = _evaluate(model, ema if ema_now else None, test_loader, eval_input, device, amp_dtype)
            row.update(stats)
            metric = stats["select_acc1"]
            tb.epoch(epoch, stats)
        elif args.disable_eval_during_finetuning:
            metric = float(epoch)
        improved = metric is not None and metric > state.best
        if improved:
            state.best = metric
        row["epoch_time"] = time.time() - t0
        if rank == 0:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        log.write(**row)
        if args.output_dir and args.save_ckpt:
            if args.checkpoints == "epochs":   # FT-CADIS train.py: after epoch 1, every 5th and the last
                if rank == 0 and (epoch == 0 or (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs):
                    save_ours(os.path.join(args.output_dir, f"checkpoint-{epoch + 1}.pt"), model, ema, args.model, kw,
                              {"epoch": epoch + 1, "acc1": metric})
            elif improved:
                if args.deepspeed:
                    save_deepspeed_layout(os.path.join(args.output_dir, "checkpoint-best"), model, ema, epoch, args,
                                          state.step) if rank == 0 else None
                elif rank == 0:
                    save_ours(os.path.join(args.output_dir, "checkpoint-best.pt"), model, ema, args.model, kw,
                              {"epoch": epoch, "acc1": metric})
            if state.epoch % args.save_ckpt_freq == 0 or state.epoch == args.epochs:
                save_state(last, model, optimizer, state, ema, scaler, args)
    tb.close()
    if args.export and rank == 0:
        save_ours(args.export, model, ema, args.model, kw,
                  {"epoch": state.epoch, "train_args": plain_dict(args)})
        print(f"wrote {args.export}")
    return row


def eval_schedule(args: argparse.Namespace, epoch: int) -> tuple[bool, bool]:
    """(evaluate the model, evaluate the EMA too) after epoch `epoch` (0-based).

    FT-CLIP / MDDS (run_class_finetuning.py): the model when epoch % 5 == 0, epoch/epochs > 0.7 or --eval_all;
    the EMA when also epoch/epochs > 0.5 or --eval_all (its accuracy then decides "best"). FT-CADIS: every
    epoch. --disable_eval_during_finetuning: never."""
    if args.disable_eval_during_finetuning:
        return False, False
    if args.evaluation == "every" or args.eval_all:
        return True, True
    test = epoch % 5 == 0 or epoch / args.epochs > 0.7
    return test, test and epoch / args.epochs > 0.5


class TensorboardLog:
    """--log_dir: FT-CLIP's TensorBoard scalars (utils.TensorboardLogger) through tensorboard's SummaryWriter —
    per optimizer step loss/loss, loss/class_acc, opt/lr, opt/min_lr, opt/weight_decay, opt/loss_scale; per
    evaluated epoch perf/test_acc1, perf/test_acc5, perf/test_loss. A no-op without a directory."""

    def __init__(self, log_dir: str | None, optimizer, scaler, model):
        self.writer = None
        if log_dir:
            from torch.utils.tensorboard import SummaryWriter
            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir)
        self.optimizer, self.scaler, self.model = optimizer, scaler, model

    def _scalar(self, tag: str, value, step: int) -> None:
        if value is not None:
            self.writer.add_scalar(tag, float(value), step)

    def step(self, step: int, loss: float, metrics: dict) -> None:
        if self.writer is None:
            return
        groups = self.optimizer.param_groups
        scale = self.scaler.get_scale() if self.scaler is not None else getattr(
            getattr(self.model, "optimizer", None), "cur_scale", None)
        self._scalar("loss/loss", loss, step)
        self._scalar("loss/class_acc", metrics.get("acc"), step)
        self._scalar("opt/loss_scale", scale, step)
        self._scalar("opt/lr", max(g["lr"] for g in groups), step)
        self._scalar("opt/min_lr", min(g["lr"] for g in groups), step)
        wd = [g["weight_decay"] for g in groups if g.get("weight_decay", 0) > 0]
        self._scalar("opt/weight_decay", wd[-1] if wd else None, step)

    def epoch(self, epoch: int, stats: dict) -> None:
        if self.writer is None:
            return
        src = "ema" if "ema_acc1" in stats else "test"     # FT-CLIP logs the EMA's when it was evaluated
        self._scalar("perf/test_acc1", stats.get(f"{src}_acc1"), epoch)
        self._scalar("perf/test_acc5", stats.get(f"{src}_acc5"), epoch)
        self._scalar("perf/test_loss", stats.get(f"{src}_loss"), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _evaluate(model, ema, loader, eval_input, device, amp_dtype) -> dict:
    """Clean accuracy (and noisy / denoised accuracy for cadis / consistency) of the model and its EMA.

    select_acc1 (what "best" means): the EMA's if there is one, the noisy/denoised accuracy if measured."""
    out = {}
    for name, m in (("test", unwrap(model)), ("ema", ema.module if ema is not None else None)):
        if m is None:
            continue
        home = next(m.parameters()).device
        m.to(device)                                       # an EMA kept on the CPU is evaluated on the device
        s = engine.evaluate(m, loader, device, amp_dtype, desc=f"eval {name}")
        out[f"{name}_acc1"], out[f"{name}_acc5"], out[f"{name}_loss"] = s["acc1"], s["acc5"], s["loss"]
        if eval_input is not None:
            eval_input.reset()
            s = engine.evaluate(m, loader, device, amp_dtype, input_fn=eval_input, desc=f"eval {name} noisy")
            out[f"{name}_noisy_acc1"] = s["acc1"]
        m.to(home)
        out["select_acc1"] = out[f"{name}_noisy_acc1" if eval_input is not None else f"{name}_acc1"]
    return out


def _evaluate_only(args, model, ema, loader, eval_input, device, amp_dtype) -> dict:
    if args.resume and args.resume != "auto":
        load_state(args.resume, model, None, ema, None, restore_rng=False)
    stats = _evaluate(model, ema, loader, eval_input, device, amp_dtype)
    if is_main():
        print(f"Accuracy of the network on the {len(loader.dataset)} test images: " +
              ", ".join(f"{k} {v:.2f}" for k, v in stats.items()))
    return stats
