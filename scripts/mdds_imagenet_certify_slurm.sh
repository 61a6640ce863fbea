#!/usr/bin/env bash
# Slurm variant of scripts/mdds_imagenet_certify.sh: every certify run becomes a job array of SHARDS shards
# (scripts/slurm/certify_array.sbatch, --shard I/SHARDS) plus a merge job that starts when all of them
# succeeded (scripts/slurm/merge.sbatch: python -m core.shards merge OUTFILE --num_shards SHARDS).
# Same runs, arguments and output paths as scripts/mdds_imagenet_certify.sh:
#   MDDS (Jeong & Shin 2023), ImageNet certified accuracy (paper's ImageNet table): diffusion-denoised
#
# Usage: [SHARDS=8] [SBATCH_PARTITION=...] bash scripts/mdds_imagenet_certify_slurm.sh [--dry-run]
# Env: as scripts/mdds_imagenet_certify.sh, plus SHARDS (8) and sbatch's own SBATCH_* variables; see scripts/lib.sh.
LAUNCH=slurm exec bash "$(dirname "${BASH_SOURCE[0]}")/mdds_imagenet_certify.sh" "$@"
