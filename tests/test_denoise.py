"""Diffusion denoising (DDS one-shot, DensePure multi-step, voting) and diffusion checkpoint loading."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.denoise import DenoiseThenClassify, DiffusionDenoiser, majority_vote, t_star_for_sigma
from core.runs.loaders import load_denoiser
from core.errors import MsrsError
from models.diffusion import NAMED_CONFIGS, create_model_and_diffusion, load_diffusion, save_diffusion

FIX = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def small():
    """The fixture UNet (random weights) with the CIFAR-10 diffusion (cosine, 4000, rescaled t)."""
    dds = torch.load(FIX / "dds" / "improved_small_cosine4000.pt", weights_only=True)
    model, diffusion = create_model_and_diffusion(**dds["kwargs"])
    model.load_state_dict(torch.load(FIX / "unet" / "improved_small_state.pt", weights_only=True))
    return model.eval(), diffusion, dds


class OracleEps(nn.Module):
    """The true ε of x_t = √ᾱ_t u0 + √(1−ᾱ_t) ε for a known clean u0 (t decoded as fed)."""

    def __init__(self, u0, diffusion, learn_sigma=False):
        super().__init__()
        self.u0, self.d, self.learn_sigma = u0, diffusion, learn_sigma

    def forward(self, x_t, t):
        t = (t.double() * self.d.num_timesteps / 1000).round().long() if self.d.rescale_timesteps else t.long()
        ab = torch.from_numpy(self.d.alphas_cumprod)[t].float().reshape(-1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * self.u0) / (1 - ab).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1) if self.learn_sigma else eps


def test_dds_fixture(small):
    model, diffusion, dds = small
    for case in dds["cases"]:
        den = DiffusionDenoiser(model, diffusion, case["sigma"])
        assert den.t_star == case["t_star"]
        with torch.no_grad():
            x0 = den(case["x_noisy"])
        assert x0.dtype == torch.float32
        assert torch.allclose(x0, case["x0"], atol=1e-4, rtol=0)


def test_t_star_table():
    sched = torch.load(FIX / "unet" / "schedules.pt", weights_only=True)
    assert [t_star_for_sigma(sched["cosine_4000"], s) for s in (.25, .5, 1.0)] == [1158, 1984, 2809]
    assert [t_star_for_sigma(sched["linear_1000"], s) for s in (.25, .5, 1.0)] == [145, 259, 396]
    with pytest.raises(MsrsError):
        t_star_for_sigma(sched["linear_1000"], 1000.0)


@pytest.mark.parametrize("schedule,T,rescale,steps,pad_to", [
    ("cosine", 4000, True, 1, None), ("linear", 1000, False, 1, 24), ("cosine", 1000, True, 4, None)])
def test_oracle_recovers_clean_image(schedule, T, rescale, steps, pad_to):
    with torch.device("meta"):
        _, diffusion = create_model_and_diffusion(diffusion_steps=T, noise_schedule=schedule, rescale_timesteps=rescale)
    g = torch.Generator().manual_seed(0)
    x = 0.05 + 0.9 * torch.rand(2, 3, 16, 16, generator=g)
    sigma = 0.5
    x_noisy = x + sigma * torch.randn(x.shape, generator=g)
    u0 = 2 * x - 1
    if pad_to:  # the oracle sees the padded clean image
        u0 = nn.functional.pad(u0, (4, 4, 4, 4), mode="reflect")
    den = DiffusionDenoiser(OracleEps(u0, diffusion), diffusion, sigma, num_t_steps=steps, pad_to=pad_to)
    ac = diffusion.alphas_cumprod.copy()
    assert torch.allclose(den(x_noisy), x, atol=1e-5, rtol=0)
    assert np.array_equal(ac, diffusion.alphas_cumprod)  # the schedule is never rewritten (DensePure pitfall)


def test_training_loss_is_zero_for_oracle():
    with torch.device("meta"):
        _, diffusion = create_model_and_diffusion(diffusion_steps=100, noise_schedule="cosine")
    x0 = torch.rand(3, 3, 8, 8) * 2 - 1
    noise = torch.randn(3, 3, 8, 8)
    loss = diffusion.training_loss(OracleEps(x0, diffusion), x0, torch.tensor([0, 50, 99]), noise)
    assert loss.shape == (3,) and loss.max() < 1e-8


def test_densepure_one_step_equals_one_shot(small):
    model, diffusion, dds = small
    case = dds["cases"][0]
    with torch.no_grad():
        one_shot = DiffusionDenoiser(model, diffusion, case["sigma"])(case["x_noisy"])
        one_step = DiffusionDenoiser(model, diffusion, case["sigma"])
        one_step.reverse = diffusion.respaced([one_step.t_star])   # force the reverse-process path with S = 1
        assert torch.allclose(one_step(case["x_noisy"]), one_shot, atol=1e-5, rtol=0)


def test_densepure_multistep_deterministic(small):
    model, diffusion, dds = small
    x = dds["cases"][0]["x_noisy"]
    den = DiffusionDenoiser(model, diffusion, 0.25, num_t_steps=3)
    assert den.t_grid == [386, 772, 1158]
    with torch.no_grad():
        den.set_example(0, 5)
        a1, a2 = den(x[:1]), den(x[1:])
        den.set_example(0, 5)
        b1, b2 = den(x[:1]), den(x[1:])
        den.set_example(0, 6)
        c1 = den(x[:1])
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    assert a1.min() >= 0 and a1.max() <= 1


def test_majority_vote_ties_go_to_earliest_seed():
    labels = torch.tensor([[2, 1, 0, 3],
                           [1, 1, 2, 4],
                           [1, 2, 2, 5]])      # [K=3 seeds, B=4]
    assert majority_vote(labels, 6).tolist() == [1, 1, 2, 3]
    assert majority_vote(torch.tensor([[4, 0], [0, 4]]), 5).tolist() == [4, 0]


class FakeStochasticDenoiser(nn.Module):
    """Outputs one of three constant images, chosen by its generator: exposes the voting logic."""
    sigma, stochastic = 0.5, True

    def reverse_generator(self, device, k):
        return torch.Generator(device).manual_seed(k)

    def forward(self, x, generator=None):
        r = torch.randint(0, 3, (x.shape[0],), generator=generator)
        return r.float().reshape(-1, 1, 1, 1).expand_as(x)


def test_denoise_then_classify_votes():
    classifier = lambda z: nn.functional.one_hot(z[:, 0, 0, 0].long(), 4).float()  # noqa: E731
    den = FakeStochasticDenoiser()
    model = DenoiseThenClassify(den, classifier, 0.5, reverse_seeds=3)
    x = torch.zeros(64, 1, 2, 2)
    out = model(x)
    runs = torch.stack([classifier(den(x, den.reverse_generator("cpu", k))).argmax(1) for k in range(3)])
    assert torch.equal(out.argmax(1), majority_vote(runs, 4))
    assert torch.equal(out.sum(1), torch.ones(64))
    direct = DenoiseThenClassify(None, classifier, 0.5)
    assert torch.equal(direct(torch.full((2, 1, 2, 2), 3.0)).argmax(1), torch.tensor([3, 3]))


def test_denoise_then_classify_densepure_seeds(small):
    model, diffusion, dds = small
    classifier = lambda z: z.flatten(1)[:, :10]  # noqa: E731
    den = DiffusionDenoiser(model, diffusion, 0.25, num_t_steps=2)
    dtc = DenoiseThenClassify(den, classifier, 0.25, reverse_seeds=3)
    x = dds["cases"][0]["x_noisy"]
    with torch.no_grad():
        dtc.set_example(0, 1)
        a = dtc(x)
        dtc.set_example(0, 1)
        b = dtc(x)
    assert torch.equal(a, b) and a.shape == (2, 10)
    with pytest.raises(MsrsError, match="stochastic"):
        DenoiseThenClassify(DiffusionDenoiser(model, diffusion, 0.25), classifier, 0.25, reverse_seeds=3)


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def small_state():
    return torch.load(FIX / "unet" / "improved_small_state.pt", weights_only=True)


def test_load_raw_and_own_format(tmp_path, small, small_state):
    raw = str(tmp_path / "raw.pt")
    torch.save(small_state, raw)
    with pytest.raises(MsrsError, match="--denoiser_config"):
        load_diffusion(raw)
    model, diffusion, kw = load_diffusion(raw, "improved-small")
    assert kw["diffusion_steps"] == 4000 and diffusion.rescale_timesteps
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"kwargs": NAMED_CONFIGS["improved-small"]}))
    den = load_denoiser(raw, str(cfg), sigma=0.5)
    case = small[2]["cases"][1]
    with torch.no_grad():
        assert torch.allclose(den(case["x_noisy"]), case["x0"], atol=1e-4, rtol=0)
    own = str(tmp_path / "own.pt")
    save_diffusion(model, kw, own)
    assert isinstance(load_denoiser(own, sigma=0.25), DiffusionDenoiser)
    assert load_denoiser("none") is None
    with pytest.raises(MsrsError, match="zoo model 'no_such_model'"):
        load_denoiser("zoo:no_such_model", sigma=0.25)


def test_dncnn_files_go_to_load_dncnn(tmp_path, monkeypatch):
    from core.runs import loaders
    calls = []
    monkeypatch.setattr(loaders, "load_dncnn", lambda obj, path: calls.append((obj["arch"], path)) or nn.Identity())
    path = str(tmp_path / "dncnn.pth.tar")
    torch.save({"arch": "cifar_dncnn", "state_dict": {"w": torch.zeros(1)}}, path)
    assert isinstance(load_denoiser(path, sigma=0.25), nn.Identity)
    assert calls == [("cifar_dncnn", path)]
    # one denoiser for every sigma: no sigma needed, and the file is read once
    reads = []
    real_load = loaders.load_checkpoint
    monkeypatch.setattr(loaders, "load_checkpoint", lambda p, trust=False: reads.append(p) or real_load(p, trust=trust))
    assert isinstance(load_denoiser(path), nn.Identity)
    assert reads == [path]
    with pytest.raises(MsrsError, match="needs the smoothing sigma"):
        load_denoiser("zoo:digits_ddpm")


def test_missing_model_files_say_the_same(tmp_path):
    """A missing classifier or denoiser file is refused before anything loads, with load_checkpoint's message."""
    import argparse

    from core.runs.loaders import checkpoint_hashes
    from models.checkpoint import load_checkpoint
    gone = str(tmp_path / "gone.pt")
    with pytest.raises(MsrsError) as direct:
        load_checkpoint(gone)
    for clf, den, what in ((gone, "none", "checkpoint"), ("zoo:digits_cnn", gone, "denoiser checkpoint")):
        with pytest.raises(MsrsError) as e:
            checkpoint_hashes(argparse.Namespace(classifier=clf, denoiser=den))
        assert str(e.value) == str(direct.value).replace("checkpoint", what, 1)


