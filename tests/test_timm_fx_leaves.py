"""timm's fx tracer (feature extraction, timm's own test_model_forward_fx) keeps the attention modules with an eager
fast path as leaves: the traced model runs the same code as the model, bit for bit. Traced through, it ran the plain
formula, whose rounding differs; with resnet164's logits at init (up to 1e8) that failed timm's test."""
import pytest
import timm
import torch
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import zamzoo  # noqa: F401  (registers the zoo)
from zamzoo.bench.calibration import calibrate_batchnorm


@pytest.mark.parametrize('name', ['resnet164_ulsam', 'resnet164_simam', 'resnet164_zam', 'mobilenet_spem',
                                  'mobilenet_nam'])
def test_timm_fx_model_equals_the_model(name):
    torch.manual_seed(0)
    model = calibrate_batchnorm(timm.create_model(name), (3, 32, 32))  # a random mobilenet's output depends on x
    tracer = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    fx = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                  tracer_kwargs=tracer).eval()
    x = torch.cat([torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in range(4)])
    with torch.inference_mode():
        assert torch.equal(list(fx(x).values())[0], model(x))


def test_the_modules_with_an_eager_fast_path_are_timms_fx_leaves():
    """The test above fails for ZAM, SimAM and ULSAM when they are traced through, not for NAM and SPEM, whose traced
    formula happens to match their fused path's numbers on these inputs: their registration is asserted here."""
    from zamzoo.layers import NAM, SPEM, SimAM, ULSAM, ZAM

    assert {NAM, SPEM, SimAM, ULSAM, ZAM} <= set(get_notrace_modules())
    model = timm.create_model('mobilenet_nam')
    nodes = get_graph_node_names(model, tracer_kwargs=dict(leaf_modules=get_notrace_modules()))[1]
    attn = [name for name, module in model.named_modules() if isinstance(module, NAM)]
    assert attn and set(attn) <= set(nodes)


def test_plain_fx_records_ulsam_exactly_or_refuses():
    """torch.fx.symbolic_trace: in eval mode ULSAM's folded ops, bit for bit; in train mode the seed's loop over the
    subspaces, which fx cannot record, is refused with what to do instead; where a hook makes the eager module run
    its submodules (one module call each, which fx records), the trace runs them, bit for bit."""
    from zamzoo.layers import ULSAM

    torch.manual_seed(0)
    ulsam, x = ULSAM(8, 4), torch.randn(2, 8, 5, 6)
    with pytest.raises(torch.fx.proxy.TraceError, match=r'in train mode.*\(model\.eval\(\)\), or through timm'):
        torch.fx.symbolic_trace(ulsam)
    with pytest.raises(torch.fx.proxy.TraceError, match='in train mode'):
        torch.fx.symbolic_trace(timm.create_model('resnet18_ulsam'))
    ulsam(x)  # running statistics other than the initial ones
    ulsam.eval()
    assert torch.equal(torch.fx.symbolic_trace(ulsam)(x), ulsam(x))
    ulsam.train().bn_pw.register_forward_hook(lambda module, args, out: None)
    traced, before = torch.fx.symbolic_trace(ulsam), {k: v.clone() for k, v in ulsam.state_dict().items()}
    out = traced(x)  # the trace calls the module's own submodules: their statistics move once
    after = {k: v.clone() for k, v in ulsam.state_dict().items()}
    ulsam.load_state_dict(before)
    assert torch.equal(out, ulsam(x)) and all(torch.equal(v, ulsam.state_dict()[k]) for k, v in after.items())
