"""The flags both training scripts take (train_clip.py, finetune_diffusion.py), each defined once; the
flags shared with the certify family (--data_path, --arch, --denoiser, --denoiser_config, --ddpm_path,
--trust_checkpoint, --device, --amp, --seed) come from ``core.runs.parsers``. Each script sets its own
defaults (``set_defaults``) where its reference recipe differs.

``--batch`` and ``--resume`` keep the training references' meaning here (see ``core.runs.parsers``):
``--batch`` is FT-CADIS's spelling of ``--batch_size``; ``--resume [PATH]`` continues a checkpoint.
"""
from __future__ import annotations

import argparse
import os

from core.runs.parsers import data_parser, model_parser, runtime_parser, str2bool  # noqa: F401 (re-exported)


def training_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=None, help="number of epochs")
    g.add_argument("--batch_size", "--batch", dest="batch_size", type=int, default=None,
                   help="per-process batch (train_clip --objective cadis: denoised copies per step, i.e. "
                        "batch/num_noises images, as FT-CADIS)")
    g.add_argument("--update_freq", "--accum_iter", dest="update_freq", type=int, default=1,
                   help="gradient accumulation: micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate")
    g.add_argument("--min_lr", type=float, default=None, help="floor of the cosine schedule")
    g.add_argument("--warmup_steps", type=int, default=None, help="linear warm-up in optimizer steps")
    g.add_argument("--weight_decay", type=float, default=None, help="weight decay")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--clip_grad", type=float, default=None, help="clip the gradient norm (default: off)")
    g.add_argument("--steps_per_epoch", type=int, default=0, help="cap optimizer steps per epoch (0: full epochs)")
    g = p.add_argument_group("objective")
    g.add_argument("--objective", default=None,
                   help="train_clip.py: clean (FT-CLIP CE), cadis (FT-CADIS on denoised copies), consistency (MDDS "
                        "consistency.py); finetune_diffusion.py --mode dncnn: Salman's mse, stability, "
                        "classification, stab+mse")
    g.add_argument("--num_noises", type=int, default=None,
                   help="noise copies per image (cadis 4, consistency 2; finetune --mode mdds: M = 4)")
    g = p.add_argument_group("data and output")
    g.add_argument("--data_set", "--data", "--dataset", dest="dataset", default="cifar10",
                   help="digits, cifar10, imagenet, ... (FT-CLIP's CIFAR / IMNET also accepted by train_clip.py)")
    g.add_argument("--digits_shift", type=int, default=1, help="digits: random shift of up to this many pixels")
    g.add_argument("--num_workers", "--workers", dest="num_workers", type=int, default=None,
                   help="data loader workers")
    g.add_argument("--output_dir", "--outdir", dest="output_dir", default="",
                   help="where logs and checkpoints go (empty: nothing is saved)")
    g.add_argument("--export", default=None, help="write the final model (with its EMA) in our self-describing format")
    g.add_argument("--save_ckpt_freq", type=int, default=1, help="write checkpoint-last.pt every N epochs")
    g.add_argument("--eval", action="store_true",
                   help="only evaluate: train_clip.py the --finetune / --resume weights; finetune_diffusion.py the "
                        "denoiser (--pretrained-denoiser, --denoiser), alone and in front of --classifier")
    g.add_argument("--resume", nargs="?", const="auto", default="",
                   help="resume from a checkpoint-last.pt (no value: OUTPUT_DIR/checkpoint-last.pt if it exists)")
    return p


def training_family() -> list[argparse.ArgumentParser]:
    """The parents of train_clip.py and finetune_diffusion.py."""
    return [training_parser(), data_parser(examples=False), model_parser(smoothing=False), runtime_parser()]


def resume_path(args: argparse.Namespace) -> str:
    """The checkpoint to continue ('' for none): --resume PATH; --resume (or train_clip's --auto_resume)
    alone is OUTPUT_DIR/checkpoint-last.pt when it exists (a fresh start otherwise, as certify's --resume)."""
    if args.resume == "auto" or (getattr(args, "auto_resume", False) and not args.resume):
        last = os.path.join(args.output_dir, "checkpoint-last.pt") if args.output_dir else None
        return last if last and os.path.isfile(last) else ""
    return args.resume or ""
