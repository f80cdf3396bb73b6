"""How the attention modules are exported for ONNX Runtime (issue 20): the plain formula spelled in the ONNX ops that
ONNX Runtime runs fastest, still equal to eager PyTorch through the checked export (`zamzoo.bench.onnx`)."""
import pytest
import torch
from torch import nn

from conftest import calibrated_ulsam
import zamzoo.layers as L
from zamzoo.layers.zam import zam_pool

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from zamzoo.bench.onnx import RTOL, export_onnx  # noqa: E402  (needs onnx)

pytestmark = pytest.mark.filterwarnings('ignore')

ZAM_VARIANTS = [(pool, skip) for pool in ('avgmax', 'avg', 'max') for skip in (False, True)]


def _zam_net(pool: str, skip: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), L.ZAM(24, pool=pool, skip=skip),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5)).eval()


def _reductions_over_channels(path) -> list:
    """The ReduceMean / ReduceMax nodes of the ONNX file that reduce axis 1 (their axes input is a constant)."""
    model = onnx.load(str(path))
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    found = []
    for node in model.graph.node:
        if node.op_type in ('ReduceMean', 'ReduceMax') and len(node.input) > 1 and node.input[1] in constants:
            if 1 in constants[node.input[1]].reshape(-1).tolist():
                found.append(node.op_type)
    return found


@pytest.mark.parametrize('pool,skip', ZAM_VARIANTS)
def test_zam_onnx_export_matches_eager_and_reduces_no_nchw_channel_axis(tmp_path, pool, skip):
    """The dynamo exporter with a fixed H and W (the TorchScript-based one records the plain formula, reductions over
    axis 1 included: tests/test_onnx_spellings.py::test_torchscript_exporter_equals_eager)."""
    net = _zam_net(pool, skip)
    err = export_onnx(net, tmp_path / 'zam.onnx', (3, 9, 7), use_dynamo=True, batch_sizes=(1, 5))
    assert err <= RTOL
    assert _reductions_over_channels(tmp_path / 'zam.onnx') == [], \
        'the statistics over channels reduce the last axis of the channels-last map, not axis 1 of NCHW'


def test_zam_pool_eager_is_the_plain_mean():
    """Outside an export the plain formula is the plain torch.mean, bit for bit (training, compile, fused tests)."""
    x = torch.randn(3, 10, 4, 6)
    assert torch.equal(zam_pool(x, [1], 'avg'), x.mean([1], keepdim=True))
    assert torch.equal(zam_pool(x, [1], 'avgmax'), x.mean([1], keepdim=True) + x.max(1, keepdim=True)[0])


def test_ulsam_onnx_export_matches_eager_with_a_depthwise_conv(tmp_path):
    """ULSAM's folded DW conv + BN is exported as a depthwise Conv (ONNX Runtime keeps it, its ReLU and the MaxPool
    in its blocked layout), its PW conv and the broadcast of its maps as two more Convs (test_onnx_spellings), and
    the export still equals eager PyTorch."""
    ulsam = calibrated_ulsam(16, seed=0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), ulsam, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 5)).eval()
    assert export_onnx(net, tmp_path / 'ulsam.onnx', (3, 9, 7), use_dynamo=True, batch_sizes=(1, 5)) <= RTOL
    convs = [n for n in onnx.load(str(tmp_path / 'ulsam.onnx')).graph.node if n.op_type == 'Conv']
    assert len(convs) == 4, 'the stem conv and ULSAM\'s depthwise, PW and broadcast convs'


def test_tables_show_one_thread_and_default_threads_side_by_side(tmp_path):
    """A one-thread CPU-time run and a default-threads wall-clock run are two columns, eager PyTorch first."""
    import json

    from test_bench import _fake_report, blank_docs
    from zamzoo.bench.tables import update_tables

    default = json.loads(_fake_report(tmp_path).read_text())  # 2 threads, wall clock
    one = json.loads(json.dumps(default))
    one['device']['threads'], one['settings']['timer'] = 1, 'process'
    one['results'][0]['latency']['infer_b1'].update(ratio=1.2, samples_ms=[12.0])
    for name, report in (('default', default), ('one', one)):
        (tmp_path / f'{name}.json').write_text(json.dumps(report))
    readme, card = blank_docs(tmp_path)
    (tmp_path / 'none.json').write_text('{"schema": 1, "checkpoints": []}')  # nothing published
    update_tables([tmp_path / 'default.json', tmp_path / 'one.json'], tmp_path / 'none.json', readme, card)
    lines = readme.read_text().splitlines()
    assert '| CPU time, 1 thread vs plain (b1 / b64) | CPU latency, 2 threads vs plain (b1 / b64) |' in lines[1]
    row = next(line for line in lines if line.startswith('| `resnet18_zam`'))
    assert '| +20.0% / +2.0% | +5.0% / +2.0% |' in row
