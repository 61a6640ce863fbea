#!/usr/bin/env bash
# Slurm variant of scripts/densepure_cifar10.sh: every certify run becomes a job array of SHARDS shards
# (scripts/slurm/certify_array.sbatch, --shard I/SHARDS) plus a merge job that starts when all of them
# succeeded (scripts/slurm/merge.sbatch: python -m core.shards merge OUTFILE --num_shards SHARDS).
# Same runs, arguments and output paths as scripts/densepure_cifar10.sh:
#   DensePure, Xiao et al. 2023, CIFAR-10 table: NUM_T_STEPS stochastic reverse steps from t* of the
#
# Usage: [SHARDS=8] [SBATCH_PARTITION=...] bash scripts/densepure_cifar10_slurm.sh [--dry-run]
# Env: as scripts/densepure_cifar10.sh, plus SHARDS (8) and sbatch's own SBATCH_* variables; see scripts/lib.sh.
LAUNCH=slurm exec bash "$(dirname "${BASH_SOURCE[0]}")/densepure_cifar10.sh" "$@"
