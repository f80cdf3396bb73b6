"""Attention modules: exact parameter counts, outputs against the formulas of the papers / original code (written
here independently of zamzoo.layers), input checks, registry, penalties, timm / TorchScript / FX compatibility."""
import copy
import itertools
import math
import unittest.mock

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import timm
import zamzoo
import zamzoo.layers as L

pytestmark = pytest.mark.filterwarnings('ignore:.*torch.jit.script.*is deprecated')

ALL = L.list_attn()
EXPECTED_NAMES = ['bam', 'cbam', 'eca', 'nam', 'se', 'simam', 'spem', 'ulsam', 'zam', 'zam_avg', 'zam_max', 'zamr',
                  'zca', 'zsa']


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 64, 8, 6, generator=g) * 2.0 + 0.3


# --------------------------------------------------------------------------- registry

def test_list_attn_is_the_registry_and_the_package_exports_it():
    assert ALL == EXPECTED_NAMES
    assert zamzoo.list_attn() == ALL
    assert zamzoo.create_attn is L.create_attn


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        L.create_attn('zamm', 64)
    for name in ALL:
        assert name in str(e.value)
    with pytest.raises(ValueError):
        L.get_attn('nope')


def test_get_attn_resolves_names_aliases_classes_and_none():
    assert L.get_attn('ZAM') is L.ZAM
    assert L.get_attn(None) is None and L.get_attn('plain') is None and L.create_attn('plain', 8) is None
    assert L.get_attn(L.ULSAM) is L.ULSAM
    m = L.create_attn('zamr', 16)
    assert isinstance(m, L.ZAM) and m.skip and m.pool == 'avgmax'
    assert L.create_attn('zam_avg', 16).pool == 'avg' and L.create_attn('zam_max', 16).pool == 'max'
    assert L.create_attn('ulsam', 64, groups=8).groups == 8
    with pytest.raises(ValueError):
        L.ZAM(8, pool='min')


# --------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('name', ['zam', 'zam_avg', 'zam_max', 'zamr', 'zca', 'zsa', 'simam'])
def test_parameter_free(name):
    assert n_params(L.create_attn(name, 64)) == 0


@pytest.mark.parametrize('c,g', [(512, 4), (64, 1), (64, 2), (96, 8), (256, 16)])
def test_ulsam_params(c, g):
    assert n_params(L.ULSAM(c, g)) == 5 * c + 3 * g
    if (c, g) == (512, 4):
        assert n_params(L.ULSAM(c, g)) == 2572


def test_ulsam_groups_must_divide():
    with pytest.raises(ValueError, match=r'^ULSAM: channels \(30\) must be divisible by groups \(4\)$'):
        L.ULSAM(30, 4)  # ULSAM's own message: torch's grouped Conv2d says 'divisible by groups' too


@pytest.mark.parametrize('c', [16, 64, 256])
def test_nam_spem_params(c):
    assert n_params(L.NAM(c)) == 2 * c
    assert n_params(L.NAM(c, spatial=True, spatial_size=(8, 6))) == 2 * c + 2 * 48
    assert n_params(L.SPEM(c)) == 4 * c + 2


