#!/usr/bin/env bash
# DDS, Carlini et al. 2023, ImageNet table: one-shot guided-diffusion 256x256 unconditional denoising
# (Resize256 + Crop224 input, fed unpadded) + the off-the-shelf BEiT-L/16 at 512 (timm
# beit_large_patch16_512 state dict), certified at sigma = 0.25, 0.50, 1.00 with the DDS README
# settings: --skip 50 --N0 100 --N 10000 (1,000 val images).
#
# Usage: bash scripts/dds_imagenet.sh [--dry-run]
# Env: BEIT_IMAGENET, DDPM_IMAGENET, DATA_PATH, OUT_DIR, N (10000), SKIP (50), BATCH (100), GPUS,
#      LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/imagenet/dds_beit/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require BEIT_IMAGENET DDPM_IMAGENET

noise_defaults 10000 50 100
out="$OUT_DIR/certify/imagenet/dds_beit"

tsvs=()
certify_each_sigma imagenet "$BEIT_IMAGENET" "$out" --arch timm:beit_large_patch16_512 --protocol dds \
    --N0 100 --N "$N" --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET" --resume

table "${tsvs[@]}" --radii 0 0.5 1.0 1.5 2.0 3.0
