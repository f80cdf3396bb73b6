"""The fused implementations (zamzoo.layers.fused, ``impl='fused'``, the default) against the plain formulas
(``impl='reference'``): outputs and gradients, float64 gradcheck, fp32 / bf16 tolerances, memory formats, ties in
max / min, the inference path, TorchScript / fx / torch.compile, and the bytes saved for backward.

On CPU the fused paths and the formulas agree bit for bit (outputs and gradients). Tolerances elsewhere: bf16 (both
paths in bf16) at most 2e-2 of the largest magnitude, against an fp64 evaluation of the formula on the same bf16
input; fp32 rtol=atol=1e-5 where the two paths sum in different orders (inference in batch chunks, CUDA).
"""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx
import torch.nn.functional as F

import timm
import zamzoo  # noqa: F401  (registers the models)
from zamzoo.bench.calibration import calibrate_batchnorm
import zamzoo.layers as L
from zamzoo.layers.fused.nam import _NamFunction
from zamzoo.layers.fused.simam import _SimAMFunction
from zamzoo.layers.fused.zam import _ZamFunction
from zamzoo.layers.fused import channel_gate_fused
from zamzoo.layers.spem import spem_gate

pytestmark = pytest.mark.filterwarnings('ignore:.*torch.jit.script.*is deprecated')

ZAM_VARIANTS = [(pool, skip) for pool in ('avgmax', 'avg', 'max') for skip in (False, True)]


def make(kind, impl, c=16, dtype=torch.float32):
    """A module of `kind` with non-trivial parameters, deterministic for a given kind."""
    torch.manual_seed(3)
    if kind.startswith('zam'):
        _, pool, skip = kind.split(':')
        return L.ZAM(c, pool=pool, skip=skip == 'True', impl=impl).to(dtype)
    if kind == 'simam':
        return L.SimAM(c, impl=impl).to(dtype)
    if kind == 'spem':
        m = L.SPEM(c, impl=impl).to(dtype)
        with torch.no_grad():
            for p in (m.w1, m.b1, m.w2, m.b2):
                p.normal_()
            m.p.copy_(torch.tensor([0.3, -1.1]))
        return m
    m = L.NAM(c, impl=impl).to(dtype)
    with torch.no_grad():
        m.bn.weight.normal_()
        m.bn.bias.normal_()
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


KINDS = [f'zam:{p}:{s}' for p, s in ZAM_VARIANTS] + ['simam', 'spem', 'nam']


def run(module, x, g):
    """Output, input gradient, parameter gradients and buffers after one forward / backward of `module`."""
    xi = x.detach().clone().requires_grad_(True)
    y = module(xi)
    y.backward(g)
    return y.detach(), xi.grad, {n: p.grad for n, p in module.named_parameters()}, dict(module.named_buffers())


def assert_same(a, b, **tol):
    ya, gxa, gpa, bufa = a
    yb, gxb, gpb, bufb = b
    torch.testing.assert_close(ya, yb, **tol)
    torch.testing.assert_close(gxa, gxb, **tol)
    assert gpa.keys() == gpb.keys()
    for n in gpa:
        torch.testing.assert_close(gpa[n], gpb[n], **tol, msg=n)
    for n in bufa:
        torch.testing.assert_close(bufa[n], bufb[n], msg=n)


