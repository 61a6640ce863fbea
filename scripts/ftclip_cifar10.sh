#!/usr/bin/env bash
# FT-CLIP / MDDS scripts/ft_clip/cifar10.sh: fine-tune OpenAI CLIP ViT-B/16 on clean CIFAR-10 (the
# classifier of every MDDS CIFAR-10 table): 100 epochs, 10 warm-up, lr 6e-4, layer decay 0.6, weight
# decay 0.05, label smoothing 0.1, RandAugment m9, random erasing 0.25, EMA 0.9998, DeepSpeed fp16 (the
# mdds protocol's --amp auto on CUDA), evaluated every epoch with its EMA (--eval_all, as MDDS's script);
# batch 2 x 64 (GPUS processes x 64 x gradient accumulation 2/GPUS). Then the clean test accuracy of
# the best (EMA) checkpoint (MDDS: 94.5 %).
#
# Usage: bash scripts/ftclip_cifar10.sh [--dry-run]
# Env: CLIP_OPENAI (initial weights), DATA_PATH, CKPT_DIR, RUN_DIR (output folder), GPUS (1; the reference
#      used 2); see scripts/lib.sh. scripts/ft_clip/cifar10.sh runs this with the MDDS paths.
# Output: $CKPT_DIR/clip_cifar10/ (log.txt, checkpoint-last.pt, checkpoint-best/mp_rank_00_model_states.pt),
#         the default CLIP_CIFAR10 of the certify/predict scripts. Rerunning resumes from checkpoint-last.pt.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_OPENAI

out="${RUN_DIR:-$CKPT_DIR/clip_cifar10}"
dist train_clip.py --model CLIP_B16 --data cifar10 --data_path "$DATA_PATH" --finetune "$CLIP_OPENAI" \
  --batch_size 64 --update_freq "$(accum_for 2)" --lr 6e-4 --min_lr 1e-6 --warmup_epochs 10 --epochs 100 \
  --layer_decay 0.6 --weight_decay 0.05 --drop_path 0 --smoothing 0.1 --aa rand-m9-mstd0.5-inc1 --reprob 0.25 \
  --model_ema --model_ema_decay 0.9998 --deepspeed --num_workers 8 --seed 0 \
  --protocol mdds --eval_all --output_dir "$out" --auto_resume

# clean accuracy of the checkpoint the certify scripts use (model_ema)
dist train_clip.py --eval --protocol mdds --model CLIP_B16 --data cifar10 --data_path "$DATA_PATH" \
  --finetune "$out/checkpoint-best/mp_rank_00_model_states.pt"
