#!/usr/bin/env bash
# DensePure, Xiao et al. 2023, ImageNet table: NUM_T_STEPS reverse steps of the guided-diffusion
# 256x256 UNet, REVERSE_SEEDS majority-voted reverse runs, the DDS BEiT-L/16 classifier;
# sigma = 0.25, 0.50, 1.00; DensePure's 100 val images (--skip 500), N0 100, N 10,000, batch 16
# (run_scripts/densepure_imagenet.sh); NUM_T_STEPS and REVERSE_SEEDS as in scripts/densepure_cifar10.sh.
#
# Usage: bash scripts/densepure_imagenet.sh [--dry-run]
# Env: BEIT_IMAGENET, DDPM_IMAGENET, DATA_PATH, OUT_DIR, N (10000), SKIP (500), BATCH (16),
#      NUM_T_STEPS (2), REVERSE_SEEDS (10), GPUS, LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/imagenet/densepure/steps$NUM_T_STEPS_seeds$REVERSE_SEEDS/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require BEIT_IMAGENET DDPM_IMAGENET

noise_defaults 10000 500 16
NUM_T_STEPS="${NUM_T_STEPS:-2}"
REVERSE_SEEDS="${REVERSE_SEEDS:-10}"
out="$OUT_DIR/certify/imagenet/densepure/steps${NUM_T_STEPS}_seeds${REVERSE_SEEDS}"

tsvs=()
certify_each_sigma imagenet "$BEIT_IMAGENET" "$out" --arch timm:beit_large_patch16_512 --protocol densepure \
    --N0 100 --N "$N" --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET" \
    --num_t_steps "$NUM_T_STEPS" --reverse_seeds "$REVERSE_SEEDS" --seed 0 --resume

table "${tsvs[@]}" --radii 0 0.5 1.0 1.5 2.0 3.0
