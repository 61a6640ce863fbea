#!/usr/bin/env bash
# MDDS (Jeong & Shin 2023), ImageNet certified accuracy (paper's ImageNet table): diffusion-denoised
# smoothing at sigma = 0.25, 0.50, 1.00 and the multi-scale cascade sigma = {0.25, 0.5, 1.0}, with the
# FT-CLIP ViT-B/16 (scripts/ftclip_imagenet.sh) on the guided-diffusion 256x256 unconditional UNet,
# MDDS preprocessing (Resize224 input reflection-padded to 256 for the UNet), N = 10,000.
# The MDDS README gives no ImageNet command; SKIP defaults to DDS's --skip 50 (1,000 val images).
#
# Usage: bash scripts/mdds_imagenet_certify.sh [--dry-run]
# Env: CLIP_IMAGENET, DDPM_IMAGENET, DATA_PATH, OUT_DIR, N (10000), SKIP (50), BATCH (250), GPUS,
#      LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/imagenet/ft_clip/{dds/sigma_S_N$N.tsv, mdds/sigma_0.25_0.50_1.00_N$N.tsv}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_IMAGENET DDPM_IMAGENET

noise_defaults 10000 50 250
out="$OUT_DIR/certify/imagenet/ft_clip"
common=(--N "$N" --skip "$SKIP" --batch "$BATCH" --arch CLIP_B16 --data_path "$DATA_PATH"
        --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET"
        --protocol mdds --resume)

tsvs=()
labels=()
LABEL_PREFIX=DDS_ certify_each_sigma imagenet "$CLIP_IMAGENET" "$out/dds" "${common[@]}"

sigmas=(0.25 0.50 1.00)
tsv="$out/mdds/sigma_$(IFS=_; echo "${sigmas[*]}")_N${N}.tsv"
certify imagenet "$CLIP_IMAGENET" "$tsv" --sigmas "${sigmas[@]}" "${common[@]}"
tsvs+=("$tsv")
labels+=("MDDS_cascade")

table "${tsvs[@]}" --labels "${labels[@]}" --radii 0 0.5 1.0 1.5 2.0
