#!/usr/bin/env bash
# MDDS's scripts/ft_clip/cifar10.sh (Jeong & Shin 2023 README §1): fine-tune CLIP ViT-B/16 on CIFAR-10,
#   DATA=[PATH_TO_DATA] bash scripts/ft_clip/cifar10.sh
# with the FT-CLIP recipe of scripts/ftclip_cifar10.sh (100 epochs, lr 6e-4, layer decay 0.6, EMA 0.9998,
# DeepSpeed, effective batch 2 x 64), reading the datasets folder from DATA ($DATA/cifar-10-batches-py)
# and writing where MDDS does, OUTPUT/CLIP_ft/CLIP_openai/cifar10/FT100_6E4_D06_NC/base/<date>/, so that
# <date>/checkpoint-best/mp_rank_00_model_states.pt is the CLASSIFIER of the MDDS README's certify and
# predict lines ([DATE] = <date>). Then the clean test accuracy of that checkpoint.
#
# Usage: DATA=PATH bash scripts/ft_clip/cifar10.sh [--dry-run]
# Env: DATA (default $DATA_PATH, else datasets), RUN_DIR (continue that run instead of a new dated one),
#      GPUS (1, accumulating 2 steps: MDDS's 2 x 64; GPUS=2 launches as MDDS does), CLIP_OPENAI (the
#      OpenAI CLIP ViT-B/16 weights to start from), OUT_DIR (OUTPUT); see scripts/lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
mdds_ft_clip cifar10 FT100_6E4_D06_NC "$@"
