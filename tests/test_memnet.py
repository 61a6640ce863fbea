"""Salman's MemNet denoisers (models/memnet.py): their state-dict layout loads strictly and the forward
matches a transcription of microsoft/denoised-smoothing code/archs/memnet.py written over the raw tensors."""
import pytest
import torch
import torch.nn.functional as F

from core.errors import MsrsError
from models.checkpoint import load_checkpoint
from models.memnet import MEMNET_ARCHS, is_memnet_checkpoint, load_memnet

# their architectures.py: MemNet(in_channels=3, channels=64, num_memblock=3, num_resblock=6)
C, W, M, R = 3, 64, 3, 6


def _bnreluconv(sd, g, prefix, cin, cout, k):
    """One of their BNReLUConv: keys bn.{weight,bias,running_mean,running_var,num_batches_tracked}, conv.weight."""
    sd[f"{prefix}.bn.weight"] = 1 + 0.1 * torch.randn(cin, generator=g)
    sd[f"{prefix}.bn.bias"] = 0.1 * torch.randn(cin, generator=g)
    sd[f"{prefix}.bn.running_mean"] = 0.1 * torch.randn(cin, generator=g)
    sd[f"{prefix}.bn.running_var"] = 0.5 + torch.rand(cin, generator=g)
    sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(7)
    sd[f"{prefix}.conv.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5


def salman_state_dict(seed=0):
    """Their key names and shapes, enumerated from archs/memnet.py (gate m takes (R + m + 1)·W channels)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    _bnreluconv(sd, g, "feature_extractor", C, W, 3)
    _bnreluconv(sd, g, "reconstructor", W, C, 3)
    for m in range(M):
        for r in range(R):
            for j in (1, 2):
                _bnreluconv(sd, g, f"dense_memory.{m}.recursive_unit.{r}.relu_conv{j}", W, W, 3)
        _bnreluconv(sd, g, f"dense_memory.{m}.gate_unit", (R + m + 1) * W, W, 1)
    return sd


def their_forward(sd, x):
    """MemNet.forward / MemoryBlock.forward / ResidualBlock.forward / BNReLUConv in eval mode."""
    def unit(prefix, h, pad):
        h = F.batch_norm(h, sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"],
                         sd[f"{prefix}.bn.weight"], sd[f"{prefix}.bn.bias"], training=False, eps=1e-5)
        return F.conv2d(F.relu(h), sd[f"{prefix}.conv.weight"], padding=pad)

    residual = x
    out = unit("feature_extractor", x, 1)
    ys = [out]
    for m in range(M):
        xs, h = [], out
        for r in range(R):
            res = h
            h = unit(f"dense_memory.{m}.recursive_unit.{r}.relu_conv2",
                     unit(f"dense_memory.{m}.recursive_unit.{r}.relu_conv1", h, 1), 1) + res
            xs.append(h)
        gate = unit(f"dense_memory.{m}.gate_unit", torch.cat(xs + ys, 1), 0)
        ys.append(gate)
        out = gate
    return unit("reconstructor", out, 1) + residual


@pytest.mark.parametrize("arch,prefix", [("memnet", ""), ("imagenet_memnet", "module.")])
def test_salman_memnet_file_loads_and_matches(tmp_path, arch, prefix):
    sd = salman_state_dict()
    path = tmp_path / f"{arch}.pth.tar"
    # train_denoiser.py saves {'epoch', 'arch', 'state_dict', 'optimizer'}; imagenet_memnet is DataParallel
    torch.save({"epoch": 90, "arch": arch, "state_dict": {prefix + k: v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": []}}, path)
    obj = load_checkpoint(str(path))
    assert is_memnet_checkpoint(obj)
    model = load_memnet(obj, str(path))
    assert set(model.state_dict()) == set(sd)          # strict: their layout key for key
    x = torch.rand(2, C, 16, 16, generator=torch.Generator().manual_seed(3))
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(noisy)
        ref = their_forward(sd, noisy)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, noisy, atol=1e-3)   # the network does something (residual is not all)


def test_memnet_mismatch_is_one_line_error(tmp_path):
    sd = salman_state_dict()
    del sd["dense_memory.2.gate_unit.conv.weight"]
    with pytest.raises(MsrsError, match="dense_memory.2.gate_unit.conv.weight"):
        load_memnet({"arch": "memnet", "state_dict": sd}, "x.pth")
    sd = salman_state_dict()
    sd["dense_memory.1.gate_unit.conv.weight"] = torch.zeros(W, (R + 1) * W, 1, 1)   # gate 1 needs (R+2)·W
    with pytest.raises(MsrsError, match="shape mismatch"):
        load_memnet({"arch": "memnet", "state_dict": sd}, "x.pth")
    with pytest.raises(MsrsError, match="not a MemNet"):
        load_memnet({"arch": "cifar_dncnn", "state_dict": {}}, "x.pth")


def test_archs_are_salmans():
    assert set(MEMNET_ARCHS) == {"memnet", "imagenet_memnet"}
    assert all(a == dict(in_channels=3, channels=64, num_memblock=3, num_resblock=6) for a in MEMNET_ARCHS.values())
