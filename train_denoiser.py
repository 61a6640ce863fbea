"""Salman et al.'s code/train_denoiser.py command line, run by msrs finetune_diffusion.py --mode dncnn.

    python train_denoiser.py --dataset cifar10 --arch cifar_dncnn --outdir denoiser_output_dir --noise 0.25
    python train_denoiser.py --dataset cifar10 --arch cifar_dncnn --outdir DIR --noise 0.25 \\
        --objective stability --classifier CLF [--pretrained-denoiser MSE_DENOISER]

Same flags and defaults as theirs (90 epochs, batch 256, Adam 1e-3, wd 1e-4, StepLR 30 / 0.1);
DIR/checkpoint.pth.tar in their layout. Any optional flag of finetune_diffusion.py may be added. The
mapping of every flag is in core/runs/compat.py and docs/FROM_THE_PAPERS.md.
"""
import finetune_diffusion
from core.runs.parsers import run_cli

if __name__ == "__main__":
    run_cli(finetune_diffusion.main, finetune_diffusion.get_args_parser(), form="train_denoiser")
