#!/usr/bin/env bash
# Rebuild the embedded zoo: models/zoo/digits_cnn.pt (classifier), models/zoo/digits_ddpm_plain.pt (a plain
# DDPM) and models/zoo/digits_ddpm.pt (that DDPM after the MDDS fine-tuning: the default denoiser).
#
# Usage: bash scripts/train_zoo.sh [--dry-run]     (CPU only, no downloads, seeded; timings: models/zoo/README.md)
#
# Three runs of our own entry scripts on the bundled digits set (16x16, each 8x8 pixel a 2x2 block x 3 channels):
#   1. digits_cnn         train_clip.py, clean images (FT-CLIP recipe: label smoothing, cosine lr with
#                         warm-up, EMA; random 1-pixel shifts instead of RandAugment at 16x16)
#   2. digits_ddpm_plain  finetune_diffusion.py --mode ddpm: the 'digits-ddpm' config of models/diffusion.py
#                         from scratch, plain eps-MSE at t < T_MAX (760: above t*(sigma=1) = 702, the
#                         largest timestep the one-shot denoiser uses; later t would only cost time)
#   3. digits_ddpm        finetune_diffusion.py --mode mdds: MDDS fine-tuning of (2) against the frozen (1)
#                         at sigma 0.25/0.5/1 (ALGORITHMS §3d). (2) is kept and shipped: the cascade with
#                         it is the "before" of the README's fine-tuning comparison. MDDS_EPOCHS=0 skips (3).
# Weights are bit-identical across runs on one machine with the same torch build and thread count:
# the script pins OMP_NUM_THREADS to 1 (the DDPM's last bits change with the thread count; the shipped
# zoo was built with 1); other CPUs may differ in the last bits.
#
# Environment overrides (tests use tiny values): PYTHON, ZOO_OUT (default models/zoo), ZOO_WORK
# (logs and resumable checkpoints; default $TMPDIR/msrs_zoo_work, emptied first), SEED, CNN_EPOCHS (30),
# DDPM_EPOCHS (240), MDDS_EPOCHS (32, of MDDS_STEPS = 30 steps), T_MAX (760), STEPS_PER_EPOCH (0: full
# epochs; caps every stage when > 0), EVAL_MAX (denoised-accuracy test images, 0: all 360),
# OMP_NUM_THREADS (1).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"

ZOO_OUT="${ZOO_OUT:-models/zoo}"
ZOO_WORK="${ZOO_WORK:-${TMPDIR:-/tmp}/msrs_zoo_work}"
SEED="${SEED:-0}"
CNN_EPOCHS="${CNN_EPOCHS:-30}"
DDPM_EPOCHS="${DDPM_EPOCHS:-240}"
MDDS_EPOCHS="${MDDS_EPOCHS:-32}"
T_MAX="${T_MAX:-760}"
STEPS_PER_EPOCH="${STEPS_PER_EPOCH:-0}"
EVAL_MAX="${EVAL_MAX:-0}"
MDDS_STEPS=30
((STEPS_PER_EPOCH > 0)) && MDDS_STEPS="$STEPS_PER_EPOCH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if ! is_dry; then
  rm -rf "$ZOO_WORK/digits_cnn" "$ZOO_WORK/digits_ddpm" "$ZOO_WORK/digits_ddpm_mdds"   # a fresh run, not a resume
  mkdir -p "$ZOO_OUT" "$ZOO_WORK"
fi
common=(--device cpu --seed "$SEED" --num_workers 0)
den_common=("${common[@]}" --eval_max "$EVAL_MAX")

t0=$SECONDS
run "$PYTHON" train_clip.py --model digits_cnn --data digits "${common[@]}" \
    --epochs "$CNN_EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH" --batch_size 64 --lr 3e-3 --min_lr 1e-5 \
    --warmup_epochs 1 --weight_decay 0.05 --layer_decay 1.0 --smoothing 0.1 --digits_shift 1 \
    --model_ema --model_ema_decay 0.99 \
    --output_dir "$ZOO_WORK/digits_cnn" --export "$ZOO_OUT/digits_cnn.pt"
t1=$SECONDS

ddpm_out="$ZOO_OUT/digits_ddpm_plain.pt"
run "$PYTHON" finetune_diffusion.py --mode ddpm --dataset digits --denoiser_config digits-ddpm "${den_common[@]}" \
    --epochs "$DDPM_EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH" --batch_size 128 --lr 2e-3 --min_lr 1e-4 \
    --warmup_steps 20 --ema_decay 0.99 --t_max "$T_MAX" --digits_shift 0 --eval_freq 20 \
    --classifier "$ZOO_OUT/digits_cnn.pt" --sigma25 --sigma50 --sigma100 \
    --output_dir "$ZOO_WORK/digits_ddpm" --export "$ddpm_out"
t2=$SECONDS

if ((MDDS_EPOCHS > 0)); then
  run "$PYTHON" finetune_diffusion.py --mode mdds --dataset digits --denoiser "$ddpm_out" "${den_common[@]}" \
      --classifier "$ZOO_OUT/digits_cnn.pt" --sigma25 --sigma50 --sigma100 --num_noises 4 \
      --ac_weight 1 --diff_weight 1 --epochs "$MDDS_EPOCHS" --steps_per_epoch "$MDDS_STEPS" --batch_size 16 \
      --lr 1e-4 --ema_decay 0.99 --digits_shift 0 --eval_freq 4 \
      --output_dir "$ZOO_WORK/digits_ddpm_mdds" --export "$ZOO_OUT/digits_ddpm.pt"
else
  is_dry || cp "$ddpm_out" "$ZOO_OUT/digits_ddpm.pt"
fi
t3=$SECONDS
is_dry || echo "digits_cnn $((t1 - t0)) s, ddpm $((t2 - t1)) s, mdds $((t3 - t2)) s, total $((t3 - t0)) s -> $ZOO_OUT (logs: $ZOO_WORK)"
