"""The ONNX spellings of the zero-parameter modules and ULSAM (issue 20 item 4, docs/bench/onnxruntime.md): what ONNX
Runtime makes of the exported graph (its NCHWc layout kept around the module: no reorder to NCHW and back; SimAM's
statistics in one InstanceNormalization), still equal to eager PyTorch through the checked export."""
import collections

import pytest
import torch
from torch import nn

from conftest import calibrated_ulsam
import zamzoo.layers as L

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

from zamzoo.bench.onnx import RTOL, export_onnx  # noqa: E402  (needs onnx)

pytestmark = pytest.mark.filterwarnings('ignore')

ZAM_VARIANTS = [(pool, skip) for pool in ('avgmax', 'max') for skip in (False, True)]  # 'avg': the plain spelling
CHANNELS = 32  # a multiple of ONNX Runtime's NCHWc block (8 or 16): the convs around the module run in NCHWc


def _net(attn: nn.Module) -> nn.Module:
    """conv -> attention -> ReLU -> 1x1 conv -> head: the module between two convs, as in a backbone's block."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1), attn, nn.ReLU(), nn.Conv2d(CHANNELS, CHANNELS, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 5)).eval()


def _optimized_ops(path, tmp_path) -> collections.Counter:
    """Node types of the graph ONNX Runtime runs (ORT_ENABLE_ALL, its default), NCHWc nodes as 'nchwc:Op'."""
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    nodes = onnx.load(opts.optimized_model_filepath).graph.node
    return collections.Counter(('nchwc:' if n.domain.endswith('nchwc') else '') + n.op_type for n in nodes)


def _export(attn: nn.Module, tmp_path, use_dynamo: bool = True, hw=(9, 7)) -> collections.Counter:
    """The checked export of `_net(attn)` (equal to eager PyTorch within RTOL at batch 1 and 5); its optimized ops."""
    path = tmp_path / 'net.onnx'
    assert export_onnx(_net(attn), path, (3, *hw), use_dynamo=use_dynamo, batch_sizes=(1, 5)) <= RTOL
    return _optimized_ops(path, tmp_path)


@pytest.fixture(scope='module')
def plain_reorders(tmp_path_factory) -> collections.Counter:
    """The optimized ops of the net without a module (skips where ONNX Runtime has no NCHWc layout)."""
    plain = _export(nn.Identity(), tmp_path_factory.mktemp('plain'))
    if not plain['nchwc:Conv']:
        pytest.skip('ONNX Runtime has no NCHWc layout on this CPU')
    return plain


def _extra_reorders(ops, plain) -> tuple:
    """(ReorderInput, ReorderOutput) in `ops` beyond those of the same net without the module."""
    return (ops['nchwc:ReorderInput'] - plain['nchwc:ReorderInput'],
            ops['nchwc:ReorderOutput'] - plain['nchwc:ReorderOutput'])


@pytest.mark.parametrize('pool,skip', ZAM_VARIANTS)
def test_zam_stays_in_nchwc(pool, skip, tmp_path, plain_reorders):
    """ZAM's exported graph (dynamo exporter, which `zamzoo export --onnx` uses) keeps the map in NCHWc: one reorder,
    to channels-last for the statistics over C, none back; no Transpose left (ONNX Runtime's transpose optimizer
    would have moved it behind a reduction over axis 1)."""
    ops = _export(L.ZAM(CHANNELS, pool=pool, skip=skip), tmp_path)
    assert _extra_reorders(ops, plain_reorders) == (0, 1), ops
    assert ops['Transpose'] == 0 and ops['nchwc:Upsample'] == 1, ops


@pytest.mark.parametrize('use_dynamo', [True, False], ids=['dynamo', 'torchscript'])
@pytest.mark.parametrize('hw', [(1, 1), (2, 2)])
def test_zam_and_simam_exports_on_small_maps(hw, use_dynamo, tmp_path):
    """1x1 maps (SimAM's HW - 1 = 0 case) and tiny ones still equal eager PyTorch."""
    for attn in (L.ZAM(CHANNELS, skip=True), L.SimAM(CHANNELS)):
        _export(attn, tmp_path, use_dynamo, hw=hw)


def test_simam_statistics_in_one_instance_norm(tmp_path):
    """SimAM's mean, (x - mean)^2, its sum and the division are one InstanceNormalization and a square."""
    ops = _export(L.SimAM(CHANNELS), tmp_path)
    assert ops['InstanceNormalization'] == 1, ops
    assert not {'ReduceSum', 'Sub', 'Div', 'Pow'} & set(ops), ops
    assert ops['ReduceMean'] <= 1, ops  # the head's average pool


def test_simam_export_with_a_large_mean(tmp_path):
    """The InstanceNormalization spelling stays exact where the map's mean is large against its spread."""
    net = _net(L.SimAM(CHANNELS))
    with torch.no_grad():
        net[0].bias.add_(20.0)
    assert export_onnx(net, tmp_path / 'net.onnx', (3, 9, 7), use_dynamo=True, batch_sizes=(1, 5)) <= RTOL


def test_ulsam_stays_in_nchwc(tmp_path, plain_reorders):
    """ULSAM's exported graph: only its small (B, 16, H, W) PW conv output leaves NCHWc (for the softmax)."""
    ops = _export(calibrated_ulsam(CHANNELS, seed=1), tmp_path)
    assert _extra_reorders(ops, plain_reorders) == (0, 1), ops
    assert ops['Softmax'] == 1 and ops['MatMul'] == 0, ops


@pytest.mark.parametrize('attn', ['zam', 'zamr', 'zam_max', 'simam', 'ulsam'])
def test_torchscript_exporter_equals_eager(attn, tmp_path):
    """The TorchScript-based exporter, whose traced H and W may become dynamic axes, records the plain formula where
    a spelling would bake them in (ZAM's pools, SimAM's InstanceNormalization; tests/test_onnx_dynamic_shapes.py):
    equal to eager PyTorch."""
    modules = {'zam': lambda: L.ZAM(CHANNELS), 'zamr': lambda: L.ZAM(CHANNELS, skip=True),
               'zam_max': lambda: L.ZAM(CHANNELS, pool='max'), 'simam': lambda: L.SimAM(CHANNELS),
               'ulsam': lambda: calibrated_ulsam(CHANNELS, seed=1)}
    _export(modules[attn](), tmp_path, use_dynamo=False)


@pytest.mark.parametrize('pool', ['avgmax', 'max'])
def test_zam_skip_adds_no_add_node(pool, tmp_path):
    """ZAM+R's 1 + spatial gate is the bias of the Conv that makes the gate full-size (and 1 + channel gate a
    depthwise Conv): its optimized graph has no more Add nodes than ZAM's (the mean + max ones)."""
    with_skip = _export(L.ZAM(CHANNELS, pool=pool, skip=True), tmp_path)
    without = _export(L.ZAM(CHANNELS, pool=pool), tmp_path)
    assert with_skip['Add'] == without['Add'], (with_skip, without)


def test_simam_gate_runs_in_nchwc(tmp_path, plain_reorders):
    """SimAM's + 0.5 and Sigmoid are one NCHWc depthwise Conv (Sigmoid fused), and the Mul by x runs in NCHWc: no
    full-size Add or Sigmoid node; the map leaves NCHWc once, for the InstanceNormalization, and comes back once."""
    ops = _export(L.SimAM(CHANNELS), tmp_path)
    assert not {'Add', 'Sigmoid'} & set(ops), ops
    assert _extra_reorders(ops, plain_reorders) == (1, 1), ops


@pytest.mark.parametrize('use_dynamo', [True, False], ids=['dynamo', 'torchscript'])
def test_simam_export_off_the_nchwc_block(use_dynamo, tmp_path):
    """24 channels (not a multiple of ONNX Runtime's NCHWc block: its Convs run in NCHW) still equal eager PyTorch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), L.SimAM(24), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(24, 5)).eval()
    assert export_onnx(net, tmp_path / 'net.onnx', (3, 9, 7), use_dynamo=use_dynamo, batch_sizes=(1, 5)) <= RTOL


def _spellings_script():
    """scripts/onnx_spellings.py (a benchmark, not a package module), imported from its file."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'scripts' / 'onnx_spellings.py'
    spec = importlib.util.spec_from_file_location('onnx_spellings', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarked_spellings_are_the_modules_formulas():
    """Every spelling scripts/onnx_spellings.py times (docs/bench/onnxruntime.md) computes the module's function
    in eager PyTorch: the timings compare spellings of one function, not different functions."""
    script = _spellings_script()
    torch.manual_seed(0)
    x = torch.randn(5, CHANNELS, 6, 4)  # an odd batch: the chunked spellings end on a short chunk
    zam = L.ZAM(CHANNELS, impl='reference')
    for name, spelling in script.spellings_of('mobilenet_zam', chunks=[2])[2].items():
        torch.testing.assert_close(spelling(zam, x), zam(x), rtol=1e-5, atol=1e-6, msg=name)
    ulsam = calibrated_ulsam(CHANNELS, 4).eval()
    args = ulsam._inference_args()
    folded, expected = ulsam._folded(args), ulsam._refine(x, args)
    for name, spelling in script.spellings_of('mobilenet_ulsam', chunks=[])[2].items():
        torch.testing.assert_close(spelling(ulsam, x, folded), expected, rtol=1e-5, atol=1e-6, msg=name)
