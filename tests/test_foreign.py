"""Foreign checkpoint layouts (models/foreign.py): HF ViT (DDS / FT-CADIS CIFAR-10), FT-CADIS fine-tunes
(HF, timm + LoRA r=4), timm original-repo files (BEiT). transformers is a test dependency only: it
writes the HF files and computes the logits ours must match."""
import os

import pytest
import torch

from core.errors import MsrsError
from models import foreign
from models.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, num_labels=10)


def _hf_model(**over):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(**{**TINY, **over})
    m = transformers.ViTForImageClassification(cfg).eval()
    with torch.no_grad():                       # non-trivial LayerNorm/bias values (defaults are 1/0)
        for name, p in m.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def _pixels(n=3, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1     # the processor's output: (x - .5) / .5


def _hub_state_dict(model, tmp_path):
    """The hub (on-disk) key layout, as save_pretrained writes it."""
    from safetensors.torch import load_file
    d = tmp_path / "hub"
    model.save_pretrained(d)
    return load_file(str(d / "model.safetensors"))


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh"])
def test_hf_vit_safetensors_same_logits(tmp_path, act):
    hf = _hf_model(hidden_act=act)
    hf.save_pretrained(tmp_path / "vit")
    assert (tmp_path / "vit" / "model.safetensors").is_file()
    net, pre = foreign.load_hf_vit(str(tmp_path / "vit"))
    x = _pixels()
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        ours = net(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert pre["size"] == (32, 32) and pre["mean"] == (0.5, 0.5, 0.5)


def test_hf_vit_pytorch_model_bin(tmp_path):
    """A pytorch_model.bin (torch.save of the hub-layout state dict, what transformers < 4.35 wrote) loads
    through the safe loader and gives the same logits; transformers itself reads the same file."""
    hf = _hf_model()
    sd = _hub_state_dict(hf, tmp_path)
    d = tmp_path / "bin"
    d.mkdir()
    hf.config.to_json_file(str(d / "config.json"))
    torch.save(sd, d / "pytorch_model.bin")
    net, _ = foreign.load_hf_vit(str(d / "pytorch_model.bin"))
    again = transformers.ViTForImageClassification.from_pretrained(str(d)).eval()
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(net(x), hf(pixel_values=x).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(again(pixel_values=x).logits, hf(pixel_values=x).logits, atol=1e-6, rtol=0)


def test_hf_vit_module_layout_and_strictness(tmp_path):
    """transformers >= 5 in-memory keys (q_proj, mlp.fc1) map to the same timm weights as the hub layout;
    a key of another model (a pooler) or a missing one is an error naming it."""
    hf = _hf_model()
    hub = foreign.remap_hf_vit_state_dict(_hub_state_dict(hf, tmp_path))
    mod = foreign.remap_hf_vit_state_dict(hf.state_dict())
    assert hub.keys() == mod.keys()
    assert all(torch.equal(hub[k], mod[k]) for k in hub)
    with pytest.raises(MsrsError, match="vit.pooler.dense.weight"):
        foreign.remap_hf_vit_state_dict({**hf.state_dict(), "vit.pooler.dense.weight": torch.zeros(32, 32)})
    bad = {k: v for k, v in hf.state_dict().items() if "layers.1.attention.k_proj.weight" not in k}
    with pytest.raises(MsrsError, match="layer 1"):
        foreign.remap_hf_vit_state_dict(bad)


def test_hf_vit_class_count_checked(tmp_path):
    _hf_model().save_pretrained(tmp_path / "vit")
    with pytest.raises(MsrsError, match="10 classes but 1000"):
        foreign.load_hf_vit(str(tmp_path / "vit"), num_classes=1000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MsrsError, match="not an HF ViT checkpoint"):
        foreign.load_hf_vit(str(tmp_path / "empty"))


def test_ftcadis_cifar_checkpoint(tmp_path):
    """FT-CADIS train.py saves {'epoch', 'arch': 'cifar10_vit_base', 'state_dict': classifier.<HF keys>, ...};
    its certify strips the first 'classifier.' and loads into the HF model."""
    hf = _hf_model()
    hub = _hub_state_dict(hf, tmp_path)
    obj = {"epoch": 30, "arch": "cifar10_vit_base", "state_dict": {f"classifier.{k}": v for k, v in hub.items()},
           "optimizer": {}}
    torch.save(obj, tmp_path / "checkpoint-30.pth.tar")
    loaded = load_checkpoint(str(tmp_path / "checkpoint-30.pth.tar"))
    assert foreign.is_ftcadis_checkpoint(loaded)
    kind, sd = foreign.remap_ftcadis_state_dict(loaded)
    assert kind == "hf"
    net = foreign.create_hf_vit(hf.config.to_dict())
    net.load_state_dict(sd, strict=True)
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), hf(pixel_values=x).logits, atol=1e-5, rtol=0)


class _TheirLoRAqkv(torch.nn.Module):
    """Transcription of FT-CADIS third_party/lora_vit/lora.py _LoRA_qkv_timm.forward."""

    def __init__(self, qkv, a_q, b_q, a_v, b_v, r, alpha):
        super().__init__()
        self.qkv, self.linear_a_q, self.linear_b_q, self.linear_a_v, self.linear_b_v = qkv, a_q, b_q, a_v, b_v
        self.dim, self.r, self.alpha = qkv.in_features, r, alpha

    def forward(self, x):
        qkv = self.qkv(x)
        new_q = self.linear_b_q(self.linear_a_q(x))
        new_v = self.linear_b_v(self.linear_a_v(x))
        qkv[:, :, : self.dim] += (self.alpha // self.r) * new_q
        qkv[:, :, -self.dim:] += (self.alpha // self.r) * new_v
        return qkv


@pytest.mark.parametrize("r", [4, 2])
def test_ftcadis_lora_merge(tmp_path, r):
    """FT-CADIS ImageNet: timm ViT wrapped by LoRA_ViT_timm(r, alpha=4); the file keys are
    classifier.lora_vit.<timm keys with attn.qkv.qkv.* and attn.qkv.linear_{a,b}_{q,v}.weight>."""
    import timm
    torch.manual_seed(0)
    theirs = timm.create_model("test_vit", pretrained=False, num_classes=7).eval()
    D = theirs.blocks[0].attn.qkv.in_features
    for blk in theirs.blocks:
        lin = [torch.nn.Linear(D, r, bias=False), torch.nn.Linear(r, D, bias=False),
               torch.nn.Linear(D, r, bias=False), torch.nn.Linear(r, D, bias=False)]
        for m in lin:
            torch.nn.init.normal_(m.weight, std=0.2)     # trained B != 0
        blk.attn.qkv = _TheirLoRAqkv(blk.attn.qkv, *lin, r=r, alpha=foreign.FTCADIS_LORA_ALPHA)
    obj = {"epoch": 10, "arch": "imagenet_vit_base",
           "state_dict": {f"classifier.lora_vit.{k}": v for k, v in theirs.state_dict().items()}}
    assert any(".attn.qkv.qkv.weight" in k for k in obj["state_dict"])
    kind, sd = foreign.remap_ftcadis_state_dict(obj)
    ours = timm.create_model("test_vit", pretrained=False, num_classes=7).eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
    assert kind == "timm"


def test_load_checkpoint_reads_safetensors(tmp_path):
    from safetensors.torch import save_file
    sd = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = load_checkpoint(str(tmp_path / "w.safetensors"))
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(MsrsError, match="bad.safetensors"):
        load_checkpoint(str(tmp_path / "bad.safetensors"))
    with pytest.raises(MsrsError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.safetensors"))


def test_timm_filter_beit_original_layout():
    """BEiT's own checkpoints ({'model': ...} with relative_position_index buffers) go through timm's beit
    checkpoint_filter_fn; weights for another resolution are refused rather than resampled."""
    from timm.models.beit import Beit
    torch.manual_seed(0)
    net = Beit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5,
               use_rel_pos_bias=True, use_abs_pos_emb=False).eval()
    sd = dict(net.state_dict())
    for name, buf in net.named_buffers():
        if name.endswith("relative_position_index"):
            sd[name] = buf.clone()                    # persistent in the original BEiT code
    assert any(k.endswith("relative_position_index") for k in sd)
    out = foreign.timm_filtered_state_dict(net, {"model": sd}, "beit.pth")
    fresh = Beit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5,
                 use_rel_pos_bias=True, use_abs_pos_emb=False).eval()
    fresh.load_state_dict(out, strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x))
    big = Beit(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5,
               use_rel_pos_bias=True, use_abs_pos_emb=False)
    with pytest.raises(MsrsError, match="another input size"):
        foreign.timm_filtered_state_dict(big, sd, "beit.pth")


def test_hf_files_resolution(tmp_path):
    _hf_model().save_pretrained(tmp_path / "vit")
    cfg, w = foreign.hf_vit_files(str(tmp_path / "vit"))
    assert os.path.basename(w) == "model.safetensors" and os.path.basename(cfg) == "config.json"
    assert foreign.hf_vit_files(str(tmp_path / "vit" / "model.safetensors"))[1] == w
    assert foreign.hf_vit_files(str(tmp_path)) is None
