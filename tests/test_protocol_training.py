"""Training side of the papers' protocols (issue 12 items 7, 8, 13, 14): train_clip.py under --protocol mdds
(FT-CLIP / run_class_finetuning.py) and cadis (FT-CADIS train.py), the FT-CLIP flags that change what the
reference does, the warning for those that change nothing, and Salman's AdamThenSGD by name."""
import argparse
import os
import warnings

import pytest
import torch

import train_clip
from core.errors import MsrsError
from core.runs.protocols import TRAIN_RECIPES
from core.train.classifier import eval_schedule

BASE = ["--model", "digits_cnn", "--data", "digits", "--steps_per_epoch", "2", "--batch_size", "16", "--lr", "1e-3",
        "--warmup_epochs", "0", "--num_workers", "0", "--device", "cpu"]


def args_of(tmp_path, *extra):
    return train_clip.get_args_parser().parse_args(BASE + ["--output_dir", str(tmp_path)] + list(extra))


def ftclip_flags(epoch, epochs, eval_all, ema):
    """run_class_finetuning.py:538-551: (evaluate, EMA evaluated and deciding 'best')."""
    test_flag = epoch % 5 == 0 or epoch / epochs > 0.7 or eval_all
    return test_flag, bool(test_flag and ema and (epoch / epochs > 0.5 or eval_all))


@pytest.mark.parametrize("eval_all", [False, True])
def test_ftclip_evaluation_schedule(eval_all):
    ns = argparse.Namespace(disable_eval_during_finetuning=False, evaluation="ftclip", eval_all=eval_all, epochs=50)
    for epoch in range(50):
        assert eval_schedule(ns, epoch) == ftclip_flags(epoch, 50, eval_all, True), epoch
    ns = argparse.Namespace(disable_eval_during_finetuning=False, evaluation="every", eval_all=False, epochs=30)
    assert all(eval_schedule(ns, e) == (True, True) for e in range(30))       # FT-CADIS tests every epoch


