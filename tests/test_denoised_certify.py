"""certify.py / predict with real denoisers on tiny models: DDS one-shot, DensePure (S steps, K seeds),
Salman DnCNN files, the raw-OpenAI-checkpoint path, and the pickle trust gate."""
import pandas as pd
import pytest
import torch

from models.diffusion import NAMED_CONFIGS, create_model_and_diffusion, save_diffusion
from tests.conftest import run_script

TINY = ["--N", "24", "--N0", "8", "--batch", "12", "--max", "30", "--skip", "15", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = dict(NAMED_CONFIGS["digits-ddpm"])
    model, _ = create_model_and_diffusion(**kwargs)
    d = tmp_path_factory.mktemp("ddpm")
    path = d / "tiny_ddpm.pt"
    save_diffusion(model, kwargs, str(path))
    raw = d / "raw_openai.pt"
    torch.save(model.state_dict(), raw)   # what the OpenAI repos release: a bare state dict
    return path, raw


def test_dds_and_densepure_through_certify(digits_classifier, tiny_ddpm, tmp_path):
    path, _ = tiny_ddpm
    one = tmp_path / "dds.tsv"
    run_script("certify.py", "digits", digits_classifier, str(one), "--sigma25", "--sigma50",
               "--denoiser", str(path), *TINY, check=True)
    dp = tmp_path / "densepure.tsv"
    run_script("certify.py", "digits", digits_classifier, str(dp), "--sigmas", "0.5", "--denoiser", str(path),
               "--num_t_steps", "3", "--reverse_seeds", "3", *TINY, check=True)
    for f in (one, dp):
        df = pd.read_csv(f, sep="\t")
        assert df["idx"].tolist() == [0, 15]
        assert set(df["predict"]) <= set(range(-2, 10))
    # the same DensePure run again gives the same rows (reverse streams seeded per example)
    dp2 = tmp_path / "densepure2.tsv"
    run_script("certify.py", "digits", digits_classifier, str(dp2), "--sigmas", "0.5", "--denoiser", str(path),
               "--num_t_steps", "3", "--reverse_seeds", "3", *TINY, check=True)
    pd.testing.assert_frame_equal(pd.read_csv(dp, sep="\t").drop(columns="time"),
                                  pd.read_csv(dp2, sep="\t").drop(columns="time"))


def test_raw_openai_checkpoint_config(digits_classifier, tiny_ddpm, tmp_path):
    _, raw = tiny_ddpm
    # a raw state dict takes the dataset family's named config (digits-ddpm) unless one is given
    run_script("predict_ddpm.py", "digits", digits_classifier, "0.25", str(tmp_path / "b.tsv"),
               "--denoiser", str(raw), *TINY, check=True)
    r = run_script("certify.py", "digits", digits_classifier, str(tmp_path / "a.tsv"), "--sigma25",
                   "--denoiser", str(raw), "--denoiser_config", "improved-small", *TINY)
    assert r.returncode == 2 and str(raw) in r.stderr and "key" in r.stderr and "Traceback" not in r.stderr


def test_auto_denoiser_missing_file_is_explained(digits_classifier, tmp_path):
    r = run_script("certify.py", "cifar10", digits_classifier, str(tmp_path / "c.tsv"), "--sigma25",
                   "--data_path", str(tmp_path), *TINY)
    # the dataset is missing too; whichever is checked first, the message names the file to provide
    assert r.returncode == 2 and ("cifar10_uncond_50M_500K.pt" in r.stderr or "cifar-10-batches-py" in r.stderr)


def test_salman_dncnn_denoiser(digits_classifier, tmp_path):
    from models.dncnn import create_dncnn
    torch.manual_seed(0)
    dncnn = create_dncnn("cifar_dncnn")
    path = tmp_path / "dncnn.pth.tar"
    torch.save({"arch": "cifar_dncnn", "state_dict": dncnn.state_dict(), "epoch": 90}, path)  # Salman's layout
    out = tmp_path / "salman.tsv"
    run_script("certify.py", "digits", digits_classifier, str(out), "--sigmas", "0.25", "--denoiser", str(path),
               *TINY, check=True)
    assert len(pd.read_csv(out, sep="\t")) == 2


class Payload:
    """Not an allow-listed type: a checkpoint holding it needs full unpickling."""


def test_untrusted_pickle_refused_unless_trusted(digits_classifier, tmp_path):
    obj = torch.load(digits_classifier, weights_only=True)
    obj["note"] = Payload()
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    r = run_script("certify.py", "digits", str(path), str(tmp_path / "o.tsv"), "--sigma25", "--denoiser", "none",
                   *TINY)
    assert r.returncode == 2 and "--trust_checkpoint" in r.stderr and "Traceback" not in r.stderr
    # trusted: it unpickles (the class must be importable there), warns, and runs
    r = run_script("-c", "import sys, runpy; sys.path.insert(0, 'tests'); import test_denoised_certify; "
                   "sys.modules['__main__'].Payload = test_denoised_certify.Payload; "
                   f"sys.argv = ['certify.py', 'digits', {str(path)!r}, {str(tmp_path / 'o.tsv')!r}, '--sigma25', "
                   "'--trust_checkpoint', '--denoiser', 'none', " + ", ".join(repr(a) for a in TINY) + "]; "
                   "runpy.run_path('certify.py', run_name='__main__')")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trust_checkpoint" in r.stderr
