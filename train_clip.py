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
import json
import os
import socket
import time
from functools import partial

import torch
from torch import nn

from core import engine, objectives
from core.errors import MsrsError

OBJECTIVES = ("clean", "cadis", "consistency")
DATA_SET_ALIASES = {"CIFAR": "cifar10", "IMNET": "imagenet"}   # FT-CLIP --data_set values
DS_FILE = "mp_rank_00_model_states.pt"


def str2bool(v: str) -> bool:
    if str(v).lower() in ("1", "true", "yes", "on"):
        return True
    if str(v).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("train_clip.py", add_help=add_help, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", "--arch", dest="model", default="CLIP_B16",
                   help="registered classifier (CLIP_B16, digits_cnn, cifar_resnet110, ...), timm:NAME or tv:NAME")
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

    g = p.add_argument_group("optimization")
    g.add_argument("--batch_size", "--batch", dest="batch_size", type=int, default=64,
                   help="per-process batch (cadis: denoised copies per step, i.e. batch/num_noises images, "
                        "as FT-CADIS)")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--update_freq", "--accum_iter", dest="update_freq", type=int, default=1,
                   help="gradient accumulation: micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=None, help="absolute peak lr (default 5e-4, or from --blr)")
    g.add_argument("--blr", type=float, default=None, help="base lr: lr = blr * effective_batch / 256 (FT-CADIS)")
    g.add_argument("--min_lr", type=float, default=1e-6, help="floor of the cosine schedule")
    g.add_argument("--warmup_epochs", type=float, default=5, help="linear warm-up from 0 (epochs)")
    g.add_argument("--warmup_steps", type=int, default=-1, help="warm-up in optimizer steps (overrides epochs)")
    g.add_argument("--weight_decay", type=float, default=0.05)
    g.add_argument("--weight_decay_end", type=float, default=None, help="cosine weight-decay schedule end value")
    g.add_argument("--layer_decay", type=float, default=0.9, help="layer-wise lr decay (1: off)")
    g.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    g.add_argument("--opt_eps", type=float, default=1e-8)
    g.add_argument("--opt_betas", type=float, nargs=2, default=[0.9, 0.999])
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--clip_grad", type=float, default=None, help="clip the gradient norm (default: off)")
    g.add_argument("--steps_per_epoch", type=int, default=0, help="cap optimizer steps per epoch (0: full epochs)")

    g = p.add_argument_group("augmentation (clean images; CIFAR / ImageNet via timm, digits: shifts only)")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="RandAugment policy ('none' to disable)")
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--color_jitter", type=float, default=0.4)
    g.add_argument("--train_interpolation", default="bicubic")
    g.add_argument("--crop_scale", type=float, default=0.08, help="RandomResizedCrop min scale (ImageNet)")
    g.add_argument("--digits_shift", type=int, default=1, help="digits: random shift of up to this many pixels")
    g.add_argument("--mixup", type=float, default=0.0, help="must be 0 (accepted for MDDS command lines)")
    g.add_argument("--cutmix", type=float, default=0.0, help="must be 0 (accepted for MDDS command lines)")

    g = p.add_argument_group("objective")
    g.add_argument("--objective", choices=OBJECTIVES, default="clean",
                   help="clean: FT-CLIP CE; cadis: FT-CADIS on denoised copies; consistency: MDDS consistency.py")
    g.add_argument("--denoiser", default=None, help="cadis: diffusion checkpoint or zoo:NAME")
    g.add_argument("--denoiser_config", default=None, help="named diffusion config for raw OpenAI checkpoints")
    g.add_argument("--sigma", "--train_noise_sd", "--gaussian_std", dest="sigma", type=float, default=None,
                   help="training noise level (pixels in [0,1])")
    g.add_argument("--test_noise_sd", "--valid_noise_sd", dest="test_sigma", type=float, default=None,
                   help="noise level of the denoised/noisy evaluation (default: --sigma)")
    g.add_argument("--num_noises", type=int, default=None, help="copies per image (cadis 4, consistency 2)")
    g.add_argument("--lbd", type=float, default=4.0, help="cadis: weight of the masked adversarial loss")
    g.add_argument("--eps", type=float, default=64.0, help="cadis: attack radius in FT-CADIS units (/256 in [-1,1])")
    g.add_argument("--num_steps", "--num-steps", dest="num_steps", type=int, default=4, help="cadis: attack steps")
    g.add_argument("--warm_start", action="store_true", help="cadis: keep the lowest-CE copy when none is correct")
    g.add_argument("--consistency_lbd", type=float, default=10.0, help="consistency: KL weight λ")
    g.add_argument("--eta", type=float, default=0.5, help="consistency: entropy weight η")

    g = p.add_argument_group("data and runtime")
    g.add_argument("--data_set", "--data", "--dataset", dest="dataset", default="cifar10",
                   help="digits, cifar10, imagenet, ... (FT-CLIP's CIFAR / IMNET also accepted)")
    g.add_argument("--data_path", default="datasets")
    g.add_argument("--output_dir", default="", help="where logs and checkpoints go (empty: nothing is saved)")
    g.add_argument("--export", default=None, help="write the final model (EMA inside) in our classifier format here")
    g.add_argument("--device", default="auto")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="autocast (auto: bf16 on CUDA; always off on CPU)")
    g.add_argument("--use_fp16", type=str2bool, default=None, help="FT-CADIS spelling of --amp fp16")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num_workers", type=int, default=4)
    g.add_argument("--pin_mem", action="store_true", default=False)
    g.add_argument("--resume", nargs="?", const="auto", default="",
                   help="resume from a checkpoint-last.pt (no value: OUTPUT_DIR/checkpoint-last.pt)")
    g.add_argument("--load_from", default=None, help="FT-CADIS spelling of --resume PATH")
    g.add_argument("--auto_resume", action="store_true", default=False,
                   help="resume from OUTPUT_DIR/checkpoint-last.pt when it exists")
    g.add_argument("--eval", action="store_true", help="only evaluate (--finetune / --resume weights)")
    g.add_argument("--disable_eval_during_finetuning", action="store_true")
    g.add_argument("--save_ckpt_freq", type=int, default=1, help="write checkpoint-last.pt every N epochs")
    g.add_argument("--deepspeed", "--enable_deepspeed", dest="deepspeed", action="store_true",
                   help="train with a DeepSpeed engine (config written from these flags)")
    g.add_argument("--deepspeed_config", default=None, help="use this DeepSpeed JSON config instead")
    g.add_argument("--trust_checkpoint", action="store_true", help="allow full unpickling of --finetune/--denoiser")

    g = p.add_argument_group("accepted for FT-CLIP / MDDS / FT-CADIS command lines (no effect)")
    for flag in ("--log_dir", "--model_prefix", "--eval_data_path", "--dist_url"):
        g.add_argument(flag, default=None, help=argparse.SUPPRESS)
    for flag in ("--dist_eval", "--eval_all", "--save_ckpt", "--abs_pos_emb", "--disable_rel_pos_bias",
                 "--model_ema_force_cpu", "--no_pin_mem", "--no_auto_resume", "--no_save_ckpt"):
        g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag, typ in (("--layer_scale_init_value", float), ("--init_scale", float), ("--world_size", int),
                      ("--id", int)):
        g.add_argument(flag, type=typ, default=None, help=argparse.SUPPRESS)
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


