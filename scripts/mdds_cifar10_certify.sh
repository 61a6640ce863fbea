#!/usr/bin/env bash
# MDDS (Jeong & Shin 2023), CIFAR-10 certified accuracy (README §2; paper Table: DDS vs multi-scale):
#   2-1 diffusion-denoised smoothing at sigma = 0.25, 0.50, 1.00 (one TSV each), and
#   2-2 the multi-scale cascade sigma = {0.25, 0.5, 1.0},
# with the FT-CLIP ViT-B/16 (scripts/ftclip_cifar10.sh) on the improved-diffusion CIFAR-10 UNet,
# N = 10,000, every test image (--skip 1), batch 5000; then the certified-accuracy table.
#
# Usage: bash scripts/mdds_cifar10_certify.sh [--dry-run]
# Env: CLIP_CIFAR10, DDPM_CIFAR10 (checkpoints), DATA_PATH, OUT_DIR, N (10000), SKIP (1), BATCH (5000),
#      GPUS (torchrun), LAUNCH=slurm|submitit + SHARDS (job arrays); see scripts/lib.sh.
# Output: $OUT_DIR/certify/cifar10/ft_clip/{dds/sigma_S_N$N.tsv, mdds/sigma_0.25_0.50_1.00_N$N.tsv}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_CIFAR10 DDPM_CIFAR10

noise_defaults 10000 1 5000
out="$OUT_DIR/certify/cifar10/ft_clip"
common=(--N "$N" --skip "$SKIP" --batch "$BATCH" --arch CLIP_B16 --data_path "$DATA_PATH"
        --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" --protocol mdds --resume)

tsvs=()
labels=()
LABEL_PREFIX=DDS_ certify_each_sigma cifar10 "$CLIP_CIFAR10" "$out/dds" "${common[@]}"

sigmas=(0.25 0.50 1.00)
tsv="$out/mdds/sigma_$(IFS=_; echo "${sigmas[*]}")_N${N}.tsv"
certify cifar10 "$CLIP_CIFAR10" "$tsv" --sigmas "${sigmas[@]}" "${common[@]}"
tsvs+=("$tsv")
labels+=("MDDS_cascade")

table "${tsvs[@]}" --labels "${labels[@]}" --radii 0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0
