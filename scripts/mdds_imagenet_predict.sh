#!/usr/bin/env bash
# MDDS (Jeong & Shin 2023), ImageNet smoothed prediction (paper's accuracy table on ImageNet,
# ImageNet-A and ImageNet-R; the 200-class sets mask the logits to their classes):
# predict_ddpm.py at sigma = 0.25, 0.50, 1.00 and predict_mdds.py over sigma = {0.25, 0.5, 1.0}, with
# the FT-CLIP ViT-B/16 on the guided-diffusion 256x256 UNet (MDDS preprocessing, pad to 256), N = 200.
#
# Usage: bash scripts/mdds_imagenet_predict.sh [--dry-run]
# Env: CLIP_IMAGENET, DDPM_IMAGENET, DATA_PATH, OUT_DIR, N (200), SKIP (1), BATCH (100), GPUS; see scripts/lib.sh.
# Output: $OUT_DIR/predict/denoised/ft_clip/{dds/DATASET_SIGMA.tsv, mdds/DATASET_n$N_0.25_0.50_1.00.tsv}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_IMAGENET DDPM_IMAGENET

noise_defaults 200 1 100
out="$OUT_DIR/predict/denoised/ft_clip"
common=(--N "$N" --skip "$SKIP" --batch "$BATCH" --arch CLIP_B16 --data_path "$DATA_PATH"
        --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET"
        --protocol mdds --resume)
sigmas=(0.25 0.50 1.00)

for dataset in imagenet imagenet-a imagenet-r; do
  for sigma in "${sigmas[@]}"; do
    dist predict_ddpm.py "$dataset" "$CLIP_IMAGENET" "$sigma" "$out/dds/${dataset}_${sigma}.tsv" "${common[@]}"
  done
  dist predict_mdds.py "$dataset" "$CLIP_IMAGENET" "$out/mdds/${dataset}_n${N}_$(IFS=_; echo "${sigmas[*]}").tsv" \
    --sigmas "${sigmas[@]}" --skip_p 0.5 "${common[@]}"
done
