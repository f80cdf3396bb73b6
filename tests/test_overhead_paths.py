"""The lean eager inference paths (issue 20, item 3) equal the plain formulas, and keep their fewer ops.

ZAM: gates made in place of their statistics (`_zam_infer_into`), called through `zam_eager` without a second
`runs_eagerly`; `amax` halves rows of 64 bytes first (4 x 4 maps); ULSAM: each parameter read once (`_inference_args`),
both edges of each pool pass fixed in one strided copy, the pool in the two full-size buffers the module needs anyway.
Checked at 1 and 2 threads, batch 1 and odd batches, in one chunk and in several, contiguous, channels_last, dense
but permuted, and with a storage offset.
"""
import collections

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from zamzoo.layers.fused import _common
from zamzoo.layers.fused.zam import zam_eager, zam_fused
from zamzoo.layers.ulsam import ULSAM, _max_pool3x3_flat
from zamzoo.layers.zam import ZAM

# (C, H, W): 4 x 4 maps take `amax`'s 64-byte-row path over H * W and its grouped rows over C; 5 x 3 neither
SHAPES = [(32, 4, 4), (16, 8, 8), (8, 5, 3)]
ZAM_KINDS = [('avgmax', False), ('avgmax', True), ('avg', False), ('max', False), ('max', True)]


_ALLOCATIONS = {'empty', 'empty_like', 'empty_strided', 'new_empty', 'zeros', 'zeros_like'}


class _CountOps(TorchDispatchMode):
    """The aten ops (overload packet names) run inside the block."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal bit for bit, NaN where NaN."""
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


@pytest.fixture(params=[1, 2], ids=['1thread', '2threads'])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def _layouts(x: torch.Tensor):
    """x as contiguous, channels_last, dense but permuted (H and W swapped in memory), and a batch slice with a
    storage offset."""
    b, c, h, w = x.shape
    permuted = x.transpose(2, 3).contiguous().transpose(2, 3)
    offset = torch.cat([torch.randn(1, c, h, w), x]).narrow(0, 1, b)
    return {'contiguous': x, 'channels_last': x.contiguous(memory_format=torch.channels_last),
            'permuted': permuted, 'offset': offset}


@pytest.mark.parametrize('pool,skip', ZAM_KINDS)
@pytest.mark.parametrize('batch', [1, 3])
def test_zam_inference_equals_plain_formula(pool, skip, batch, threads, monkeypatch):
    torch.manual_seed(0)
    for chunk_bytes in (_common.CHUNK_BYTES, 1):  # one chunk; one image a chunk (at one thread)
        monkeypatch.setattr(_common, 'CHUNK_BYTES', chunk_bytes)
        for c, h, w in SHAPES:
            fused, ref = ZAM(c, pool=pool, skip=skip), ZAM(c, pool=pool, skip=skip, impl='reference')
            for name, x in _layouts(torch.randn(batch, c, h, w)).items():
                x0 = x.clone()
                with torch.inference_mode():
                    y = fused(x)
                expected = ref(x0)
                torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f'{name}: {m}')
                assert torch.equal(x, x0), name  # the input is never written
                assert torch.equal(zam_eager(x, pool, skip), zam_fused(x, pool, skip))


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_zam_avgmax_inference_is_bit_equal_to_the_plain_formula(memory_format, threads):
    """mean + max as torch's mean and max: a mean spelled sum * (1 / n) differs in the last bit (here on 7 x 9 maps)."""
    torch.manual_seed(0)
    x = torch.randn(5, 24, 7, 9).contiguous(memory_format=memory_format)
    for skip in (False, True):
        with torch.inference_mode():
            assert torch.equal(ZAM(24, skip=skip)(x), ZAM(24, skip=skip, impl='reference')(x))


