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

from core.runs.parsers import run_cli, sigma_parser
from core.train.denoiser import MODES, run
from core.train.parsers import training_family


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("finetune_diffusion.py", add_help=add_help, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=training_family() + [sigma_parser()])
    p.set_defaults(warmup_steps=0, num_workers=2, objective="mse", num_noises=4)   # epochs, lr, ...: per mode
    p.add_argument("--mode", choices=MODES, default="mdds",
                   help="mdds: fine-tune a diffusion denoiser (§3d); ddpm: train a DDPM; dncnn: Salman's DnCNN "
                        "(--denoiser: mdds the diffusion to fine-tune, ddpm an optional start point)")
    g = p.add_argument_group("models")
    g.add_argument("--classifier", "--clf", dest="classifier", default=None,
                   help="frozen classifier (mdds; dncnn stability/classification; optional elsewhere: eval)")
    g.add_argument("--pretrained-denoiser", "--pretrained_denoiser", dest="pretrained_denoiser", default=None,
                   help="dncnn: start from this DnCNN (required for stab+mse)")

    g = p.add_argument_group("objective (mdds: the sigma flags are the training sigmas, M = --num_noises)")
    g.add_argument("--ac_weight", type=float, default=1.0, help="mdds: weight alpha of the anti-consistency term")
    g.add_argument("--diff_weight", type=float, default=1.0, help="mdds: weight lambda of the eps-MSE term")
    g.add_argument("--noise_sd", "--noise", dest="noise_sd", type=float, default=0.0,
                   help="dncnn: training noise level (required, > 0)")
    g.add_argument("--t_max", type=int, default=0,
                   help="ddpm: sample t below this timestep only (0: all T); see models/zoo/README.md")

    g = p.add_argument_group("optimization (defaults per mode: core.train.denoiser.DEFAULTS)")
    g.add_argument("--optimizer", choices=["Adam", "SGD", "AdamThenSGD", "AdamThenSGD_ref", "AdamW"], default=None,
                   help="default AdamW (diffusion), Adam (dncnn). AdamThenSGD: Adam, then SGD from --start_sgd_epoch "
                        "(ours: Salman's own check compares with 'AdamThenSGD ', trailing space, so the switch never "
                        "happens there); AdamThenSGD_ref: Adam throughout, what Salman's code runs for it")
    g.add_argument("--lr_step_size", type=int, default=30, help="dncnn: StepLR step (epochs)")
    g.add_argument("--gamma", type=float, default=0.1, help="dncnn: StepLR factor")
    g.add_argument("--start_sgd_epoch", type=int, default=50, help="dncnn AdamThenSGD: switch epoch")
    g.add_argument("--start_sgd_lr", type=float, default=1e-5, help="dncnn AdamThenSGD: SGD lr")
    g.add_argument("--ema_decay", "--ema_rate", dest="ema_decay", type=float, default=None,
                   help="EMA decay (default: mdds 0.999, ddpm 0.9999, dncnn off); 0 disables")

    g = p.add_argument_group("evaluation and outputs")
    g.add_argument("--eval_max", type=int, default=512, help="evaluate on at most this many test images (0: all)")
    g.add_argument("--raw_freq", type=int, default=0,
                   help="also keep raw model/ema state dicts every N epochs (0: only at the end)")
    g.add_argument("--eval_freq", type=int, default=1, help="evaluate every N epochs (and after the last)")
    g.add_argument("--print-freq", "--print_freq", dest="print_freq", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--gpu", default=None, help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> dict:
    """Train (or --eval: Salman's test_denoiser.py); returns the last epoch's log row."""
    return run(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
