"""The protocols' numerics against transcriptions of the reference code on the same weights and noise:
DDS's q_sample denoising (item 10), DensePure's schedule (item 11), the classifier resize antialias of
DDS / FT-CADIS (item 5), FT-CADIS's [-1, 1] input (item 6), the --max order (item 13), and the loaders
of the seeds' classifier files (HF ViT folders, timm hub folders, FT-CADIS fine-tunes)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.denoise import DiffusionDenoiser, densepure_t, q_sample_sigma, t_star_for_sigma
from core.errors import MsrsError
from core.runs.files import select_indices
from core.smoothing import Smooth
from models.classifiers import configure_preprocess, create_model, load_classifier
from models.diffusion import create_model_and_diffusion

FIX = Path(__file__).resolve().parent / "fixtures"


def fixture_unet(**diffusion):
    """The vendored small improved-diffusion UNet (random weights) with a chosen diffusion."""
    kwargs = json.loads((FIX / "unet" / "improved_small_config.json").read_text())
    kwargs = kwargs.get("kwargs", kwargs)
    model, d = create_model_and_diffusion(**{**kwargs, **diffusion})
    model.load_state_dict(torch.load(FIX / "unet" / "improved_small_state.pt", weights_only=True))
    return model.eval(), d


COSINE = dict(diffusion_steps=4000, noise_schedule="cosine", rescale_timesteps=True)
LINEAR = dict(diffusion_steps=1000, noise_schedule="linear", rescale_timesteps=False)


def scaled_t(d, t):
    """improved/guided-diffusion _scale_timesteps: t·1000/num_timesteps when rescaling."""
    t = torch.as_tensor(t)
    return t.float() * (1000.0 / d.num_timesteps) if d.rescale_timesteps else t


def images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


# ---- item 10: DDS's q_sample ---------------------------------------------------------------------

def dds_denoise(model, d, x, t, eps):
    """ethz-spylab cifar10/DRM.py forward/denoise: x_in = 2x − 1; x_t = q_sample(x_in, t, eps);
    p_sample(clip_denoised=True)['pred_xstart'] (learned sigma: the first 3 channels are eps)."""
    ab = float(d.alphas_cumprod[t])
    x_t = math.sqrt(ab) * (2 * x - 1) + math.sqrt(1 - ab) * eps
    out = model(x_t, scaled_t(d, [t] * len(x)))[:, :3]
    x0 = math.sqrt(1 / ab) * x_t - math.sqrt(1 / ab - 1) * out
    return x0.clamp(-1, 1)


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_q_sample_denoiser_is_dds(sigma):
    model, d = fixture_unet(**COSINE)
    den = DiffusionDenoiser(model, d, sigma, noise="q_sample").eval()
    t = t_star_for_sigma(d.alphas_cumprod, sigma)
    assert den.noise_sigma == pytest.approx(q_sample_sigma(d.alphas_cumprod, t)) and den.noise_sigma > sigma
    x, eps = images()
    with torch.no_grad():
        ours = den(x + den.noise_sigma * eps) * 2 - 1            # Smooth draws x + noise_sigma·ε
        ref = dds_denoise(model, d, x, t, eps)
        mdds = DiffusionDenoiser(model, d, sigma).eval()(x + sigma * eps) * 2 - 1
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    assert (mdds - ref).abs().max() > 1e-4                        # MDDS's exact-σ construction is not DDS's


def test_smooth_draws_noise_sigma_and_refuses_less():
    seen = []

    def base(x):
        seen.append(x.clone())
        return torch.zeros(len(x), 2)
    x = torch.zeros(3, 8, 8)
    Smooth(base, 2, 0.25, noise_sigma=0.3).sample_counts(x, 4000, 4000, torch.Generator().manual_seed(0))
    assert float(torch.cat(seen).std()) == pytest.approx(0.3, rel=0.01)
    with pytest.raises(ValueError, match="over-certify"):
        Smooth(base, 2, 0.25, noise_sigma=0.2)


# ---- item 11: DensePure ----------------------------------------------------------------------------

def densepure_sample(model, d, x_noisy, sigma, S, schedule, T, generator):
    """DensePure runners (image_editing_sample, --use_t_steps) on (x − 0.5)·2, with the first p_sample call
    rewriting the schedule: improved_diffusion (cosine) from the continuous ᾱ, guided_diffusion from
    alphas_cumprod_origin; then S steps t = S−1..0 at real_t = indices[i], no noise at t = 0."""
    scale = (1 / (1 + (sigma * 2) ** 2)) ** 0.5
    x = scale * ((x_noisy - 0.5) * 2)
    if schedule == "cosine":
        s2 = sigma * 2
        t = T * (1 - (2 * 1.008 * math.asin(math.sin(math.pi / (2 * 1.008)) / (1 + s2 ** 2) ** 0.5)) / math.pi)
    else:
        r = np.sqrt(1.0 / d.alphas_cumprod - 1)
        t = None
        for k in range(len(r) - 1):
            if r[k] < 2 * sigma <= r[k + 1]:
                t = k + 1 if 2 * sigma - r[k] > r[k + 1] - 2 * sigma else k
                break
    inter = t / S
    idx = [round(t - i * inter) for i in range(S)]
    pts = ([0] + idx[::-1])
    if schedule == "cosine":
        ab = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - ab(pts[i + 1] / T) / ab(pts[i] / T), 0.999) for i in range(S)])
    else:
        ac0 = d.alphas_cumprod
        betas = np.array([min(1 - ac0[pts[i + 1]] / ac0[pts[i]], 0.999) for i in range(S)])
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    c1 = betas * np.sqrt(ac_prev) / (1 - ac)
    c2 = (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac)
    for i in range(S):
        tt, real_t = S - 1 - i, idx[i]
        out = model(x, scaled_t(d, [real_t] * len(x)))
        eps, v = out[:, :3], out[:, 3:]
        frac = (v + 1) / 2
        logvar = frac * math.log(betas[tt]) + (1 - frac) * post_logvar[tt]
        x0 = (math.sqrt(1 / ac[tt]) * x - math.sqrt(1 / ac[tt] - 1) * eps).clamp(-1, 1)
        mean = c1[tt] * x0 + c2[tt] * x
        if tt != 0:
            x = mean + torch.exp(0.5 * logvar) * torch.randn(x.shape, generator=generator)
        else:
            x = mean
    return x, t


@pytest.mark.parametrize("schedule,S", [("cosine", 2), ("cosine", 5), ("linear", 3)])
def test_densepure_denoiser_is_densepure(schedule, S):
    model, d = fixture_unet(**(COSINE if schedule == "cosine" else LINEAR))
    sigma = 0.25
    den = DiffusionDenoiser(model, d, sigma, num_t_steps=S, noise="densepure", t_rule="densepure",
                            respacing="densepure", schedule=schedule).eval()
    x, eps = images(seed=1)
    noisy = x + sigma * eps
    with torch.no_grad():
        ours = den(noisy, generator=torch.Generator().manual_seed(7)) * 2 - 1
        ref, t_ref = densepure_sample(model, d, noisy, sigma, S, schedule, d.num_timesteps,
                                      torch.Generator().manual_seed(7))
        plain = DiffusionDenoiser(model, d, sigma, num_t_steps=S).eval()(noisy, generator=torch.Generator().manual_seed(7))
    assert den.t_float == pytest.approx(t_ref)
    torch.testing.assert_close(ours, ref, atol=5e-5, rtol=0)
    assert (plain * 2 - 1 - ref).abs().max() > 1e-4                # the generic schedule is not DensePure's


def test_densepure_one_step():
    """--use_one_step: p_sample at round(t) on the diffusion's own schedule, x_t = the exact scale × u."""
    model, d = fixture_unet(**COSINE)
    sigma = 0.5
    den = DiffusionDenoiser(model, d, sigma, noise="densepure", t_rule="densepure", schedule="cosine").eval()
    t = round(densepure_t(d.alphas_cumprod, sigma, "cosine", 4000))
    x, eps = images(seed=2)
    noisy = x + sigma * eps
    u = (noisy - 0.5) * 2 / math.sqrt(1 + 4 * sigma ** 2)
    ab = float(d.alphas_cumprod[t])
    with torch.no_grad():
        out = model(u, scaled_t(d, [t] * 2))[:, :3]
        ref = (math.sqrt(1 / ab) * u - math.sqrt(1 / ab - 1) * out).clamp(-1, 1)
        torch.testing.assert_close(den(noisy) * 2 - 1, ref, atol=2e-5, rtol=0)
    assert den.t_star == t and den.t_float != t


