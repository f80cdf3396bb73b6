"""What only a CUDA device can check (skipped elsewhere; scripts/gpu_bench.sh runs it first on a GPU machine):
ZAM's Triton kernels, compiled for the GPU, against the eager fused path and the plain formula; the fused SimAM /
SPEM / NAM on CUDA against their formulas; a whole zoo model's training step, fused against reference.

Tolerances as tests/test_fused.py (fp32 rtol=atol=1e-5: different summation orders; TF32 off), except atol=2e-5
for the Triton kernels (sums over 1,024 positions in another order), bf16 against an fp64 evaluation of the
formula on the same bf16 input.
"""
import pytest
import torch

import timm
import zamzoo  # noqa: F401  (registers the models)
import zamzoo.layers as L
from zamzoo.layers.fused import triton_zam
from zamzoo.layers.fused.zam import _ZamFunction, _zam_forward

from test_fused import KINDS, assert_same, make, run
from test_step import LABEL_SMOOTHING, _penalty, _pieces, _recipe, _run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (none on this machine)')

ZAM_VARIANTS = [(pool, skip) for pool in ('avgmax', 'avg', 'max') for skip in (False, True)]
# (B, C, H, W): a CIFAR ResNet's four stages at small batch, odd sizes (masked tails of every block), more
# positions than one block of the channel kernel (1024), wide channels (MobileNetV2's last stage)
SHAPES = [(2, 5, 4, 3), (4, 64, 32, 32), (8, 512, 4, 4), (3, 7, 33, 37), (2, 1280, 2, 2)]


@pytest.fixture(autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _zam_input(shape, layout, seed=0, ties=True):
    g = torch.Generator(device='cuda').manual_seed(seed)
    x = torch.randn(shape, device='cuda', generator=g) * 2.0
    if ties:
        x[:, :, 0, 0] = x[:, :, -1, -1] = 7.0 + torch.arange(shape[1], device='cuda')  # ties over H x W
        if shape[1] > 3:
            x[:, 3] = x[:, 1]  # ties over channels
    return x.contiguous(memory_format=layout)


def _forward_backward(fn, x, dy):
    xi = x.detach().clone().requires_grad_(True)
    y = fn(xi)
    y.backward(dy)
    with torch.no_grad():
        inference = fn(x)
    return y.detach(), xi.grad, inference


@pytest.mark.parametrize('pool, skip', ZAM_VARIANTS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['contiguous', 'cl'])
def test_triton_zam_equals_the_eager_path_and_the_formula(pool, skip, shape, layout):
    """Output, input gradient (maxima ties included: the first maximal element takes the gradient) and the
    inference output of the Triton kernels = the eager fused path's = the plain formula's."""
    x = _zam_input(shape, layout)
    assert triton_zam.supports_triton(x)
    dy = torch.randn_like(x)
    reference = L.ZAM(shape[1], pool=pool, skip=skip, impl='reference')
    fused = L.ZAM(shape[1], pool=pool, skip=skip, impl='fused')  # on CUDA: the Triton kernels
    eager_ops = lambda t: (_ZamFunction.apply(t, pool, skip) if torch.is_grad_enabled()  # noqa: E731
                           else _zam_forward(t, pool, skip, with_index=False)[0])
    got = _forward_backward(fused, x, dy)
    for want in (_forward_backward(eager_ops, x, dy), _forward_backward(reference, x, dy)):
        for a, b in zip(got, want):  # atol 2e-5: seen on an H200, 1 element in 262,144 of (4, 64, 32, 32) 1.1e-5 off
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)
    assert got[0].is_contiguous(memory_format=layout) and got[1].is_contiguous(memory_format=layout)


@pytest.mark.parametrize('pool, skip', ZAM_VARIANTS)
def test_triton_zam_bf16(pool, skip):
    """bf16 in, bf16 out (fp32 statistics): as accurate as the plain formula run in bf16, against fp64 -- the
    output and the inference output; the input gradient of 'avg' only (where a max's position is a near-tie,
    bf16 rounding may route its gradient elsewhere than fp64: the formula's own bf16 error reaches 0.25 there)."""
    x = _zam_input((8, 64, 16, 16), torch.channels_last, ties=False).to(torch.bfloat16)
    dy = torch.randn_like(x)
    exact = _forward_backward(L.ZAM(64, pool=pool, skip=skip, impl='reference').double(), x.double(), dy.double())
    errors = {}
    for impl in ('fused', 'reference'):
        got = _forward_backward(L.ZAM(64, pool=pool, skip=skip, impl=impl), x, dy)
        assert got[0].dtype == got[1].dtype == torch.bfloat16
        errors[impl] = [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(got, exact)]
        if pool != 'avg':
            del errors[impl][1]
    for fused_err, ref_err in zip(errors['fused'], errors['reference']):
        assert fused_err <= 1.25 * ref_err + 1e-3 and fused_err < 5e-2, errors


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['contiguous', 'cl'])
def test_fused_modules_on_cuda(kind, layout):
    """Every fused module (ZAM through Triton) against its formula on CUDA: output, gradients, buffers."""
    g = torch.Generator(device='cuda').manual_seed(1)
    x = torch.randn(4, 16, 7, 5, device='cuda', generator=g).contiguous(memory_format=layout)
    dy = torch.randn(4, 16, 7, 5, device='cuda', generator=g)
    assert_same(run(make(kind, 'fused').cuda().train(), x, dy), run(make(kind, 'reference').cuda().train(), x, dy),
                rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['resnet18_zam', 'mobilenet_zamr', 'resnet18_simam', 'resnet18_nam',
                                  'mobilenet_spem'])
