#!/usr/bin/env bash
# DDS, Carlini et al. 2023 ("(Certified!!) Adversarial Robustness for Free!"), CIFAR-10 table:
# one-shot diffusion denoising (improved-diffusion cifar10_uncond_50M_500K) + the off-the-shelf
# HF ViT-B/16 (aaraki/vit-base-patch16-224-in21k-finetuned-cifar10: its HF folder, config.json +
# model.safetensors), certified at sigma = 0.25, 0.50, 1.00 with the DDS README settings:
# --skip 1 --N0 100 --N 100000 --batch 200 (about 2 minutes per image on one A100 at N = 100k), under the
# DDS protocol (--protocol dds: q_sample noise, bicubic antialiased upsampling, fp32; docs/PROTOCOLS.md).
#
# Usage: bash scripts/dds_cifar10.sh [--dry-run]
# Env: VIT_CIFAR10, DDPM_CIFAR10, DATA_PATH, OUT_DIR, N (100000), SKIP (1), BATCH (200), GPUS,
#      LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $OUT_DIR/certify/cifar10/dds_vit/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require VIT_CIFAR10 DDPM_CIFAR10

noise_defaults 100000 1 200
out="$OUT_DIR/certify/cifar10/dds_vit"

tsvs=()
certify_each_sigma cifar10 "$VIT_CIFAR10" "$out" --protocol dds \
    --N0 100 --N "$N" --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" --resume

table "${tsvs[@]}" --radii 0 0.25 0.5 0.75 1.0