def test_cadis_checkpoints_and_tensorboard(tmp_path):
    """--checkpoints epochs (FT-CADIS train.py:422-436: after epoch 1, every 5th and the last; no 'best');
    --log_dir writes FT-CLIP's TensorBoard scalars (per step loss/opt, per evaluated epoch perf/)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, logs = tmp_path / "run", tmp_path / "tb"
    train_clip.main(args_of(out, "--epochs", "6", "--checkpoints", "epochs", "--log_dir", str(logs)))
    names = sorted(p for p in os.listdir(out) if p.startswith("checkpoint"))
    assert names == ["checkpoint-1.pt", "checkpoint-5.pt", "checkpoint-6.pt", "checkpoint-last.pt"]
    from models.classifiers import load_classifier
    load_classifier(str(out / "checkpoint-6.pt"))
    acc = EventAccumulator(str(logs))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/loss", "loss/class_acc", "opt/lr", "opt/min_lr", "opt/weight_decay", "perf/test_acc1",
            "perf/test_acc5", "perf/test_loss"} <= tags
    assert [e.step for e in acc.Scalars("loss/loss")] == list(range(1, 13))          # 6 epochs x 2 steps
    # mdds protocol without --eval_all: epochs 0 and 5 (epoch % 5), and 5/6 > 0.7
    assert [e.step for e in acc.Scalars("perf/test_acc1")] == [0, 5]


def test_no_save_ckpt_and_auto_resume(tmp_path):
    out = tmp_path / "none"
    train_clip.main(args_of(out, "--epochs", "1", "--no_save_ckpt"))
    assert not [p for p in os.listdir(out) if p.startswith("checkpoint")] and (out / "log.txt").exists()
    # FT-CLIP resumes from the output folder by default (run_class_finetuning.py auto_resume=True)
    res = tmp_path / "res"
    train_clip.main(args_of(res, "--epochs", "1"))
    a = args_of(res, "--epochs", "2")
    row = train_clip.main(a)
    assert a.auto_resume is True and row["epoch"] == 1 and len((res / "log.txt").read_text().splitlines()) == 2
    b = args_of(tmp_path / "fresh", "--epochs", "1", "--no_auto_resume")
    train_clip.main(b)
    assert b.auto_resume is False
    c = args_of(tmp_path / "cadis", "--epochs", "1", "--protocol", "cadis")
    train_clip.main(c)
    assert c.auto_resume is False and c.augment == "crop_flip" and c.checkpoints == "epochs"


def test_ignored_flags_are_named_once(tmp_path):
    a = args_of(tmp_path, "--epochs", "1", "--abs_pos_emb", "--layer_scale_init_value", "0", "--id", "3",
                "--model_ema_force_cpu", "--model_ema", "--eval_all", "--dist_eval")
    with pytest.warns(UserWarning) as record:
        train_clip.main(a)
    msgs = [str(w.message) for w in record if "ignores" in str(w.message)]
    assert len(msgs) == 1 and all(f in msgs[0] for f in ("--abs_pos_emb", "--layer_scale_init_value", "--id"))
    assert "--eval_all" not in msgs[0] and "--model_ema_force_cpu" not in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train_clip.main(args_of(tmp_path / "quiet", "--epochs", "1"))
    with pytest.raises(MsrsError, match="mdds or cadis"):
        train_clip.main(args_of(tmp_path / "x", "--epochs", "1", "--protocol", "cohen"))


def test_crop_flip_is_ftcadis():
    """FT-CADIS datasets.py:37-74: CIFAR RandomCrop(32, padding=4) + flip, ImageNet RandomResizedCrop(224) +
    flip, ToTensor; nothing else."""
    from torchvision import transforms as T

    from core.train.augment import crop_flip_transform
    c = crop_flip_transform("cifar10").transforms
    assert [type(t) for t in c[:2]] == [T.RandomCrop, T.RandomHorizontalFlip] and c[0].padding == 4 and len(c) == 3
    i = crop_flip_transform("imagenet").transforms
    assert type(i[0]) is T.RandomResizedCrop and i[0].size == (224, 224) and i[0].scale == (0.08, 1.0)
    assert i[0].interpolation == T.InterpolationMode.BILINEAR and type(i[1]) is T.RandomHorizontalFlip


def test_precision_defaults():
    """Item 8: FT-CLIP's DeepSpeed config is fp16 (utils.py:596-601), FT-CADIS --use_fp16 true; bf16 is opt-in."""
    from core.runs.setup import amp_dtype
    from core.train.deepspeed_glue import ds_config
    assert {r.amp for r in TRAIN_RECIPES.values()} == {"fp16"}
    ns = argparse.Namespace(deepspeed_config=None, update_freq=1, weight_decay=0.05, opt_betas=[0.9, 0.999],
                            opt_eps=1e-8, clip_grad=None)
    cfg = ds_config(ns, 64, 6e-4, 2, torch.device("cuda"), torch.float16)
    assert cfg["fp16"]["enabled"] and not cfg["bf16"]["enabled"]
    assert (cfg["fp16"]["initial_scale_power"], cfg["fp16"]["loss_scale_window"], cfg["fp16"]["loss_scale"]) == (7, 128, 0)
    assert amp_dtype("auto", torch.device("cuda")) is None and amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16


def test_adam_then_sgd_ref_is_adam():
    """Item 13: Salman's 'AdamThenSGD' never switches (train_denoiser.py:130,188 compare with 'AdamThenSGD ');
    AdamThenSGD_ref names what it runs: Adam throughout."""
    import finetune_diffusion
    from core.train.optim import make_optimizer
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer("AdamThenSGD_ref", p, 1e-3)) is torch.optim.Adam
    assert finetune_diffusion.get_args_parser().parse_args(["--optimizer", "AdamThenSGD_ref"]).optimizer == \
        "AdamThenSGD_ref"


def test_finetune_diffusion_protocol_is_the_modes_paper():
    """finetune_diffusion.py: --mode dncnn is Salman's training, the diffusion modes MDDS's; --protocol defaults
    to that paper and another row (which has no denoiser training) is a one-line error, never ignored."""
    import finetune_diffusion
    from core.train.denoiser import check_args
    parser = finetune_diffusion.get_args_parser()
    a = parser.parse_args(["--mode", "dncnn", "--noise_sd", "0.25"])
    check_args(a)
    assert a.protocol == "salman"
    a = parser.parse_args(["--mode", "ddpm", "--denoiser_config", "digits-ddpm", "--protocol", "mdds"])
    check_args(a)
    assert a.protocol == "mdds"
    with pytest.raises(MsrsError, match="--mode dncnn trains as --protocol salman"):
        check_args(parser.parse_args(["--mode", "dncnn", "--noise_sd", "0.25", "--protocol", "dds"]))
