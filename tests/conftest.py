"""Shared fixtures: a tiny digits classifier trained once per session (CPU, a few seconds); running an
entry script in a subprocess (``run_script``) or in this process (``run_main``, no interpreter start-up)."""
import contextlib
import importlib
import io
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory) -> str:
    """A digits_cnn checkpoint (our format) trained briefly on clean digits: good enough to certify."""
    from datasets import get_dataset
    from models.classifiers import create_model, save_classifier
    torch.manual_seed(0)
    ds = get_dataset("digits", "train")
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    model = create_model("digits_cnn", num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    sigmas = torch.tensor([0.0, 0.25, 0.5, 1.0])
    for _ in range(8):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            # Gaussian augmentation at every cascade sigma (Cohen et al.): a sane base classifier without a denoiser
            s = sigmas[torch.randint(len(sigmas), (len(b), 1, 1, 1), generator=g)]
            xb = x[b] + s * torch.randn(x[b].shape, generator=g)
            loss = torch.nn.functional.cross_entropy(model(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = str(tmp_path_factory.mktemp("models") / "digits_cnn.pt")
    save_classifier(model.eval(), "digits_cnn", {"num_classes": 10}, path)
    return path


def run_script(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run an entry script of the repo in a subprocess (CPU, one thread)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def run_main(script: str, *argv: str) -> subprocess.CompletedProcess:
    """Run an entry script's ``main`` in this process through the CLI wrapper every script uses
    (``core.runs.parsers.run_cli``: one-line errors, exit status 2), one torch thread; returns what
    ``run_script`` would (returncode, stdout, stderr)."""
    from core.runs.parsers import run_cli
    module = importlib.import_module(script[:-3] if script.endswith(".py") else script)
    out, err, code, threads = io.StringIO(), io.StringIO(), 0, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_cli(module.main, module.get_args_parser(), list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())