@pytest.mark.parametrize("corrupt,expect", [
    ("rename", "missing key 'input_blocks.1.0.in_layers.0.weight'"),
    ("extra", "unexpected key 'input_blocks.99.weight'"),
    ("shape", "shape mismatch at 'out.2.bias'"),
    ("truncate", "truncated"),
    ("missing", "not found")])
def test_bad_checkpoints(tmp_path, small_state, corrupt, expect):
    sd = dict(small_state)
    path = str(tmp_path / f"{corrupt}.pt")
    if corrupt == "rename":
        sd["input_blocks.1.0.in_layers.0.weightx"] = sd.pop("input_blocks.1.0.in_layers.0.weight")
    elif corrupt == "extra":
        sd["input_blocks.99.weight"] = torch.zeros(1)
    elif corrupt == "shape":
        sd["out.2.bias"] = torch.zeros(3)
    if corrupt != "missing":
        torch.save(sd, path)
    if corrupt == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(MsrsError) as err:
        load_denoiser(path, "improved-small", sigma=0.25)
    msg = str(err.value)
    assert path in msg and expect in msg and "\n" not in msg


class Custom:
    """Not on the allow-list: weights_only unpickling must refuse it."""


def test_untrusted_pickle_refused(tmp_path, small_state):
    path = str(tmp_path / "evil.pt")
    torch.save({"kind": "diffusion", "arch": "openai_unet", "args": NAMED_CONFIGS["improved-small"],
                "state_dict": small_state, "note": Custom()}, path)
    with pytest.raises(MsrsError, match="trust_checkpoint"):
        load_diffusion(path)
    with pytest.warns(UserWarning, match="trust_checkpoint"):
        model, _, _ = load_diffusion(path, trust=True)
    assert torch.equal(model.out[2].bias.detach(), small_state["out.2.bias"])
