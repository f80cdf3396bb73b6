"""Gradients as the seeds' code gives them: second order through the fused paths (gradient penalties, Hessian-vector
products), tied maxima routed to one element as torch.max / MaxPool2d do, and output dtypes under autocast that do
not depend on the path taken."""
import pytest
import torch
import torch.nn.functional as F

import zamzoo.layers as L

FUSED = ['zam', 'zamr', 'zam_avg', 'zam_max', 'simam', 'spem', 'nam']


def _pair(name, seed=0):
    """The module with impl='fused' and with impl='reference', same random parameters (float64)."""
    torch.manual_seed(seed)
    fused = L.create_attn(name, 6).double()
    for p in fused.parameters():
        p.data.copy_(torch.randn_like(p) * 0.5 + 1.0)
    reference = L.create_attn(name, 6, impl='reference').double()
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def _second_order(m, x):
    """d/d(x, params) of |d m(x)^2 / dx|^2: the gradient of a gradient penalty."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
    g.square().sum().backward()
    return [x.grad] + [p.grad for p in m.parameters()]


@pytest.mark.parametrize('name', FUSED)
@pytest.mark.parametrize('train', [True, False])
def test_second_order_gradients_of_the_fused_paths_equal_the_formula(name, train):
    fused, reference = _pair(name)
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    got = _second_order(fused.train(train), x)
    want = _second_order(reference.train(train), x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    # the formula the backward differentiates updates no BatchNorm statistics: one forward's update, as the reference
    for name_, buf in fused.named_buffers():
        assert torch.equal(buf, dict(reference.named_buffers())[name_]), name_


@pytest.mark.parametrize('name', FUSED)
@pytest.mark.parametrize('downstream', ['transpose', 'rot90', 'channels_last'])
def test_a_gradient_of_any_layout_gives_the_formulas_gradients(name, downstream):
    """The output used transposed or rotated downstream hands the backward a gradient whose H and W do not merge
    into one view: the max's gradient was added into a copy and lost (ZAM, ZAM(Max), ZAM+R: a few units off)."""
    use = {'transpose': lambda y: y.transpose(2, 3), 'rot90': lambda y: torch.rot90(y, 1, (2, 3)),
           'channels_last': lambda y: y.contiguous(memory_format=torch.channels_last)}[downstream]
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weight = torch.randn(2, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for m in _pair(name):
        xi = x.clone().requires_grad_(True)
        (use(m(xi)) * weight).sum().backward()
        grads.append([xi.grad] + [q.grad for q in m.parameters()])
    assert len(grads[0]) == len(grads[1])
    for fused, reference in zip(*grads):
        assert torch.equal(fused, reference)


@pytest.mark.parametrize('name', FUSED)
@pytest.mark.parametrize('layout', ['transpose', 'slice'])
def test_an_input_of_any_layout_gives_the_formulas_numbers(name, layout):
    """A transposed or sliced map (neither contiguous nor channels_last) was run by the fused paths, whose sums then
    ran in another order than the formula's over its strides: 1e-7 off; it takes the formula now."""
    view = {'transpose': lambda t: t.transpose(2, 3), 'slice': lambda t: t[:, :, ::2]}[layout]
    base = torch.randn(2, 6, 7, 9, dtype=torch.float32, generator=torch.Generator().manual_seed(4))
    outputs = []
    for m in _pair(name):
        m.float()
        leaf = base.clone().requires_grad_(True)
        y = m(view(leaf))
        y.backward(torch.ones_like(y))
        outputs.append((y, leaf.grad))
    (y, g), (y_ref, g_ref) = outputs
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)


@pytest.mark.parametrize('name', FUSED)
@pytest.mark.parametrize('train', [True, False])
def test_forward_mode_ad_gives_the_formulas_tangents(name, train):
    """Dual tensors (torch.autograd.forward_ad): the fused autograd.Functions have no jvp (NotImplementedError) and
    the inference path would drop the tangent; under a dual level the modules run the formula."""
    import torch.autograd.forward_ad as fw
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    tangent = torch.randn_like(x)
    got = []
    for m in _pair(name):
        m.train(train)
        with fw.dual_level():
            got.append(fw.unpack_dual(m(fw.make_dual(x, tangent))))
    (y, t), (y_ref, t_ref) = got
    assert torch.equal(y, y_ref) and t is not None and torch.equal(t, t_ref)


