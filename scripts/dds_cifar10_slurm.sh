#!/usr/bin/env bash
# Slurm variant of scripts/dds_cifar10.sh: every certify run becomes a job array of SHARDS shards
# (scripts/slurm/certify_array.sbatch, --shard I/SHARDS) plus a merge job that starts when all of them
# succeeded (scripts/slurm/merge.sbatch: python -m core.shards merge OUTFILE --num_shards SHARDS).
# Same runs, arguments and output paths as scripts/dds_cifar10.sh:
#   DDS, Carlini et al. 2023 ("(Certified!!) Adversarial Robustness for Free!"), CIFAR-10 table
#
# Usage: [SHARDS=8] [SBATCH_PARTITION=...] bash scripts/dds_cifar10_slurm.sh [--dry-run]
# Env: as scripts/dds_cifar10.sh, plus SHARDS (8) and sbatch's own SBATCH_* variables; see scripts/lib.sh.
LAUNCH=slurm exec bash "$(dirname "${BASH_SOURCE[0]}")/dds_cifar10.sh" "$@"
