"""The layout of docs/ARCHITECTURE.md holds and is enforced: the import contracts (.importlinter) pass and
fail when a forbidden import is added, every flag is defined once, the entry scripts stay thin, and the
small one-rule-each items (classifier registry, diffusion mean type) hold."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = ["certify.py", "predict_ddpm.py", "predict_mdds.py", "train_clip.py", "finetune_diffusion.py",
                 "analyze.py"]
# flags that keep their reference meaning per script family, each defined once per family (ARCHITECTURE.md)
FAMILY_FLAGS = {"--batch": {"core/runs/parsers.py", "core/train/parsers.py"},
                "--resume": {"core/runs/parsers.py", "core/train/parsers.py"}}


# core/'s top level: the papers, the errors, the launcher of `python -m core.shards` (docs/ARCHITECTURE.md)
CORE_TOP = {"__init__", "errors", "stats", "adaptive", "noise", "smoothing", "cascade", "denoise", "objectives", "blackbox",
            "shards", "runs", "train"}


def test_core_top_level_holds_the_papers_only():
    """A new module goes into its room (core/runs/, core/train/, models/, datasets/), not next to the papers."""
    top = {p.stem for p in (ROOT / "core").iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert top == CORE_TOP, f"unexpected at core/'s top level: {sorted(top - CORE_TOP)}; see docs/ARCHITECTURE.md"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not os.path.exists(exe):
        pytest.skip("import-linter is not installed (requirements.txt)")
    return subprocess.run([exe, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(root)))


def test_import_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("core/stats.py", "import datasets", "core.stats is not allowed to import datasets"),
    ("core/smoothing.py", "from core import cascade", "core.smoothing"),          # a cycle back up the papers
    ("core/denoise.py", "from core.runs import setup", "core.denoise"),           # a paper reaching the machinery
    ("models/unet.py", "import core.runs.files", "models.unet"),                 # models/ knowing core/
    ("core/train/denoiser.py", "import core.train.classifier", "core.train.denoiser"),
])
def test_import_contracts_catch_a_forbidden_import(tmp_path, module, line, contract):
    for d in ("core", "models", "datasets"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "zoo"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # forbidden\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout and contract in r.stdout, r.stdout[-3000:]


# The papers' own command lines (FT-CADIS, Salman et al., DensePure): each reference script's flags as that
# script defines them (its names and defaults), translated to the native flags; once per paper form.
PAPER_FORMS = ROOT / "core" / "runs" / "compat.py"


def option_strings(path: Path | ast.AST):
    """(flag, line) of every literal ``add_argument("--flag", ...)`` in a file (or a parsed function)."""
    for node in ast.walk(path if isinstance(path, ast.AST) else ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    yield arg.value, node.lineno


def test_every_flag_is_defined_once():
    files = [ROOT / s for s in ENTRY_SCRIPTS] + sorted(p for p in (ROOT / "core").rglob("*.py") if p != PAPER_FORMS)
    where: dict[str, list[str]] = {}
    for path in files:
        for flag, line in option_strings(path):
            where.setdefault(flag, []).append(f"{path.relative_to(ROOT)}:{line}")
    assert len(where) > 100
    twice = {flag: places for flag, places in where.items() if len(places) > 1}
    for flag, files_ in FAMILY_FLAGS.items():
        assert {p.split(":")[0] for p in twice.pop(flag, [])} == files_, flag
    assert not twice, f"flags defined in more than one place: {twice}"


def test_each_paper_form_defines_a_flag_once():
    forms = [n for n in ast.parse(PAPER_FORMS.read_text()).body if isinstance(n, ast.FunctionDef)
             and n.name.endswith("_parser") and n.name != "_paper_parser"]
    assert len(forms) >= 5
    for fn in forms:
        flags = [flag for flag, _ in option_strings(fn)]
        assert len(flags) == len(set(flags)), f"{fn.name} defines a flag twice"


def test_the_flag_check_sees_a_second_definition(tmp_path):
    """The scan above is not vacuous: a script that defines a shared flag again is reported."""
    bad = tmp_path / "x.py"
    bad.write_text('import argparse\np = argparse.ArgumentParser()\np.add_argument("--device", default="cpu")\n')
    assert list(option_strings(bad)) == [("--device", 3)]


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_are_thin(script):
    text = (ROOT / script).read_text()
    assert len(text.splitlines()) <= 150
    defs = {n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {"get_args_parser", "main"} <= defs <= {"get_args_parser", "main", "run_one"}, defs


def test_classifier_registry_refuses_a_second_definition_of_a_name():
    from models.classifiers import create_model, list_models, register_model
    with pytest.raises(ValueError, match="registered already"):
        @register_model
        def digits_cnn(num_classes: int = 10):   # noqa: F811 - the point: the name exists
            raise AssertionError("never called")
    assert "digits_cnn" in list_models() and create_model("digits_cnn").net.fc.out_features == 10


def test_one_rule_for_what_the_diffusion_network_predicts():
    """eps or x0, nothing else: the reverse step and the one-shot denoiser read the same flag."""
    from core.denoise import DiffusionDenoiser
    from models.diffusion import GaussianDiffusion, get_named_beta_schedule
    from core.errors import MsrsError
    betas = get_named_beta_schedule("linear", 100)
    with pytest.raises(MsrsError, match="model_mean_type"):
        GaussianDiffusion(betas, model_mean_type="xstart")
    target = torch.full((2, 3, 8, 8), 0.25)
    net = lambda x, t: target   # noqa: E731 - a network that predicts x0 = 0.25 (or eps = 0.25)
    for mean_type in ("x0", "eps"):
        diff = GaussianDiffusion(betas, model_mean_type=mean_type)
        x_t = torch.zeros(2, 3, 8, 8)
        t = torch.full((2,), 5, dtype=torch.long)
        step = diff.p_mean_variance(net, x_t, t, clip_denoised=False)["pred_xstart"]
        den = DiffusionDenoiser(net, diff, sigma=0.25, clip=False)
        one_shot = 2 * den(torch.full((2, 3, 8, 8), 0.5)) - 1           # x_t = sqrt(abar) * 0 at t*
        if mean_type == "x0":
            assert torch.equal(step, target) and torch.allclose(one_shot, target)
        else:
            np.testing.assert_allclose(step.numpy(), -diff.sqrt_recipm1_alphas_cumprod[5] * 0.25, rtol=1e-6)
            assert torch.allclose(one_shot, torch.full_like(target, -den.sqrt_recipm1_ab * 0.25))
