#!/usr/bin/env bash
# MDDS's scripts/ft_clip/imagenet.sh (Jeong & Shin 2023 README §1): fine-tune CLIP ViT-B/16 on ImageNet-1k,
#   DATA=[PATH_TO_DATA] bash scripts/ft_clip/imagenet.sh
# with the FT-CLIP recipe of scripts/ftclip_imagenet.sh (50 epochs, lr 6e-4, layer decay 0.6, EMA 0.9998,
# DeepSpeed, effective batch 8 x 256), reading the datasets folder from DATA ($DATA/imagenet/{train,val}
# or, as MDDS, $DATA/ImageNet/{train,val}) and writing where MDDS does,
# OUTPUT/CLIP_ft/CLIP_openai/imagenet/FT50_6E4_P16/base/<date>/ (checkpoint-best/mp_rank_00_model_states.pt).
# Then the clean val accuracy of that checkpoint.
#
# Usage: DATA=PATH bash scripts/ft_clip/imagenet.sh [--dry-run]
# Env: DATA (default $DATA_PATH, else datasets), RUN_DIR (continue that run instead of a new dated one),
#      GPUS (1, accumulating 8 steps: MDDS's 8 x 256; GPUS=8 launches as MDDS does), CLIP_OPENAI,
#      OUT_DIR (OUTPUT); see scripts/lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
mdds_ft_clip imagenet FT50_6E4_P16 "$@"
