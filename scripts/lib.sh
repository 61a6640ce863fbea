# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, never run). Every script:
#   - takes --dry-run (or DRY_RUN=1): print the commands, run nothing, need no file;
#   - prints each command before running it, shell-quoted on one line after "+ ";
#   - runs from the repository root, whatever the caller's directory.
#
# Environment (all optional; defaults in parentheses):
#   PYTHON         python interpreter                          (.venv/bin/python, else python3)
#   DATA_PATH      datasets folder (--data_path)              (datasets)
#   CKPT_DIR       checkpoints folder                          (checkpoints)
#   OUT_DIR        results folder                              (OUTPUT)
#   GPUS           processes per node: >1 runs `python -m torch.distributed.run --nproc_per_node=GPUS --`
#                  (torchrun); the ranks' part files are merged by rank 0                (1)
#   LAUNCH         certify jobs: local | slurm (a job array of SHARDS shards + a dependent merge job,
#                  scripts/slurm/*.sbatch) | submitit (scripts/submitit_certify.py)     (local)
#   SHARDS         shards per certify job for LAUNCH=slurm|submitit                       (8)
#   RUN_DIR        training scripts: the run's output folder (continue a run there)  (the script's own)
#                  Slurm options: the SBATCH_* variables sbatch reads itself (SBATCH_PARTITION,
#                  SBATCH_ACCOUNT, SBATCH_TIMELIMIT, SBATCH_GRES, ...), or edit scripts/slurm/*.sbatch.
# Checkpoints (a missing one fails before anything runs, naming the variable and the path):
#   CLIP_OPENAI     OpenAI CLIP ViT-B/16 weights as a state dict (visual.* keys): the FT-CLIP starting point;
#                   torch.save(clip.load('ViT-B/16', jit=False)[0].state_dict(), PATH)  ($CKPT_DIR/clip_vit_b16.pt)
#   CLIP_CIFAR10    FT-CLIP ViT-B/16 on CIFAR-10 (DeepSpeed checkpoint-best/ dir)  ($CKPT_DIR/clip_cifar10/checkpoint-best)
#   CLIP_IMAGENET   FT-CLIP ViT-B/16 on ImageNet                                   ($CKPT_DIR/clip_imagenet/checkpoint-best)
#   DDPM_CIFAR10    improved-diffusion cifar10_uncond_50M_500K.pt   (OUTPUT/denoising_models/cifar10_uncond_50M_500K.pt)
#   DDPM_IMAGENET   guided-diffusion 256x256_diffusion_uncond.pt (OUTPUT/denoising_models/imagenet/256x256_diffusion_uncond.pt)
#   VIT_CIFAR10     DDS/FT-CADIS CIFAR-10 classifier: the HF folder of aaraki/vit-base-patch16-224-in21k-finetuned-cifar10
#                   (config.json + model.safetensors or pytorch_model.bin, read as is)  ($CKPT_DIR/vit_b16_cifar10)
#   BEIT_IMAGENET   DDS ImageNet classifier, timm beit_large_patch16_512 weights  ($CKPT_DIR/beit_large_patch16_512.pt)
#   VIT_IMAGENET    FT-CADIS ImageNet classifier, timm vit_base_patch16_clip_384.laion2b_ft_in12k_in1k
#                                                                                   ($CKPT_DIR/vit_base_patch16_clip_384.pt)
#   RESNET110_CIFAR10  Cohen's / Salman's CIFAR-10 ResNet-110 (noise_0.00 for Salman; noise_SIGMA for Cohen:
#                   the file name's {sigma} is replaced)                           ($CKPT_DIR/cohen_cifar10/noise_{sigma}/checkpoint.pth.tar)
# Nothing is ever downloaded: put the files there (or point the variables at them) first.

set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$SCRIPTS_DIR")"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=.venv/bin/python
  [[ -x "$PYTHON" ]] || PYTHON=python3  # no virtual environment: the one on PATH
fi
DATA_PATH="${DATA_PATH:-datasets}"
CKPT_DIR="${CKPT_DIR:-checkpoints}"
OUT_DIR="${OUT_DIR:-OUTPUT}"
GPUS="${GPUS:-1}"
LAUNCH="${LAUNCH:-local}"
SHARDS="${SHARDS:-8}"
DRY_RUN="${DRY_RUN:-0}"
export PYTHON  # the Slurm templates read it