def test_denoiser_choices_are_checked():
    model, d = fixture_unet(**COSINE)
    with pytest.raises(MsrsError, match="valid: add, q_sample, densepure"):
        DiffusionDenoiser(model, d, 0.25, noise="exact")
    with pytest.raises(MsrsError, match="noise_schedule"):
        DiffusionDenoiser(model, d, 0.25, t_rule="densepure")
    with pytest.raises(MsrsError, match="one-shot"):
        DiffusionDenoiser(model, d, 0.25, num_t_steps=2, noise="q_sample")


# ---- items 5, 6: the classifier's resize and normalization ---------------------------------------

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=64, patch_size=16, num_labels=10)
    m = transformers.ViTForImageClassification(cfg).eval()
    d = tmp_path_factory.mktemp("hf") / "vit"
    m.save_pretrained(d)
    return d, m


def test_dds_classifier_input(hf_dir):
    """DDS DRM.forward: interpolate(x̂0 in [-1,1], 224, bicubic, antialias=True) into the HF ViT (here 64): our
    loaded HF folder with the dds protocol's antialias gives the same logits; MDDS's plain bicubic differs."""
    d, hf = hf_dir
    clf = load_classifier(str(d), num_classes=10)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(pixel_values=F.interpolate(2 * x - 1, (64, 64), mode="bicubic", antialias=True)).logits
        plain = clf(x)
        configure_preprocess(clf, antialias=True)
        torch.testing.assert_close(clf(x), ref, atol=1e-5, rtol=0)
    assert (plain - ref).abs().max() > 1e-4


