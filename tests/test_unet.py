"""The OpenAI-layout UNet and the diffusion schedules against tests/fixtures/unet (reference outputs)."""
import json
from pathlib import Path

import pytest
import torch

from core.errors import MsrsError
from models.diffusion import NAMED_CONFIGS, create_model_and_diffusion, load_diffusion, save_diffusion

FIX = Path(__file__).resolve().parent / "fixtures" / "unet"


def small_model():
    cfg = json.loads((FIX / "improved_small_config.json").read_text())
    model, diffusion = create_model_and_diffusion(**cfg["kwargs"])
    return model, diffusion, cfg


def test_fixture_forward_matches_reference():
    model, _, cfg = small_model()
    sd = torch.load(FIX / "improved_small_state.pt", weights_only=True)
    io = torch.load(FIX / "improved_small_io.pt", weights_only=True)
    assert list(model.state_dict()) == list(sd)  # same keys, same order
    model.load_state_dict(sd, strict=True)
    model.eval()
    assert sum(v.numel() for v in sd.values()) == cfg["total_params"]
    with torch.no_grad():
        out = model(io["x"], io["t"])
        out_cl = model.to(memory_format=torch.channels_last)(io["x"].to(memory_format=torch.channels_last), io["t"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(io["x"], io["t"])
    assert out.shape == io["out"].shape
    assert torch.allclose(out, io["out"], atol=1e-4, rtol=0)
    assert torch.allclose(out_cl, io["out"], atol=1e-4, rtol=0)
    assert (out_bf16.float() - io["out"]).abs().max() < 5e-2


@pytest.mark.parametrize("name,T,key", [("cosine", 4000, "cosine_4000"), ("linear", 1000, "linear_1000")])
def test_schedules(name, T, key):
    ref = torch.load(FIX / "schedules.pt", weights_only=True)[key]
    with torch.device("meta"):
        _, diffusion = create_model_and_diffusion(diffusion_steps=T, noise_schedule=name)
    assert diffusion.alphas_cumprod.dtype.name == "float64"
    assert torch.allclose(torch.from_numpy(diffusion.alphas_cumprod), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("manifest", ["manifest_improved_cifar10", "manifest_guided_256_uncond"])
def test_real_config_layout(manifest):
    man = json.loads((FIX / f"{manifest}.json").read_text())
    with torch.device("meta"):
        model, _ = create_model_and_diffusion(**man["kwargs"])
    sd = model.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == man["state_dict"]
    assert sum(v.numel() for v in sd.values()) == man["total_params"]
    assert len(sd) == man["num_keys"]
    if "keys_fp16_after_convert_to_fp16" in man:
        model.convert_to_fp16()
        fp16 = {k for k, v in model.state_dict().items() if v.dtype == torch.float16}
        assert fp16 == set(man["keys_fp16_after_convert_to_fp16"])


def test_named_configs_match_manifests():
    for name, manifest in [("improved-cifar10-uncond", "manifest_improved_cifar10"),
                           ("guided-256-uncond", "manifest_guided_256_uncond")]:
        assert NAMED_CONFIGS[name] == json.loads((FIX / f"{manifest}.json").read_text())["kwargs"]


def test_fp16_forward_runs():
    model, _, _ = small_model()
    model.eval().convert_to_fp16()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([100.0])
    with torch.no_grad():
        out = model(x, t)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_class_cond_and_new_attention_order():
    model, _ = create_model_and_diffusion(image_size=16, num_channels=32, num_res_blocks=1, class_cond=True,
                                          attention_resolutions="8", num_head_channels=32, resblock_updown=True,
                                          use_new_attention_order=True, learn_sigma=True)
    assert "label_emb.weight" in model.state_dict()
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), y=torch.tensor([3, 4]))
    assert out.shape == (2, 6, 16, 16)


def test_bad_kwargs():
    with pytest.raises(MsrsError, match="unknown diffusion config key"):
        create_model_and_diffusion(image_size=32, num_chanels=64)
    with pytest.raises(MsrsError, match="timestep_respacing"):
        create_model_and_diffusion(image_size=32, timestep_respacing="250")
    with pytest.raises(MsrsError, match="channel_mult"):
        create_model_and_diffusion(image_size=48)


def test_digits_ddpm_is_cheap():
    from torch.utils.flop_counter import FlopCounterMode
    model, diffusion = create_model_and_diffusion(**NAMED_CONFIGS["digits-ddpm"])
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = model(torch.randn(1, 3, 16, 16), torch.tensor([10.0]))
    assert out.shape == (1, 3, 16, 16)
    assert fc.get_total_flops() < 32e6  # 2 FLOP per MAC: ~29.7 MFLOP = ~14.8 MMAC per sample


def test_save_load_roundtrip(tmp_path):
    kwargs = NAMED_CONFIGS["digits-ddpm"]
    model, _ = create_model_and_diffusion(**kwargs)
    path = str(tmp_path / "d.pt")
    save_diffusion(model, kwargs, path, extra={"step": 7})
    model2, diffusion2, kw2 = load_diffusion(path)
    assert kw2["image_size"] == 16 and diffusion2.num_timesteps == kwargs["diffusion_steps"]
    for (k, a), (k2, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