def assert_equal(a, b):
    for got, want in zip(a[:2], b[:2]):
        assert torch.equal(got, want), (got - want).abs().max()
    assert a[2].keys() == b[2].keys()
    for n in a[2]:
        assert torch.equal(a[2][n], b[2][n]), n
    for n in a[3]:
        assert torch.equal(a[3][n], b[3][n]), n


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_fused_is_the_reference_bit_for_bit(kind, layout, dtype):
    """On CPU the fused paths give the plain formula's numbers exactly, in train and eval mode: the output, and the
    input's and parameters' gradients as autograd gives them for the formula (the backwards run its ops in its
    order), with tied maxima; the buffers (NAM's running statistics) alike. A model then trains as the seeds' code
    does: a backward summed in another order was ~1e-7 off per module, 4e-4 in resnet50_zamr's input gradient."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 7, 5, generator=g) * 2.0 + 0.3
    x[:, :, 0, 0] = x[:, :, -1, -1] = 9.0 + torch.arange(16.0)  # ties over H x W
    x[:, 5] = x[:, 2]  # ties over channels
    x, dy = x.to(dtype), torch.randn(4, 16, 7, 5, generator=g).to(dtype)
    if layout == 'channels_last':
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        fused, ref = make(kind, 'fused', dtype=dtype).train(train), make(kind, 'reference', dtype=dtype).train(train)
        out = run(fused, x, dy)
        assert_equal(out, run(ref, x, dy))
        assert out[0].is_contiguous(memory_format=torch.channels_last) == (layout == 'channels_last')


@pytest.mark.parametrize('name', ['mobilenet_zamr', 'mobilenet_zam_max', 'resnet18_zam', 'resnet18_simam',
                                  'resnet18_nam', 'resnet18_spem'])
def test_zoo_model_trains_as_its_reference(name):
    """A zoo model in train mode, fused (the default) against ``impl='reference'`` with the same weights: logits,
    every parameter's gradient and the BatchNorms' running statistics after one forward / backward, bit for bit."""
    torch.manual_seed(0)
    models = [timm.create_model(name, num_classes=10, attn_kwargs=dict(impl=impl)) for impl in ('fused', 'reference')]
    models[1].load_state_dict(models[0].state_dict())
    x, dy = torch.randn(2, 3, 32, 32), torch.randn(2, 10)
    results = []
    for model in models:
        logits = model.train()(x)
        logits.backward(dy)
        results.append([logits.detach()] + [p.grad for p in model.parameters()] + list(model.buffers()))
    assert len(results[0]) == len(results[1])
    for got, want in zip(*results):
        assert torch.equal(got, want), (got - want).abs().max()


@pytest.mark.parametrize('kind', ['zam:avgmax:False', 'zam:max:True', 'simam'])
def test_batch_chunks(kind, monkeypatch):
    """Inference with one CPU thread works through the batch in chunks (one image per chunk here): the same
    numbers as on the whole batch (several threads)."""
    from zamzoo.layers.fused import _common
    x = torch.randn(3, 16, 7, 5, generator=torch.Generator().manual_seed(4))
    x = x.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(_common, 'CHUNK_BYTES', 1)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(2)
            assert len(_common.batch_chunks(x)) == 1
            whole = make(kind, 'fused')(x)
            torch.set_num_threads(1)
            assert len(_common.batch_chunks(x)) == 3
            chunked = make(kind, 'fused')(x)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    assert chunked.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('kind', KINDS)
def test_fused_bf16(kind):
    """bf16 (both paths in bf16) against fp64 on the same input and parameters: the fused path is as accurate as
    the reference (its error at most 1.25x the reference's + 1e-3, relative to the largest magnitude, and < 5e-2)."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 16, 6, 6, generator=g) * 2.0).to(torch.bfloat16)
    dy = torch.randn(4, 16, 6, 6, generator=g).to(torch.bfloat16)
    bf16 = {impl: make(kind, impl).to(torch.bfloat16) for impl in ('fused', 'reference')}
    exact = make(kind, 'reference').to(torch.bfloat16).double()  # the same bf16-rounded parameters, in fp64
    want = run(exact, x.double(), dy.double())
    errors = {}
    for impl, module in bf16.items():
        got = run(module, x, dy)
        assert got[0].dtype == got[1].dtype == torch.bfloat16
        errors[impl] = [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(got[:2], want[:2])]
    for fused_err, ref_err in zip(errors['fused'], errors['reference']):
        assert fused_err <= 1.25 * ref_err + 1e-3 and fused_err < 5e-2, errors


@pytest.mark.parametrize('pool,skip', ZAM_VARIANTS)
def test_zam_gradcheck(pool, skip):
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _ZamFunction.apply(t, pool, skip), (x,), fast_mode=True)
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: _ZamFunction.apply(t, pool, skip), (xl,), fast_mode=True)


def test_simam_spem_nam_gradcheck():
    dd = dict(dtype=torch.float64)
    x = torch.randn(2, 3, 4, 5, **dd, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _SimAMFunction.apply(t, 1e-4), (x,), fast_mode=True)
    x1 = torch.randn(2, 3, 1, 1, **dd, requires_grad=True)  # 1x1 map: divisor max(HW - 1, 1)
    assert torch.autograd.gradcheck(lambda t: _SimAMFunction.apply(t, 1e-4), (x1,))
    m = make('spem', 'fused', c=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t, *p: channel_gate_fused(t, ('max', 'min'), spem_gate, list(p)),
                                    (x, m.w1, m.b1, m.w2, m.b2, m.p), fast_mode=True)
    # NAM: the attention weight |gamma| / sum|gamma| is detached (as in the original code), so the Jacobian is
    # checked with respect to x and beta; gamma's gradient is compared with the reference in the fp32 test
    w = torch.randn(3, **dd)
    b = torch.randn(3, **dd, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, b: _NamFunction.apply(t, w, b, None, None, True, 0.1, 1e-5), (x, b),
                                    fast_mode=True)
    rm, rv = torch.randn(3, **dd), torch.rand(3, **dd) + 0.5
    assert torch.autograd.gradcheck(lambda t, b: _NamFunction.apply(t, w, b, rm, rv, False, 0.1, 1e-5), (x, b),
                                    fast_mode=True)


