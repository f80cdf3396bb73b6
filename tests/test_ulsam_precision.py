"""ULSAM in bfloat16 computes F_n * A_n + F_n as the seed writes it: F_n * (1 + A_n) rounded A_n (about 1 / HW) in
1 + A_n, twice the seed's error (train mode, (4, 32, 32, 32): 0.0038 of the largest output against 0.0018)."""
import pytest
import torch

from conftest import calibrated_ulsam


@pytest.mark.parametrize('grad', [False, True], ids=['no_grad', 'grad'])
def test_ulsam_bfloat16_train_mode_is_as_close_to_float64_as_its_rounding(grad):
    x = torch.randn(4, 32, 32, 32, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    exact = calibrated_ulsam(32, seed=0).double().train()
    low = calibrated_ulsam(32, seed=0).to(torch.bfloat16).train()
    with torch.set_grad_enabled(grad):
        truth, got = exact(x.double()), low(x).double()
    assert got.dtype == torch.float64 and low(x).dtype == torch.bfloat16
    assert (got - truth).abs().max() <= 0.0028 * truth.abs().max()