def test_cbam_params():
    stages = [64, 64, 128, 128, 256, 256, 512, 512]  # ResNet18: two BasicBlocks per stage
    # the ZAM seed's variant: 2*C*(C//16) + 18 per module; ResNet18 11,220,132 -> 11,307,316
    for c in stages:
        assert n_params(L.CBAM(c, **L.CBAM_SEED_KWARGS)) == 2 * c * (c // 16) + 18
    assert sum(n_params(L.CBAM(c, **L.CBAM_SEED_KWARGS)) for c in stages) == 11_307_316 - 11_220_132
    # official CBAM (MLP with biases, 7x7 conv + BN): ResNet18 -> 11,310,012
    assert sum(n_params(L.CBAM(c)) for c in stages) == 11_310_012 - 11_220_132


def test_bam_params():
    # official BAM after layer1..3 of the CIFAR-100 ResNet18: 11,243,123 - 11,220,132
    assert sum(n_params(L.BAM(c)) for c in (64, 128, 256)) == 22_991


def test_se_eca_params():
    for c in (64, 256):
        r = c // 16
        assert n_params(L.SE(c)) == 2 * c * r + r + c
        k = L.ECA(c).conv.kernel_size[0]
        t = int(abs(math.log2(c) + 1) / 2)
        assert k == max(t if t % 2 else t + 1, 3)
        assert n_params(L.ECA(c)) == k


# --------------------------------------------------------------------------- formulas

def ref_pool(t, dims, pool):
    if pool == 'avg':
        return t.mean(dims, keepdim=True)
    if pool == 'max':
        return t.amax(dims, keepdim=True)
    return t.mean(dims, keepdim=True) + t.amax(dims, keepdim=True)


@pytest.mark.parametrize('pool', ['avgmax', 'avg', 'max'])
@pytest.mark.parametrize('skip', [False, True])
def test_zam_formulas(x, pool, skip):
    mc = torch.sigmoid(ref_pool(x, (2, 3), pool))
    f1 = x + x * mc if skip else x * mc
    ms = torch.sigmoid(ref_pool(f1, (1,), pool))
    f2 = f1 + f1 * ms if skip else f1 * ms
    torch.testing.assert_close(L.ZAM(64, pool=pool, skip=skip)(x), f2)
    torch.testing.assert_close(L.ZCA(64, pool=pool, skip=skip)(x), f1)
    ms0 = torch.sigmoid(ref_pool(x, (1,), pool))
    torch.testing.assert_close(L.ZSA(64, pool=pool, skip=skip)(x), x + x * ms0 if skip else x * ms0)
    maps = L.ZAM(64, pool=pool, skip=skip).attention_maps(x)
    torch.testing.assert_close(maps['channel'], mc)
    torch.testing.assert_close(maps['spatial'], ms)


def _seed_zam_ops(t, pool, skip):
    """ZAM as modules.md writes it, with the seed's ops: nn.AdaptiveAvgPool2d(1) + nn.AdaptiveMaxPool2d(1) over H, W,
    torch.mean(dim=1) + torch.max(dim=1) over C, and ZAM+R as ``F + F * M`` (two roundings)."""
    def stat(f, channel):
        mean = nn.AdaptiveAvgPool2d(1)(f) if channel else torch.mean(f, dim=1, keepdim=True)
        mx = nn.AdaptiveMaxPool2d(1)(f) if channel else torch.max(f, dim=1, keepdim=True)[0]
        return {'avg': mean, 'max': mx, 'avgmax': mean + mx}[pool]
    f1 = t + t * torch.sigmoid(stat(t, True)) if skip else t * torch.sigmoid(stat(t, True))
    return f1 + f1 * torch.sigmoid(stat(f1, False)) if skip else f1 * torch.sigmoid(stat(f1, False))


@pytest.mark.parametrize('pool', ['avgmax', 'avg', 'max'])
@pytest.mark.parametrize('skip', [False, True])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_zam_is_the_seeds_formula_to_the_last_bit(x, pool, skip, dtype):
    """Both implementations, with autograd recording and in inference, compute the seed's numbers bit for bit.
    (ZAM+R spelled x * (1 + M) differed in the last bit, and a zoo model in train mode carried that to ~2e-5 in its
    logits against the seed's own MobileNet: more than torch.testing.assert_close allows.)"""
    x = x.to(dtype)
    expected = _seed_zam_ops(x, pool, skip)
    for impl in ('fused', 'reference'):
        m = L.ZAM(64, pool=pool, skip=skip, impl=impl)
        assert torch.equal(m(x.clone().requires_grad_(True)).detach(), expected), impl
        with torch.inference_mode():
            assert torch.equal(m(x.clone()), expected), impl
        inplace = L.ZAM(64, pool=pool, skip=skip, impl=impl, inplace=True)
        with torch.no_grad():
            assert torch.equal(inplace(x.clone()), expected), impl


def test_zam_registry_variants(x):
    mc = torch.sigmoid(x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
    f1 = x * mc
    ref = f1 * torch.sigmoid(f1.mean(1, keepdim=True) + f1.amax(1, keepdim=True))
    torch.testing.assert_close(L.create_attn('zam', 64)(x), ref)
    f1 = x + x * mc
    ref = f1 + f1 * torch.sigmoid(f1.mean(1, keepdim=True) + f1.amax(1, keepdim=True))
    torch.testing.assert_close(L.create_attn('zamr', 64)(x), ref)


def test_simam_formula(x):
    h, w = x.shape[2:]
    mu = x.mean((2, 3), keepdim=True)
    d = (x - mu) ** 2
    v = d.sum((2, 3), keepdim=True) / (h * w - 1)
    ref = x * torch.sigmoid(d / (4 * (v + 1e-4)) + 0.5)
    torch.testing.assert_close(L.SimAM(64)(x), ref)
    torch.testing.assert_close(L.SimAM(64, e_lambda=0.1)(x), x * torch.sigmoid(d / (4 * (v + 0.1)) + 0.5))
    # 1x1 map: the official HW - 1 = 0 gives NaN; ours divides by 1, gate sigmoid(0.5)
    x1 = x[:, :, :1, :1]
    torch.testing.assert_close(L.SimAM(64)(x1), x1 * torch.sigmoid(torch.tensor(0.5)))
    torch.testing.assert_close(torch.fx.symbolic_trace(L.SimAM(64))(x1), x1 * torch.sigmoid(torch.tensor(0.5)))


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_simam_is_the_official_formula_to_the_last_bit(x, impl, single_thread):
    """Both implementations, with autograd and in inference (in one chunk and image by image), give the official
    code's numbers bit for bit: ``x * sigmoid(d / (4 * (d.sum / n + lambda)) + 0.5)``, divided as it divides. (The
    fused path's product by 1 / (4 (v + lambda)) differed in the last bit, and resnet164_simam in train mode carried
    that to ~9e-5 in its logits.) One thread: inference runs in batch chunks only there."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    expected = x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + 1e-4)) + 0.5)
    m = L.SimAM(64, impl=impl)
    assert torch.equal(m(x.clone().requires_grad_(True)).detach(), expected)
    for chunk_bytes in (1 << 20, 1):
        with unittest.mock.patch('zamzoo.layers.fused._common.CHUNK_BYTES', chunk_bytes), torch.inference_mode():
            assert torch.equal(m(x), expected)


def test_spem_at_init(x):
    g = torch.sigmoid(torch.tensor(-2.0)) * torch.sigmoid(torch.tensor(-1.0))
    assert abs(g.item() - 0.0320586) < 1e-7
    m = L.SPEM(64)
    torch.testing.assert_close(m(x), 0.0320586 * x, rtol=1e-6, atol=1e-6)
    big = torch.randn(2, 64, 3, 3) * 100 - 50  # any input: the gate does not depend on it at init
    torch.testing.assert_close(m(big), 0.0320586 * big, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(m.attention_maps(big)['channel'], torch.full((2, 64, 1, 1), 0.0320586), rtol=1e-6,
                               atol=1e-7)
    assert m.penalty().item() == pytest.approx(0.5)


def test_spem_formula(x):
    m = L.SPEM(64)
    with torch.no_grad():
        for p in (m.w1, m.b1, m.w2, m.b2):
            p.normal_()
        m.p.copy_(torch.tensor([0.3, -1.1]))
    mx = x.amax((2, 3), keepdim=True) * m.w2 + m.b2
    mn = x.amin((2, 3), keepdim=True) * m.w2 + m.b2
    lam = 0.3 ** 2 / (0.3 ** 2 + 1.1 ** 2)
    mix = (lam * mx + (1 - lam) * mn) * m.w1 + m.b1
    ref = torch.sigmoid(mx + mn) * torch.sigmoid(mix) * x
    torch.testing.assert_close(m(x), ref)
    assert m.penalty().item() == pytest.approx(0.3 ** 2 + 1.1 ** 2)


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_spem_is_the_seeds_formula_to_the_last_bit(x, impl):
    """SPEM as the seed's code spells it (AdaptiveMaxPool2d, min over W then H, p = p^2 / sum(p^2), mix = p[0] * max
    + p[1] * min, sigmoid(min + max) * sigmoid(mix) * F), bit for bit, with autograd and in inference."""
    m = L.SPEM(64, impl=impl)
    with torch.no_grad():
        for t in (m.w1, m.b1, m.w2, m.b2):
            t.normal_(0, 0.5)
        m.p.copy_(torch.tensor([0.7, 0.2]))  # where 1 - p[0] is not p[1] in float32
    mx = nn.AdaptiveMaxPool2d(1)(x) * m.w2 + m.b2
    mn = x.min(dim=-1, keepdim=True).values.min(dim=-2, keepdim=True).values * m.w2 + m.b2
    p = torch.pow(m.p, 2) / torch.sum(torch.pow(m.p, 2))
    expected = (torch.sigmoid(mn + mx) * torch.sigmoid((p[0] * mx + p[1] * mn) * m.w1 + m.b1) * x).detach()
    assert torch.equal(m(x.clone().requires_grad_(True)).detach(), expected)
    with torch.inference_mode():
        assert torch.equal(m(x), expected)


@pytest.mark.parametrize('impl', ['fused', 'reference'])
@pytest.mark.parametrize('case', ['1x1', 'constant', 'ties'])
def test_spems_gradient_is_the_seeds_where_the_max_and_min_are_one_element(impl, case):
    """On a 1x1 or constant map the max and the min are the same element: autograd adds their gradients to it in
    the reverse order of the forward: the reference path (min first) was 1 ulp off the seed's (max first) gradient
    there, and the fused backward, which was the seed's, 1 ulp off the reference's."""
    torch.manual_seed(0)
    x = {'1x1': torch.randn(4, 64, 1, 1), 'constant': torch.full((4, 64, 4, 4), 0.7),
         'ties': torch.randn(4, 64, 4, 4).round()}[case]
    gy = torch.randn_like(x)
    m = L.SPEM(64, impl=impl)
    with torch.no_grad():
        for t in (m.w1, m.b1, m.w2, m.b2):
            t.normal_(0, 0.5)
        m.p.copy_(torch.tensor([0.7, 0.2]))
    seed_x = x.clone().requires_grad_(True)
    mx = nn.AdaptiveMaxPool2d(1)(seed_x) * m.w2 + m.b2
    mn = seed_x.min(dim=-1, keepdim=True).values.min(dim=-2, keepdim=True).values * m.w2 + m.b2
    p = torch.pow(m.p, 2) / torch.sum(torch.pow(m.p, 2))
    (torch.sigmoid(mn + mx) * torch.sigmoid((p[0] * mx + p[1] * mn) * m.w1 + m.b1) * seed_x).backward(gy)
    affine = (m.w1, m.b1, m.w2, m.b2)  # (p's gradient takes the penalty's too in the seed's block: compared there)
    seed_grads = [seed_x.grad] + [t.grad.clone() for t in affine]
    m.zero_grad()
    ours = x.clone().requires_grad_(True)
    m(ours).backward(gy)
    for got, expected in zip([ours.grad] + [t.grad for t in affine], seed_grads):
        assert torch.equal(got, expected)


def ulsam_reference(m, x):
    """ULSAM as /work/shared/reference/modules.md writes it: one original-style subspace per chunk (DW conv1x1 -> BN ->
    ReLU -> maxpool -> PW G->1 -> BN -> ReLU -> softmax over H x W -> F_n * A_n + F_n); (output, maps)."""
    g = m.groups
    G = m.channels // g

    def bn(a, mod, sl):
        stats = (None, None) if mod.training else (mod.running_mean[sl], mod.running_var[sl])
        return F.batch_norm(a, *stats, mod.weight[sl], mod.bias[sl], training=mod.training, eps=mod.eps)

    outs, maps = [], []
    for i, f in enumerate(torch.chunk(x, g, dim=1)):
        sl, one = slice(i * G, (i + 1) * G), slice(i, i + 1)
        a = F.relu(bn(F.conv2d(f, m.dw.weight[sl], m.dw.bias[sl], groups=G), m.bn_dw, sl))
        a = F.max_pool2d(a, 3, 1, 1)
        a = F.relu(bn(F.conv2d(a, m.pw.weight[one], m.pw.bias[one]), m.bn_pw, one))
        b, _, h, w = a.shape
        a = torch.softmax(a.view(b, 1, h * w), dim=2).view(b, 1, h, w)
        outs.append(f * a + f)
        maps.append(a)
    return torch.cat(outs, 1), torch.cat(maps, 1)


def ulsam_random_bn(channels, g, seed):
    """A ULSAM with non-trivial BN affines (so that the ReLUs do not zero everything) and running statistics."""
    torch.manual_seed(seed)
    m = L.ULSAM(channels, g)
    with torch.no_grad():
        for bn in (m.bn_dw, m.bn_pw):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.1, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.mark.parametrize('g', [1, 4, 16])
def test_ulsam_maps_and_formula(x, g):
    m = ulsam_random_bn(64, g, g)
    maps = m.attention_maps(x)['spatial']
    assert maps.shape == (4, g, 8, 6)
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(4, g))
    ref, ref_maps = ulsam_reference(m, x)
    torch.testing.assert_close(maps, ref_maps)
    torch.testing.assert_close(m(x), ref)
    m.eval()  # BNs folded into the convs
    ref, ref_maps = ulsam_reference(m, x)
    torch.testing.assert_close(m.attention_maps(x)['spatial'], ref_maps)
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('g,shape', [(1, (4, 64, 8, 6)), (4, (4, 64, 8, 6)), (8, (32, 128, 8, 8))])
def test_ulsam_in_train_mode_is_the_seeds_module_to_the_last_bit(g, shape, threads):
    """In train mode (a new model's mode) the output and every gradient are those of the seed's own subspaces
    (`ulsam_reference`: torch.chunk, one conv / BN per subspace, ``torch.mul(A, F) + F``), bit for bit, at one thread
    and at two, below and above the batch size (16) from which PyTorch hands a 1x1 conv to oneDNN at one thread.
    addcmul, which rounds once, was 2.4e-7 off; one grouped conv for the g subspaces' convs, 4.8e-7 (output) and
    6.9e-5 (DW weight gradient) at two threads."""
    m = ulsam_random_bn(shape[1], g, g)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2.0 + 0.3
    grads = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for forward in (m, lambda t: ulsam_reference(m, t)[0]):
            xi = x.clone().requires_grad_(True)
            out = forward(xi)
            out.backward(torch.ones_like(out) + torch.arange(float(out.shape[-1])))
            grads.append([out.detach(), xi.grad] + [p.grad.clone() for p in m.parameters()])
            m.zero_grad()
    finally:
        torch.set_num_threads(before)
    for got, want in zip(*grads):
        assert torch.equal(got, want), (got - want).abs().max()


@pytest.mark.parametrize('momentum', [0.1, None])
def test_ulsam_per_subspace_batch_norms_keep_the_statistics_the_batchnorm_modules_keep(momentum):
    """The per-subspace path's running statistics and batch counts are those of the BatchNorm2d modules run as
    written (a forward hook on a submodule makes ULSAM call them), over three train steps and in eval mode after."""
    ours = ulsam_random_bn(64, 4, 0)
    for bn in (ours.bn_dw, ours.bn_pw):
        bn.momentum = momentum
    modules = copy.deepcopy(ours)
    modules.dw.register_forward_hook(lambda *args: None)
    for step in range(3):
        x = torch.randn(4, 64, 8, 6, generator=torch.Generator().manual_seed(step))
        torch.testing.assert_close(ours(x), modules(x), rtol=1e-6, atol=1e-6)
    for got, want in zip(ours.buffers(), modules.buffers()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert int(ours.bn_dw.num_batches_tracked) == int(ours.bn_pw.num_batches_tracked) == 3
    ours.eval(), modules.eval()
    torch.testing.assert_close(ours(x), modules(x), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings('ignore::FutureWarning', 'ignore::torch.jit.TracerWarning')
def test_ulsam_eval_fast_path_exact_everywhere():
    """Eval mode on one thread runs in batch chunks (7 images of 32 KiB, 2 per chunk here) through the BN-folded formula:
    gradients, channels_last, torch.jit.trace (at another batch size), TorchScript and fx all give the plain formula,
    and forward hooks on the submodules (thop, FlopCounterMode) still fire."""
    m = ulsam_random_bn(32, 4, 0).eval()
    x = torch.randn(7, 32, 16, 16) * 2.0
    ref = ulsam_reference(m, x)[0].detach()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with unittest.mock.patch('zamzoo.layers.fused._common.CHUNK_BYTES', 2 * 32 * 16 * 16 * 4):
            with torch.no_grad():  # the chunks: no autograd
                torch.testing.assert_close(m(x), ref)
                torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), ref)
            xg = x.clone().requires_grad_(True)
            (m(xg) * ref).sum().backward()
            xr = x.clone().requires_grad_(True)
            params = list(m.parameters())
            got = [p.grad.clone() for p in params]
            m.zero_grad()
            (ulsam_reference(m, xr)[0] * ref).sum().backward()
            torch.testing.assert_close(xg.grad, xr.grad)
            for a, b in zip(got, [p.grad for p in params]):  # sums of 1792 terms (the PW biases: cancelling)
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
            with torch.no_grad():
                traced = torch.jit.trace(m, x[:2])
            torch.testing.assert_close(traced(x), ref)
            torch.testing.assert_close(torch.jit.script(m)(x), ref)
            torch.testing.assert_close(torch.fx.symbolic_trace(m)(x), ref)
    finally:
        torch.set_num_threads(threads)
    seen = []
    m.dw.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    torch.testing.assert_close(m(x), ref)
    assert seen == [x.shape]


def test_nam_channel_formula(x):
    m = L.NAM(64)
    with torch.no_grad():
        m.bn.weight.normal_()  # signs mixed: w uses |gamma|
        m.bn.bias.normal_()
    gamma, beta = m.bn.weight.detach(), m.bn.bias.detach()
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    bn = (x - mean) / torch.sqrt(var + 1e-5) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    w = gamma.abs() / gamma.abs().sum()
    ref = torch.sigmoid(w.view(1, -1, 1, 1) * bn) * x
    torch.testing.assert_close(m(x), ref)
    # no gradient through w: d out / d gamma only through the BN itself
    m.zero_grad()
    m(x).sum().backward()
    g_ours = m.bn.weight.grad.clone()
    gm = gamma.clone().requires_grad_(True)
    bn2 = (x - mean) / torch.sqrt(var + 1e-5) * gm.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    (torch.sigmoid(w.view(1, -1, 1, 1) * bn2) * x).sum().backward()
    torch.testing.assert_close(g_ours, gm.grad)


def test_nam_spatial(x):
    with pytest.raises(ValueError, match='spatial_size'):
        L.NAM(64, spatial=True)
    m = L.NAM(64, spatial=True, spatial_size=(8, 6))
    with torch.no_grad():
        m.spatial_bn.weight.normal_()
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # reference: channel gate, then BatchNorm1d over (B, HW, C) with |lambda| / sum|lambda| weights
    xc = L.NAM(64)(x)  # same init of the channel BN (gamma=1, beta=0)
    b, c, h, w = x.shape
    t = xc.reshape(b, c, h * w).transpose(1, 2)
    mean = t.mean((0, 2), keepdim=True)
    var = t.var((0, 2), unbiased=False, keepdim=True)
    lam = m.spatial_bn.weight.detach()
    tn = (t - mean) / torch.sqrt(var + 1e-5) * lam.view(1, -1, 1)
    gate = torch.sigmoid(tn * (lam.abs() / lam.abs().sum()).view(1, -1, 1)).transpose(1, 2).reshape(b, c, h, w)
    torch.testing.assert_close(y, gate * xc)
    with pytest.raises(ValueError, match='8x6'):
        m(torch.randn(2, 64, 8, 8))


def test_cbam_seed_formula(x):
    m = L.CBAM(64, **L.CBAM_SEED_KWARGS)
    w1, w2, k = m.channel.fc1.weight, m.channel.fc2.weight, m.spatial.conv.weight
    assert m.channel.fc1.bias is None and k.shape == (1, 2, 3, 3)

    def mlp(t):
        return F.conv2d(F.relu(F.conv2d(t, w1)), w2)
    f1 = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    s = torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], 1)
    ref = f1 * torch.sigmoid(F.conv2d(s, k, padding=1))
    torch.testing.assert_close(m(x), ref)


def test_bam_formula(x):
    m = L.BAM(64).eval()
    mc = m.fc2(F.relu(m.bn1(m.fc1(x.mean((2, 3)))))).view(4, 64, 1, 1)
    ms = m.spatial(x)
    assert ms.shape == (4, 1, 8, 6)
    torch.testing.assert_close(m(x), x * (1 + torch.sigmoid(mc * ms)))


# --------------------------------------------------------------------------- contract of every module

def make(name, c=64):
    return L.create_attn(name, c)


@pytest.mark.parametrize('name', ALL)
def test_module_refuses_input_not_shaped_b_c_h_w_and_names_itself(name):
    m = make(name)
    cls = type(m).__name__
    with pytest.raises(ValueError, match=r'\(B, 64, H, W\), got \(2, 32, 8, 8\)') as e:
        m(torch.randn(2, 32, 8, 8))
    assert str(e.value).startswith(cls)
    for bad in (torch.randn(64, 8, 8), torch.randn(2, 64), torch.randn(1, 2, 64, 8, 8)):
        with pytest.raises(ValueError, match=r'\(B, 64, H, W\)'):
            m(bad)


@pytest.mark.parametrize('name', ALL)
def test_forward_backward_maps(name, x):
    torch.manual_seed(0)
    m = make(name)
    xi = x.clone().requires_grad_(True)
    y = m(xi)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(xi.grad).all() and xi.grad.abs().sum() > 0
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    maps = m.attention_maps(x)
    assert maps and set(maps) <= {'channel', 'spatial'}
    for k, v in maps.items():
        if k == 'channel':
            assert v.shape == (4, 64, 1, 1)
        else:
            assert v.shape[0] == 4 and v.shape[2:] == (8, 6)
            assert v.shape[1] == (4 if name == 'ulsam' else 1)
        assert torch.isfinite(v).all() and v.min() >= 0 and v.max() <= 1


@pytest.mark.parametrize('name', ALL)
def test_jit_fx_dtype_device(name, x):
    m = make(name).eval()
    y = m(x)
    s = torch.jit.script(m)
    torch.testing.assert_close(s(x), y)
    with pytest.raises(Exception, match=r'\(B, 64, H, W\)'):
        s(torch.randn(2, 32, 8, 8))
    g = torch.fx.symbolic_trace(m)
    torch.testing.assert_close(g(x), y)
    assert all(p.dtype == torch.bfloat16 for p in L.create_attn(name, 64, dtype=torch.bfloat16).parameters())
    assert all(p.is_meta for p in L.create_attn(name, 64, device='meta').parameters())
    yb = m.to(torch.bfloat16)(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert yb.dtype == torch.bfloat16 and yb.shape == x.shape


def test_nam_spatial_jit_fx(x):
    m = L.NAM(64, spatial=True, spatial_size=(8, 6)).eval()
    torch.testing.assert_close(torch.jit.script(m)(x), m(x))
    torch.testing.assert_close(torch.fx.symbolic_trace(m)(x), m(x))


# --------------------------------------------------------------------------- penalties

def test_spem_and_nam_penalties_equal_their_formulas_and_are_zero_without_those_modules():
    model = nn.Sequential(L.SPEM(16), nn.ReLU(), L.SPEM(32), L.NAM(16), L.NAM(8), L.ZAM(8))
    assert L.spem_penalty(model).item() == pytest.approx(1.0)  # 0.5 per module at init
    with torch.no_grad():
        model[3].bn.weight.uniform_(-2, 2)
        model[4].bn.weight.uniform_(-2, 2)
    ref = model[3].bn.weight.abs().sum() + model[4].bn.weight.abs().sum()
    torch.testing.assert_close(L.nam_l1_penalty(model), ref)
    (L.spem_penalty(model) + L.nam_l1_penalty(model)).backward()
    assert model[0].p.grad is not None and model[3].bn.weight.grad is not None
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), L.ZAM(8))
    assert L.spem_penalty(plain).item() == 0.0 and L.nam_l1_penalty(plain).item() == 0.0
    sp = L.NAM(8, spatial=True, spatial_size=4)
    torch.testing.assert_close(L.nam_l1_penalty(sp), torch.tensor(8.0 + 16.0))


# --------------------------------------------------------------------------- timm's own models

def test_timm_resnet50_with_zam():
    plain = timm.create_model('resnet50')
    for attn in (L.ZAM, L.get_attn('zamr'), L.get_attn('simam')):
        m = timm.create_model('resnet50', block_args=dict(attn_layer=attn)).eval()
        assert n_params(m) == n_params(plain)
        assert sum(isinstance(mod, (L.ZAM, L.SimAM)) for mod in m.modules()) == 16
        with torch.no_grad():
            y = m(torch.randn(1, 3, 32, 32))
        assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_timm_resnet18_with_parametric_modules():
    for name in ('ulsam', 'nam', 'spem', 'cbam', 'bam', 'se', 'eca'):
        m = timm.create_model('resnet18', num_classes=10, block_args=dict(attn_layer=L.get_attn(name)))
        y = m(torch.randn(2, 3, 32, 32))
        y.sum().backward()
        assert y.shape == (2, 10) and torch.isfinite(y).all()


# ------------------------------------------------------------------ degenerate inputs (issue 14)
FUSED_NAMES = ('zam', 'zam_avg', 'zam_max', 'zamr', 'simam', 'spem', 'nam')


@pytest.mark.parametrize('name', L.list_attn())
@pytest.mark.parametrize('threads', [1, 2])
def test_empty_batch(name, threads):
    """B = 0 gives an empty output (and an empty input gradient) in eval and train mode, fused and reference."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread: the fused CPU paths work in batch chunks
    try:
        impls = [dict(impl='fused'), dict(impl='reference')] if name in FUSED_NAMES else [{}]
        for kwargs, train in itertools.product(impls, (False, True)):
            m = L.create_attn(name, 8, **kwargs).train(train)
            x = torch.randn(0, 8, 5, 5, requires_grad=train)
            with torch.set_grad_enabled(train):
                y = m(x)
            assert y.shape == x.shape and y.dtype == x.dtype
            if train:
                y.sum().backward()
                assert x.grad.shape == x.shape
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_nam_single_value_per_channel_in_training(impl):
    """One value per channel cannot give a batch variance: BatchNorm's error, running statistics untouched."""
    m = L.NAM(8, impl=impl).train()
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match='Expected more than 1 value per channel'):
            m(torch.randn(1, 8, 1, 1))
    assert torch.equal(m.bn.running_var, torch.ones(8)) and torch.equal(m.bn.running_mean, torch.zeros(8))
    assert torch.isfinite(m.eval()(torch.randn(2, 8, 3, 3))).all()


@pytest.mark.parametrize('name', L.list_attn())
def test_create_attn_rejects_nonpositive_channels(name):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='channels must be a positive int'):
            L.create_attn(name, bad)
    with pytest.raises(ValueError, match='ECA: channels must be a positive int, got 0'):
        L.ECA(0)


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_spem_keeps_the_input_dtype(impl):
    m = L.SPEM(8, impl=impl).train()
    x = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and m.w1.grad.dtype == torch.float32
    expected = x.detach().float() * L.SPEM(8, impl=impl).channel_gate(x.detach().float())
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2)
