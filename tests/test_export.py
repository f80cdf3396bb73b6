"""Tracers and exporters record what eager PyTorch computes: torch.jit.trace / script, torch.fx, torch.export, timm's
`onnx_export` with both exporters (ONNX Runtime vs eager at batch 1 and 8, dynamic batch), on every attention
module, on zoo models (every attention on two backbones) and on timm's own ResNet with
``block_args=dict(attn_layer=...)``. The dynamo exporter (several seconds per model) is covered here on one model
(and by `zamzoo export --onnx` in test_publish); `zamzoo bench export` runs every zoo model with both exporters.

Models are random-init with calibrated BatchNorm statistics (`calibrate_batchnorm`): with the default statistics
their logits barely depend on the input, and a comparison could not fail.
"""
import warnings

import onnx
import pytest
import torch

import timm
import zamzoo  # noqa: F401  (registers the models)
import zamzoo.layers as L
from zamzoo.bench.export import bench_export, calibrate_batchnorm, markdown_report
from zamzoo.layers.fused import zam_fused
from zamzoo.models import ATTENTIONS
from zamzoo.bench.onnx import OnnxExportError, export_onnx, onnx_parity

pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::FutureWarning',
                                        'ignore::UserWarning', 'ignore::torch.jit.TracerWarning')
MODULES = L.list_attn()
FUSED = [a.layer for a in ATTENTIONS.values() if a.fused]  # modules with a fused eager path (flag: test_models)
SMALL = {'resnet18': dict(layers=(1, 1, 1, 1))}


def module(name: str, channels: int = 16) -> torch.nn.Module:
    """An attention module with random parameters and BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    m = L.create_attn(name, channels)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)
        for b in m.buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    return m.eval()


def model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = timm.create_model(name, **SMALL.get(name.split('_')[0], {}))
    return calibrate_batchnorm(net, tuple(net.pretrained_cfg['input_size']))


# single_thread (here and below): the fused CPU paths then work in batch chunks, which a trace must not bake in
@pytest.mark.parametrize('name', FUSED)
def test_torchscript_onnx_exporter_regression(name, tmp_path, single_thread):
    """The silent-wrong case: timm's default (TorchScript-based) exporter dropped the fused path's writes and
    returned an unwritten buffer (ZAM, SimAM: relative errors of 5-100 %), or failed on NAM's autograd.Function."""
    assert export_onnx(module(name, 64), tmp_path / 'm.onnx', (64, 16, 16), use_dynamo=False) <= 1e-4


@pytest.mark.parametrize('name', ['zam', 'ulsam'])
def test_a_module_that_overwrites_its_input_exports(name, tmp_path):
    """Built with inplace=True (as the zoo's blocks build it), the module overwrote the parity check's input before
    ONNX Runtime saw it: a right export was refused (relative errors 0.02-0.33)."""
    m = module(name)
    m.inplace = True
    assert export_onnx(m, tmp_path / 'm.onnx', (16, 8, 8)) <= 1e-4


def test_parity_check_can_fail(tmp_path):
    export_onnx(module('zam'), tmp_path / 'm.onnx', (16, 8, 8))
    assert onnx_parity(tmp_path / 'm.onnx', module('zamr'), (16, 8, 8)) > 1e-2

    class OffByOnePerMille(torch.nn.Module):  # a graph 0.1% off: far above rounding, refused
        def forward(self, x):
            return x.mean((2, 3)) * (1.001 if torch.onnx.is_in_onnx_export() else 1.0)

    with pytest.raises(OnnxExportError, match='differs from PyTorch'):
        export_onnx(OffByOnePerMille(), tmp_path / 'n.onnx', (16, 8, 8))
    assert not (tmp_path / 'n.onnx').exists()  # nothing left behind


@pytest.mark.parametrize('use_dynamo', [False, True])
def test_an_export_whose_output_has_nans_pytorchs_lacks_is_refused(tmp_path, use_dynamo):
    """A NaN in the output made the relative error NaN, which `max` passed over: an export whose every output was
    NaN was accepted with an error of 0.0. The same NaNs and infinities on both sides still pass."""

    class NaNInTheExport(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)) * (float('nan') if torch.onnx.is_in_onnx_export() else 1.0)

    class LogOfMean(torch.nn.Module):  # NaN where the mean is negative, in PyTorch and in ONNX Runtime alike
        def forward(self, x):
            return torch.log(x.mean((2, 3)) * 100)

    with pytest.raises(OnnxExportError, match=r"at batch 1 has 16 NaN or infinite values, PyTorch's 0, not the"):
        export_onnx(NaNInTheExport(), tmp_path / 'n.onnx', (16, 8, 8), use_dynamo=use_dynamo)
    assert not (tmp_path / 'n.onnx').exists()
    assert export_onnx(LogOfMean(), tmp_path / 'l.onnx', (16, 8, 8), use_dynamo=use_dynamo) <= 1e-6


