"""ULSAM's eager inference path at torch's default 2 CPU threads (issue 20 item 3): the folded formula and the
separable 3x3 max-pool compute what the plain formula computes, borders and channels_last included."""
import pytest
import torch
import torch.nn.functional as F

from zamzoo.layers import ulsam as ulsam_module
from zamzoo.layers.ulsam import ULSAM

SHAPES = [(3, 8, 7, 5), (2, 8, 1, 4), (2, 8, 3, 1), (1, 8, 2, 2), (4, 8, 1, 1)]


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_ulsam(channels=8, groups=4, seed=0):
    """Non-trivial BN affines and running statistics, so that the ReLUs leave something to pool."""
    gen = torch.Generator().manual_seed(seed)
    m = ULSAM(channels, groups)
    with torch.no_grad():
        for bn in (m.bn_dw, m.bn_pw):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.5)
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return m.eval()


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_pool_equals_max_pool2d_at_two_threads(shape, channels_last, two_threads):
    """The separable pool of a ReLU output equals F.max_pool2d bit for bit, maps of 1 or 2 rows / columns included."""
    a = torch.randn(shape, generator=torch.Generator().manual_seed(1)).relu()
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(ulsam_module._max_pool3x3_nonnegative(a), F.max_pool2d(a, 3, 1, 1))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_ulsam_inference_equals_plain_formula_at_two_threads(shape, channels_last, two_threads):
    """ULSAM eval inference (folded BNs, in-place pool) equals the submodules run as written (`_refine(x, None)`)."""
    m = random_ulsam(seed=sum(shape))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 2.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = m(x)
        plain = m._refine(x, None)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