def _seed_zam(x, pool, skip):
    """ZAM as the seed writes it: nn.AdaptiveMaxPool2d(1) and torch.max(x, dim=1) (gradient to one element)."""
    def stat(t, channel):
        mean = t.mean((2, 3), keepdim=True) if channel else t.mean(1, keepdim=True)
        mx = F.adaptive_max_pool2d(t, 1) if channel else torch.max(t, dim=1, keepdim=True)[0]
        return {'avg': mean, 'max': mx, 'avgmax': mean + mx}[pool]
    apply = (lambda t, m: t + t * m) if skip else (lambda t, m: t * m)
    f = apply(x, torch.sigmoid(stat(x, True)))
    return apply(f, torch.sigmoid(stat(f, False)))


def _amax_zam(x, pool, skip):
    """ZAM written with amax, whose gradient splits ties evenly."""
    def stat(t, dims):
        mx = t.amax(dims, keepdim=True)
        return mx if pool == 'max' else t.mean(dims, keepdim=True) + mx
    apply = (lambda t, m: t + t * m) if skip else (lambda t, m: t * m)
    f = apply(x, torch.sigmoid(stat(x, (2, 3))))
    return apply(f, torch.sigmoid(stat(f, (1,))))


@pytest.mark.parametrize('pool,skip', [('avgmax', False), ('max', True)])
@pytest.mark.parametrize('where', ['hw', 'channels'])
def test_zam_max_ties(pool, skip, where):
    """Tied maxima: the whole gradient goes to the first maximal element, as in the seed's code; amax would split
    it evenly. Both give the same total over each set of tied elements."""
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    if where == 'hw':  # ties in every channel's max over H x W, at (0, 0) and (2, 3)
        x[:, :, 0, 0] = x[:, :, 2, 3] = 9.0 + torch.arange(6.0)  # distinct per channel: no ties across channels
        tied = lambda g: g[:, :, 0, 0] + g[:, :, 2, 3]  # noqa: E731
    else:  # channels 1 and 4 identical: equal gates, ties in the max over channels wherever they are the largest
        x[:, 1] += 3.0
        x[:, 4] = x[:, 1]
        tied = lambda g: g[:, 1] + g[:, 4]  # noqa: E731
    dy = torch.randn_like(x)
    fused = run(L.ZAM(6, pool=pool, skip=skip), x, dy)[1]
    seed, even = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    _seed_zam(seed, pool, skip).backward(dy)
    _amax_zam(even, pool, skip).backward(dy)
    torch.testing.assert_close(fused, seed.grad)
    assert not torch.allclose(fused, even.grad)
    torch.testing.assert_close(tied(fused), tied(even.grad))


def test_spem_min_max_ties():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    x[:, :, 0, 1] = x[:, :, 2, 2] = 5.0
    x[:, :, 1, 0] = x[:, :, 0, 2] = -5.0
    dy = torch.randn_like(x)
    fused = run(make('spem', 'fused', c=4, dtype=torch.float64), x, dy)
    ref = run(make('spem', 'reference', c=4, dtype=torch.float64), x, dy)
    assert_same(fused, ref)  # the reference is torch.min / torch.max too: first extremal element
    assert (fused[1][:, :, 2, 2] == ref[1][:, :, 2, 2]).all() and (fused[1][:, :, 0, 2] == ref[1][:, :, 0, 2]).all()


@pytest.mark.parametrize('kind', ['zam:avgmax:False', 'zam:avgmax:True', 'simam', 'spem', 'nam'])
def test_inference_path(kind):
    x = torch.randn(3, 16, 5, 5)
    x0 = x.clone()
    fused, ref = make(kind, 'fused').eval(), make(kind, 'reference').eval()
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            y = fused(x)
            torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(x, x0)  # the input is never written
        assert y._base is None and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize('kind', ['zam:avg:True', 'simam', 'spem', 'nam'])