CLIP_OPENAI="${CLIP_OPENAI:-$CKPT_DIR/clip_vit_b16.pt}"
CLIP_CIFAR10="${CLIP_CIFAR10:-$CKPT_DIR/clip_cifar10/checkpoint-best}"
CLIP_IMAGENET="${CLIP_IMAGENET:-$CKPT_DIR/clip_imagenet/checkpoint-best}"
DDPM_CIFAR10="${DDPM_CIFAR10:-OUTPUT/denoising_models/cifar10_uncond_50M_500K.pt}"   # where --denoiser auto looks
DDPM_IMAGENET="${DDPM_IMAGENET:-OUTPUT/denoising_models/imagenet/256x256_diffusion_uncond.pt}"
VIT_CIFAR10="${VIT_CIFAR10:-$CKPT_DIR/vit_b16_cifar10}"
BEIT_IMAGENET="${BEIT_IMAGENET:-$CKPT_DIR/beit_large_patch16_512.pt}"
VIT_IMAGENET="${VIT_IMAGENET:-$CKPT_DIR/vit_base_patch16_clip_384.pt}"
_sigma_tag='{sigma}'
RESNET110_CIFAR10="${RESNET110_CIFAR10:-$CKPT_DIR/cohen_cifar10/noise_$_sigma_tag/checkpoint.pth.tar}"

# The diffusion configs of the raw OpenAI checkpoints (models/diffusion.py NAMED_CONFIGS).
CONFIG_CIFAR10=improved-cifar10-uncond
CONFIG_IMAGENET=guided-256-uncond

usage() {
  # the script's leading comment block (after the shebang) is its help
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

# parse_args "$@": --dry-run/-n, -h/--help; anything else is an error.
parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run | -n) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      *) echo "$(basename "$0"): unknown argument '$1' (try --help; settings are environment variables)" >&2
         exit 2 ;;
    esac
    shift
  done
}

is_dry() { [[ "$DRY_RUN" == 1 ]]; }

# parse_ftcadis_args "$@": FT-CADIS's train_cifar10.sh / train_imagenet.sh flags, same names and meanings:
#   --ngpus N (sets GPUS)  --noise S (train, and certify, at S only)  --blr LR  --batch B (per GPU)
#   --accum_iter K  --lbd L  --num_noises M  --eps E  --weight_decay W  --weight_decay_end W
#   --layer_decay D  --resume [--load_from CKPT]
# and ours: --train-only (stop after training), --dry-run, --help. Sets FT_<NAME> (empty: not given;
# the script then uses its recipe's value), FT_RESUME, TRAIN_ONLY.
parse_ftcadis_args() {
  local rest=() name
  FT_NOISE='' FT_BLR='' FT_BATCH='' FT_ACCUM_ITER='' FT_LBD='' FT_NUM_NOISES='' FT_EPS='' FT_WEIGHT_DECAY=''
  FT_WEIGHT_DECAY_END='' FT_LAYER_DECAY='' FT_LOAD_FROM='' FT_RESUME=0 TRAIN_ONLY=0
  while (($#)); do
    case "$1" in
      --ngpus | --noise | --blr | --batch | --accum_iter | --lbd | --num_noises | --eps | --weight_decay | \
      --weight_decay_end | --layer_decay | --load_from)
        if (($# < 2)); then echo "$(basename "$0"): $1 needs a value" >&2; exit 2; fi
        name="${1#--}"
        if [[ "$name" == ngpus ]]; then GPUS="$2"; else printf -v "FT_${name^^}" '%s' "$2"; fi
        shift 2 ;;
      --resume) FT_RESUME=1; shift ;;
      --train-only) TRAIN_ONLY=1; shift ;;
      --eps_double | --warmup_eps)
        echo "$(basename "$0"): $1 (doubling the attack radius) is not supported by train_clip.py" >&2; exit 2 ;;
      *) rest+=("$1"); shift ;;
    esac
  done
  if [[ -n "$FT_LOAD_FROM" && "$FT_RESUME" != 1 ]]; then
    echo "$(basename "$0"): note: --load_from without --resume is ignored (as in FT-CADIS)" >&2
    FT_LOAD_FROM=''
  fi
  if [[ "$FT_RESUME" == 1 && -n "$FT_LOAD_FROM" && -z "$FT_NOISE" ]]; then
    echo "$(basename "$0"): --resume --load_from continues one run: give its --noise too" >&2; exit 2
  fi
  parse_args "${rest[@]+"${rest[@]}"}"
}

