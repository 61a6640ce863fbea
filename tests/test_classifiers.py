"""Classifier registry, architectures, foreign-layout remaps and checkpoint loading (CPU, tiny models)."""
from __future__ import annotations

import argparse
import os

import pytest
import torch
import torch.nn.functional as F

from core.errors import MsrsError
from models.checkpoint import load_checkpoint
from models.classifiers import (
    CLIP_HEAD_KEYS, DEEPSPEED_FILE, LogitMask, PixelClassifier, Preprocess, create_model,
    init_from_openai_clip, list_models, load_classifier, remap_cohen_state_dict,
    remap_mdds_clip_state_dict, save_classifier, to_mdds_clip_state_dict,
)
from models.dncnn import DnCNN, create_dncnn, is_dncnn_checkpoint, load_dncnn, save_dncnn

torch.set_num_threads(1)


def _randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Fill every float tensor (params and BN stats) with random values so equalities are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_((torch.rand(v.shape, generator=g) - 0.5) * scale + (1.0 if "running_var" in k else 0.0))
    return model


def _mdds_block_keys(i: int) -> list[str]:
    p = f"transformer.resblocks.{i}."
    return [p + s for s in ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                            "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                            "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")]


def _mdds_keys(depth: int) -> set[str]:
    """The FT-CLIP / MDDS CLIP_B16 key list of ALGORITHMS §3e."""
    keys = {"conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias",
            "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias",
            "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for i in range(depth):
        keys.update(_mdds_block_keys(i))
    return keys


def _mdds_reference_forward(sd: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """FT-CLIP's VisualTransformer forward, written out from the MDDS keys (x already resized/normalized)."""
    D = sd["conv1.weight"].shape[0]
    ln = lambda t, n: F.layer_norm(t, (D,), sd[n + ".weight"], sd[n + ".bias"], eps=1e-5)  # noqa: E731
    h = F.conv2d(x, sd["conv1.weight"], stride=sd["conv1.weight"].shape[-1]).flatten(2).transpose(1, 2)
    h = torch.cat([sd["class_embedding"].expand(h.shape[0], 1, D), h], dim=1) + sd["positional_embedding"]
    h = ln(h, "ln_pre").transpose(0, 1)                                   # LND, as nn.MultiheadAttention
    i = 0
    while f"transformer.resblocks.{i}.ln_1.weight" in sd:
        p = f"transformer.resblocks.{i}."
        a = ln(h, p + "ln_1")
        a = F.multi_head_attention_forward(
            a, a, a, D, heads, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], None, None, False, 0.0,
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"], training=False, need_weights=False)[0]
        h = h + a
        m = F.linear(ln(h, p + "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        m = m * torch.sigmoid(1.702 * m)                                  # QuickGELU
        h = h + F.linear(m, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
        i += 1
    h = ln(h.transpose(0, 1)[:, 1:], "fc_norm")                          # norm each patch token, then mean
    return F.linear(h.mean(1), sd["head.weight"], sd["head.bias"])


# ---- registry and preprocessing ------------------------------------------------------------------

def test_registry_and_unknown_names():
    names = list_models()
    for n in ("digits_cnn", "CLIP_B16", "CLIP_B16_tiny", "cifar_resnet20", "cifar_resnet110", "resnet50"):
        assert n in names
    with pytest.raises(MsrsError, match="valid names: .*CLIP_B16"):
        create_model("no_such_model")
    with pytest.raises(MsrsError, match="timm"):
        create_model("timm:no_such_model")
    with pytest.raises(MsrsError, match="torchvision"):
        create_model("tv:no_such_model")


def test_preprocess_resize_and_normalize():
    pre = Preprocess(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(2, 3, 4, 4)
    want = (F.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False) - 0.5) / 0.25
    torch.testing.assert_close(pre(x), want)
    x8 = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(pre(x8), (x8 - 0.5) / 0.25)            # no resize at the target size
    assert list(Preprocess(8, (0.5,), (0.5,)).state_dict()) == []      # no tensors in checkpoints
    assert Preprocess([5], (0.5,), (0.5,)).size == (5, 5)


def test_digits_cnn_shape_and_cost():
    m = create_model("digits_cnn", num_classes=10).eval()
    assert m(torch.rand(4, 3, 16, 16)).shape == (4, 10)
    assert m(torch.rand(2, 3, 8, 8)).shape == (2, 10)                  # resized to 16 by its own preprocess
    macs = []

    def hook(mod, _inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            macs.append(out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])
        elif isinstance(mod, torch.nn.Linear):
            macs.append(out.numel() * mod.in_features)
    for mod in m.modules():
        mod.register_forward_hook(hook)
    m(torch.rand(1, 3, 16, 16))
    assert 2 * sum(macs) < 2e6


def test_timm_and_torchvision_generic():
    m = create_model("timm:test_vit", num_classes=7).eval()
    assert m.preprocess.size == (160, 160) and m(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    t = create_model("tv:mobilenet_v3_small", num_classes=5).eval()
    assert t.preprocess.size == (224, 224)
    torch.testing.assert_close(t.preprocess.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_logit_mask():
    """MDDS LogitMaskingLayer: outputs[:, mask], the subset's logits in the mask's order."""
    base = torch.nn.Linear(4, 6)
    m = LogitMask(base, [1, 4])
    x = torch.randn(3, 4)
    out, raw = m(x), base(x)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, raw[:, [1, 4]])
    assert list(m.state_dict()) == ["model.weight", "model.bias"]     # the subset is not a checkpoint key


# ---- CLIP_B16 (MDDS / FT-CLIP) ---------------------------------------------------------------------

def test_clip_b16_meta_keys_remap_one_to_one():
    with torch.device("meta"):
        m = create_model("CLIP_B16", num_classes=10)
    net_sd = m.net.state_dict()
    assert sum(v.numel() for v in m.parameters()) > 85e6
    assert not m.net.patch_embed.proj.weight.requires_grad              # conv1 frozen
    assert all(k.startswith("1.") for k in m.state_dict())
    mdds = to_mdds_clip_state_dict(m.state_dict())
    assert set(mdds) == _mdds_keys(12)
    assert tuple(mdds["positional_embedding"].shape) == (197, 768)
    assert tuple(mdds["class_embedding"].shape) == (768,)
    assert tuple(mdds["transformer.resblocks.11.attn.in_proj_weight"].shape) == (2304, 768)
    back = remap_mdds_clip_state_dict(mdds)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in net_sd.items()}
    # one-to-one: every MDDS key except the dropped patch_embed maps to a distinct model key
    assert len(back) == len(mdds) - 2 == len(net_sd)
    with pytest.raises(MsrsError, match="unexpected key 'transformer.resblocks.0.attn.bogus'"):
        remap_mdds_clip_state_dict({**mdds, "transformer.resblocks.0.attn.bogus": mdds["head.bias"]}, "f.pt")


def test_clip_tiny_matches_ft_clip_forward():
    m = _randomize(create_model("CLIP_B16_tiny", num_classes=10), seed=1, scale=1.0).eval()
    mdds = to_mdds_clip_state_dict(m.state_dict())
    assert set(mdds) == _mdds_keys(2)
    back = remap_mdds_clip_state_dict(mdds)
    for k, v in m.net.state_dict().items():
        assert torch.equal(back[k], v), k
    x = torch.rand(3, 3, 16, 16)                                       # resized to 32 by the model
    x_in = (F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False) - 0.5) / 0.5
    with torch.no_grad():
        # exact up to float reassociation; QuickGELU vs GELU or timm's mean-then-norm would differ by >1e-3
        torch.testing.assert_close(m(x), _mdds_reference_forward(mdds, x_in, heads=2), rtol=1e-5, atol=1e-5)


def _tiny_mdds_pair():
    a = _randomize(create_model("CLIP_B16_tiny", num_classes=10), seed=2)
    b = _randomize(create_model("CLIP_B16_tiny", num_classes=10), seed=3)
    return a.eval(), b.eval(), to_mdds_clip_state_dict(a.state_dict()), to_mdds_clip_state_dict(b.state_dict())


def test_deepspeed_file_roundtrip(tmp_path):
    mod, ema, sd_mod, sd_ema = _tiny_mdds_pair()
    d = tmp_path / "checkpoint-best"
    d.mkdir()
    f = d / DEEPSPEED_FILE
    torch.save({"module": sd_mod, "model_ema": sd_ema, "epoch": 3,
                "args": argparse.Namespace(model="CLIP_B16_tiny", nb_classes=10, lr=6e-4)}, f)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        got = load_classifier(str(f), arch="CLIP_B16_tiny", num_classes=10)
        assert not got.training
        torch.testing.assert_close(got(x), ema(x))                     # model_ema by default (pitfall 12)
        for k, v in ema.state_dict().items():
            assert torch.equal(got.state_dict()[k], v), k
        torch.testing.assert_close(load_classifier(str(d))(x), ema(x))  # directory + arch from args.model
        torch.testing.assert_close(load_classifier(str(f), arch="CLIP_B16_tiny", ema=False)(x), mod(x))
    with pytest.raises(MsrsError, match="10 classes but 1000"):
        load_classifier(str(f), arch="CLIP_B16_tiny", num_classes=1000)

    g = tmp_path / "no_ema.pt"
    torch.save({"module": sd_mod, "epoch": 3}, g)
    with pytest.warns(UserWarning, match="no 'model_ema'"):
        m2 = load_classifier(str(g), arch="CLIP_B16_tiny")
    with torch.no_grad():
        torch.testing.assert_close(m2(x), mod(x))


def test_openai_clip_init_only():
    _, _, sd, _ = _tiny_mdds_pair()
    vis = {k: v for k, v in sd.items()
           if not k.startswith(("fc_norm.", "head.", "patch_embed."))}
    vis.update({"ln_post.weight": torch.ones(32), "ln_post.bias": torch.zeros(32), "proj": torch.randn(32, 16)})
    openai = {"visual." + k: v for k, v in vis.items()}
    openai.update({"token_embedding.weight": torch.randn(5, 16), "logit_scale": torch.tensor(1.0),
                   "transformer.resblocks.0.ln_1.weight": torch.ones(16)})   # text tower: ignored
    fresh = create_model("CLIP_B16_tiny", num_classes=10)
    head_before = {k: v.clone() for k, v in fresh.net.state_dict().items() if k in CLIP_HEAD_KEYS}
    init_from_openai_clip(fresh, openai)
    mapped = remap_mdds_clip_state_dict(sd)
    for k, v in fresh.net.state_dict().items():
        want = head_before[k] if k in CLIP_HEAD_KEYS else mapped[k]
        assert torch.equal(v, want), k
    broken = dict(openai)
    del broken["visual.transformer.resblocks.1.ln_2.bias"]
    with pytest.raises(MsrsError, match="resblocks|blocks.1.norm2.bias"):
        init_from_openai_clip(create_model("CLIP_B16_tiny", num_classes=10), broken)


def test_openai_clip_rejected_as_classifier(tmp_path):
    _, _, sd, _ = _tiny_mdds_pair()
    f = tmp_path / "openai.pt"
    torch.save({"visual." + k: v for k, v in sd.items()}, f)
    with pytest.raises(MsrsError, match="initialization"):
        load_classifier(str(f), arch="CLIP_B16_tiny", num_classes=10)


# ---- Cohen / Salman classifiers ---------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_resnet110"])
def test_cohen_file_roundtrip(tmp_path, arch):
    ref = _randomize(create_model(arch), seed=4).eval()
    sd = ref.state_dict()
    assert "1.conv1.weight" in sd and "1.layer2.0.downsample.0.weight" in sd and "1.layer2.0.downsample.1.running_var" in sd
    assert "1.fc.weight" in sd and not any(k.startswith("0.") for k in sd)
    n = 18 if arch == "cifar_resnet110" else 3
    assert f"1.layer3.{n - 1}.bn2.weight" in sd and f"1.layer3.{n}.bn2.weight" not in sd
    f = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "arch": arch, "state_dict": sd,
                "optimizer": torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9).state_dict()}, f)
    got = load_classifier(str(f), arch="CLIP_B16", num_classes=10)   # the file's own arch wins
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x))
        want = ref[1](((x - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
                       / torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)))
        torch.testing.assert_close(got(x), want)


