"""scripts/: every paper-table script's --dry-run prints commands that its entry scripts accept.

Each scripts/*.sh runs with --dry-run (no checkpoint needed), and every printed command (``+ `` lines)
is parsed in-process by the entry script's own ``get_args_parser()`` (and its argument checks), so a
renamed or removed flag fails here instead of hours into a cluster job. Also: torchrun, sbatch and
submitit wrappers, output paths that never collide, and the Slurm templates' shard wiring.
"""
from __future__ import annotations

import argparse
import functools
import glob
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "scripts", "*.sh")) if not p.endswith("/lib.sh"))
ENTRY_MODULES = {  # printed script (or -m module) -> module with get_args_parser()
    "certify.py": "certify", "predict_ddpm.py": "predict_ddpm", "predict_mdds.py": "predict_mdds",
    "analyze.py": "analyze", "train_clip.py": "train_clip", "finetune_diffusion.py": "finetune_diffusion",
    "core.shards": "core.shards", "scripts/digits_showcase.py": "scripts.digits_showcase",
}
SMOOTHING = {"certify", "predict_ddpm", "predict_mdds"}
SBATCH_TEMPLATES = {"scripts/slurm/certify_array.sbatch": "certify", "scripts/slurm/merge.sbatch": "core.shards"}
CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C"}