def test_an_export_is_of_the_opset_asked_or_refused_and_leaves_the_models_mode(tmp_path):
    """The dynamo exporter wrote opset 18 where onnxscript could not convert ZAM's graph to the opset 17 asked for
    (ReduceMax's axes), and export_onnx returned as if it had; it also left a training model in eval mode."""
    import onnx
    m = module('zam').train()
    with pytest.raises(OnnxExportError, match=r'the dynamo exporter wrote opset 18, not the opset 17 asked for .*'
                                              r'use_dynamo=False'):
        export_onnx(m, tmp_path / 'd.onnx', (16, 8, 8), use_dynamo=True, opset=17)
    assert m.training and not (tmp_path / 'd.onnx').exists()
    assert export_onnx(m, tmp_path / 't.onnx', (16, 8, 8), opset=17) <= 1e-4 and m.training
    assert [o.version for o in onnx.load(str(tmp_path / 't.onnx')).opset_import if o.domain in ('', 'ai.onnx')] == [17]
    features = timm.create_model('mobilenet_zam', features_only=True, out_indices=(1, 2))
    with pytest.raises(OnnxExportError, match='the model returns a list, expected one tensor'):
        export_onnx(features, tmp_path / 'f.onnx', (3, 32, 32))
    assert not (tmp_path / 'f.onnx').exists()


def test_the_graph_as_written_is_checked_not_only_as_onnx_runtime_optimizes_it(tmp_path, monkeypatch):
    """The check also runs the file with ONNX Runtime's graph optimizations off (the graph as written, where a
    runtime on other hardware starts), not only as ONNX Runtime optimizes it on this CPU: a file whose unoptimized
    run differs (here its outputs scaled by 1.001 in that session alone) is refused, and nothing is left behind."""
    ort = pytest.importorskip('onnxruntime')

    class OffWhenUnoptimized(ort.InferenceSession):
        def __init__(self, path, options=None, **kwargs):
            super().__init__(path, options, **kwargs)
            level = options.graph_optimization_level if options is not None else None
            self.scale = 1.001 if level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL else 1.0

        def run(self, *args, **kwargs):
            return [out * self.scale for out in super().run(*args, **kwargs)]

    monkeypatch.setattr(ort, 'InferenceSession', OffWhenUnoptimized)
    with pytest.raises(OnnxExportError, match='with or without its graph optimizations'):
        export_onnx(module('zam'), tmp_path / 'm.onnx', (16, 8, 8))
    assert not (tmp_path / 'm.onnx').exists()


@pytest.mark.parametrize('name', ['zam', 'zamr', 'simam'])
def test_jit_trace_at_another_batch(name, single_thread):
    """torch.jit.trace at batch 8 run at batch 16: the traced fused path kept the batch chunks of batch 8 and read
    uninitialised memory for the other images."""
    m = module(name, 64)
    traced = torch.jit.trace(m, torch.randn(8, 64, 32, 32))
    x = torch.randn(16, 64, 32, 32)
    torch.testing.assert_close(traced(x), m(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', MODULES)
def test_tracers_match_eager(name):
    """Bit for bit, but BAM's global mean where a tracer records the graph: x.mean, not the official avg_pool2d
    of the whole map, whose size a trace would bake in (`bam._global_mean`)."""
    m = module(name)
    x, x2 = torch.randn(4, 16, 8, 8), torch.randn(6, 16, 8, 8)
    expected = m(x2)
    exact = dict(rtol=0, atol=0)
    recording = dict(rtol=1e-5, atol=1e-6) if name == 'bam' else exact
    torch.testing.assert_close(torch.jit.trace(m, x)(x2), expected, **recording)
    wide, x1 = module(name, 256), torch.randn(1, 256, 4, 4)  # at batch 1 ECA's 1d conv took another path when traced
    torch.testing.assert_close(torch.jit.trace(wide, x1)(x1), wide(x1), **recording)
    torch.testing.assert_close(torch.jit.script(m)(x2), expected, **exact)
    gm = torch.fx.symbolic_trace(m)
    torch.testing.assert_close(gm(x2), expected, **exact)
    torch.testing.assert_close(torch.jit.script(gm)(x2), expected, **exact)  # fx -> TorchScript
    batch = torch.export.Dim('batch', min=2)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: batch},))
    torch.testing.assert_close(ep.module()(x2), expected, **recording)