def test_cohen_dataparallel_remap():
    sd = {"1.module.conv1.weight": torch.zeros(1), "1.module.fc.bias": torch.zeros(2)}
    assert set(remap_cohen_state_dict(sd)) == {"1.conv1.weight", "1.fc.bias"}
    with pytest.raises(MsrsError, match="unexpected key '0.mean'"):
        remap_cohen_state_dict({"0.mean": torch.zeros(3)}, "x.pt")


def test_bare_state_dict_needs_arch(tmp_path):
    ref = _randomize(create_model("cifar_resnet20"), seed=5).eval()
    f = tmp_path / "bare.pt"
    torch.save(ref.net.state_dict(), f)
    with pytest.raises(MsrsError, match="--arch"):
        load_classifier(str(f))
    got = load_classifier(str(f), arch="cifar_resnet20")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x))


def test_bad_files_name_file_and_key(tmp_path):
    ref = create_model("cifar_resnet20")
    sd = ref.state_dict()
    wrong_key = dict(sd)
    wrong_key["1.fc.weightx"] = wrong_key.pop("1.fc.weight")
    f = tmp_path / "wrong_key.pt"
    torch.save({"arch": "cifar_resnet20", "state_dict": wrong_key}, f)
    with pytest.raises(MsrsError, match=r"wrong_key\.pt.*'1\.fc\.weight'"):
        load_classifier(str(f), num_classes=10)
    wrong_shape = dict(sd)
    wrong_shape["1.layer1.0.conv1.weight"] = torch.zeros(16, 16, 5, 5)
    g = tmp_path / "wrong_shape.pt"
    torch.save({"arch": "cifar_resnet20", "state_dict": wrong_shape}, g)
    with pytest.raises(MsrsError, match=r"wrong_shape\.pt.*layer1\.0\.conv1\.weight"):
        load_classifier(str(g))
    good = tmp_path / "good.pt"
    torch.save({"arch": "cifar_resnet20", "state_dict": sd}, good)
    h = tmp_path / "truncated.pt"
    h.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(MsrsError, match=r"truncated\.pt"):
        load_classifier(str(h))
    with pytest.raises(MsrsError, match="not found"):
        load_classifier(str(tmp_path / "missing.pt"))
    with pytest.raises(MsrsError, match="train_zoo.sh"):
        load_classifier("zoo:definitely_not_shipped")
    with pytest.raises(MsrsError, match=DEEPSPEED_FILE):
        load_classifier(str(tmp_path))