# ftcadis_recipe BATCH NUM_NOISES: after parse_ftcadis_args, set batch and num_noises (given, else the
# recipe's BATCH and NUM_NOISES), accum (--accum_iter, else 16/GPUS: the recipe's 4 x 4 GPUs, so the
# effective batch stays 128 on any GPU count) and sigmas (--noise, else the table's 0.25 0.50 1.00);
# print the effective batch.
ftcadis_recipe() {
  batch="${FT_BATCH:-$1}"
  num_noises="${FT_NUM_NOISES:-$2}"
  accum="${FT_ACCUM_ITER:-$(accum_for 16)}"
  echo "# effective batch $(effective_batch "$GPUS" "$batch" "$accum" "$num_noises") = ngpus $GPUS x batch $batch" \
       "x accum_iter $accum // num_noises $num_noises"
  sigmas=(0.25 0.50 1.00)
  if [[ -n "$FT_NOISE" ]]; then sigmas=("$(printf '%.2f' "$FT_NOISE")"); fi
}

# ftcadis_run_dir DIR: the run folder of one sigma (DIR, or the folder of --load_from) and its resume flags.
ftcadis_run_dir() {
  ckpt="$1"
  resume=()
  if [[ -n "$FT_LOAD_FROM" ]]; then ckpt="$(dirname "$FT_LOAD_FROM")"; resume=(--load_from "$FT_LOAD_FROM"); fi
}

# mdds_ft_clip DATASET KEY "$@": MDDS's scripts/ft_clip/DATASET.sh: our FT-CLIP recipe (scripts/ftclip_DATASET.sh)
# reading DATA and writing where MDDS does, OUTPUT/CLIP_ft/CLIP_openai/DATASET/KEY/base/<date>/ (or RUN_DIR).
mdds_ft_clip() {
  local dataset="$1" key="$2"
  shift 2
  case " $* " in *" --help "* | *" -h "*) usage; exit 0 ;; esac
  export DATA_PATH="${DATA:-$DATA_PATH}"
  export RUN_DIR="${RUN_DIR:-$OUT_DIR/CLIP_ft/CLIP_openai/$dataset/$key/base/$(date +%Y%m%d_%H%M%S)}"
  exec bash "$SCRIPTS_DIR/ftclip_$dataset.sh" "$@"
}

# effective_batch GPUS BATCH ACCUM NUM_NOISES: FT-CADIS's rule, images per optimizer step
# (ngpus x batch per GPU x accum_iter // num_noises: each step's batch holds num_noises copies per image).
effective_batch() {
  if (($2 % $4)); then
    echo "$(basename "$0"): --batch $2 must be a multiple of --num_noises $4" >&2; exit 2
  fi
  echo "$(($1 * $2 * $3 / $4))"
}

# show CMD...: print the command, shell-quoted, on one line after "+ ".
show() {
  local line
  printf -v line '%q ' "$@"
  printf '+ %s\n' "${line% }"
}

# run CMD...: print the command, then run it (unless --dry-run).
run() {
  show "$@"
  if ! is_dry; then "$@"; fi
}

# require VAR...: each variable must name an existing file or directory (skipped in --dry-run).
require() {
  local var
  for var in "$@"; do require_path "$var" "${!var}"; done
}

# require_path VAR PATH: PATH (the value of VAR, maybe after substitution) must exist, unless --dry-run.
require_path() {
  if ! is_dry && [[ ! -e "$2" ]]; then
    echo "$(basename "$0"): $2 does not exist; put the checkpoint there or set $1=PATH" \
         "(scripts/lib.sh says what each variable holds)" >&2
    exit 1
  fi
}

