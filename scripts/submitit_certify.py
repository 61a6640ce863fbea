"""Launch one certify.py run as N Slurm shards with submitit, then the merge.

    python scripts/submitit_certify.py --num_shards 8 --partition gpu -- \\
        cifar10 CLASSIFIER OUT.tsv --sigmas 0.25 0.5 1.0 --denoiser DDPM.pt --denoiser_config improved-cifar10-uncond

Submits a job array whose task I runs ``certify.py ARGS... --shard I/N`` (each writes
``OUT.tsv.part{I}of{N}``), then a merge job, ``python -m core.shards merge OUT.tsv --num_shards N``,
that Slurm starts only when every shard succeeded (``afterok`` dependency); the launcher itself exits
at once unless ``--wait``. ``--cluster local`` runs the shards as local processes instead (then waits
and merges). ``--dry-run`` prints the commands the jobs would run and submits nothing.
The same thing without submitit: ``LAUNCH=slurm`` in scripts/*.sh (scripts/slurm/*.sbatch).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("submitit_certify.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_shards", type=int, default=8, help="array tasks (--shard I/N, I = 0..N-1)")
    p.add_argument("--python", default=os.environ.get("PYTHON", ".venv/bin/python"),
                   help="interpreter the jobs run (relative paths are from the repository root)")
    p.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help="submitit backend: slurm, local (subprocesses here) or debug (in this process)")
    p.add_argument("--log_dir", default="OUTPUT/submitit_logs", help="submitit logs and pickles")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--timeout_min", type=int, default=48 * 60, help="time limit of one shard, minutes")
    p.add_argument("--gpus_per_node", type=int, default=1)
    p.add_argument("--cpus_per_task", type=int, default=8)
    p.add_argument("--mem_gb", type=int, default=None)
    p.add_argument("--array_parallelism", type=int, default=None, help="max shards running at once")
    p.add_argument("--wait", action="store_true", help="wait for the merge and print its output")
    p.add_argument("--dry-run", "-n", dest="dry_run", action="store_true",
                   help="print the commands the jobs would run; submit nothing")
    p.add_argument("certify_args", nargs=argparse.REMAINDER,
                   help="after `--`: certify.py's arguments, DATASET CLASSIFIER OUTFILE first")
    return p


def split_certify_args(args: argparse.Namespace) -> list[str]:
    """certify.py's argv (the part after `--`), checked with certify.py's own parser."""
    argv = list(args.certify_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if any(a == "--shard" or a.startswith("--shard=") for a in argv):
        raise SystemExit("submitit_certify.py: do not pass --shard: --num_shards sets it")
    sys.path.insert(0, ROOT)
    import certify
    parsed = certify.get_args_parser().parse_args(argv)  # exits with certify.py's usage on a bad flag
    if args.num_shards < 1:
        raise SystemExit(f"submitit_certify.py: --num_shards must be >= 1, got {args.num_shards}")
    args.outfile = parsed.outfile
    return argv


def commands(args: argparse.Namespace, argv: list[str]) -> tuple[list[list[str]], list[str]]:
    """The shard commands and the merge command."""
    n = args.num_shards
    shards = [[args.python, "certify.py", *argv, "--shard", f"{i}/{n}"] for i in range(n)]
    merge = [args.python, "-m", "core.shards", "merge", args.outfile, "--num_shards", str(n)]
    return shards, merge


def main(args: argparse.Namespace) -> None:
    argv = split_certify_args(args)
    shards, merge = commands(args, argv)
    if args.dry_run:
        for cmd in [*shards, merge]:
            print("+ " + shlex.join(cmd))
        return

    import submitit
    from submitit.helpers import CommandFunction

    executor = submitit.AutoExecutor(folder=os.path.join(args.log_dir, "%j"), cluster=args.cluster)
    params = dict(timeout_min=args.timeout_min, gpus_per_node=args.gpus_per_node, tasks_per_node=1,
                  cpus_per_task=args.cpus_per_task, nodes=1, name=f"certify_{os.path.basename(args.outfile)}")
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    slurm = {k: v for k, v in (("slurm_partition", args.partition), ("slurm_account", args.account),
                               ("slurm_qos", args.qos),
                               ("slurm_array_parallelism", args.array_parallelism)) if v is not None}
    if args.cluster == "slurm":
        params.update(slurm)
    executor.update_parameters(**params)
    with executor.batch():  # one job array
        jobs = [executor.submit(CommandFunction(cmd, cwd=ROOT)) for cmd in shards]
    for cmd, job in zip(shards, jobs):
        print(f"submitted {job.job_id}: {shlex.join(cmd)}")

    if args.cluster == "slurm":
        array_ids = sorted({j.job_id.split("_")[0] for j in jobs})
        executor.update_parameters(name=f"merge_{os.path.basename(args.outfile)}", gpus_per_node=0,
                                   cpus_per_task=1, timeout_min=30,
                                   slurm_additional_parameters={"dependency": "afterok:" + ":".join(array_ids)})
        merge_job = executor.submit(CommandFunction(merge, cwd=ROOT))
        print(f"submitted {merge_job.job_id} (after {', '.join(array_ids)}): {shlex.join(merge)}")
        if args.wait:
            print(merge_job.result())
    else:  # local / debug: no dependencies, so wait here and merge
        for job in jobs:
            job.result()
        print(CommandFunction(merge, cwd=ROOT, verbose=False)())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