def test_our_format_roundtrip(tmp_path):
    ref = _randomize(create_model("digits_cnn", num_classes=10), seed=6).eval()
    f = tmp_path / "digits.pt"
    save_classifier(LogitMask(ref, [0, 1]), "digits_cnn", {"num_classes": 10}, str(f), extra={"acc": 0.9})
    obj = load_checkpoint(str(f))
    assert obj["kind"] == "classifier" and obj["arch"] == "digits_cnn" and obj["acc"] == 0.9
    got = load_classifier(str(f), arch="CLIP_B16", num_classes=10)   # self-describing: arch ignored
    assert isinstance(got, PixelClassifier) and not got.training
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x))
    with pytest.raises(MsrsError, match="10 classes but 100"):
        load_classifier(str(f), num_classes=100)
    with pytest.raises(MsrsError, match="plain value"):
        save_classifier(ref, "digits_cnn", {"num_classes": torch.tensor(10)}, str(tmp_path / "bad.pt"))


# ---- DnCNN (Salman) ----------------------------------------------------------------------------------

def test_dncnn_layout_and_identity_init():
    m = create_dncnn("cifar_dncnn").eval()
    sd = m.state_dict()
    convs = [k for k, v in sd.items() if k.endswith(".weight") and v.ndim == 4]
    assert len(convs) == 17 and convs[0] == "dncnn.0.weight" and convs[-1] == "dncnn.47.weight"
    assert "dncnn.0.bias" in sd and "dncnn.2.bias" not in sd and "dncnn.47.bias" not in sd
    assert "dncnn.3.running_mean" in sd and "dncnn.45.weight" in sd
    assert m.dncnn[3].eps == 1e-4 and m.dncnn[3].momentum == 0.95
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(m(x), x)                                # last conv starts at zero
    assert create_dncnn("cifar_dncnn_wide").dncnn[0].out_channels == 128
    with pytest.raises(MsrsError, match="valid names"):
        create_dncnn("memnet")


