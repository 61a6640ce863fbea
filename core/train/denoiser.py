"""finetune_diffusion.py's task: train or fine-tune the denoiser of denoised smoothing on the shared
engine (``core.train.engine``) — MDDS fine-tuning of a diffusion model against a frozen classifier
(ALGORITHMS §3d), a DDPM from scratch, or Salman et al.'s DnCNN (mse / stability / classification).

``run(args)`` is the whole run: data (``core.train.augment``), the frozen classifier, the model, the
optimizer and its schedule, resume (Salman's AdamThenSGD switch included), the epochs with their
evaluation (``eval_denoiser``), and the saved files (checkpoint-last.pt, denoiser.pt and the reference
layouts, --export).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn

from core import objectives
from core.denoise import DiffusionDenoiser
from core.runs.parsers import SIGMA_FLAGS, need, resolve_ddpm_path, sigmas_from_args
from core.runs.setup import amp_dtype as resolve_amp
from core.runs.setup import autocast, resolve_device, set_backend_flags
from core.train import engine
from core.train.augment import denoiser_transform, train_split
from core.train.distributed import processes, unwrap
from core.train.optim import cosine_scheduler, make_optimizer, step_lr_schedule
from core.train.parsers import resume_path
from core.train.state import ModelEma, TrainState, load_state, save_state, seed_everything, state_dict_cpu
from datasets import dataset_info, get_dataset
from models.checkpoint import load_checkpoint, save_checkpoint
from models.classifiers import load_classifier
from models.diffusion import config_kwargs, create_model_and_diffusion, load_diffusion, save_diffusion
from models.dncnn import DNCNN_ARCHS, create_dncnn, load_dncnn, save_dncnn

MODES = ("mdds", "ddpm", "dncnn")
DNCNN_OBJECTIVES = ("mse", "stability", "classification", "stab+mse")


DEFAULTS = {  # mode → (epochs, batch, lr, weight_decay, optimizer, ema)
    "mdds": (10, 16, 1e-5, 0.0, "AdamW", 0.999),
    "ddpm": (100, 128, 1e-4, 0.0, "AdamW", 0.9999),
    "dncnn": (90, 256, 1e-3, 1e-4, "Adam", 0.0),
}


# The paper each mode trains for: --protocol defaults to it and must name it (no other row has a choice here).
MODE_PROTOCOLS = {"mdds": "mdds", "ddpm": "mdds", "dncnn": "salman"}


def check_args(args: argparse.Namespace) -> None:
    """The mode's defaults (``DEFAULTS``), --protocol, --ddpm_path, and the checks; one-line MsrsError."""
    paper = MODE_PROTOCOLS[args.mode]
    need(args.protocol in (None, paper), f"finetune_diffusion.py --mode {args.mode} trains as --protocol {paper}; "
                                         f"--protocol {args.protocol} has no denoiser training here")
    args.protocol = paper
    need(args.objective in DNCNN_OBJECTIVES,
         f"--objective must be one of {', '.join(DNCNN_OBJECTIVES)} (Salman's), got {args.objective}")
    resolve_ddpm_path(args)
    need(not args.eval or args.mode == "dncnn" or bool(args.denoiser), "--eval evaluates --denoiser: pass it")
    epochs, batch, lr, wd, opt, ema = DEFAULTS[args.mode]
    args.epochs = epochs if args.epochs is None else args.epochs
    args.batch_size = batch if args.batch_size is None else args.batch_size
    args.lr = lr if args.lr is None else args.lr
    args.weight_decay = wd if args.weight_decay is None else args.weight_decay
    args.optimizer = opt if args.optimizer is None else args.optimizer
    args.ema_decay = ema if args.ema_decay is None else args.ema_decay
    need(args.epochs > 0 and args.batch_size > 0 and args.update_freq > 0 and args.lr > 0,
         "--epochs, --batch_size, --update_freq and --lr must be positive")
    need(0 <= args.ema_decay < 1, f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if args.mode == "mdds":
        args.train_sigmas = sigmas_from_args(args)
        need(bool(args.denoiser), "--mode mdds needs --denoiser (the diffusion checkpoint to fine-tune)")
        need(bool(args.classifier), "--mode mdds needs --classifier (the frozen classifier)")
        need(args.num_noises >= 2, f"--num_noises must be >= 2 for --mode mdds, got {args.num_noises}")
    elif args.mode == "ddpm":
        need(bool(args.denoiser_config) or bool(args.denoiser),
             "--mode ddpm needs --denoiser_config NAME (a new model) or --denoiser PATH (continue one)")
        args.train_sigmas = sigmas_from_args(args) if (args.sigmas or any(
            getattr(args, n) for n in SIGMA_FLAGS)) else [0.25, 0.5, 1.0]
    elif args.eval:
        need(args.noise_sd >= 0, f"--noise_sd must be >= 0, got {args.noise_sd}")
        need(bool(args.pretrained_denoiser), "--mode dncnn --eval evaluates --pretrained-denoiser: pass it")
        args.train_sigmas = [args.noise_sd]
    else:
        need(args.noise_sd > 0, "--mode dncnn needs --noise_sd > 0 (Salman's default 0 is not a valid noise level)")
        need(args.objective == "mse" or bool(args.classifier),
             f"--objective {args.objective} needs --classifier (the frozen classifier)")
        need(args.objective != "stab+mse" or bool(args.pretrained_denoiser),
             "--objective stab+mse is stability training from an MSE denoiser: pass --pretrained-denoiser")
        args.train_sigmas = [args.noise_sd]
    if args.resume == "auto":
        need(bool(args.output_dir), "--resume without a path needs --output_dir")


def test_split(args: argparse.Namespace):
    """The test set, or --eval_max of its images evenly spaced."""
    test = get_dataset(args.dataset, "test", args.data_path)
    if args.eval_max and len(test) > args.eval_max:
        step = len(test) // args.eval_max
        test = torch.utils.data.Subset(test, list(range(0, step * args.eval_max, step)))
    return test


def build_data(args: argparse.Namespace):
    """(train, test) pixel datasets: digits with random shifts; CIFAR crop + flip (Salman / improved-diffusion)."""
    return train_split(args.dataset, args.data_path, args.digits_shift, denoiser_transform(args.dataset)), test_split(args)


def frozen_classifier(args: argparse.Namespace, device: torch.device) -> nn.Module | None:
    """The classifier, frozen: eval mode and no parameter gradients (gradients still flow through it)."""
    if not args.classifier:
        return None
    clf = load_classifier(args.classifier, arch=args.arch if args.mode != "dncnn" else None,
                          num_classes=dataset_info(args.dataset).num_classes, trust=args.trust_checkpoint)
    return clf.to(device).eval().requires_grad_(False)


def build_diffusion(args: argparse.Namespace):
    """(UNet, diffusion, kwargs): a checkpoint to fine-tune/continue (--denoiser) or a fresh named config."""
    if args.denoiser:
        model, diffusion, kwargs = load_diffusion(args.denoiser, args.denoiser_config, trust=args.trust_checkpoint)
    else:
        kwargs = config_kwargs(args.denoiser_config)
        model, diffusion = create_model_and_diffusion(**kwargs)
    return model, diffusion, kwargs


def build_dncnn(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The DnCNN to train: --pretrained-denoiser's, or a fresh one of --arch (Salman's names)."""
    if args.pretrained_denoiser:
        obj = load_checkpoint(args.pretrained_denoiser, trust=args.trust_checkpoint)
        model = load_dncnn(obj, args.pretrained_denoiser)
        arch = obj.get("arch", args.arch or "cifar_dncnn") if isinstance(obj, dict) else (args.arch or "cifar_dncnn")
        arch = arch if arch in DNCNN_ARCHS else "cifar_dncnn"
    else:
        arch = args.arch or ("imagenet_dncnn" if args.dataset == "imagenet" else "cifar_dncnn")
        model = create_dncnn(arch)
    return model.train(), arch


@torch.no_grad()
def eval_denoiser(den_for_sigma, classifier, loader, device, sigmas, seed: int, amp_dtype) -> dict:
    """Per σ: MSE ‖D(x+δ) − x‖² (pixels) and, with a classifier, accuracy of f(D(x+δ)) (%), fixed noise."""
    out = {}
    for s in sigmas:
        den = den_for_sigma(s)
        g = torch.Generator(device=device).manual_seed(seed)

        def batch_sums(x: torch.Tensor, y: torch.Tensor) -> list[float]:   # squared-error sum, correct, count
            with autocast(device, amp_dtype):
                x_hat = den(x + s * torch.randn(x.shape, generator=g, device=device)).float()
                correct = int((classifier(x_hat).argmax(1) == y).sum()) if classifier is not None else 0
            return [float(((x_hat - x) ** 2).mean((1, 2, 3)).sum()), correct, len(y)]
        tot = engine.sum_over(loader, device, batch_sums, 3, desc=f"eval sigma={s:g}")
        out[f"mse_{s:g}"] = tot[0].item() / tot[2].item()
        if classifier is not None:
            out[f"acc_{s:g}"] = 100.0 * tot[1].item() / tot[2].item()
    return out


def run(args: argparse.Namespace) -> dict:
    """Train (or --eval); returns the last epoch's log row (the evaluation's numbers with --eval)."""
    check_args(args)
    device = resolve_device(args.device)
    set_backend_flags(device, bool(args.tf32))
    if args.eval:
        return evaluate_only(args, device)
    with processes(device) as (rank, world):
        return _run(args, device, rank, world)


def evaluate_only(args: argparse.Namespace, device: torch.device) -> dict:
    """--eval (Salman's test_denoiser.py): at each sigma, the denoiser's MSE and, with --classifier, the accuracy
    of f(D(x+δ)) and of f(x+δ); the first image of the last batch, clean and denoised, to OUTPUT_DIR."""
    from torchvision.utils import save_image
    test = test_split(args)
    loader = engine.make_loader(test, args.batch_size, train=False, seed=args.seed, num_workers=args.num_workers)
    classifier, amp_dtype = frozen_classifier(args, device), resolve_amp(args.amp, device)
    if args.mode == "dncnn":
        dncnn = build_dncnn(args)[0].to(device).eval()
    else:
        model, diffusion, _ = build_diffusion(args)
        model.to(device).eval()

    def den_for_sigma(s: float) -> nn.Module:
        return dncnn if args.mode == "dncnn" else DiffusionDenoiser(model, diffusion, s)
    row = eval_denoiser(den_for_sigma, classifier, loader, device, args.train_sigmas, args.seed, amp_dtype)
    if classifier is not None:
        bare = eval_denoiser(lambda s: nn.Identity(), classifier, loader, device, args.train_sigmas, args.seed,
                             amp_dtype)
        row.update({f"{k}_without_denoiser": v for k, v in bare.items() if k.startswith("acc_")})
    for s in args.train_sigmas:
        print(f"MSE of the denoiser is {row[f'mse_{s:g}']}")
        if classifier is not None:
            print(f"Accuracy WITH denoiser at noise of {s:.2f} is {row[f'acc_{s:g}']}")
            print(f"Accuracy WITHOUT denoiser at noise of {s:.2f} is {row[f'acc_{s:g}_without_denoiser']}")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        s = args.train_sigmas[-1]
        x = test[(len(test) - 1) // args.batch_size * args.batch_size][0].unsqueeze(0).to(device)
        g = torch.Generator(device=device).manual_seed(args.seed)
        with torch.no_grad():
            x_hat = den_for_sigma(s)(x + s * torch.randn(x.shape, generator=g, device=device)).float().clamp(0, 1)
        save_image(x[0], os.path.join(args.output_dir, "clean.png"))
        save_image(x_hat[0], os.path.join(args.output_dir, "denoised.png"))
    return row


def _run(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict:
    seed_everything(args.seed)
    if args.output_dir and rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
    train_ds, test_ds = build_data(args)
    classifier = frozen_classifier(args, device)
    amp_dtype = resolve_amp(args.amp, device)
    scaler = engine.grad_scaler(amp_dtype, device)

    if args.mode == "dncnn":
        model, arch = build_dncnn(args)
        diffusion, kwargs = None, None
    else:
        model, diffusion, kwargs = build_diffusion(args)
        model.train()
        arch = "openai_unet"
    model.to(device)
    ema = ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(args.optimizer, params, args.lr, args.momentum, weight_decay=args.weight_decay)
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    loader = engine.make_loader(train_ds, args.batch_size, train=True, seed=args.seed, num_workers=args.num_workers)
    test_loader = engine.make_loader(test_ds, min(args.batch_size, 256), train=False, seed=args.seed, num_workers=0)
    n_steps = engine.steps_per_epoch(len(loader), args.update_freq, args.steps_per_epoch)
    if args.mode == "dncnn":
        lr_schedule = step_lr_schedule(args.lr, args.gamma, args.lr_step_size, n_steps, args.epochs)
    elif args.min_lr is not None or args.warmup_steps > 0:
        lr_schedule = cosine_scheduler(args.lr, args.lr if args.min_lr is None else args.min_lr, args.epochs,
                                              n_steps, warmup_steps=args.warmup_steps)
    else:
        lr_schedule = None                     # improved-diffusion: constant lr

    # objective(model, x, y): `model` is what the engine trains (the UNet / DnCNN, maybe DDP-wrapped)
    if args.mode == "mdds":
        built: dict = {}                        # the denoisers of the model the engine trains, built once

        def objective(m, x, y):
            if built.get("model") is not m:
                built.update(model=m, dens=[DiffusionDenoiser(m, diffusion, s) for s in args.train_sigmas])
            return objectives.mdds_diffusion(built["dens"], classifier, x, y, args.num_noises, args.ac_weight,
                                             args.diff_weight)
    elif args.mode == "ddpm":
        def objective(m, x, y):
            return objectives.ddpm(m, diffusion, x, args.t_max or None)
    else:
        sd = args.noise_sd
        objective = {
            "mse": lambda m, x, y: objectives.dncnn_mse(m, x, sd),
            "classification": lambda m, x, y: objectives.dncnn_classification(m, classifier, x, y, sd),
            "stability": lambda m, x, y: objectives.dncnn_stability(m, classifier, x, sd),
            "stab+mse": lambda m, x, y: objectives.dncnn_stability(m, classifier, x, sd),
        }[args.objective]

    state, resume = TrainState(), resume_path(args)
    last = os.path.join(args.output_dir, "checkpoint-last.pt") if args.output_dir else None
    switched = False
    if resume:
        if args.optimizer == "AdamThenSGD" and _epoch_of(resume) > args.start_sgd_epoch:
            optimizer, switched = _sgd(args, params), True
        state, _ = load_state(resume, train_model, optimizer, ema, scaler)
        if rank == 0:
            print(f"resumed from {resume}: epoch {state.epoch}, step {state.step}")

    def den_for_sigma(m):
        m.eval()
        if args.mode == "dncnn":
            return lambda s: m
        return lambda s: DiffusionDenoiser(m, diffusion, s)

    log = engine.JsonLog(os.path.join(args.output_dir, "log.txt") if args.output_dir else None)
    if rank == 0:
        print(f"{args.mode} on {args.dataset}: {len(train_ds)} train images, {n_steps} steps/epoch, "
              f"{sum(p.numel() for p in params)} trainable parameters, device {device}, world {world}")
    row: dict = {}
    for epoch in range(state.epoch, args.epochs):
        if args.optimizer == "AdamThenSGD" and epoch >= args.start_sgd_epoch and not switched:
            # Salman's switch (pitfall 10: their 'AdamThenSGD ' typo means it never happens there)
            optimizer, switched = _sgd(args, params), True
        if switched:
            epoch_lr = args.start_sgd_lr * args.gamma ** ((epoch - args.start_sgd_epoch) // args.lr_step_size)
            sched = [epoch_lr] * ((epoch + 1) * n_steps)
        else:
            sched = lr_schedule
        t0 = time.time()
        stats = engine.train_one_epoch(train_model, objective, loader, optimizer, state, device=device,
                                       lr_schedule=sched, update_freq=args.update_freq, clip_grad=args.clip_grad,
                                       amp_dtype=amp_dtype, scaler=scaler, ema=ema, max_steps=args.steps_per_epoch,
                                       seed=args.seed, desc=args.mode)
        state.epoch = epoch + 1
        row = {"epoch": epoch, "step": state.step, **{f"train_{k}": v for k, v in stats.items()}}
        if state.epoch % args.eval_freq == 0 or state.epoch == args.epochs:
            eval_model = ema.module if ema is not None else model
            test = eval_denoiser(den_for_sigma(eval_model), classifier, test_loader, device, args.train_sigmas,
                                 args.seed, amp_dtype)
            row.update({f"test_{k}": v for k, v in test.items()})
            model.train()
        row["epoch_time"] = time.time() - t0
        if rank == 0:
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}))
        log.write(**row)
        if args.output_dir and (state.epoch % args.save_ckpt_freq == 0 or state.epoch == args.epochs):
            save_state(last, train_model, optimizer, state, ema, scaler, args)
            if rank == 0:
                raw = state.epoch == args.epochs or (args.raw_freq > 0 and state.epoch % args.raw_freq == 0)
                save_outputs(args, model, ema, arch, kwargs, optimizer, state, raw)
    if args.export and rank == 0:
        save_final(args.export, model, ema, arch, kwargs, state)
        print(f"wrote {args.export}")
    return row


def _epoch_of(path: str) -> int:
    return int(load_checkpoint(path).get("epoch", 0))


def _sgd(args: argparse.Namespace, params) -> torch.optim.Optimizer:
    return make_optimizer("SGD", params, args.start_sgd_lr, args.momentum, weight_decay=args.weight_decay)


def save_outputs(args, model, ema, arch, kwargs, optimizer, state, raw: bool = True) -> None:
    """The reference layouts beside checkpoint-last.pt (see the module docstring); raw state dicts if `raw`."""
    out = args.output_dir
    if args.mode == "dncnn":
        save_checkpoint({"epoch": state.epoch, "arch": arch, "state_dict": state_dict_cpu(
            ema.module if ema is not None else model), "optimizer": optimizer.state_dict()},
            os.path.join(out, "checkpoint.pth.tar"))
        return
    if raw:
        save_checkpoint(state_dict_cpu(model), os.path.join(out, f"model{state.step:06d}.pt"))
        if ema is not None:
            save_checkpoint(state_dict_cpu(ema.module),
                            os.path.join(out, f"ema_{args.ema_decay:g}_{state.step:06d}.pt"))
    save_final(os.path.join(out, "denoiser.pt"), model, ema, arch, kwargs, state)


def save_final(path, model, ema, arch, kwargs, state) -> None:
    """Our self-describing file of the EMA weights (raw weights when there is no EMA)."""
    m = ema.module if ema is not None else unwrap(model)
    if arch == "openai_unet":
        save_diffusion(m, kwargs, path, extra={"epoch": state.epoch, "step": state.step})
    else:
        save_dncnn(m, arch, path)
