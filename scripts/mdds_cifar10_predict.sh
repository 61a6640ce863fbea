#!/usr/bin/env bash
# MDDS (Jeong & Shin 2023), CIFAR-10 smoothed prediction (README §3; paper's accuracy table on
# CIFAR-10, CIFAR-10-C and CIFAR-10.1):
#   3-1 predict_ddpm.py at sigma = 0.25, 0.50, 1.00 on each dataset, and
#   3-2 predict_mdds.py over sigma = {0.25, 0.5, 1.0} (skip_p 0.5) on each dataset,
# with the FT-CLIP ViT-B/16 on the improved-diffusion CIFAR-10 UNet, N = 200, batch 200.
# CIFAR-10-C writes a directory of {corruption}.tsv (the 15 corruptions, all 5 severities: each file read
# whole, as MDDS) plus an accuracy CSV; every run writes MDDS's accuracy CSV beside its TSV.
#
# Usage: bash scripts/mdds_cifar10_predict.sh [--dry-run]
# Env: CLIP_CIFAR10, DDPM_CIFAR10, DATA_PATH, OUT_DIR, N (200), SKIP (1), BATCH (200), GPUS; see scripts/lib.sh.
# Output: $OUT_DIR/predict/denoised/ft_clip/{dds/DATASET_SIGMA, mdds/DATASET_n$N_0.25_0.50_1.00}[.tsv]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_CIFAR10 DDPM_CIFAR10

noise_defaults 200 1 200
out="$OUT_DIR/predict/denoised/ft_clip"
common=(--N "$N" --skip "$SKIP" --batch "$BATCH" --arch CLIP_B16 --data_path "$DATA_PATH"
        --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" --protocol mdds --resume)
sigmas=(0.25 0.50 1.00)

for dataset in cifar10 cifar10c cifar10.1; do
  ext=".tsv"
  [[ "$dataset" == cifar10c ]] && ext=""  # a directory of per-corruption TSVs
  for sigma in "${sigmas[@]}"; do
    dist predict_ddpm.py "$dataset" "$CLIP_CIFAR10" "$sigma" "$out/dds/${dataset}_${sigma}${ext}" "${common[@]}"
  done
  dist predict_mdds.py "$dataset" "$CLIP_CIFAR10" \
    "$out/mdds/${dataset}_n${N}_$(IFS=_; echo "${sigmas[*]}")${ext}" \
    --sigmas "${sigmas[@]}" --skip_p 0.5 "${common[@]}"
done
