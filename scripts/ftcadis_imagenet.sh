#!/usr/bin/env bash
# FT-CADIS, Jang et al. TMLR'24, ImageNet table: for each sigma = 0.25, 0.50, 1.00, LoRA-fine-tune
# (r = 4) timm vit_base_patch16_clip_384.laion2b_ft_in12k_in1k on images denoised by the guided-diffusion
# 256x256 UNet with FT-CADIS's train_imagenet.sh recipe (10 epochs / 1 warm-up, blr 4e-4, batch 16 x
# accum 4 on 4 GPUs, 2 noises, lambda 2, eps 64, 1 attack step, wd 0.01 -> 0.1, layer decay 0.9,
# clip 1.0, fp16, warm start), then certify it at the same sigma under the FT-CADIS protocol
# (--protocol cadis): one random val image per class (seed 0) with the README's --skip 1, --seed 0 --N0 100
# --N 10000 --batch 32, the last epoch's checkpoint, [-1, 1] classifier input, q_sample noise, fp32.
#
# Usage: bash scripts/ftcadis_imagenet.sh [--dry-run] [FT-CADIS train_imagenet.sh flags] [--train-only]
#   e.g. bash scripts/ftcadis_imagenet.sh --ngpus 4 --noise 1.00 --blr 4e-4 --batch 16 --accum_iter 4 --lbd 2.0
# Their flags keep their names and meanings (scripts/lib.sh parse_ftcadis_args); --noise S trains and
# certifies at S only. Effective batch = ngpus x batch x accum_iter // num_noises (their README's rule; 128
# for the recipe); without --accum_iter the accumulation is 16/GPUS, which keeps 128 on any GPU count.
# Env: VIT_IMAGENET (initial weights), DDPM_IMAGENET, DATA_PATH, CKPT_DIR, OUT_DIR, GPUS (1; the reference
#      used 4), N (10000), SKIP (1), BATCH (32), LAUNCH=slurm|submitit + SHARDS; see scripts/lib.sh.
# Output: $CKPT_DIR/ftcadis_imagenet/sigma_S/checkpoint-10.pt, $OUT_DIR/certify/imagenet/ftcadis/sigma_S_N$N.tsv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_ftcadis_args "$@"
require VIT_IMAGENET DDPM_IMAGENET

noise_defaults 10000 1 32
out="$OUT_DIR/certify/imagenet/ftcadis"
arch=timm:vit_base_patch16_clip_384.laion2b_ft_in12k_in1k
ftcadis_recipe 16 2

tsvs=()
for sigma in "${sigmas[@]}"; do
  ftcadis_run_dir "$CKPT_DIR/ftcadis_imagenet/sigma_${sigma}"
  dist train_clip.py --objective cadis --protocol cadis --model "$arch" --finetune "$VIT_IMAGENET" --lora_r 4 --lora_alpha 4 \
    --data imagenet --data_path "$DATA_PATH" --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET" \
    --sigma "$sigma" --test_noise_sd "$sigma" --num_noises "$num_noises" --lbd "${FT_LBD:-2.0}" \
    --eps "${FT_EPS:-64}" --num_steps 1 --warm_start \
    --batch "$batch" --accum_iter "$accum" --blr "${FT_BLR:-4e-4}" --epochs 10 --warmup_epochs 1 \
    --weight_decay "${FT_WEIGHT_DECAY:-0.01}" --weight_decay_end "${FT_WEIGHT_DECAY_END:-0.1}" \
    --layer_decay "${FT_LAYER_DECAY:-0.9}" --drop_path 0.0 --clip_grad 1.0 \
    --use_fp16 true --seed 0 --output_dir "$ckpt" --auto_resume "${resume[@]}"
  ((TRAIN_ONLY)) && continue
  tsv="$out/sigma_${sigma}_N${N}.tsv"
  certify imagenet "$ckpt/checkpoint-10.pt" "$tsv" --sigmas "$sigma" --protocol cadis --seed 0 --N0 100 --N "$N" \
    --skip "$SKIP" --batch "$BATCH" --data_path "$DATA_PATH" \
    --denoiser "$DDPM_IMAGENET" --denoiser_config "$CONFIG_IMAGENET" --resume
  tsvs+=("$tsv")
done

((TRAIN_ONLY)) || table "${tsvs[@]}" --radii 0 0.5 1.0 1.5 2.0 3.0