@pytest.mark.parametrize('name', ['zam', 'zamr', 'zam_max', 'simam', 'spem', 'nam'])
def test_gradgradcheck_of_the_fused_paths(name):
    fused, _ = _pair(name, seed=1)
    fused.eval()  # NAM: running statistics, so repeated calls compute the same function
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(fused, (x,))


def test_ulsam_in_eval_mode_routes_the_gradient_of_tied_maxima_as_its_maxpool():
    torch.manual_seed(0)
    m = L.ULSAM(8, 2).eval()
    with torch.no_grad():
        m.bn_dw.bias.fill_(1.0)
        m.bn_pw.bias.fill_(1.0)
    x = torch.zeros(2, 8, 6, 6)
    x[..., 2:4, 1:4] = 1.0  # flat patches: 3 x 3 windows with tied maxima
    weights = torch.randn_like(x)

    def input_grad():
        xg = x.clone().requires_grad_(True)
        (m(xg) * weights).sum().backward()
        return xg.grad

    folded = input_grad()  # the BN-folded formula
    hook = m.pool.register_forward_hook(lambda *args: None)  # a watched submodule: the submodules run as written
    as_written = input_grad()
    hook.remove()
    torch.testing.assert_close(folded, as_written, rtol=1e-5, atol=1e-6)


def _cbam_with_torch_max(m, x):
    """CBAM as the official code writes it: F.adaptive_max_pool2d and torch.max over channels."""
    c, s = m.channel, m.spatial
    mlp = lambda t: c.fc2(c.act(c.fc1(t)))  # noqa: E731
    y = x * c.gate(mlp(x.mean((2, 3), keepdim=True)) + mlp(F.adaptive_max_pool2d(x, 1)))
    stats = [torch.max(y, 1, keepdim=True)[0], y.mean(1, keepdim=True)]  # the official ChannelPool's order
    return y * s.gate(s.bn(s.conv(torch.cat(stats if s.max_first else stats[::-1], 1))))


@pytest.mark.parametrize('kwargs', [{}, L.CBAM_SEED_KWARGS])
def test_cbam_routes_the_gradient_of_tied_maxima_to_one_element(kwargs):
    torch.manual_seed(0)
    m = L.CBAM(16, **kwargs).eval()
    if m.channel.fc1.bias is not None:  # the official MLP: a hidden unit that passes the max's gradient on
        with torch.no_grad():
            m.channel.fc1.bias.fill_(3.0)
    x = torch.ones(2, 16, 5, 5)
    x[:, :, 1:3, 1:3] = 2.0  # ties over H x W (and over the channels where the channel gate keeps them)
    grads = []
    for fn in (m, lambda t: _cbam_with_torch_max(m, t)):
        xg = x.clone().requires_grad_(True)
        (fn(xg) * torch.arange(x.numel(), dtype=x.dtype).view_as(x)).sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_output_dtype_under_autocast_does_not_depend_on_the_path():
    x = torch.randn(2, 16, 8, 8).bfloat16()
    nam_fused, nam_reference = L.NAM(16), L.NAM(16, impl='reference')
    ulsam = L.ULSAM(16, 4).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert nam_fused(x).dtype == nam_reference(x).dtype
        with_grad = ulsam(x).dtype
        with torch.no_grad():
            assert ulsam(x).dtype == with_grad == ulsam.train()(x).dtype


def test_simam_under_autocast_runs_the_formula(monkeypatch):
    """Under CUDA autocast the formula's pow and sum run in float32, its output too; the fused path would stay in x's
    dtype. Not measured on a GPU here: on the CPU (whose autocast leaves pow and sum alone) the module is seen to take
    the formula under autocast, and the fused path outside it."""
    import zamzoo.layers.simam as simam
    x = torch.randn(2, 16, 8, 8).bfloat16()
    module, reference = L.SimAM(16), L.SimAM(16, impl='reference')
    fused_calls = []
    monkeypatch.setattr(simam, 'simam_fused', lambda *args: fused_calls.append(args) or reference(args[0]))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(module(x), reference(x)) and fused_calls == []
    module(x)
    assert len(fused_calls) == 1
