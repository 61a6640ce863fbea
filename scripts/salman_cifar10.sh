#!/usr/bin/env bash
# Salman et al. 2020 (Denoised Smoothing), CIFAR-10 full-access table: for sigma = 0.12, 0.25, 0.50, 1.00
# train a DnCNN denoiser (cifar_dncnn) with the MSE objective, then stability-train a copy of it against
# the frozen off-the-shelf ResNet-110 (Stab+MSE, --pretrained-denoiser), and certify the ResNet-110 with
# each denoiser at its sigma (N0 100, N 10,000, --skip 20: 500 test images); then the table per run and
# the best-over-sigma envelope per objective (Salman's Stab+MSE envelope: .56/.41/.28/.19 at r=.25/.5/.75/1).
# Training: train_denoiser.py's defaults (90 epochs, batch 256, Adam 1e-3, wd 1e-4, StepLR 30/0.1);
# STAB_EPOCHS / STAB_LR change the stability fine-tuning.
#
# Usage: bash scripts/salman_cifar10.sh [--dry-run]
# Env: RESNET110_CIFAR10 ({sigma} -> 0.00: the classifier trained without noise), DATA_PATH, CKPT_DIR, OUT_DIR,
#      GPUS, N (10000), SKIP (20), BATCH (400), STAB_EPOCHS (90), STAB_LR (1e-3),
#      LAUNCH=slurm|submitit + SHARDS (the certify runs); see scripts/lib.sh.
# Output: $CKPT_DIR/salman_cifar10/{mse,stab_mse}/noise_S/checkpoint.pth.tar,
#         $OUT_DIR/certify/cifar10/salman_resnet110/{mse,stab_mse}/noise_S/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"

noise_defaults 10000 20 400
STAB_EPOCHS="${STAB_EPOCHS:-90}"
STAB_LR="${STAB_LR:-1e-3}"
classifier="$(with_sigma "$RESNET110_CIFAR10" 0.00)"
require_path RESNET110_CIFAR10 "$classifier"

sigmas=(0.12 0.25 0.50 1.00)
denoiser() { echo "$CKPT_DIR/salman_cifar10/$1/noise_$2"; }                               # OBJECTIVE SIGMA
result() { echo "$OUT_DIR/certify/cifar10/salman_resnet110/$1/noise_$2/sigma_$2_N${N}.tsv"; }  # OBJECTIVE SIGMA

for sigma in "${sigmas[@]}"; do
  mse="$(denoiser mse "$sigma")"
  stab="$(denoiser stab_mse "$sigma")"
  resume=()
  started "$mse" && resume=(--resume)
  dist finetune_diffusion.py --mode dncnn --dataset cifar10 --data_path "$DATA_PATH" --arch cifar_dncnn \
    --objective mse --noise_sd "$sigma" --epochs 90 --batch 256 --lr 1e-3 --optimizer Adam \
    --weight_decay 1e-4 --lr_step_size 30 --gamma 0.1 --seed 0 --protocol salman --outdir "$mse" "${resume[@]}"
  resume=()
  started "$stab" && resume=(--resume)
  dist finetune_diffusion.py --mode dncnn --dataset cifar10 --data_path "$DATA_PATH" --arch cifar_dncnn \
    --objective stab+mse --classifier "$classifier" --pretrained-denoiser "$mse/checkpoint.pth.tar" \
    --noise_sd "$sigma" --epochs "$STAB_EPOCHS" --batch 256 --lr "$STAB_LR" --optimizer Adam \
    --weight_decay 1e-4 --lr_step_size 30 --gamma 0.1 --seed 0 --protocol salman --outdir "$stab" "${resume[@]}"

  for objective in mse stab_mse; do
    certify cifar10 "$classifier" "$(result "$objective" "$sigma")" --sigmas "$sigma" --protocol salman \
      --denoiser "$(denoiser "$objective" "$sigma")/checkpoint.pth.tar" \
      --N0 100 --N "$N" --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" --resume
  done
done

labels=()
for sigma in "${sigmas[@]}"; do labels+=("sigma_${sigma}"); done
for objective in mse stab_mse; do
  tsvs=()
  for sigma in "${sigmas[@]}"; do tsvs+=("$(result "$objective" "$sigma")"); done
  table "${tsvs[@]}" --labels "${labels[@]}" --radii 0 0.25 0.5 0.75 1.0 1.25 1.5
  table "${tsvs[@]}" --labels "${labels[@]}" --envelope --radii 0.25 0.5 0.75 1.0 1.25 1.5
done
