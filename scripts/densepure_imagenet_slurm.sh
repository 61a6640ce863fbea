#!/usr/bin/env bash
# Slurm variant of scripts/densepure_imagenet.sh: every certify run becomes a job array of SHARDS shards
# (scripts/slurm/certify_array.sbatch, --shard I/SHARDS) plus a merge job that starts when all of them
# succeeded (scripts/slurm/merge.sbatch: python -m core.shards merge OUTFILE --num_shards SHARDS).
# Same runs, arguments and output paths as scripts/densepure_imagenet.sh:
#   DensePure, Xiao et al. 2023, ImageNet table: NUM_T_STEPS reverse steps of the guided-diffusion
#
# Usage: [SHARDS=8] [SBATCH_PARTITION=...] bash scripts/densepure_imagenet_slurm.sh [--dry-run]
# Env: as scripts/densepure_imagenet.sh, plus SHARDS (8) and sbatch's own SBATCH_* variables; see scripts/lib.sh.
LAUNCH=slurm exec bash "$(dirname "${BASH_SOURCE[0]}")/densepure_imagenet.sh" "$@"