def test_inplace_op_after_fused_output(kind):
    """A ReLU(inplace=True) after the module (MobileNet's slot) is allowed: the outputs are not views and are not
    saved for backward."""
    x = torch.randn(3, 16, 5, 5)
    dy = torch.randn_like(x)
    grads = []
    for impl in ('fused', 'reference'):
        xi = x.clone().requires_grad_(True)
        F.relu(make(kind, impl)(xi), inplace=True).backward(dy)
        grads.append(xi.grad)
    torch.testing.assert_close(*grads, rtol=1e-5, atol=1e-5)


def test_impl_argument():
    with pytest.raises(ValueError, match='impl'):
        L.ZAM(8, impl='triton')
    for name, cls in (('resnet18_zam', L.ZAM), ('mobilenet_zamr', L.ZAM), ('resnet18_simam', L.SimAM),
                      ('resnet18_nam', L.NAM)):
        model = timm.create_model(name, attn_kwargs=dict(impl='reference'))
        mods = [m for m in model.modules() if isinstance(m, cls)]
        assert mods and all(m.impl == 'reference' for m in mods)
        assert all(m.impl == 'fused' for m in timm.create_model(name).modules() if isinstance(m, cls))


@pytest.mark.parametrize('kind', ['zam:max:True', 'simam', 'spem', 'nam'])
def test_jit_script_and_fx(kind):
    x = torch.randn(2, 16, 5, 4)
    for train in (True, False):
        m = make(kind, 'fused').train(train)
        expected = make(kind, 'fused').train(train)(x)
        scripted = torch.jit.script(make(kind, 'fused').train(train))  # scripts the plain formula
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
        gm = torch.fx.symbolic_trace(m)
        torch.testing.assert_close(gm(x), expected, rtol=1e-5, atol=1e-5)
        calls = {getattr(n.target, '__name__', str(n.target)) for n in gm.graph.nodes}
        assert 'sigmoid' in calls and not {'zam_fused', 'simam_fused', 'channel_gate_fused', 'nam_fused'} & calls
        # fx then TorchScript (timm's test_model_forward_fx_torchscript): the traced plain formula compiles
        torch.testing.assert_close(torch.jit.script(gm)(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['resnet18_zam', 'resnet18_nam', 'mobilenet_bam'])
def test_fullgraph_compile(name):
    """torch.compile(fullgraph=True) traces the models, attention in the block and in the stage slot, without a graph
    break (Dynamo with the 'eager' backend keeps it fast), with the eager numbers. Every module alone, in train and
    eval mode: test_fullgraph_compile_modules (a whole model took Dynamo 1.4 to 3 s here, a module alone under
    0.75 s)."""
    torch._dynamo.reset()
    model = calibrate_batchnorm(timm.create_model(name, num_classes=10), (3, 32, 32))  # output depends on x
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', L.list_attn())
def test_fullgraph_compile_modules(name):
    """Every attention module traces without a graph break: in train mode (the fused paths' autograd Functions) with
    the eager numbers and every gradient, in eval mode with the eager numbers. BAM's and ECA's check for a recording
    tracer broke the graph (Dynamo cannot trace torch._C._is_tracing)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = L.create_attn(name, 16).train()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    y = torch.compile(m, fullgraph=True, backend='eager')(x)
    torch.testing.assert_close(y, copy.deepcopy(m)(x), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, fullgraph=True, backend='eager')(x), m(x), rtol=1e-5, atol=1e-5)


_TRITON_CHECK = textwrap.dedent("""
    import torch
    from zamzoo.layers.fused import triton_zam
    from zamzoo.layers.fused.zam import _ZamFunction, zam_fused

    def zam_triton(x, pool, skip):  # what zam_fused runs for a CUDA tensor
        if torch.is_grad_enabled():
            return _ZamFunction.apply(x, pool, skip, triton_zam.zam_forward, triton_zam.zam_backward)
        return triton_zam.zam_forward(x, pool, skip, with_index=False)[0]
    torch.manual_seed(0)
    # channels_last (2, 37, 5, 7): two blocks of channels and two of positions in the per-channel kernels
    for pool, skip, layout, shape in [('avgmax', False, torch.contiguous_format, (2, 5, 4, 3)),
                                      ('max', True, torch.channels_last, (2, 5, 4, 3)),
                                      ('avgmax', True, torch.channels_last, (2, 37, 5, 7))]:
        x = torch.randn(shape) * 2.0
        x[:, :, 0, 0] = x[:, :, 2, 1] = 7.0 + torch.arange(float(shape[1]))  # ties over H x W
        x[:, 3] = x[:, 1]  # ties over channels
        x = x.contiguous(memory_format=layout)
        assert triton_zam.supports_triton(x)
        dy = torch.randn_like(x)
        results = []
        for fn in (zam_triton, zam_fused):
            xi = x.clone().requires_grad_(True)
            y = fn(xi, pool, skip)
            y.backward(dy)
            with torch.no_grad():
                results.append((y.detach(), xi.grad, fn(x, pool, skip)))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert results[0][0].is_contiguous(memory_format=layout)
    # a NaN is the maximum, as in torch.max: it reaches the output as in the eager path (and the seed's code); an
    # infinity under ZAM+R gives what F * M + F gives (F * (1 + M) turned -inf + -inf * 0 = NaN into -inf)
    for pool, skip, shape, value in [('max', False, (2, 6, 4, 3), 'nan'), ('max', True, (2, 37, 5, 7), 'nan'),
                                     ('avgmax', False, (2, 6, 4, 3), 'nan'), ('avgmax', True, (1, 4, 3, 3), '-inf'),
                                     ('avg', True, (1, 4, 3, 3), '-inf'), ('max', True, (2, 6, 4, 3), 'inf')]:
        x = torch.randn(shape)
        x[0, 2, 1, 1] = x[-1, 3, 0, 2] = float(value)
        with torch.no_grad():
            got, expected = zam_triton(x, pool, skip), zam_fused(x, pool, skip)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        for xi, fn in zip(xs, (zam_triton, zam_fused)):
            fn(xi, pool, skip).backward(torch.ones_like(x))
        torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-5, equal_nan=True)
    print('triton ok')