# ---- set-up --------------------------------------------------------------------------------------

def check_args(args: argparse.Namespace) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise MsrsError(msg)
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


def build_datasets(args: argparse.Namespace):
    """(train, test, info): train with augmentation (clean images), test as certify sees it."""
    from datasets import dataset_info, get_dataset
    info = dataset_info(args.dataset)
    test = get_dataset(args.dataset, "test", args.data_path)
    if args.eval:
        return None, test, info
    if args.dataset == "digits":
        train = Augmented(get_dataset("digits", "train"), RandomShift(args.digits_shift))
    elif args.dataset in ("cifar10", "imagenet"):
        train = get_dataset(args.dataset, "train", args.data_path, transform=train_transform(args, info.image_size))
    else:
        raise MsrsError(f"training on {args.dataset!r} is not supported (use digits, cifar10 or imagenet)")
    return train, test, info


class RandomShift:
    """Translate a [C,H,W] image by up to `shift` pixels (zero fill): the digits augmentation."""

    def __init__(self, shift: int):
        self.shift = int(shift)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift <= 0:
            return x
        s = self.shift
        padded = nn.functional.pad(x, (s, s, s, s))
        i, j = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, i:i + x.shape[1], j:j + x.shape[2]]


class Augmented(torch.utils.data.Dataset):
    """A (x, y) dataset with a tensor transform applied to x."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.transform(x), y


class Unnormalize:
    """Back from timm's normalized tensors to pixels: x·std + mean (random-erasing noise stays as drawn)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def train_transform(args: argparse.Namespace, image_size: int):
    """MDDS ``build_transform(is_train=True)``: timm RandAugment + random erasing, with RandomCrop(pad 4) for
    32-pixel images; built at MDDS's mean/std 0.5 (so erasing noise has their scale) and mapped back to pixels."""
    from timm.data import create_transform
    from torchvision import transforms as T
    half = (0.5, 0.5, 0.5)
    tf = create_transform(input_size=image_size, is_training=True, scale=(args.crop_scale, 1.0),
                          color_jitter=args.color_jitter, auto_augment=None if args.aa in ("", "none") else args.aa,
                          interpolation=args.train_interpolation, re_prob=args.reprob, re_mode=args.remode,
                          re_count=args.recount, mean=half, std=half)
    if image_size <= 32:
        tf.transforms[0] = T.RandomCrop(image_size, padding=4)
    tf.transforms.append(Unnormalize(half, half))
    return tf


