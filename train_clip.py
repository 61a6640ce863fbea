"""Fine-tune a classifier: FT-CLIP / MDDS (clean), FT-CADIS (denoised, confidence-aware) or consistency.

    # MDDS scripts/ft_clip/cifar10.sh (flags of run_class_finetuning.py keep their names)
    torchrun --nproc_per_node=2 train_clip.py --model CLIP_B16 --data cifar10 --data_path DATA \\
        --finetune clip_vit_b16.pt --batch_size 64 --lr 6e-4 --warmup_epochs 10 --epochs 100 \\
        --layer_decay 0.6 --weight_decay 0.05 --model_ema --model_ema_decay 0.9998 --enable_deepspeed \\
        --output_dir OUTPUT/CLIP_ft/cifar10
    # FT-CADIS (train.py flags: --batch, --accum_iter, --blr, --lbd, --eps, --num-steps, --warm_start)
    python train_clip.py --objective cadis --denoiser DIFFUSION.pt --denoiser_config improved-cifar10-uncond \\
        --sigma 1.0 --finetune OFF_THE_SHELF.pt --arch timm:vit_base_patch16_224 ...
    # the zoo classifier (scripts/train_zoo.sh)
    python train_clip.py --model digits_cnn --data digits --epochs 30 --export models/zoo/digits_cnn.pt

Outputs under --output_dir: ``log.txt`` (one JSON line per epoch), ``checkpoint-last.pt`` (resumable:
model, EMA, optimizer, scaler, epoch, step, RNG states), and the best model by eval accuracy (the EMA
model's when --model_ema): ``checkpoint-best.pt`` (our self-describing classifier file) or, with
--deepspeed, ``checkpoint-best/mp_rank_00_model_states.pt`` in the MDDS/DeepSpeed layout (``module``,
``model_ema``, ``epoch``, ``args``; CLIP models in MDDS key layout), which certify.py reads as is.
``--export PATH`` writes the final model in our self-describing format.
"""
from __future__ import annotations

import argparse

