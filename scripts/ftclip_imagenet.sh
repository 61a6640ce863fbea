#!/usr/bin/env bash
# FT-CLIP / MDDS scripts/ft_clip/imagenet.sh: fine-tune OpenAI CLIP ViT-B/16 on clean ImageNet-1k (the
# classifier of the MDDS ImageNet tables): 50 epochs, 10 warm-up, lr 6e-4, layer decay 0.6, weight decay
# 0.05, label smoothing 0.1, RandAugment m9, random erasing 0.25, EMA 0.9998, DeepSpeed fp16; batch
# 8 x 256 (GPUS processes x 256 x gradient accumulation 8/GPUS). Then the clean val accuracy of the best
# (EMA) checkpoint (MDDS logs/CLIP_B16.log: EMA 84.7 %, best 85.66 %).
#
# Usage: bash scripts/ftclip_imagenet.sh [--dry-run]
# Env: CLIP_OPENAI (initial weights), DATA_PATH, CKPT_DIR, RUN_DIR (output folder), GPUS (1; the reference
#      used 8); see scripts/lib.sh. scripts/ft_clip/imagenet.sh runs this with the MDDS paths.
# Output: $CKPT_DIR/clip_imagenet/ (checkpoint-best/mp_rank_00_model_states.pt: the default CLIP_IMAGENET).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
require CLIP_OPENAI

out="${RUN_DIR:-$CKPT_DIR/clip_imagenet}"
dist train_clip.py --model CLIP_B16 --data imagenet --data_path "$DATA_PATH" --finetune "$CLIP_OPENAI" \
  --batch_size 256 --update_freq "$(accum_for 8)" --lr 6e-4 --min_lr 1e-6 --warmup_epochs 10 --epochs 50 \
  --layer_decay 0.6 --weight_decay 0.05 --drop_path 0 --smoothing 0.1 --aa rand-m9-mstd0.5-inc1 --reprob 0.25 \
  --model_ema --model_ema_decay 0.9998 --deepspeed --num_workers 8 --seed 0 \
  --protocol mdds --eval_all --output_dir "$out" --auto_resume

dist train_clip.py --eval --protocol mdds --model CLIP_B16 --data imagenet --data_path "$DATA_PATH" \
  --finetune "$out/checkpoint-best/mp_rank_00_model_states.pt"