def build_model(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, dict]:
    """The classifier and the constructor kwargs stored with it; --finetune weights, then LoRA."""
    from models.classifiers import create_model
    kw: dict = {"num_classes": num_classes}
    if args.input_size is not None:
        kw["img_size"] = args.input_size
        if args.model.startswith("timm:"):           # the Preprocess resize follows the network's new size
            kw["input_size"] = [args.input_size, args.input_size]
    train_kw = {"drop_path_rate": args.drop_path} if args.drop_path > 0 else {}
    try:
        model = create_model(args.model, **kw, **train_kw)
    except TypeError as e:
        raise MsrsError(f"--model {args.model} does not take these options ({e}); "
                        "drop --input_size/--drop_path") from None
    if args.finetune:
        init_weights(model, args)
    if args.lora_r > 0:
        n = engine.apply_lora(model, args.lora_r, args.lora_alpha)
        if engine.is_main():
            print(f"LoRA r={args.lora_r}: {n} layers; "
                  f"{sum(p.numel() for p in model.parameters() if p.requires_grad)} trainable parameters")
    return model, kw


def init_weights(model: nn.Module, args: argparse.Namespace) -> None:
    """--finetune: OpenAI CLIP (visual.*) → init_from_openai_clip; else any classifier file (same arch)."""
    from models.checkpoint import load_checkpoint, load_state_dict_strict, strip_prefixes
    from models.classifiers import init_from_openai_clip, load_classifier, resolve_classifier_path
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
    from core.runs.loaders import load_denoiser
    den = load_denoiser(args.denoiser, config=args.denoiser_config, sigma=args.sigma, trust=args.trust_checkpoint)
    den = den.to(device).eval().requires_grad_(False)
    test_den = den
    if args.test_sigma != args.sigma:
        test_den = load_denoiser(args.denoiser, config=args.denoiser_config, sigma=args.test_sigma,
                                 trust=args.trust_checkpoint).to(device).eval().requires_grad_(False)

    def cadis(model, x, y):
        return objectives.ft_cadis(model, den, x, y, args.sigma, args.num_noises, args.lbd, args.eps,
                                   args.num_steps, args.warm_start, attack_model=engine.unwrap(model))
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