def dry_run(script: str, **env: str) -> list[list[str]]:
    """Run a script with --dry-run (and checkpoints pointing nowhere); its printed commands as argv lists."""
    with open(script) as f:
        if "lib.sh" not in f.read():  # running it could start the real job
            raise AssertionError(f"{os.path.basename(script)} does not source scripts/lib.sh (parse_args, run): "
                                 "it may not honour --dry-run, so it was not run")
    e = dict(CLEAN_ENV, CKPT_DIR="/nonexistent/ckpts", **env)
    r = subprocess.run(["bash", script, "--dry-run"], cwd="/", env=e, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{script} --dry-run failed ({r.returncode}):\n{r.stderr}"
    return [shlex.split(line[2:]) for line in r.stdout.splitlines() if line.startswith("+ ")]


def parser_of(module: str) -> argparse.ArgumentParser:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return importlib.import_module(module).get_args_parser()


def submitit_module():
    spec = importlib.util.spec_from_file_location("submitit_certify", os.path.join(ROOT, "scripts", "submitit_certify.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def entry_commands(argv: list[str]) -> list[tuple[str, list[str]]]:
    """(module, its argv) for each entry-script invocation inside a printed command; [] for other tools.

    Unwraps `python [-m torch.distributed.run OPTS --] SCRIPT`, `torchrun OPTS -- SCRIPT`,
    `sbatch OPTS TEMPLATE ARGS` and `python scripts/submitit_certify.py OPTS -- ARGS`.
    """
    exe = os.path.basename(argv[0])
    if exe == "sbatch":
        k = next(i for i, a in enumerate(argv) if a.endswith(".sbatch"))
        module = SBATCH_TEMPLATES[argv[k]]
        args = argv[k + 1:]
        if module == "certify":  # the template appends --shard TASK/NUM_SHARDS
            m = re.search(r"NUM_SHARDS=(\d+)", " ".join(argv[1:k]))
            assert m, f"certify array job without NUM_SHARDS: {shlex.join(argv)}"
            assert f"--array=0-{int(m.group(1)) - 1}" in argv[1:k], f"--array does not match NUM_SHARDS: {shlex.join(argv)}"
            args = args + ["--shard", f"0/{m.group(1)}"]
        return [(module, args)]
    if exe == "torchrun":
        return torchrun(argv[1:])
    if not re.fullmatch(r"python[0-9.]*", exe):
        return []
    rest = argv[1:]
    if rest[:2] == ["-m", "torch.distributed.run"]:
        return torchrun(rest[2:])
    if rest[0] == "-m":
        assert rest[1] in ENTRY_MODULES, f"unknown module in {shlex.join(argv)}"
        return [(ENTRY_MODULES[rest[1]], rest[2:])]
    if rest[0] == "scripts/submitit_certify.py":
        ns = submitit_module().get_args_parser().parse_args(rest[1:])
        sub = ns.certify_args[1:] if ns.certify_args[:1] == ["--"] else ns.certify_args
        return [("certify", sub + ["--shard", f"0/{ns.num_shards}"])]
    assert rest[0] in ENTRY_MODULES, f"unknown entry script in {shlex.join(argv)}"
    return [(ENTRY_MODULES[rest[0]], rest[1:])]


def torchrun(argv: list[str]) -> list[tuple[str, list[str]]]:
    """torchrun's own parser must see the script as the script (the `--` keeps it off our flags)."""
    from torch.distributed.run import get_args_parser as torchrun_parser
    assert "--" in argv, f"torchrun without `--` before the script: {shlex.join(argv)}"
    ns = torchrun_parser().parse_args(argv)
    assert ns.training_script in ENTRY_MODULES, f"torchrun runs {ns.training_script!r}"
    return [(ENTRY_MODULES[ns.training_script], list(ns.training_script_args))]


TRAINING_TASKS = {"train_clip": "core.train.classifier", "finetune_diffusion": "core.train.denoiser"}


def check_parses(module: str, args: list[str], shown: str) -> argparse.Namespace:
    """Parse with the entry script's parser and run its argument checks; fail showing the command."""
    from core.runs import parsers as cli
    from core.errors import MsrsError
    try:
        ns = parser_of(module).parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{module} rejects the arguments (exit {e.code}) of:\n  {shown}")
    try:
        if module in SMOOTHING:
            from core.runs.protocols import resolve_protocol
            resolve_protocol(ns, module, ns.dataset)        # as main() does before its checks
            cli.check_args(ns)
            if module == "predict_ddpm":
                assert ns.sigma > 0, f"sigma must be > 0: {shown}"
            else:
                cli.sigmas_from_args(ns)
            from datasets import dataset_info
            dataset_info(ns.dataset)
            check_model_names(ns)
        elif module in TRAINING_TASKS:
            importlib.import_module(TRAINING_TASKS[module]).check_args(ns)
    except (MsrsError, KeyError) as e:
        pytest.fail(f"{module} rejects ({e}):\n  {shown}")
    return ns


def check_model_names(ns: argparse.Namespace) -> None:
    """--arch and --denoiser_config name things that exist (no model is built)."""
    from models.classifiers import list_models
    from models.diffusion import NAMED_CONFIGS
    if ns.arch:
        if ns.arch.startswith("timm:"):
            import timm
            assert timm.is_model(ns.arch[5:]), f"unknown timm model {ns.arch}"
        elif not ns.arch.startswith("tv:"):
            assert ns.arch in list_models(), f"unknown --arch {ns.arch}"
    if ns.denoiser_config:
        assert ns.denoiser_config in NAMED_CONFIGS, f"unknown --denoiser_config {ns.denoiser_config}"


def outputs(module: str, ns: argparse.Namespace) -> list[str]:
    """The paths a command writes (a shard writes its own part file)."""
    if module in SMOOTHING:
        return [ns.outfile + (f".part{ns.shard}" if ns.shard else "")]
    if module in ("analyze", "scripts.digits_showcase"):
        return [ns.plot] if ns.plot else []
    return [p for p in (getattr(ns, "output_dir", ""), getattr(ns, "export", None)) if p]


def normalized(module: str, args: list[str]) -> tuple:
    """A command's identity for cross-script comparison (launcher and shard/resume flags aside)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--shard":
            skip = True
        elif a != "--resume":
            out.append(a)
    return (module, *out)


@functools.lru_cache(maxsize=None)
def script_runs(script: str) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """(module, argv, printed line) of each entry-script invocation a script's --dry-run prints (cached)."""
    return tuple((m, tuple(a), shlex.join(argv)) for argv in dry_run(script) for m, a in entry_commands(argv))


def test_there_are_scripts():
    names = {os.path.basename(p) for p in SCRIPTS}
    for expected in ("mdds_cifar10_certify.sh", "mdds_cifar10_predict.sh", "digits_demo.sh",
                     "mdds_cifar10_certify_slurm.sh"):
        assert expected in names


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_dry_run_commands_parse(script):
    runs = script_runs(script)
    assert runs, f"{script} --dry-run printed no entry-script command"
    written = {}
    for module, args, shown in runs:
        ns = check_parses(module, list(args), shown)
        for path in outputs(module, ns):
            assert path not in written, (f"{os.path.basename(script)}: two commands write {path}:\n  "
                                         f"{written[path]}\n  {shown}")
            written[path] = shown


def test_same_output_means_same_run():
    """Across scripts (and their Slurm variants), one result file is always produced by one command."""
    seen = {}
    for script in SCRIPTS:
        try:
            runs = script_runs(script)
        except AssertionError:
            continue  # reported by test_dry_run_commands_parse
        for module, args, shown in runs:
            ns = check_parses(module, list(args), shown)
            if module not in SMOOTHING:
                continue
            key, ident = ns.outfile, normalized(module, args)
            if key in seen:
                assert seen[key][0] == ident, (f"{ns.outfile} is written by different commands:\n  "
                                               f"{seen[key][1]}\n  {shown}")
            seen[key] = (ident, shown)


@pytest.mark.parametrize("env", [{"GPUS": "2"}, {"LAUNCH": "slurm", "SHARDS": "4"}, {"LAUNCH": "submitit"}],
                         ids=["torchrun", "slurm", "submitit"])
def test_launchers(env):
    """GPUS>1 wraps in torchrun (with `--`); LAUNCH=slurm/submitit shard certify runs and merge them."""
    script = os.path.join(ROOT, "scripts", "mdds_cifar10_certify.sh")
    local = [a for argv in dry_run(script) for a in entry_commands(argv)]
    printed = dry_run(script, **env)
    runs = [a for argv in printed for a in entry_commands(argv)]
    for module, args in runs:
        check_parses(module, args, shlex.join(args))
    certs = [normalized(m, a) for m, a in runs if m == "certify"]
    assert certs == [normalized(m, a) for m, a in local if m == "certify"], "same certify runs, whatever launches them"
    if env.get("LAUNCH") == "slurm":
        merges = [a for m, a in runs if m == "core.shards"]
        assert [m[1] for m in merges] == [a[2] for m, a in local if m == "certify"]
        assert all(m[2:] == ["--num_shards", "4"] for m in merges)
        assert all(any(x.startswith("--dependency=afterok:") for x in argv) for argv in printed
                   if "scripts/slurm/merge.sbatch" in argv)
    if env.get("GPUS"):
        assert all(argv[1:3] == ["-m", "torch.distributed.run"] for argv in printed if "certify.py" in argv)


def test_submitit_dry_run(capsys):
    mod = submitit_module()
    mod.main(mod.get_args_parser().parse_args(["--num_shards", "3", "--dry-run", "--", "digits", "zoo:digits_cnn",
                                               "out dir/o.tsv", "--sigmas", "0.25", "0.5", "--max", "40"]))
    cmds = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]
    assert len(cmds) == 4
    for i, argv in enumerate(cmds[:3]):
        (module, args), = entry_commands(argv)
        ns = check_parses(module, args, shlex.join(argv))
        assert ns.shard == f"{i}/3" and ns.outfile == "out dir/o.tsv" and ns.max == 40
    (module, args), = entry_commands(cmds[3])
    ns = check_parses(module, args, shlex.join(cmds[3]))
    assert (module, ns.outfile, ns.num_shards) == ("core.shards", "out dir/o.tsv", 3)
    with pytest.raises(SystemExit):  # a stale flag is caught before anything is submitted
        mod.main(mod.get_args_parser().parse_args(["--dry-run", "--", "digits", "c", "o.tsv", "--no_such_flag"]))


def test_sbatch_templates_wire_the_shard(tmp_path):
    """certify_array.sbatch runs certify.py ARGS --shard TASK/NUM_SHARDS; merge.sbatch runs core.shards."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = dict(CLEAN_ENV, PYTHON=str(fake), SLURM_SUBMIT_DIR=ROOT, SLURM_ARRAY_TASK_ID="2", NUM_SHARDS="5")
    r = subprocess.run(["bash", "scripts/slurm/certify_array.sbatch", "digits", "zoo:digits_cnn", "o.tsv",
                        "--sigmas", "0.5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == ["certify.py", "digits", "zoo:digits_cnn", "o.tsv", "--sigmas", "0.5",
                                         "--shard", "2/5"]
    env.pop("NUM_SHARDS")
    env["SLURM_ARRAY_TASK_COUNT"] = "3"
    r = subprocess.run(["bash", "scripts/slurm/certify_array.sbatch", "a", "b", "c"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.split("\n")[-3:-1] == ["--shard", "2/3"]
    r = subprocess.run(["bash", "scripts/slurm/merge.sbatch", "merge", "o.tsv", "--num_shards", "5"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.split("\n")[:-1] == ["-m", "core.shards", "merge", "o.tsv", "--num_shards", "5"]


def test_missing_checkpoint_fails_before_running(tmp_path):
    """Without --dry-run a missing checkpoint stops the script at once, naming the variable."""
    script = os.path.join(ROOT, "scripts", "mdds_cifar10_certify.sh")
    env = dict(CLEAN_ENV, CKPT_DIR=str(tmp_path / "none"), PYTHON="/bin/false")
    r = subprocess.run(["bash", script], cwd="/", env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "CLIP_CIFAR10" in r.stderr and "+ " not in r.stdout
    r = subprocess.run(["bash", script, "--bogus"], cwd="/", env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = subprocess.run(["bash", script, "--help"], cwd="/", env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Usage" in r.stdout
