"""The training room (train_clip.py, finetune_diffusion.py): the engine's loops (``engine``), training
state and resumable checkpoints (``state``), optimizers, schedules and LoRA (``optim``), processes and
DeepSpeed glue (``distributed``, ``deepspeed_glue``), augmentations (``augment``), the flags of both
scripts (``parsers``) and each script's task (``classifier``, ``denoiser``). It sits above the run
machinery (device, AMP and the flags shared with the certify family) and the papers; see
docs/ARCHITECTURE.md."""
