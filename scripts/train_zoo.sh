#!/usr/bin/env bash
# Rebuild the embedded zoo: models/zoo/digits_cnn.pt (classifier) and models/zoo/digits_ddpm.pt (denoiser).
#
#   bash scripts/train_zoo.sh                 # ~6-8 min on 2 CPU cores, no downloads, seeded
#
# Both are trained by our own entry scripts on the bundled digits set, on CPU, seeded: digits_cnn with
# train_clip.py (clean images, FT-CLIP recipe: label smoothing, cosine lr with warm-up, EMA; random
# shifts instead of RandAugment at 16x16), digits_ddpm with finetune_diffusion.py --mode ddpm (the
# 'digits-ddpm' config of models/diffusion.py, plain eps-MSE). Weights are bit-identical across runs
# on one machine (same torch build and thread count); other CPUs may differ in the last bits.
#
# Environment overrides (tests use tiny values): PYTHON, ZOO_OUT (default models/zoo), ZOO_WORK
# (logs and resumable checkpoints; default a temporary directory), SEED, CNN_EPOCHS, DDPM_EPOCHS,
# STEPS_PER_EPOCH (0: full epochs), OMP_NUM_THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
ZOO_OUT="${ZOO_OUT:-models/zoo}"
ZOO_WORK="${ZOO_WORK:-$(mktemp -d)}"
SEED="${SEED:-0}"
CNN_EPOCHS="${CNN_EPOCHS:-30}"
DDPM_EPOCHS="${DDPM_EPOCHS:-40}"
STEPS_PER_EPOCH="${STEPS_PER_EPOCH:-0}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p "$ZOO_OUT" "$ZOO_WORK"

start=$(date +%s)
"$PYTHON" train_clip.py --model digits_cnn --data digits --device cpu --seed "$SEED" --num_workers 0 \
    --epochs "$CNN_EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH" --batch_size 64 --lr 3e-3 --min_lr 1e-5 \
    --warmup_epochs 1 --weight_decay 0.05 --layer_decay 1.0 --smoothing 0.1 --digits_shift 1 \
    --model_ema --model_ema_decay 0.99 \
    --output_dir "$ZOO_WORK/digits_cnn" --export "$ZOO_OUT/digits_cnn.pt"
mid=$(date +%s)
"$PYTHON" finetune_diffusion.py --mode ddpm --dataset digits --denoiser_config digits-ddpm --device cpu \
    --seed "$SEED" --num_workers 0 --epochs "$DDPM_EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH" \
    --batch_size 128 --lr 2e-3 --min_lr 1e-4 --warmup_steps 20 --ema_decay 0.99 --digits_shift 1 \
    --classifier "$ZOO_OUT/digits_cnn.pt" --sigma25 --sigma50 --sigma100 \
    --output_dir "$ZOO_WORK/digits_ddpm" --export "$ZOO_OUT/digits_ddpm.pt"
end=$(date +%s)
echo "digits_cnn: $((mid - start)) s, digits_ddpm: $((end - mid)) s -> $ZOO_OUT (logs: $ZOO_WORK)"
