#!/usr/bin/env bash
# DensePure, Xiao et al. 2023, CIFAR-10 table: NUM_T_STEPS stochastic reverse steps from t* of the
# improved-diffusion CIFAR-10 UNet, REVERSE_SEEDS reverse runs majority-voted per noise sample, the
# DDS ViT-B/16 classifier; sigma = 0.25, 0.50, 1.00; DensePure's 500 test images (ids 0:20:9980,
# --skip 20), N0 100, N 100,000, batch 100 (run_scripts/densepure_cifar10.sh). DensePure's run and merge
# scripts take the step count and the number of voting reverse seeds as arguments (its README example:
# 2 steps); here NUM_T_STEPS and REVERSE_SEEDS, both in the output path.
#
# Usage: bash scripts/densepure_cifar10.sh [--dry-run]
# Env: VIT_CIFAR10, DDPM_CIFAR10, DATA_PATH, OUT_DIR, N (100000), SKIP (20), BATCH (100),
#      NUM_T_STEPS (2), REVERSE_SEEDS (10), GPUS, LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/cifar10/densepure/steps$NUM_T_STEPS_seeds$REVERSE_SEEDS/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require VIT_CIFAR10 DDPM_CIFAR10

noise_defaults 100000 20 100
NUM_T_STEPS="${NUM_T_STEPS:-2}"
REVERSE_SEEDS="${REVERSE_SEEDS:-10}"
out="$OUT_DIR/certify/cifar10/densepure/steps${NUM_T_STEPS}_seeds${REVERSE_SEEDS}"

tsvs=()
certify_each_sigma cifar10 "$VIT_CIFAR10" "$out" --protocol densepure \
    --N0 100 --N "$N" --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" \
    --num_t_steps "$NUM_T_STEPS" --reverse_seeds "$REVERSE_SEEDS" --seed 0 --resume

table "${tsvs[@]}" --radii 0 0.25 0.5 0.75 1.0