# accum_for REF_GPUS: gradient-accumulation steps that keep a recipe's effective batch (written for
# REF_GPUS processes) when running on GPUS processes.
accum_for() {
  if (($1 % GPUS)); then
    echo "$(basename "$0"): GPUS=$GPUS does not divide the recipe's $1 processes; the effective batch changes" >&2
  fi
  echo "$(($1 / GPUS > 0 ? $1 / GPUS : 1))"
}

# started DIR: a training run in DIR has a checkpoint to continue from (rerunning a script resumes it).
started() { [[ -e "$1/checkpoint-last.pt" ]]; }

# with_sigma TEMPLATE SIGMA: TEMPLATE with every '{sigma}' replaced (per-sigma checkpoints).
with_sigma() { printf '%s' "${1//\{sigma\}/$2}"; }

# dist SCRIPT ARGS...: run an entry script with $PYTHON, under torchrun when GPUS > 1.
# (the `--` keeps torchrun's own parser off our flags: it would take `--max` for its `--max-restarts`)
dist() {
  if ((GPUS > 1)); then
    run "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" -- "$@"
  else
    run "$PYTHON" "$@"
  fi
}

# submit VAR CMD...: print the command, run it (unless --dry-run) and store its output (a job id) in VAR.
submit() {
  local -n _out="$1"
  shift
  show "$@"
  if is_dry; then _out="<job-id>"; else _out="$("$@")"; _out="${_out%%;*}"; fi  # "id;cluster" -> id
}

# certify DATASET CLASSIFIER OUTFILE FLAGS...: one certify.py job, launched as LAUNCH says.
certify() {
  local outfile="$3"
  case "$LAUNCH" in
    local) dist certify.py "$@" ;;
    slurm)
      # SHARDS array tasks (--shard I/SHARDS each), then a merge job that starts when all succeeded
      local jid name log_dir="$OUT_DIR/slurm_logs"
      name="$(basename "$outfile" .tsv)"
      is_dry || mkdir -p "$log_dir"
      submit jid sbatch --parsable --array="0-$((SHARDS - 1))" --export="ALL,NUM_SHARDS=$SHARDS" \
        --job-name="certify_$name" --output="$log_dir/%x_%A_%a.out" scripts/slurm/certify_array.sbatch "$@"
      run sbatch --parsable --dependency="afterok:$jid" --job-name="merge_$name" \
        --output="$log_dir/%x_%j.out" scripts/slurm/merge.sbatch merge "$outfile" --num_shards "$SHARDS"
      ;;
    submitit)
      run "$PYTHON" scripts/submitit_certify.py --num_shards "$SHARDS" --log_dir "$OUT_DIR/submitit_logs" \
        -- "$@"
      ;;
    *) echo "$(basename "$0"): LAUNCH must be local, slurm or submitit, got '$LAUNCH'" >&2; exit 2 ;;
  esac
}

# noise_defaults N SKIP BATCH: the environment's N, SKIP and BATCH, else these (the script's recipe).
noise_defaults() {
  N="${N:-$1}"
  SKIP="${SKIP:-$2}"
  BATCH="${BATCH:-$3}"
}

# certify_each_sigma DATASET CLASSIFIER DIR FLAGS...: one certify job (see certify) per sigma 0.25, 0.50,
# 1.00, into DIR/sigma_S_N$N.tsv; each file is appended to the array tsvs, LABEL_PREFIX sigma_S to labels.
certify_each_sigma() {
  local dataset="$1" classifier="$2" dir="$3" sigma tsv
  shift 3
  for sigma in 0.25 0.50 1.00; do
    tsv="$dir/sigma_${sigma}_N${N}.tsv"
    certify "$dataset" "$classifier" "$tsv" --sigmas "$sigma" "$@"
    tsvs+=("$tsv")
    labels+=("${LABEL_PREFIX:-}sigma_${sigma}")
  done
}

# table TSV... [analyze.py flags]: the certified-accuracy table of the runs (analyze.py). With
# LAUNCH=slurm|submitit the runs are still queued: print the command to run once they are done.
table() {
  if [[ "$LAUNCH" == local ]]; then
    run "$PYTHON" analyze.py "$@"
  else
    local line
    printf -v line '%q ' "$PYTHON" analyze.py "$@"
    echo "# when the jobs are done, the table: ${line% }"
  fi
}
