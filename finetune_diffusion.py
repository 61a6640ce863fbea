"""Train or fine-tune the denoiser of denoised smoothing.

    # (a) MDDS fine-tuning (ALGORITHMS §3d) of an OpenAI diffusion checkpoint against a frozen classifier
    python finetune_diffusion.py --mode mdds --dataset cifar10 --denoiser cifar10_uncond_50M_500K.pt \\
        --denoiser_config improved-cifar10-uncond --classifier OUTPUT/.../checkpoint-best \\
        --sigma25 --sigma50 --sigma100 --num_noises 4 --ac_weight 1 --diff_weight 1 --output_dir OUT
    # (b) a DDPM from scratch (the zoo's digits_ddpm: scripts/train_zoo.sh)
    python finetune_diffusion.py --mode ddpm --dataset digits --denoiser_config digits-ddpm --export D.pt
    # (c) Salman et al.'s DnCNN (code/train_denoiser.py flags)
    python finetune_diffusion.py --mode dncnn --dataset cifar10 --arch cifar_dncnn --objective mse \\
        --noise_sd 0.25 --outdir OUT

Outputs under --output_dir (--outdir): ``log.txt`` (one JSON line per epoch) and ``checkpoint-last.pt``
(resumable: model, EMA, optimizer, epoch, step, RNG states). Diffusion modes also write ``denoiser.pt``,
our self-describing diffusion file of the EMA weights (``--denoiser PATH``, no config needed), and, at
the end and every --raw_freq epochs, the reference layout: raw UNet state dicts ``model{step:06d}.pt``
and ``ema_{rate}_{step:06d}.pt`` (improved-diffusion's names; load them with ``--denoiser PATH
--denoiser_config NAME``, or MDDS's ``--ddpm_path``). DnCNN mode writes Salman's ``checkpoint.pth.tar``
(``{'epoch', 'arch', 'state_dict', 'optimizer'}``). ``--export PATH`` writes the final (EMA) model in
our self-describing format.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn

from core import engine, objectives
from core.runs import parsers as cli
from core.errors import MsrsError

MODES = ("mdds", "ddpm", "dncnn")
DNCNN_OBJECTIVES = ("mse", "stability", "classification", "stab+mse")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("finetune_diffusion.py", add_help=add_help, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES, default="mdds",
                   help="mdds: fine-tune a diffusion denoiser (§3d); ddpm: train a DDPM; dncnn: Salman's DnCNN")
    g = p.add_argument_group("models")
    g.add_argument("--denoiser", "--ddpm_path", dest="denoiser", default=None,
                   help="mdds: the diffusion to fine-tune; ddpm: optional start point (PATH or zoo:NAME)")
    g.add_argument("--denoiser_config", default=None,
                   help="named diffusion config (improved-cifar10-uncond, guided-256-uncond, digits-ddpm, ...) or JSON")
    g.add_argument("--classifier", "--clf", dest="classifier", default=None,
                   help="frozen classifier (mdds; dncnn stability/classification; optional elsewhere: eval)")
    g.add_argument("--arch", default=None,
                   help="classifier arch for files that do not name one; dncnn: the DnCNN arch (cifar_dncnn, ...)")
    g.add_argument("--pretrained-denoiser", "--pretrained_denoiser", dest="pretrained_denoiser", default=None,
                   help="dncnn: start from this DnCNN (required for stab+mse)")
    g.add_argument("--trust_checkpoint", action="store_true", help="allow full unpickling of checkpoints")

    g = p.add_argument_group("objective")
    for name, s in cli.SIGMA_FLAGS.items():
        g.add_argument(f"--{name}", action="store_true", help=f"mdds: train at sigma={s}")
    g.add_argument("--sigmas", type=float, nargs="+", default=[], help="mdds: training sigmas (pixels in [0,1])")
    g.add_argument("--num_noises", type=int, default=4, help="mdds: noise draws M per image (>= 2)")
    g.add_argument("--ac_weight", type=float, default=1.0, help="mdds: weight alpha of the anti-consistency term")
    g.add_argument("--diff_weight", type=float, default=1.0, help="mdds: weight lambda of the eps-MSE term")
    g.add_argument("--objective", choices=DNCNN_OBJECTIVES, default="mse", help="dncnn: Salman's objective")
    g.add_argument("--noise_sd", "--noise", dest="noise_sd", type=float, default=0.0,
                   help="dncnn: training noise level (required, > 0)")
    g.add_argument("--t_max", type=int, default=0,
                   help="ddpm: sample t below this timestep only (0: all T); see models/zoo/README.md")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=None, help="default: mdds 10, ddpm 100, dncnn 90")
    g.add_argument("--batch_size", "--batch", dest="batch_size", type=int, default=None,
                   help="default: mdds 16, ddpm 128, dncnn 256")
    g.add_argument("--update_freq", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--lr", type=float, default=None, help="default: mdds 1e-5, ddpm 1e-4, dncnn 1e-3")
    g.add_argument("--min_lr", type=float, default=None, help="cosine floor (mdds/ddpm; default: constant lr)")
    g.add_argument("--warmup_steps", type=int, default=0)
    g.add_argument("--weight_decay", type=float, default=None, help="default: 0 (diffusion), 1e-4 (dncnn)")
    g.add_argument("--optimizer", choices=["Adam", "SGD", "AdamThenSGD", "AdamW"], default=None,
                   help="default AdamW (diffusion), Adam (dncnn)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--lr_step_size", type=int, default=30, help="dncnn: StepLR step (epochs)")
    g.add_argument("--gamma", type=float, default=0.1, help="dncnn: StepLR factor")
    g.add_argument("--start_sgd_epoch", type=int, default=50, help="dncnn AdamThenSGD: switch epoch")
    g.add_argument("--start_sgd_lr", type=float, default=1e-5, help="dncnn AdamThenSGD: SGD lr")
    g.add_argument("--ema_decay", "--ema_rate", dest="ema_decay", type=float, default=None,
                   help="EMA decay (default: mdds 0.999, ddpm 0.9999, dncnn off); 0 disables")
    g.add_argument("--clip_grad", type=float, default=None)
    g.add_argument("--steps_per_epoch", type=int, default=0, help="cap optimizer steps per epoch (0: full)")

    g = p.add_argument_group("data and runtime")
    g.add_argument("--dataset", "--data_set", "--data", dest="dataset", default="cifar10")
    g.add_argument("--data_path", default="datasets")
    g.add_argument("--digits_shift", type=int, default=1, help="digits: random shift augmentation (pixels)")
    g.add_argument("--output_dir", "--outdir", dest="output_dir", default="")
    g.add_argument("--export", default=None, help="write the final (EMA) model in our self-describing format here")
    g.add_argument("--eval_max", type=int, default=512, help="evaluate on at most this many test images (0: all)")
    g.add_argument("--save_ckpt_freq", type=int, default=1,
                   help="write checkpoint-last.pt / denoiser.pt every N epochs")
    g.add_argument("--raw_freq", type=int, default=0,
                   help="also keep raw model/ema state dicts every N epochs (0: only at the end)")
    g.add_argument("--eval_freq", type=int, default=1, help="evaluate every N epochs (and after the last)")
    g.add_argument("--resume", nargs="?", const="auto", default="",
                   help="resume from a checkpoint-last.pt (no value: OUTPUT_DIR/checkpoint-last.pt)")
    g.add_argument("--device", default="auto")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num_workers", "--workers", dest="num_workers", type=int, default=2)
    g.add_argument("--print-freq", "--print_freq", dest="print_freq", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--gpu", default=None, help=argparse.SUPPRESS)
    return p


DEFAULTS = {  # mode → (epochs, batch, lr, weight_decay, optimizer, ema)
    "mdds": (10, 16, 1e-5, 0.0, "AdamW", 0.999),
    "ddpm": (100, 128, 1e-4, 0.0, "AdamW", 0.9999),
    "dncnn": (90, 256, 1e-3, 1e-4, "Adam", 0.0),
}


def check_args(args: argparse.Namespace) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise MsrsError(msg)
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
        args.train_sigmas = cli.sigmas_from_args(args)
        need(bool(args.denoiser), "--mode mdds needs --denoiser (the diffusion checkpoint to fine-tune)")
        need(bool(args.classifier), "--mode mdds needs --classifier (the frozen classifier)")
        need(args.num_noises >= 2, f"--num_noises must be >= 2 for --mode mdds, got {args.num_noises}")
    elif args.mode == "ddpm":
        need(bool(args.denoiser_config) or bool(args.denoiser),
             "--mode ddpm needs --denoiser_config NAME (a new model) or --denoiser PATH (continue one)")
        args.train_sigmas = cli.sigmas_from_args(args) if (args.sigmas or any(
            getattr(args, n) for n in cli.SIGMA_FLAGS)) else [0.25, 0.5, 1.0]
    else:
        need(args.noise_sd > 0, "--mode dncnn needs --noise_sd > 0 (Salman's default 0 is not a valid noise level)")
        need(args.objective == "mse" or bool(args.classifier),
             f"--objective {args.objective} needs --classifier (the frozen classifier)")
        need(args.objective != "stab+mse" or bool(args.pretrained_denoiser),
             "--objective stab+mse is stability training from an MSE denoiser: pass --pretrained-denoiser")
        args.train_sigmas = [args.noise_sd]
    if args.resume == "auto":
        need(bool(args.output_dir), "--resume without a path needs --output_dir")


# ---- building blocks -----------------------------------------------------------------------------

def build_data(args: argparse.Namespace):
    """(train, test) pixel datasets: digits with random shifts; CIFAR crop + flip (Salman / improved-diffusion)."""
    from datasets import get_dataset
    from train_clip import Augmented, RandomShift
    test = get_dataset(args.dataset, "test", args.data_path)
    if args.eval_max and len(test) > args.eval_max:
        step = len(test) // args.eval_max
        test = torch.utils.data.Subset(test, list(range(0, step * args.eval_max, step)))
    if args.dataset == "digits":
        train = Augmented(get_dataset("digits", "train"), RandomShift(args.digits_shift))
    elif args.dataset == "cifar10":
        from torchvision import transforms as T
        from datasets.transforms import ToPixels
        train = get_dataset("cifar10", "train", args.data_path,
                            transform=T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), ToPixels()]))
    elif args.dataset == "imagenet":
        from torchvision import transforms as T
        from datasets.transforms import ToPixels
        train = get_dataset("imagenet", "train", args.data_path,
                            transform=T.Compose([T.RandomResizedCrop(224, scale=(0.35, 1)), T.RandomHorizontalFlip(),
                                                 ToPixels()]))
    else:
        raise MsrsError(f"training on {args.dataset!r} is not supported (use digits, cifar10 or imagenet)")
    return train, test


def frozen_classifier(args: argparse.Namespace, device: torch.device) -> nn.Module | None:
    """The classifier, frozen: eval mode and no parameter gradients (gradients still flow through it)."""
    if not args.classifier:
        return None
    from datasets import dataset_info
    from models.classifiers import load_classifier
    clf = load_classifier(args.classifier, arch=args.arch if args.mode != "dncnn" else None,
                          num_classes=dataset_info(args.dataset).num_classes, trust=args.trust_checkpoint)
    return clf.to(device).eval().requires_grad_(False)


def build_diffusion(args: argparse.Namespace):
    """(UNet, diffusion, kwargs): a checkpoint to fine-tune/continue (--denoiser) or a fresh named config."""
    from models.diffusion import config_kwargs, create_model_and_diffusion, load_diffusion
    if args.denoiser:
        model, diffusion, kwargs = load_diffusion(args.denoiser, args.denoiser_config, trust=args.trust_checkpoint)
    else:
        kwargs = config_kwargs(args.denoiser_config)
        model, diffusion = create_model_and_diffusion(**kwargs)
    return model, diffusion, kwargs


def build_dncnn(args: argparse.Namespace) -> tuple[nn.Module, str]:
    from models.dncnn import DNCNN_ARCHS, create_dncnn, load_dncnn
    from models.checkpoint import load_checkpoint
    if args.pretrained_denoiser:
        obj = load_checkpoint(args.pretrained_denoiser, trust=args.trust_checkpoint)
        model = load_dncnn(obj, args.pretrained_denoiser)
        arch = obj.get("arch", args.arch or "cifar_dncnn") if isinstance(obj, dict) else (args.arch or "cifar_dncnn")
        arch = arch if arch in DNCNN_ARCHS else "cifar_dncnn"
    else:
        arch = args.arch or ("imagenet_dncnn" if args.dataset == "imagenet" else "cifar_dncnn")
        model = create_dncnn(arch)
    return model.train(), arch


def step_lr_schedule(args: argparse.Namespace, n_steps: int, epochs: int):
    """Salman's StepLR(step_size, gamma) per epoch, as per-step values."""
    import numpy as np
    return np.array([args.lr * args.gamma ** (e // args.lr_step_size) for e in range(epochs) for _ in range(n_steps)])


# ---- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def eval_denoiser(den_for_sigma, classifier, loader, device, sigmas, seed: int, amp_dtype) -> dict:
    """Per σ: MSE ‖D(x+δ) − x‖² (pixels) and, with a classifier, accuracy of f(D(x+δ)) (%), fixed noise."""
    out = {}
    for s in sigmas:
        den = den_for_sigma(s)
        g = torch.Generator(device=device).manual_seed(seed)
        tot = torch.zeros(3, dtype=torch.float64)                 # squared-error sum, correct, count
        for x, y in loader:
            x, y = x.to(device), torch.as_tensor(y).to(device)
            with engine.autocast(device, amp_dtype):
                x_hat = den(x + s * torch.randn(x.shape, generator=g, device=device)).float()
                correct = int((classifier(x_hat).argmax(1) == y).sum()) if classifier is not None else 0
            tot += torch.tensor([float(((x_hat - x) ** 2).mean((1, 2, 3)).sum()), correct, len(y)], dtype=torch.float64)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            t = tot.to(device)
            torch.distributed.all_reduce(t)
            tot = t.cpu()
        out[f"mse_{s:g}"] = tot[0].item() / tot[2].item()
        if classifier is not None:
            out[f"acc_{s:g}"] = 100.0 * tot[1].item() / tot[2].item()
    return out


# ---- main ----------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> dict:
    from core.runs.setup import resolve_device
    check_args(args)
    device = resolve_device(args.device)
    created = engine.init_distributed(device)
    try:
        return _run(args, device)
    finally:
        if created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(args: argparse.Namespace, device: torch.device) -> dict:
    from core.denoise import DiffusionDenoiser
    rank, world = engine.world()
    engine.seed_everything(args.seed)
    if args.output_dir and rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
    train_ds, test_ds = build_data(args)
    classifier = frozen_classifier(args, device)
    amp_dtype, scaler = engine.amp_setup(args.amp, device)

    if args.mode == "dncnn":
        model, arch = build_dncnn(args)
        diffusion, kwargs = None, None
    else:
        model, diffusion, kwargs = build_diffusion(args)
        model.train()
        arch = "openai_unet"
    model.to(device)
    ema = engine.ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "AdamW":
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    elif args.optimizer in ("Adam", "AdamThenSGD"):
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    loader = engine.make_loader(train_ds, args.batch_size, train=True, seed=args.seed, num_workers=args.num_workers)
    test_loader = engine.make_loader(test_ds, min(args.batch_size, 256), train=False, seed=args.seed, num_workers=0)
    n_steps = engine.steps_per_epoch(len(loader), args.update_freq, args.steps_per_epoch)
    if args.mode == "dncnn":
        lr_schedule = step_lr_schedule(args, n_steps, args.epochs)
    elif args.min_lr is not None or args.warmup_steps > 0:
        lr_schedule = engine.cosine_scheduler(args.lr, args.lr if args.min_lr is None else args.min_lr, args.epochs,
                                              n_steps, warmup_steps=args.warmup_steps)
    else:
        lr_schedule = None                     # improved-diffusion: constant lr

    # objective(model, x, y): `model` is what the engine trains (the UNet / DnCNN, maybe DDP-wrapped)
    if args.mode == "mdds":
        def objective(m, x, y):
            dens = [DiffusionDenoiser(m, diffusion, s) for s in args.train_sigmas]
            return objectives.mdds_diffusion(dens, classifier, x, y, args.num_noises, args.ac_weight, args.diff_weight)
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

    state = engine.TrainState()
    last = os.path.join(args.output_dir, "checkpoint-last.pt") if args.output_dir else None
    resume = (last if args.resume == "auto" else args.resume) or ""
    switched = False
    if resume:
        if args.optimizer == "AdamThenSGD" and _epoch_of(resume) > args.start_sgd_epoch:
            optimizer, switched = _sgd(args, params), True
        state, _ = engine.load_state(resume, train_model, optimizer, ema, scaler)
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
            engine.save_state(last, train_model, optimizer, state, ema, scaler, args)
            if rank == 0:
                raw = state.epoch == args.epochs or (args.raw_freq > 0 and state.epoch % args.raw_freq == 0)
                save_outputs(args, model, ema, arch, kwargs, optimizer, state, raw)
    if args.export and rank == 0:
        save_final(args.export, model, ema, arch, kwargs, state)
        print(f"wrote {args.export}")
    return row


def _epoch_of(path: str) -> int:
    from models.checkpoint import load_checkpoint
    return int(load_checkpoint(path).get("epoch", 0))


def _sgd(args: argparse.Namespace, params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=args.start_sgd_lr, momentum=args.momentum, weight_decay=args.weight_decay)


def save_outputs(args, model, ema, arch, kwargs, optimizer, state, raw: bool = True) -> None:
    """The reference layouts beside checkpoint-last.pt (see the module docstring); raw state dicts if `raw`."""
    from models.checkpoint import save_checkpoint
    out = args.output_dir
    if args.mode == "dncnn":
        save_checkpoint({"epoch": state.epoch, "arch": arch, "state_dict": engine.state_dict_cpu(
            ema.module if ema is not None else model), "optimizer": optimizer.state_dict()},
            os.path.join(out, "checkpoint.pth.tar"))
        return
    if raw:
        save_checkpoint(engine.state_dict_cpu(model), os.path.join(out, f"model{state.step:06d}.pt"))
        if ema is not None:
            save_checkpoint(engine.state_dict_cpu(ema.module),
                            os.path.join(out, f"ema_{args.ema_decay:g}_{state.step:06d}.pt"))
    save_final(os.path.join(out, "denoiser.pt"), model, ema, arch, kwargs, state)


def save_final(path, model, ema, arch, kwargs, state) -> None:
    """Our self-describing file of the EMA weights (raw weights when there is no EMA)."""
    m = ema.module if ema is not None else engine.unwrap(model)
    if arch == "openai_unet":
        from models.diffusion import save_diffusion
        save_diffusion(m, kwargs, path, extra={"epoch": state.epoch, "step": state.step})
    else:
        from models.dncnn import save_dncnn
        save_dncnn(m, arch, path)


if __name__ == "__main__":
    cli.run_cli(main, get_args_parser())
