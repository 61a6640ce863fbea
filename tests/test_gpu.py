"""CUDA-only checks (marked ``gpu``; skipped without a device; bench/gpu_check.sh runs them on a lent GPU)."""
import numpy as np
import pytest
import torch

from core.noise import DiscreteGaussian, grid_indices, noisy_batch
from tests.test_noise import chi2_pvalue

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_discrete_gaussian_on_cuda_follows_the_exact_law_without_host_syncs():
    dg = DiscreteGaussian(0.25)
    cuda = torch.device("cuda")
    g = torch.Generator(device=cuda).manual_seed(0)
    dg.sample((8, 3, 32, 32), g)                                  # warm-up (table upload)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        k = dg.sample((4000, 3, 32, 32), g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    k = k.cpu().numpy().ravel()
    assert k.dtype == np.int64 and chi2_pvalue(k, dg.pmf(), dg.K) > 1e-3


def test_sound_batches_are_the_same_grid_points_on_cuda_and_cpu():
    dg = DiscreteGaussian(0.5)
    x = torch.randint(0, 256, (3, 8, 8), generator=torch.Generator().manual_seed(1)).float() / 255
    g = torch.Generator(device="cuda").manual_seed(3)
    batch = noisy_batch(grid_indices(x.cuda()), 64, dg, g)
    ints = torch.round(batch.double() * 255)
    assert torch.equal(ints, batch.double().mul(255).round()) and torch.equal(batch.cpu(), (ints.cpu() / 255).float())