def test_zam_inference_empty_batch_and_ties():
    x = torch.zeros(0, 8, 4, 4)
    assert ZAM(8)(x).shape == x.shape
    x = torch.ones(2, 16, 4, 4)  # every element a maximum: values only, no positions
    torch.testing.assert_close(ZAM(16)(x), ZAM(16, impl='reference')(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('pool,skip', ZAM_KINDS)
def test_zam_inference_runs_its_few_ops(pool, skip):
    """Every gate made in place of its statistic, the output its one `empty_like`; ZAM+R applies each gate as the
    seed writes it, x + x * M (a mul and an in-place add)."""
    x = torch.randn(1, 16, 8, 8)
    with torch.inference_mode(), _CountOps() as counted:
        ZAM(16, pool=pool, skip=skip)(x)
    ops = counted.ops
    assert ops['sigmoid_'] == 2 and ops['sigmoid'] == 0
    assert ops['add_'] == (2 if skip else 0) and ops['add'] == 0
    # the mean as a sum and a division by a cached count, the addition of the max folded into it (`mean_plus`)
    assert ops['mean'] == 0 and ops['sum'] == (0 if pool == 'max' else 2) and ops['_to_copy'] == 0
    assert ops['addcdiv_'] == (2 if pool == 'avgmax' else 0) and ops['div_'] == (2 if pool == 'avg' else 0)
    assert ops['empty_like'] == 1 and ops['mul'] == 2 and ops['mul_'] == 0
    with torch.inference_mode(), _CountOps() as counted:
        ZAM(16, pool=pool, skip=skip, inplace=True)(x)
    assert counted.ops['empty_like'] == 0 and counted.ops['mul'] == 2 and counted.ops['add_'] == (2 if skip else 0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('shape,dim', [((2, 24, 63), 2), ((2, 24, 63), 1), ((1, 3, 1), 1), ((3, 5, 16), 2)])
def test_mean_plus_is_torch_mean_bit_for_bit(dtype, shape, dim):
    """A sum divided by the cached count is torch's mean to the last bit (a sum times 1 / n is not, here at n = 63
    and 24), and the max added by addcdiv equals the mean plus the max."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype) * 100
    other = torch.randn(x.mean(dim).shape, dtype=dtype)
    _assert_same(_common.mean_plus(x, dim), x.mean(dim))
    _assert_same(_common.mean_plus(x, dim, other.clone()), x.mean(dim) + other)
    if dtype == torch.float32 and shape == (2, 24, 63):
        assert not torch.equal(x.sum(dim) * (1 / x.shape[dim]), x.mean(dim))
    _common._COUNTS.pop(shape[dim], None)  # made anew in inference mode: a normal tensor, usable outside it
    with torch.inference_mode():
        _assert_same(_common.mean_plus(x, dim), x.mean(dim))
    assert not _common._count(shape[dim]).is_inference()


def _inplace_zam(pool, skip):
    return ZAM(16, pool=pool, skip=skip, inplace=True), ZAM(16, pool=pool, skip=skip)


@pytest.mark.parametrize('pool,skip', ZAM_KINDS)
@pytest.mark.parametrize('mode', ['inference_mode', 'no_grad'])
def test_zam_inplace_writes_the_same_numbers_into_its_input(pool, skip, mode, threads, monkeypatch):
    """inplace=True: inference returns x itself, holding bit for bit what the out-of-place path returns, in one
    chunk and image by image; a layout whose views are not what the fused path expects (dense but permuted) is
    left alone."""
    torch.manual_seed(0)
    inplace, out_of_place = _inplace_zam(pool, skip)
    context = torch.inference_mode if mode == 'inference_mode' else torch.no_grad
    for chunk_bytes in (_common.CHUNK_BYTES, 1):
        monkeypatch.setattr(_common, 'CHUNK_BYTES', chunk_bytes)
        for name, x in _layouts(torch.randn(3, 16, 5, 6)).items():
            x0 = x.clone()
            with context():
                expected, y = out_of_place(x), inplace(x)
            _assert_same(y, expected)
            assert (y is x) == (name != 'permuted'), name
            if name == 'permuted':
                assert torch.equal(x, x0)


def test_zam_inplace_leaves_its_input_where_it_must():
    """With autograd recording, with a forward hook or pre-hook (handed the input, it may keep it past the
    forward), and for an inference tensor outside inference mode (torch refuses in-place writes to it), the input is
    not written."""
    torch.manual_seed(0)
    inplace, out_of_place = _inplace_zam('avgmax', False)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    y = inplace(x)
    assert y is not x and y.grad_fn is not None
    seen = []
    handle = inplace.register_forward_hook(lambda m, args, out: seen.append(torch.equal(args[0], out)))
    with torch.no_grad():
        _assert_same(inplace(x.detach()), out_of_place(x.detach()))
    handle.remove()
    assert seen == [False]
    kept = []
    handle = inplace.register_forward_pre_hook(lambda m, args: kept.append(args[0]))
    with torch.no_grad():
        y = inplace(x.detach())
    handle.remove()
    assert y is not kept[0] and torch.equal(kept[0], x)
    with torch.inference_mode():
        z = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        z0 = z.clone()
        _assert_same(inplace(z), out_of_place(z0))
    assert torch.equal(z, z0)


@pytest.mark.parametrize('name', ['resnet18_zam', 'resnet50_zamr', 'mobilenet_zam_max', 'mobilenetv2_zam_avg',
                                  'mobilenet_ulsam', 'resnet18_ulsam'])
def test_zoo_blocks_build_their_modules_inplace_with_the_same_outputs(name):
    """Every family's block slot gets ZAM or ULSAM with inplace=True (its input a BatchNorm's fresh output nothing
    else reads): the model's outputs equal, bit for bit, those of the same weights with inplace=False (attn_kwargs
    win)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    other = timm.create_model(name, attn_kwargs=dict(inplace=False)).eval()
    other.load_state_dict(model.state_dict())
    modules = [m for m in model.modules() if isinstance(m, (ZAM, ULSAM))]
    assert modules and all(m.inplace for m in modules)
    assert not any(m.inplace for m in other.modules() if isinstance(m, (ZAM, ULSAM)))
    x = torch.randn(2, 3, 32, 32)
    x0 = x.clone()
    with torch.no_grad():
        _assert_same(model(x), other(x))
    assert torch.equal(x, x0)


def test_fx_features_of_the_batchnorm_before_an_inplace_module():
    """README: as with timm's in-place ReLUs, torch.fx feature extraction that returns the node of the BatchNorm
    before ZAM and a later one gets ZAM's output there in inference; attn_kwargs=dict(inplace=False) gives the
    BatchNorm's own output."""
    import timm
    from timm.models._features_fx import create_feature_extractor
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for inplace in (True, False):
        model = timm.create_model('resnet18_zam', attn_kwargs=dict(inplace=inplace)).eval()
        block = model.stages[0][0]
        seen = {}
        handle = block.bn2.register_forward_hook(lambda m, args, out: seen.update(bn2=out.clone()))
        with torch.no_grad():
            model(x)
            handle.remove()
            seen['zam'] = block.attn(seen['bn2'].clone())
        # with a node after the block, the graph runs ZAM on the BatchNorm's output
        extractor = create_feature_extractor(model, return_nodes={'stages.0.0.bn2': 'bn2', 'stages.0': 'stage'})
        with torch.no_grad():
            feature = extractor(x)['bn2']
        assert torch.equal(feature, seen['zam' if inplace else 'bn2']), inplace
        assert not torch.equal(seen['bn2'], seen['zam'])


@pytest.mark.parametrize('shape', [(2, 1024, 16), (1, 7, 16), (3, 4, 16), (0, 8, 16)])
def test_amax_rows_of_64_bytes(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    if x.numel():
        x[0, 0, 3] = float('nan')  # first half of a row
        x[-1, -1, 12] = float('nan')  # second half
        x[0, -1] = float('-inf')
    with _CountOps() as counted:
        got = _common.amax(x, 2)
    _assert_same(got, x.amax(2))
    assert counted.ops['maximum'] == 1  # the halves first: torch's max over 16-float rows is the slow one
    bf16 = torch.randn(2, 5, 32, dtype=torch.bfloat16)  # 64-byte rows too
    assert torch.equal(_common.amax(bf16, 2), bf16.amax(2))
    for other in (torch.randn(2, 5, 8), torch.randn(2, 5, 64), x.transpose(1, 2)):  # kept as torch's kernel
        with _CountOps() as counted:
            _assert_same(_common.amax(other, 2), other.amax(2))
        assert counted.ops['maximum'] == 0


@pytest.mark.parametrize('h,w', [(1, 1), (1, 2), (2, 1), (2, 2), (2, 5), (3, 3), (5, 2), (7, 9), (4, 4)])
def test_flat_pool_makes_no_temporary(h, w):
    """Each pass: its pairs into the scratch buffer, the pairs across lines set to 0, their maxima back, the first
    and last elements in one strided copy; no allocation."""
    torch.manual_seed(0)
    big = torch.randn(4, 3, h, w).relu_()  # ULSAM pools a ReLU's output
    big[1, 2, 0, w - 1] = float('nan')
    for a in (big, big[1:3]):  # the second one with a storage offset, pooled in its own memory
        expected = F.max_pool2d(a, 3, 1, 1)
        src, scratch = a.clone(), torch.empty_like(a)
        with _CountOps() as counted:
            got = _max_pool3x3_flat(src, scratch)
        assert got is src
        _assert_same(got, expected)
        passes = (h > 1) + (w > 1)
        assert counted.ops['maximum'] == 2 * passes and counted.ops['copy_'] == passes
        assert counted.ops['zero_'] == passes
        assert not counted.ops.keys() & _ALLOCATIONS
        if a.storage_offset():
            scratch = torch.randn(2 * a.numel())[a.numel():].view(a.shape)  # a storage offset too
            _assert_same(_max_pool3x3_flat(a, scratch), expected)


def _calibrated_ulsam(c: int, groups: int) -> ULSAM:
    torch.manual_seed(0)
    m = ULSAM(c, groups)
    for bn in (m.bn_dw, m.bn_pw):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


@pytest.mark.parametrize('batch', [1, 3])
def test_ulsam_inference_equals_plain_formula(batch, threads, monkeypatch):
    """The eager inference path (batch chunks, the flat pool, written in place) gives what a tracer or TorchScript
    records (`ULSAM._refine` with the folded BNs: whole batch, MaxPool2d) and what eval mode with autograd computes,
    bit for bit, in every layout: they differed in the last bits (2.4e-7 in mobilenet_ulsam's logits) when the
    recorded path folded the BNs into the convs."""
    for chunk_bytes in (_common.CHUNK_BYTES, 1):
        monkeypatch.setattr(_common, 'CHUNK_BYTES', chunk_bytes)
        for c, h, w in [(16, 8, 8), (8, 5, 3), (32, 4, 4), (64, 16, 16)]:
            m = _calibrated_ulsam(c, 4 if c < 64 else 8)
            for name, x in _layouts(torch.randn(batch, c, h, w) * 2).items():
                with torch.inference_mode():
                    y = m(x)
                    recorded = m._refine(x, m._inference_args())
                _assert_same(y, recorded)
                xg = x.clone().requires_grad_()
                with_autograd = m(xg)
                assert with_autograd.grad_fn is not None, name
                _assert_same(with_autograd.detach(), recorded)


@pytest.mark.parametrize('batch', [1, 3])
def test_ulsam_inplace_writes_the_same_numbers_into_its_input(batch, threads, monkeypatch):
    """inplace=True: inference returns x itself, holding bit for bit what the out-of-place path returns, in one
    chunk and image by image, with a chunk-sized scratch buffer in place of the output during the pool (two
    full-size allocations, none of them the output); a dense but permuted x is left alone, as it is under a
    forward pre-hook."""
    whole = _common.CHUNK_BYTES
    for chunk_bytes in (whole, 1):
        monkeypatch.setattr(_common, 'CHUNK_BYTES', chunk_bytes)
        for c, h, w in [(16, 8, 8), (8, 5, 3), (32, 4, 4)]:
            out_of_place = _calibrated_ulsam(c, 4)
            inplace = _calibrated_ulsam(c, 4)
            inplace.inplace = True
            for name, x in _layouts(torch.randn(batch, c, h, w)).items():
                x0 = x.clone()
                with torch.inference_mode():
                    expected = out_of_place(x)
                    with _FullSizeOutputs(x.numel()) as counted:
                        y = inplace(x)
                _assert_same(y, expected)
                assert (y is x) == (name != 'permuted'), name
                if name == 'permuted':
                    assert torch.equal(x, x0)
                elif chunk_bytes == whole and name != 'channels_last':  # (channels_last: + a contiguous copy)
                    assert counted.count == 2, name
    x = torch.randn(2, 32, 4, 4)
    kept = []
    handle = inplace.register_forward_pre_hook(lambda m, args: kept.append(args[0]))
    with torch.no_grad():
        y = inplace(x)
    handle.remove()
    assert y is not x and torch.equal(kept[0], x)


def test_ulsam_under_autocast_gives_its_submodules_numbers():
    """Under CPU autocast the folded inference path rounded to bfloat16 elsewhere than the submodules' convolutions
    do (8e-3 apart); it steps aside there, as NAM's fused path does."""
    m, x = _calibrated_ulsam(64, 4).eval(), torch.randn(3, 64, 8, 8)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
            fast = m(x.to(dtype))
            handle = m.dw.register_forward_hook(lambda *a: None)  # a watched submodule: the submodules run
            plain = m(x.to(dtype))
            handle.remove()
        assert torch.equal(fast, plain), dtype


def test_ulsam_reads_parameters_each_call():
    """Nothing is cached between calls: a BN statistic or a weight changed in place (even through .data, which
    no version counter sees) changes the next output."""
    m, x = _calibrated_ulsam(16, 4), torch.randn(1, 16, 8, 8)
    with torch.inference_mode():
        first = m(x)
    m.bn_dw.running_var.data.mul_(4.0)
    m.pw.weight.data.neg_()
    with torch.inference_mode():
        second = m(x)
    assert not torch.allclose(first, second)
    _assert_same(second, m._refine(x, m._inference_args()))


def test_ulsam_inference_runs_its_few_ops():
    x = torch.randn(1, 16, 8, 8)
    m = _calibrated_ulsam(16, 4)
    with torch.inference_mode(), _CountOps() as counted:
        m(x)
    assert counted.ops['maximum'] == 4 and counted.ops['copy_'] == 2 and counted.ops['as_strided'] == 6  # per pass
    # 4 batch_norm: 2 make the folded BN biases (`_inference_args`), 2 apply them
    assert counted.ops['batch_norm'] == 4 and sum(counted.ops.values()) <= 54


class _FullSizeOutputs(TorchDispatchMode):
    """How many new tensors of `numel` elements the ops inside the block allocate (outputs in no input's memory)."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        self.count += sum(1 for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)
                          and t.numel() == self.numel and t.untyped_storage().data_ptr() not in inputs)
        return out


@pytest.mark.parametrize('h,w', [(8, 8), (4, 4), (1, 5), (2, 2)])
def test_ulsam_inference_allocates_two_full_size_tensors(h, w):
    """Its output and the DW conv + BN's: the pool works in those two (a fresh buffer in a model takes the cache from
    the backbone's weights), and still equals the plain formula."""
    m, x = _calibrated_ulsam(16, 4), torch.randn(1, 16, h, w)
    with torch.inference_mode(), _FullSizeOutputs(x.numel()) as counted:
        y = m(x)
    assert counted.count == 2
    torch.testing.assert_close(y, m._refine(x, None), rtol=1e-5, atol=1e-5)


class _Recording(torch.nn.Module):
    """A block module that records the `inplace` it was built with (timm's convention)."""

    def __init__(self, channels, inplace=False, device=None, dtype=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x


def test_block_modules_that_name_inplace_are_built_inplace():
    """`AttnFactory`: a block-slot layer whose signature names `inplace` gets True, unless `attn_kwargs` set it; a
    layer without the parameter is not given it (SE would raise)."""
    import timm
    built = timm.create_model('resnet18_plain', attn_layer=_Recording)
    assert [m.inplace for m in built.modules() if isinstance(m, _Recording)] == [True] * 8
    kept = timm.create_model('resnet18_plain', attn_layer=_Recording, attn_kwargs=dict(inplace=False))
    assert [m.inplace for m in kept.modules() if isinstance(m, _Recording)] == [False] * 8
    assert len([m for m in timm.create_model('resnet18_se').modules() if type(m).__name__ == 'SE']) == 8
