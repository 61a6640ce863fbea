"""Salman et al.'s code/test_denoiser.py command line, run by msrs finetune_diffusion.py --mode dncnn --eval.

    python test_denoiser.py --dataset cifar10 --denoiser DEN/checkpoint.pth.tar --clf CLF --noise 0.25

Prints, as theirs does, the denoising MSE (mean over pixels, then images) and the top-1 accuracy (%) of
the classifier on D(x+δ) and on x+δ over the test set, and writes the first image of the last batch,
clean and denoised, to OUTDIR/clean.png and denoised.png. Any optional flag of finetune_diffusion.py may
be added (--device, --data_path, --seed: the noise). The mapping is in core/runs/compat.py and
docs/FROM_THE_PAPERS.md.
"""
import finetune_diffusion
from core.runs.parsers import run_cli

if __name__ == "__main__":
    run_cli(finetune_diffusion.main, finetune_diffusion.get_args_parser(), form="test_denoiser")
