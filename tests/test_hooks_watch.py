"""Hooks on an attention module's submodules see them run, as in the seeds' code: the fast paths that do not call
them as modules (NAM's fused BatchNorm, ULSAM's folded inference) step aside for the plain formula where a forward
or backward hook watches them (thop-style counters, feature hooks, torch.nn.utils.prune's pre-hook)."""
import pytest
import timm
import torch
from torch import nn
from torch.nn.utils import prune

from conftest import calibrated_ulsam
import zamzoo  # noqa: F401  (registers the zoo)
from zamzoo.bench.flops import seed_flops
from zamzoo.layers import NAM


def _nam(impl: str) -> NAM:
    torch.manual_seed(0)
    nam = NAM(8, impl=impl)
    with torch.no_grad():
        nam.bn.weight.uniform_(-1.5, 1.5), nam.bn.bias.normal_()
        nam.bn.running_mean.normal_(), nam.bn.running_var.uniform_(0.5, 2.0)
    return nam


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_a_hook_on_nams_batchnorm_fires_and_changes_what_it_returns(train):
    x = torch.randn(2, 8, 5, 5)
    outputs = {}
    for impl in ('fused', 'reference'):
        nam = _nam(impl).train(train)
        calls = []
        nam.bn.register_forward_hook(lambda m, i, out: calls.append(1) or torch.zeros_like(out))
        outputs[impl] = nam(x)
        assert calls == [1], impl
    assert torch.equal(outputs['fused'], outputs['reference'])
    torch.testing.assert_close(outputs['fused'], torch.sigmoid(torch.zeros_like(x)) * x)


def test_pruned_nam_trains_with_the_pruned_weight():
    """prune's pre-hook recomputes bn.weight (weight_orig * mask) when the BN is called: the gate reads it after."""
    x = torch.randn(4, 8, 5, 5)
    for impl in ('fused', 'reference'):
        nam = _nam(impl)
        prune.l1_unstructured(nam.bn, 'weight', amount=0.5)
        opt = torch.optim.SGD(nam.parameters(), lr=0.5)
        for _ in range(3):
            y = nam(x)
            w = nam.bn.weight.detach().abs()
            bn = nn.functional.batch_norm(x, None, None, nam.bn.weight.detach(), nam.bn.bias.detach(), training=True)
            torch.testing.assert_close(y, torch.sigmoid(bn * (w / w.sum()).view(1, -1, 1, 1)) * x)
            opt.zero_grad()
            y.square().mean().backward()
            opt.step()


@pytest.mark.parametrize('which', ['nam', 'ulsam'])
def test_a_backward_hook_on_a_submodule_fires_in_eval_mode(which):
    module = _nam('fused').eval() if which == 'nam' else calibrated_ulsam(8, seed=0).eval()
    watched = module.bn if which == 'nam' else module.pw
    calls = []
    watched.register_full_backward_hook(lambda m, gi, go: calls.append(1))
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    module(x).sum().backward()
    assert calls == [1]


@pytest.mark.parametrize('model', ['resnet18_nam', 'mobilenet_nam'])
def test_seed_flops_count_nams_batchnorm(model):
    """The seed convention counts 4 FLOPs per BatchNorm output element, NAM's included (as thop on the seed's code)."""
    fused = timm.create_model(model)
    reference = timm.create_model(model, attn_kwargs=dict(impl='reference'))
    plain = timm.create_model(model.replace('_nam', '_plain'))
    nam_bn_elements = 0

    def count(m, inputs, out):
        nonlocal nam_bn_elements
        nam_bn_elements += out.numel()
    handles = [m.bn.register_forward_hook(count) for m in reference.modules() if isinstance(m, NAM)]
    with torch.no_grad():
        reference(torch.zeros(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert seed_flops(fused) == seed_flops(reference) == seed_flops(plain) + 4 * nam_bn_elements