from core.runs.parsers import run_cli, sigma_parser
from core.train.classifier import IGNORED_FLAGS, OBJECTIVES, run
from core.train.parsers import str2bool, training_family


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("train_clip.py", add_help=add_help, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=training_family() + [sigma_parser(cascade=False)])
    p.set_defaults(epochs=30, batch_size=64, min_lr=1e-6, warmup_steps=-1, weight_decay=0.05, num_workers=4,
                   objective="clean")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="registered classifier (CLIP_B16, digits_cnn, cifar_resnet110, ...), timm:NAME or tv:NAME "
                        "(default CLIP_B16; --arch is the same)")
    g.add_argument("--finetune", default="",
                   help="initial weights: an OpenAI CLIP state dict file (visual.* keys) or any classifier "
                        "checkpoint load_classifier reads, zoo:NAME or a checkpoint-best/ dir (EMA weights when "
                        "present; a different head is re-initialized)")
    g.add_argument("--input_size", type=int, default=None, help="model input size (default: the arch's own)")
    g.add_argument("--drop_path", type=float, default=0.0, help="stochastic depth rate (ViTs)")
    g.add_argument("--nb_classes", type=int, default=0, help="number of classes (0: the dataset's)")
    g.add_argument("--model_ema", action="store_true", help="keep an EMA of the weights (evaluated and saved)")
    g.add_argument("--model_ema_decay", type=float, default=0.9999)
    g.add_argument("--lora_r", type=int, default=0, help="LoRA rank on attention qkv/proj (0: full fine-tuning)")
    g.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: = rank)")
    g.add_argument("--ft_method", choices=["full-ft", "lora"], default=None,
                   help="FT-CADIS spelling: lora = --lora_r 4")

    g = p.add_argument_group("optimization (FT-CLIP)")
    g.add_argument("--blr", type=float, default=None, help="base lr: lr = blr * effective_batch / 256 (FT-CADIS); "
                                                            "default lr 5e-4")
    g.add_argument("--warmup_epochs", type=float, default=5, help="linear warm-up from 0 (epochs; --warmup_steps wins)")
    g.add_argument("--weight_decay_end", type=float, default=None, help="cosine weight-decay schedule end value")
    g.add_argument("--layer_decay", type=float, default=0.9, help="layer-wise lr decay (1: off)")
    g.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    g.add_argument("--opt_eps", type=float, default=1e-8)
    g.add_argument("--opt_betas", type=float, nargs=2, default=[0.9, 0.999])

    g = p.add_argument_group("augmentation (clean images; CIFAR / ImageNet via timm, digits: shifts only)")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="RandAugment policy ('none' to disable)")
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--color_jitter", type=float, default=0.4)
    g.add_argument("--train_interpolation", default="bicubic")
    g.add_argument("--crop_scale", type=float, default=0.08, help="RandomResizedCrop min scale (ImageNet)")
    g.add_argument("--mixup", type=float, default=0.0, help="must be 0 (accepted for MDDS command lines)")
    g.add_argument("--cutmix", type=float, default=0.0, help="must be 0 (accepted for MDDS command lines)")

    g = p.add_argument_group(f"objective ({', '.join(OBJECTIVES)}; --sigma is the training noise)")
    g.add_argument("--test_noise_sd", "--valid_noise_sd", dest="test_sigma", type=float, default=None,
                   help="noise level of the denoised/noisy evaluation (default: --sigma)")
    g.add_argument("--lbd", type=float, default=4.0, help="cadis: weight of the masked adversarial loss")
    g.add_argument("--eps", type=float, default=64.0, help="cadis: attack radius in FT-CADIS units (/256 in [-1,1])")
    g.add_argument("--num_steps", "--num-steps", dest="num_steps", type=int, default=4, help="cadis: attack steps")
    g.add_argument("--warm_start", action="store_true", help="cadis: keep the lowest-CE copy when none is correct")
    g.add_argument("--consistency_lbd", type=float, default=10.0, help="consistency: KL weight λ")
    g.add_argument("--eta", type=float, default=0.5, help="consistency: entropy weight η")

    g = p.add_argument_group("runtime")
    g.add_argument("--use_fp16", type=str2bool, default=None, help="FT-CADIS spelling of --amp fp16")
    g.add_argument("--pin_mem", action="store_true", default=False)
    g.add_argument("--no_pin_mem", action="store_false", dest="pin_mem", help="MDDS spelling (speed only)")
    g.add_argument("--load_from", default=None, help="FT-CADIS spelling of --resume PATH")
    g.add_argument("--auto_resume", action="store_true", default=None,
                   help="resume from OUTPUT_DIR/checkpoint-last.pt when it exists (default: the protocol's; "
                        "MDDS / FT-CLIP resume by default)")
    g.add_argument("--no_auto_resume", action="store_false", dest="auto_resume", help="start afresh (MDDS)")
    g.add_argument("--disable_eval_during_finetuning", action="store_true")
    g.add_argument("--deepspeed", "--enable_deepspeed", dest="deepspeed", action="store_true",
                   help="train with a DeepSpeed engine (config written from these flags)")
    g.add_argument("--deepspeed_config", default=None, help="use this DeepSpeed JSON config instead")

    g = p.add_argument_group("the papers' training protocol (--protocol mdds: FT-CLIP; cadis: FT-CADIS)")
    g.add_argument("--augment", choices=["timm", "crop_flip"], default=None,
                   help="timm (FT-CLIP: RandAugment, erasing, colour jitter) or crop_flip (FT-CADIS); default: the "
                        "protocol's (cadis with --objective cadis, else mdds)")
    g.add_argument("--checkpoints", choices=["best", "epochs"], default=None,
                   help="best (checkpoint-best by eval accuracy) or epochs (FT-CADIS: checkpoint-{epoch}.pt after "
                        "epoch 1, every 5th and the last)")
    g.add_argument("--log_dir", default=None, help="TensorBoard logs here (FT-CLIP's scalars per step and epoch)")
    g.add_argument("--eval_all", action="store_true",
                   help="FT-CLIP: evaluate (and the EMA) every epoch, and pick 'best' on the EMA's accuracy; "
                        "without it, every 5th epoch and the last 30 %% (the EMA after half), as run_class_finetuning")
    g.add_argument("--dist_eval", action="store_true",
                   help="shard the evaluation over the ranks (DistributedSampler: duplicates pad the last batch); "
                        "default: every rank evaluates the whole test set")
    g.add_argument("--model_ema_force_cpu", action="store_true", help="keep the EMA on the CPU (FT-CLIP)")
    g.add_argument("--save_ckpt", action="store_true", default=True, help=argparse.SUPPRESS)
    g.add_argument("--no_save_ckpt", action="store_false", dest="save_ckpt", help="write no checkpoint (FT-CLIP)")
    g.add_argument("--init_scale", type=float, default=None, help="CLIP_B16 head init scale (FT-CLIP default 0.001)")

    g = p.add_argument_group("accepted for FT-CLIP / MDDS / FT-CADIS command lines (ignored, with a warning)")
    for names, (kwargs, _) in IGNORED_FLAGS.items():
        g.add_argument(*names, default=None, help=argparse.SUPPRESS, **kwargs)
    return p


def main(args: argparse.Namespace) -> dict:
    """Train (or --eval); returns the last epoch's log row."""
    return run(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