def ds_config(args: argparse.Namespace, micro_batch: int, lr: float, world: int, device: torch.device) -> dict:
    """The DeepSpeed config FT-CLIP writes (utils.create_ds_config), from our flags; fp16/bf16 only on CUDA."""
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
        "fp16": {"enabled": cuda and args.amp == "fp16", "loss_scale": 0, "initial_scale_power": 7,
                 "loss_scale_window": 128, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": cuda and args.amp in ("auto", "bf16")},
        "gradient_clipping": float(args.clip_grad or 0.0),
        "zero_optimization": {"stage": 0},
        "wall_clock_breakdown": False,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- saving --------------------------------------------------------------------------------------

def export_weights(model: nn.Module, mdds_layout: bool) -> dict[str, torch.Tensor]:
    """Plain (LoRA-merged) weights; CLIP ViTs in the MDDS / FT-CLIP key layout when `mdds_layout`."""
    from models.classifiers import to_mdds_clip_state_dict
    sd = engine.merged_state_dict(model)
    return to_mdds_clip_state_dict(sd) if mdds_layout else sd


def is_clip(model: nn.Module) -> bool:
    return type(getattr(engine.unwrap(model), "net", None)).__name__ == "ClipViT"


def save_deepspeed_layout(out_dir: str, model: nn.Module, ema, epoch, args: argparse.Namespace, step: int) -> str:
    """OUTPUT/<tag>/mp_rank_00_model_states.pt as FT-CLIP's DeepSpeed save_checkpoint lays it out (module,
    model_ema, epoch, args); what MDDS's certify.py and models.classifiers.load_classifier read."""
    from models.checkpoint import save_checkpoint
    clip = is_clip(model)
    ns = argparse.Namespace(**engine.plain_dict(args))
    obj = {"module": export_weights(model, clip), "model_ema": export_weights(ema.module, clip) if ema else None,
           "epoch": epoch, "args": ns, "global_steps": step, "dp_world_size": engine.world()[1], "mp_world_size": 1,
           "optimizer": None, "lr_scheduler": None, "buffer_names": [], "param_shapes": None}
    if ema is None:
        del obj["model_ema"]
    path = os.path.join(out_dir, DS_FILE)
    save_checkpoint(obj, path)
    return path


def save_ours(path: str, model: nn.Module, ema, arch: str, kw: dict, extra: dict) -> None:
    from models.classifiers import save_classifier
    plain = engine.unwrap(model)
    if any(isinstance(m, engine.LoRALinear) for m in plain.modules()):
        from models.classifiers import create_model
        plain = create_model(arch, **kw)
        plain.load_state_dict(engine.merged_state_dict(model))
    ex = dict(extra)
    if ema is not None:
        ex["state_dict_ema"] = engine.merged_state_dict(ema.module)
    save_classifier(plain, arch, kw, path, extra=ex)


# ---- main ----------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> dict:
    """Train (or --eval); returns the last epoch's log row."""
    from core.runs.setup import resolve_device
    check_args(args)
    if args.deepspeed and "WORLD_SIZE" not in os.environ:   # a single process started without a launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    device = resolve_device(args.device)
    created_pg = False
    if args.deepspeed:
        try:
            import deepspeed
        except ImportError:
            raise MsrsError("--deepspeed needs the deepspeed package (pip install deepspeed)") from None
        # DeepSpeed caches its process groups module-wide, so the default group it starts here stays up
        # until the process exits (a second run in the same process reuses it)
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    else:
        created_pg = engine.init_distributed(device)
    rank, world = engine.world()
    try:
        return _run(args, device, rank, world)
    finally:
        if created_pg and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict:
    engine.seed_everything(args.seed)
    if args.output_dir and rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
    train_ds, test_ds, info = build_datasets(args)
    num_classes = args.nb_classes or info.num_classes
    model, kw = build_model(args, num_classes)
    model.to(device)
    objective, eval_input = build_objective(args, device)
    amp_dtype, scaler = engine.amp_setup(args.amp, device)
    if args.deepspeed:
        amp_dtype, scaler = (amp_dtype if device.type == "cuda" else None), None   # loss scaling is DeepSpeed's

    micro = args.batch_size // args.num_noises if args.objective == "cadis" else args.batch_size
    eff_batch = micro * args.update_freq * world
    lr = args.lr if args.lr is not None else (args.blr * eff_batch / 256 if args.blr is not None else 5e-4)
    test_loader = engine.make_loader(test_ds, max(micro, 1) * 2 if args.objective == "clean" else micro,
                                     train=False, seed=args.seed, num_workers=min(args.num_workers, 2))
    ema = engine.ModelEma(model, args.model_ema_decay) if args.model_ema else None
    groups = engine.param_groups_lrd(model, args.weight_decay, args.layer_decay)

    if args.eval:
        return _evaluate_only(args, model, ema, test_loader, eval_input, device, amp_dtype)

    train_loader = engine.make_loader(train_ds, micro, train=True, seed=args.seed, num_workers=args.num_workers,
                                      pin_memory=args.pin_mem)
    n_steps = engine.steps_per_epoch(len(train_loader), args.update_freq, args.steps_per_epoch)
    lr_schedule = engine.cosine_scheduler(lr, args.min_lr, args.epochs, n_steps, args.warmup_epochs,
                                          warmup_steps=args.warmup_steps)
    wd_schedule = None if args.weight_decay_end is None else engine.cosine_scheduler(
        args.weight_decay, args.weight_decay_end, args.epochs, n_steps)

    if args.deepspeed:
        import deepspeed
        cfg = ds_config(args, micro, lr, world, device)
        if args.output_dir and rank == 0:
            with open(os.path.join(args.output_dir, "deepspeed_config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        model, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=cfg)
    else:
        if args.opt == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(args.opt_betas), eps=args.opt_eps)
        else:
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=args.momentum)
        if world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

    state = engine.TrainState()
    resume = args.resume
    last = os.path.join(args.output_dir, "checkpoint-last.pt") if args.output_dir else None
    if resume == "auto" or (args.auto_resume and not resume):
        resume = last if last and os.path.isfile(last) else ""
    if resume:
        state, _ = engine.load_state(resume, model, optimizer, ema, scaler)
        if rank == 0:
            print(f"resumed from {resume}: epoch {state.epoch}, step {state.step}")

    log = engine.JsonLog(os.path.join(args.output_dir, "log.txt") if args.output_dir else None)
    n_params = sum(p.numel() for p in engine.unwrap(model).parameters() if p.requires_grad)
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
            max_steps=args.steps_per_epoch, seed=args.seed, desc=args.objective)
        state.epoch = epoch + 1
        row = {"epoch": epoch, "step": state.step, **{f"train_{k}": v for k, v in train_stats.items()},
               "n_parameters": n_params}
        if not args.disable_eval_during_finetuning:
            stats = _evaluate(model, ema, test_loader, eval_input, device, amp_dtype)
            row.update(stats)
            metric = stats["select_acc1"]
        else:
            metric = float(epoch)
        improved = metric > state.best
        if improved:
            state.best = metric
        row["epoch_time"] = time.time() - t0
        if rank == 0:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        log.write(**row)
        if args.output_dir:
            if improved:
                if args.deepspeed:
                    save_deepspeed_layout(os.path.join(args.output_dir, "checkpoint-best"), model, ema, epoch, args,
                                          state.step) if rank == 0 else None
                elif rank == 0:
                    save_ours(os.path.join(args.output_dir, "checkpoint-best.pt"), model, ema, args.model, kw,
                              {"epoch": epoch, "acc1": metric})
            if state.epoch % args.save_ckpt_freq == 0 or state.epoch == args.epochs:
                engine.save_state(last, model, optimizer, state, ema, scaler, args)
    if args.export and rank == 0:
        save_ours(args.export, model, ema, args.model, kw,
                  {"epoch": state.epoch, "train_args": engine.plain_dict(args)})
        print(f"wrote {args.export}")
    return row


