#!/usr/bin/env bash
# Cohen et al. 2019, CIFAR-10 (randomized smoothing, no denoiser): the Gaussian-augmented ResNet-110
# trained at noise sigma, certified at the same sigma = 0.12, 0.25, 0.50, 1.00 with Cohen's settings
# (N0 100, N 100,000, alpha 0.001, --skip 20: 500 test images); then the per-sigma table and Salman
# et al.'s best-over-sigma envelope (the "Cohen et al." row of their Table 2).
#
# Usage: bash scripts/cohen_cifar10.sh [--dry-run]
# Env: RESNET110_CIFAR10 (a template: {sigma} becomes 0.12 ... 1.00), DATA_PATH, OUT_DIR, N (100000),
#      SKIP (20), BATCH (400), GPUS, LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/cifar10/cohen_resnet110/noise_S/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"

noise_defaults 100000 20 400
out="$OUT_DIR/certify/cifar10/cohen_resnet110"
sigmas=(0.12 0.25 0.50 1.00)
for sigma in "${sigmas[@]}"; do require_path RESNET110_CIFAR10 "$(with_sigma "$RESNET110_CIFAR10" "$sigma")"; done

tsvs=()
labels=()
for sigma in "${sigmas[@]}"; do
  ckpt="$(with_sigma "$RESNET110_CIFAR10" "$sigma")"
  tsv="$out/noise_${sigma}/sigma_${sigma}_N${N}.tsv"
  certify cifar10 "$ckpt" "$tsv" --sigmas "$sigma" --denoiser none --protocol cohen \
    --N0 100 --N "$N" --alpha 0.001 --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" --resume
  tsvs+=("$tsv")
  labels+=("sigma_${sigma}")
done

table "${tsvs[@]}" --labels "${labels[@]}" --radii 0 0.25 0.5 0.75 1.0 1.25 1.5
table "${tsvs[@]}" --labels "${labels[@]}" --envelope --radii 0.25 0.5 0.75 1.0 1.25 1.5