def test_dncnn_salman_and_our_roundtrip(tmp_path):
    ref = _randomize(create_dncnn("cifar_dncnn"), seed=7).eval()
    x = torch.rand(2, 3, 8, 8)
    f = tmp_path / "salman.pth.tar"
    torch.save({"epoch": 90, "arch": "cifar_dncnn", "state_dict": ref.state_dict(),
                "optimizer": torch.optim.Adam(ref.parameters(), lr=1e-3).state_dict()}, f)
    obj = load_checkpoint(str(f))
    assert is_dncnn_checkpoint(obj)
    got = load_dncnn(obj, str(f))
    assert isinstance(got, DnCNN) and not got.training
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x))
        # imagenet_dncnn was DataParallel-wrapped: 'module.' keys
        dp = {"arch": "imagenet_dncnn", "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}
        torch.testing.assert_close(load_dncnn(dp, "dp.pt")(x), ref(x))
        torch.testing.assert_close(load_dncnn(ref.state_dict(), "bare.pt")(x), ref(x))
        ours = tmp_path / "ours.pt"
        save_dncnn(ref, "cifar_dncnn", str(ours))
        o = load_checkpoint(str(ours))
        assert o["kind"] == "dncnn" and is_dncnn_checkpoint(o)
        torch.testing.assert_close(load_dncnn(o, str(ours))(x), ref(x))
    bad = {"arch": "cifar_dncnn_wide", "state_dict": ref.state_dict()}
    with pytest.raises(MsrsError, match=r"w\.pt: shape mismatch at 'dncnn\.0\.weight'"):
        load_dncnn(bad, "w.pt")
    assert not is_dncnn_checkpoint({"arch": "cifar_resnet110", "state_dict": {}})
