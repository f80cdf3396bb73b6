"""ULSAM's eager inference path at torch's default 2 CPU threads (issue 20 item 3): the folded formula and the
flat 3x3 max-pool compute what the plain formula computes, borders and channels_last included."""
import functools
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


@pytest.mark.parametrize('shape', [(2, 1024, 16), (3, 8, 16), (1, 4096, 4), (2, 64, 64), (1, 334, 49), (2, 8, 1),
                                   (2, 7, 16), (0, 8, 16)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_amax_equals_torch_amax(shape, dtype, two_threads):
    """`amax` regroups the rows of a middle-dim max so that torch's kernel vectorizes: the same values, NaN included,
    over either dim, for rows of any length."""
    from zamzoo.layers.fused._common import amax
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    if x.numel():
        x.view(-1)[x.numel() // 2] = float('nan')
    for dim in (1, 2):
        torch.testing.assert_close(amax(x, dim), x.amax(dim), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(amax(x.transpose(1, 2), 1), x.amax(2), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize('shape', SHAPES + [(2, 3, 2, 9), (1, 2, 9, 2), (2, 4, 16, 16)])
def test_flat_pool_equals_max_pool2d(shape, two_threads):
    """The flat separable pool of ULSAM's eager path equals F.max_pool2d (-inf padding) bit for bit on what it pools,
    a ReLU's output (zeros, NaN), maps of 1 or 2 rows / columns included, without touching the input where it does
    not own it."""
    a = torch.randn(shape, generator=torch.Generator().manual_seed(4)).relu_()
    a.view(-1)[a.numel() // 3] = float('nan')
    expected = F.max_pool2d(a, 3, 1, 1)
    same = functools.partial(torch.testing.assert_close, rtol=0, atol=0, equal_nan=True)
    same(ulsam_module._max_pool3x3_flat(a.clone(), torch.empty_like(a)), expected)
    tail = torch.randn(2 * a.numel(), generator=torch.Generator().manual_seed(5))  # a view at a storage offset
    view = tail[a.numel():].view(shape)
    view.copy_(a)
    same(ulsam_module._max_pool3x3_flat(view, torch.empty_like(a)), expected)
    assert torch.equal(tail[:a.numel()], torch.randn(2 * a.numel(), generator=torch.Generator().manual_seed(5))[
        :a.numel()])


@pytest.mark.parametrize('channels_last', [False, True])
def test_ulsam_chunks_at_two_threads(channels_last, two_threads, monkeypatch):
    """At 2 threads ULSAM's eager inference works in batch chunks (2 images each here, the last one odd) and equals
    the plain formula; ZAM and SimAM keep the whole batch there; an empty batch gives an empty output."""
    from zamzoo.layers.fused import _common
    m = random_ulsam(16, 4, seed=6)
    x = torch.randn(5, 16, 6, 7, generator=torch.Generator().manual_seed(7)) * 2.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(_common, 'CHUNK_BYTES', 16 * 6 * 7 * 4)  # per thread: 2 threads, 2 images per chunk
    assert _common.batch_chunks(x, several_threads=True) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert _common.batch_chunks(x) == [slice(None)]
    with torch.no_grad():
        got = m(x)
        torch.testing.assert_close(got, m._refine(x, None), rtol=1e-5, atol=1e-5)
        assert m(x[:0]).shape == (0, 16, 6, 7)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