def _evaluate(model, ema, loader, eval_input, device, amp_dtype) -> dict:
    """Clean accuracy (and noisy / denoised accuracy for cadis / consistency) of the model and its EMA.

    select_acc1 (what "best" means): the EMA's if there is one, the noisy/denoised accuracy if measured."""
    out = {}
    for name, m in (("test", engine.unwrap(model)), ("ema", ema.module if ema is not None else None)):
        if m is None:
            continue
        s = engine.evaluate(m, loader, device, amp_dtype, desc=f"eval {name}")
        out[f"{name}_acc1"], out[f"{name}_loss"] = s["acc1"], s["loss"]
        if eval_input is not None:
            eval_input.reset()
            s = engine.evaluate(m, loader, device, amp_dtype, input_fn=eval_input, desc=f"eval {name} noisy")
            out[f"{name}_noisy_acc1"] = s["acc1"]
        out["select_acc1"] = out[f"{name}_noisy_acc1" if eval_input is not None else f"{name}_acc1"]
    return out


def _evaluate_only(args, model, ema, loader, eval_input, device, amp_dtype) -> dict:
    if args.resume and args.resume != "auto":
        engine.load_state(args.resume, model, None, ema, None, restore_rng=False)
    stats = _evaluate(model, ema, loader, eval_input, device, amp_dtype)
    if engine.is_main():
        print(f"Accuracy of the network on the {len(loader.dataset)} test images: " +
              ", ".join(f"{k} {v:.2f}" for k, v in stats.items()))
    return stats


if __name__ == "__main__":
    from core.runs.parsers import run_cli
    run_cli(main, get_args_parser())