def test_model_training_step_fused_equals_reference_on_cuda(name):
    """One forward / backward of a zoo model in the training loop's layout (channels_last): in fp32 the fused
    modules (Triton for ZAM) are as close to the fp64 formula as the fp32 formula is (logits and every parameter's
    gradient, relative to its norm). Not fused against reference directly: SimAM's fp32 gradients are 0.3% off
    fp64 in either implementation (its 1 / (4 (var + 1e-4)) amplifies rounding)."""
    torch.manual_seed(0)
    state = timm.create_model(name, num_classes=10).state_dict()
    x = torch.randn(16, 3, 32, 32, device='cuda', dtype=torch.float64).contiguous(memory_format=torch.channels_last)

    def step(impl, dtype):
        model = timm.create_model(name, num_classes=10, attn_kwargs=dict(impl=impl))
        model.load_state_dict(state)
        model = model.to(device='cuda', dtype=dtype, memory_format=torch.channels_last).train()
        logits = model(x.to(dtype))
        logits.logsumexp(-1).sum().backward()
        return [logits.detach()] + [p.grad for p in model.parameters()]

    exact = step('reference', torch.float64)
    errors = {impl: max(((a.double() - b).norm() / b.norm()).item() for a, b in zip(step(impl, torch.float32), exact))
              for impl in ('fused', 'reference')}
    assert errors['fused'] <= 2 * errors['reference'] + 1e-5, errors


@pytest.mark.parametrize('name', sorted(m for m in zamzoo.models.list_models() if m.startswith('mobilenet_')))
def test_every_attention_trains_the_same_in_a_cuda_graph(name):
    """Four epochs of the step replayed as one CUDA graph (captured in the second) equal the eager step's, for every
    attention of the zoo (on one backbone): no module syncs with the host or has a value frozen at capture, so
    `zoo run --cuda-graph` can train the whole zoo. fp32, deterministic cuDNN, both steps with the tensor lr; 1e-4:
    above what a different kernel order can reach, far below what a frozen or skipped op does."""
    from zamzoo.train.step import StepMath, TrainStep

    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        # lr 0.001: at test_step's 0.1 some of these models diverge on its 20 random images (mobilenet_zamr's mean
        # loss 19.8 -> 123 in two epochs; 2.9 -> 10.9 at 0.01), and any rounding grows with them
        pieces = [_pieces(device='cuda', model=name, recipe=_recipe().replace(lr=0.001)) for _ in range(2)]
        steps = [TrainStep(StepMath(p.model, torch.device('cuda'), None, 1, LABEL_SMOOTHING, _penalty, p.model),
                           p.optimizer, count_bad=True, capture=capture) for p, capture in zip(pieces, (False, True))]
        sums = [_run(p, step, epochs=4, device='cuda') for p, step in zip(pieces, steps)]
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
    assert len(steps[1].graphs) == 2  # the full batch and the epoch's last, partial one
    for a, b in zip(*sums):
        assert a == pytest.approx(b, rel=1e-4)
    for (k, v), w in zip(pieces[0].model.state_dict().items(), pieces[1].model.state_dict().values()):
        torch.testing.assert_close(w, v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_simam_under_autocast_gives_the_formulas_output(dtype):
    """Under CUDA autocast the module gives what its formula gives (autocast's op lists run the formula's pow and sum
    in float32; the fused path would stay in x's dtype), with autograd as in the training loop."""
    x = torch.randn(4, 16, 9, 7, device='cuda', generator=torch.Generator('cuda').manual_seed(0)).to(dtype)
    outs = []
    for impl in ('fused', 'reference'):
        xg = x.clone().requires_grad_(True)
        with torch.autocast('cuda', dtype=dtype):
            y = L.SimAM(16, impl=impl).cuda()(xg)
        y.float().square().sum().backward()
        outs.append((y, xg.grad))
    assert outs[0][0].dtype == outs[1][0].dtype
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
