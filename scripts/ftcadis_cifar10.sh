#!/usr/bin/env bash
# FT-CADIS, Jang et al. TMLR'24, CIFAR-10 table: for each sigma = 0.25, 0.50, 1.00, fine-tune the
# off-the-shelf DDS ViT-B/16 on denoised images (improved-diffusion CIFAR-10 UNet) with FT-CADIS's
# train_cifar10.sh recipe (full fine-tuning, 30 epochs / 3 warm-up, blr 1e-4, batch 32 x accum 4 on 4
# GPUs, 4 noises, lambda 4, eps 64, 4 attack steps, wd 0.04 -> 0.4, layer decay 0.65, drop path 0.2,
# clip 0.3, fp16, warm start), then certify it at the same sigma (FT-CADIS README: --seed 0 --skip 1
# --N0 100 --N 100000 --batch 400), under the FT-CADIS protocol (--protocol cadis: crop + flip training,
# fp16 training, checkpoint-{epoch}.pt files of which the last is certified, q_sample noise, antialiased
# upsampling, fp32 certification; docs/PROTOCOLS.md).
#
# Usage: bash scripts/ftcadis_cifar10.sh [--dry-run] [FT-CADIS train_cifar10.sh flags] [--train-only]
#   e.g. bash scripts/ftcadis_cifar10.sh --ngpus 4 --noise 1.00 --blr 1e-4 --batch 32 --accum_iter 4 --lbd 4.0 \
#            [--resume --load_from CKPT_DIR/ftcadis_cifar10/sigma_1.00/checkpoint-last.pt]
# Their flags keep their names and meanings (scripts/lib.sh parse_ftcadis_args); --noise S trains and
# certifies at S only. Effective batch = ngpus x batch x accum_iter // num_noises (their README's rule; 128
# for the recipe); without --accum_iter the accumulation is 16/GPUS, which keeps 128 on any GPU count.
# Env: VIT_CIFAR10 (initial weights), DDPM_CIFAR10, DATA_PATH, CKPT_DIR, OUT_DIR, GPUS (1; the reference
#      used 4), N (100000), SKIP (1), BATCH (400), LAUNCH=slurm|submitit + SHARDS (the certify runs);
#      see scripts/lib.sh.
# Output: $CKPT_DIR/ftcadis_cifar10/sigma_S/checkpoint-30.pt, $OUT_DIR/certify/cifar10/ftcadis/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_ftcadis_args "$@"
require VIT_CIFAR10 DDPM_CIFAR10

noise_defaults 100000 1 400
out="$OUT_DIR/certify/cifar10/ftcadis"
ftcadis_recipe 32 4

tsvs=()
for sigma in "${sigmas[@]}"; do
  ftcadis_run_dir "$CKPT_DIR/ftcadis_cifar10/sigma_${sigma}"
  dist train_clip.py --objective cadis --protocol cadis --model hf_vit_base_patch16_224 --finetune "$VIT_CIFAR10" \
    --data cifar10 --data_path "$DATA_PATH" --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" \
    --sigma "$sigma" --test_noise_sd "$sigma" --num_noises "$num_noises" --lbd "${FT_LBD:-4.0}" \
    --eps "${FT_EPS:-64}" --num_steps 4 --warm_start \
    --batch "$batch" --accum_iter "$accum" --blr "${FT_BLR:-1e-4}" --epochs 30 --warmup_epochs 3 \
    --weight_decay "${FT_WEIGHT_DECAY:-0.04}" --weight_decay_end "${FT_WEIGHT_DECAY_END:-0.4}" \
    --layer_decay "${FT_LAYER_DECAY:-0.65}" --drop_path 0.2 --clip_grad 0.3 \
    --use_fp16 true --seed 0 --output_dir "$ckpt" --auto_resume "${resume[@]}"
  ((TRAIN_ONLY)) && continue
  tsv="$out/sigma_${sigma}_N${N}.tsv"
  certify cifar10 "$ckpt/checkpoint-30.pt" "$tsv" --sigmas "$sigma" --protocol cadis --seed 0 --N0 100 --N "$N" \
    --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_CIFAR10" --denoiser_config "$CONFIG_CIFAR10" --resume
  tsvs+=("$tsv")
done

((TRAIN_ONLY)) || table "${tsvs[@]}" --radii 0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0