def test_ulsam_model_records_its_eager_numbers_bit_for_bit():
    """mobilenet_ulsam traced (the path torch.export records too) or scripted, and in eval mode with autograd, gives
    eager inference's numbers bit for bit: every path folds the BNs alike (`ULSAM._inference_args`). Folded into the
    convs, the recorded path was 2.4e-7 off in the logits (where the modules alone happened to agree)."""
    net = model('mobilenet_ulsam')
    x, x2 = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = net(x2)
        for tracer, traced in {'jit.trace': torch.jit.trace(net, x), 'jit.script': torch.jit.script(net)}.items():
            assert torch.equal(traced(x2), expected), tracer
    assert torch.equal(net(x2).detach(), expected)


def _recorded_ops(name: str, tracer, folder) -> set:
    x = torch.randn(2, 16, 8, 8)
    if tracer == 'jit.trace':
        return {node.kind().split('::')[1] for node in torch.jit.trace(module(name), x).inlined_graph.nodes()}
    if tracer.startswith('onnx'):
        export_onnx(module(name), folder / 'm.onnx', (16, 8, 8), use_dynamo=tracer == 'onnx dynamo')
        return {node.op_type for node in onnx.load(str(folder / 'm.onnx')).graph.node}
    with torch.set_grad_enabled(tracer == 'torch.export'):
        graph = torch.export.export(module(name), (x,)).graph
    return {node.target.__name__.split('.')[0] for node in graph.nodes if node.op == 'call_function'}


@pytest.mark.parametrize('name', ['zam', 'zam_max', 'cbam', 'spem'])
def test_the_max_over_the_map_is_one_reduction_where_no_gradient_is_routed(name, tmp_path):
    """A TorchScript trace (what openvino.convert_model runs), a graph recorded under no_grad and an ONNX export take
    the max and min over H and W as one amax / amin (ReduceMax / ReduceMin), no flatten: OpenVINO runs a flatten as a
    reorder of the whole map (docs/bench/openvino.md). torch.export with grad mode on records torch.max, whose
    gradient goes to the first maximal element, as in the seeds."""
    without = {'amax', 'amin'} if name == 'spem' else {'amax'}
    for tracer in ('jit.trace', 'torch.export under no_grad'):
        ops = _recorded_ops(name, tracer, tmp_path)
        assert without <= ops and not ops & {'flatten', 'max', 'min'}, (tracer, ops)
    ops = _recorded_ops(name, 'torch.export', tmp_path)
    assert 'max' in ops and not ops & {'amax', 'amin'}, ops
    if name in ('cbam', 'spem'):  # (ZAM's ONNX spellings reshape for reasons of their own: ZAM._forward_onnx)
        for tracer in ('onnx dynamo', 'onnx torchscript'):
            ops = _recorded_ops(name, tracer, tmp_path)
            assert 'ReduceMax' in ops and not ops & {'Reshape', 'Flatten'}, (tracer, ops)


def test_fused_function_refuses_a_tracer():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match='eager-only'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.jit.trace(lambda t: zam_fused(t), x)
    with pytest.raises(RuntimeError, match='eager-only'):
        torch.fx.symbolic_trace(lambda t: zam_fused(t))


# the zoo's own blocks' paths: plain, the in-place ZAM / ZAM+R / ULSAM of a zoo block, BAM's stage slot. Every module
# alone, through both exporters: test_onnx_dynamic_shapes.py; in every block of timm's ResNet:
# test_timm_resnet_block_attn_layer
@pytest.mark.parametrize('attention', ['plain', 'zam', 'zamr', 'ulsam', 'bam'])
def test_zoo_models_torchscript_exporter(attention, tmp_path):
    assert export_onnx(model(f'mobilenet_{attention}'), tmp_path / 'm.onnx', use_dynamo=False) <= 1e-4


@pytest.mark.parametrize('name', ['mobilenet_zamr'])
def test_zoo_models_dynamo_exporter(name, tmp_path):
    assert export_onnx(model(name), tmp_path / 'm.onnx', use_dynamo=True) <= 1e-4


@pytest.mark.parametrize('name', MODULES)
def test_timm_resnet_block_attn_layer(name, tmp_path):
    """timm's own ResNet with our module in every block, through timm's exporter."""
    torch.manual_seed(0)
    net = timm.create_model('resnet10t', num_classes=10, block_args=dict(attn_layer=L.get_attn(name)))
    calibrate_batchnorm(net, (3, 32, 32))
    assert export_onnx(net, tmp_path / 'm.onnx', (3, 32, 32), use_dynamo=False) <= 1e-4
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(torch.jit.trace(net, torch.randn(2, 3, 32, 32))(x), net(x), rtol=1e-5, atol=1e-5)


def test_bench_export_report():
    report = bench_export(['mobilenet_zam'], ['torchscript'])
    row, = report['rows']
    assert row['ok'] and row['max_rel_err'] <= 1e-4 and row['error'] is None
    assert 0 < row['torch_fp32_err'] < 1e-4  # float32 rounding, measured against float64
    assert '| mobilenet_zam | torchscript | ok |' in markdown_report(report)