def ftcadis_lora_file(net, path, r=4):
    """FT-CADIS ImageNet layout: classifier.lora_vit.<timm keys, attn.qkv.qkv.*, linear_{a,b}_{q,v}.weight>."""
    sd, g = {}, torch.Generator().manual_seed(5)
    for k, v in net.state_dict().items():
        sd["classifier.lora_vit." + k.replace(".attn.qkv.", ".attn.qkv.qkv.")] = v
    D = net.blocks[0].attn.qkv.in_features
    for i in range(len(net.blocks)):
        for n, shape in (("linear_a_q", (r, D)), ("linear_b_q", (D, r)), ("linear_a_v", (r, D)), ("linear_b_v", (D, r))):
            sd[f"classifier.lora_vit.blocks.{i}.attn.qkv.{n}.weight"] = 0.1 * torch.randn(shape, generator=g)
    torch.save({"epoch": 10, "arch": "imagenet_vit_base", "state_dict": sd, "optimizer": {}}, path)


def test_ftcadis_imagenet_input_is_half(tmp_path):
    """FT-CADIS architecture.py:185-194: interpolate(x̂0, 384, bicubic, antialias=True) straight into the timm
    model: mean = std = 0.5 whatever its pretrained_cfg says (CLIP stats for vit_base_patch16_clip_384)."""
    torch.manual_seed(1)
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    model = create_model("timm:test_vit", num_classes=7, mean=clip_mean, std=clip_std).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.net(F.interpolate(2 * x - 1, (160, 160), mode="bicubic", antialias=True))
        own = model(x)
        configure_preprocess(model, antialias=True, normalization="half")
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)
    assert (own - ref).abs().max() > 1e-3
    # an FT-CADIS fine-tune file is read with that input whatever protocol runs it
    ftcadis_lora_file(model.net, tmp_path / "ft.pth.tar")
    loaded = load_classifier(str(tmp_path / "ft.pth.tar"), arch="timm:test_vit", num_classes=7)
    assert loaded[0].mean.flatten().tolist() == [0.5] * 3 and loaded[0].std.flatten().tolist() == [0.5] * 3


def test_hub_folders_and_safetensors(tmp_path, hf_dir):
    """The seeds' files as they are published: an HF folder (config.json + model.safetensors), a timm hub
    folder (config.json naming the architecture + model.safetensors), a bare .safetensors with --arch."""
    from safetensors.torch import save_file
    d, hf = hf_dir
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_classifier(str(d))(x), hf(pixel_values=2 * x - 1).logits, atol=1e-5)
    net = create_model("timm:test_vit", num_classes=5).eval()
    hub = tmp_path / "timm_hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in net.net.state_dict().items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"architecture": "test_vit", "num_classes": 5}))
    y = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(load_classifier(str(hub))(y), net(y))
        torch.testing.assert_close(load_classifier(str(hub / "model.safetensors"), arch="timm:test_vit")(y), net(y))


# ---- item 13: --max order ----------------------------------------------------------------------------

def locuslab_loop(length, start, skip, max_):
    """locuslab code/certify.py:41-46 (also MDDS predict_ddpm.py, DensePure, Salman), with MDDS's --start."""
    out = []
    for i in range(start, length):
        if i % skip != 0:
            continue
        if i == max_:
            break
        out.append(i)
    return out


def mdds_certify_loop(length, start, skip, max_):
    """smoothing-multiscale certify.py:123-129 (and predict_mdds.py)."""
    out = []
    for i in range(start, length):
        if i == max_:
            break
        if i % skip != 0:
            continue
        out.append(i)
    return out


@pytest.mark.parametrize("start,skip,max_", [(0, 1, -1), (0, 3, 10), (0, 5, 10), (2, 4, 7), (7, 2, 3), (0, 20, 500)])
def test_max_order_is_the_references(start, skip, max_):
    assert select_indices(100, start, skip, max_, "skip_first") == locuslab_loop(100, start, skip, max_)
    assert select_indices(100, start, skip, max_, "max_first") == mdds_certify_loop(100, start, skip, max_)
    base = list(range(50, 150))
    assert select_indices(0, start, skip, max_, "skip_first", base) == [base[i] for i in locuslab_loop(100, start,
                                                                                                       skip, max_)]