""")


def test_triton_takes_only_what_int32_offsets_reach():
    from zamzoo.layers.fused import triton_zam
    if not triton_zam.HAS_TRITON:
        pytest.skip('Triton is not installed')
    assert triton_zam.supports_triton(torch.empty(1, 2 ** 30, 1, 1, device='meta'))
    assert not triton_zam.supports_triton(torch.empty(1, 2 ** 30, 1, 2, device='meta'))  # 2**31 elements: eager
    assert not triton_zam.supports_triton(torch.empty(4, 8, 2, 2, dtype=torch.float64, device='meta'))


def test_triton_kernels_in_interpreter():
    """The CUDA kernels of triton_zam, run on CPU by Triton's interpreter (in a subprocess: the variable must be
    set before Triton is imported), against the eager fused path: outputs, gradients (ties included), inference."""
    pytest.importorskip('triton')
    env = dict(os.environ, TRITON_INTERPRET='1')
    done = subprocess.run([sys.executable, '-c', _TRITON_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and 'triton ok' in done.stdout, done.stderr[-3000:]


def _saved_bytes(fn, x) -> int:
    """Bytes of the distinct storages autograd keeps for backward during fn(x)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


def test_saved_bytes_resnet18_zam():
    """Training memory of resnet18_zam against resnet18_plain at batch 128, as the bytes saved for backward
    (deterministic; on the meta device, so nothing is computed). Eager: the fused module saves its input and a
    few (B, C) / (B, H*W) statistics -- 1.206x; the unfused formula 1.400x. The attention input is a map that no
    other layer saves, so no eager attention module can reach 1.05x on its own. Compiled (Dynamo + AOTAutograd
    with inductor's min-cut partitioner, without inductor's code generation): the attention input is recomputed
    from the BatchNorm input that is saved anyway -- 1.011x."""
    x = torch.randn(128, 3, 32, 32, device='meta')

    def build(name, **kwargs):
        return timm.create_model(name, **kwargs).to('meta').train()

    plain = _saved_bytes(build('resnet18_plain'), x)
    fused = _saved_bytes(build('resnet18_zam'), x)
    reference = _saved_bytes(build('resnet18_zam', attn_kwargs=dict(impl='reference')), x)
    assert fused / plain == pytest.approx(1.2056, abs=1e-3)
    assert reference / plain == pytest.approx(1.4002, abs=1e-3)

    compiled = {}
    for name in ('resnet18_plain', 'resnet18_zam'):
        torch._dynamo.reset()
        model = torch.compile(build(name), backend='aot_eager_decomp_partition', fullgraph=True)
        compiled[name] = _saved_bytes(model, x)
    assert compiled['resnet18_zam'] / compiled['resnet18_plain'] <= 1.05
