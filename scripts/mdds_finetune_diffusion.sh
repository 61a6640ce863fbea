#!/usr/bin/env bash
# MDDS (Jeong & Shin 2023), diffusion fine-tuning ("consistent when recoverable, diverse otherwise";
# ALGORITHMS §3d): fine-tune the improved-diffusion CIFAR-10 UNet against the frozen FT-CLIP classifier
# at sigma in {0.25, 0.5, 1.0} (M = 4 noises, anti-consistency weight 1, eps-MSE weight 1, AdamW 1e-5,
# EMA 0.999, 10 epochs, batch 16), then certify the multi-scale cascade with the fine-tuned denoiser
# (N = 10,000, as scripts/mdds_cifar10_certify.sh, whose off-the-shelf cascade it is compared with).
#
# Usage: bash scripts/mdds_finetune_diffusion.sh [--dry-run]
# Env: CLIP_CIFAR10, DDPM_CIFAR10, DATA_PATH, CKPT_DIR, OUT_DIR, GPUS, N (10000), SKIP (1), BATCH (5000),
#      LAUNCH=slurm|submitit + SHARDS (the certify run); see scripts/lib.sh.
# Output: $CKPT_DIR/mdds_ddpm_cifar10/denoiser.pt (the fine-tuned diffusion, EMA weights),
#         $OUT_DIR/certify/cifar10/ft_clip/mdds_ft/sigma_0.25_0.50_1.00_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_CIFAR10 DDPM_CIFAR10

noise_defaults 10000 1 5000
sigmas=(0.25 0.50 1.00)
ckpt="$CKPT_DIR/mdds_ddpm_cifar10"
resume=()
started "$ckpt" && resume=(--resume)

dist finetune_diffusion.py --mode mdds --dataset cifar10 --data_path "$DATA_PATH" \
  --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" --classifier "$CLIP_CIFAR10" --arch CLIP_B16 \
  --sigmas "${sigmas[@]}" --num_noises 4 --ac_weight 1 --diff_weight 1 \
  --epochs 10 --batch_size 16 --lr 1e-5 --optimizer AdamW --ema_decay 0.999 --seed 0 \
  --protocol mdds --output_dir "$ckpt" "${resume[@]}"

tsv="$OUT_DIR/certify/cifar10/ft_clip/mdds_ft/sigma_$(IFS=_; echo "${sigmas[*]}")_N${N}.tsv"
certify cifar10 "$CLIP_CIFAR10" "$tsv" --sigmas "${sigmas[@]}" --N "$N" --skip "$SKIP" --batch "$BATCH" \
  --arch CLIP_B16 --data_path "$DATA_PATH" --denoiser "$ckpt/denoiser.pt" --protocol mdds --resume

table "$tsv" --labels "MDDS_cascade_finetuned_diffusion" --radii 0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0
