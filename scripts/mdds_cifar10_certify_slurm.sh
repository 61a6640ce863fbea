#!/usr/bin/env bash
# Slurm variant of scripts/mdds_cifar10_certify.sh: every certify run becomes a job array of SHARDS shards
# (scripts/slurm/certify_array.sbatch, --shard I/SHARDS) plus a merge job that starts when all of them
# succeeded (scripts/slurm/merge.sbatch: python -m core.shards merge OUTFILE --num_shards SHARDS).
# Same runs, arguments and output paths as scripts/mdds_cifar10_certify.sh:
#   MDDS (Jeong & Shin 2023), CIFAR-10 certified accuracy (README §2; paper Table: DDS vs multi-scale)
#
# Usage: [SHARDS=8] [SBATCH_PARTITION=...] bash scripts/mdds_cifar10_certify_slurm.sh [--dry-run]
# Env: as scripts/mdds_cifar10_certify.sh, plus SHARDS (8) and sbatch's own SBATCH_* variables; see scripts/lib.sh.
LAUNCH=slurm exec bash "$(dirname "${BASH_SOURCE[0]}")/mdds_cifar10_certify.sh" "$@"
