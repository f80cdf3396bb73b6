"""Every attention module exported with dynamic shapes computes what eager PyTorch computes at every shape the ONNX
graph accepts: a batch-1 example keeps the batch dynamic (dynamo exporter), and a dynamic H and W (both exporters)
give the right numbers at other map sizes, where a spelling that baked the example's H and W in (a pooling window,
InstanceNormalization's epsilon) gave wrong ones or failed in ONNX Runtime."""
import pytest
import torch
from torch import nn

from conftest import calibrated_attn
from zamzoo.layers import list_attn

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

pytestmark = pytest.mark.filterwarnings('ignore')

CHANNELS = 32
OTHER_SIZES = [(1, 8, 8), (3, 5, 9), (2, 9, 5)]  # (batch, H, W), none the example's
# the TorchScript exporter's graph accepts them too (the dynamo one's starts at 2): SimAM's max(HW - 1, 1) was
# recorded as the example's branch and gave NaN on a 1x1 map
SIZES_BELOW_2 = [(2, 1, 1), (1, 1, 3)]


def _export(module: nn.Module, path, use_dynamo: bool) -> None:
    example = (torch.randn(1, CHANNELS, 6, 6),)
    if use_dynamo:
        dim = torch.export.Dim
        shapes = ({0: dim('batch', min=1, max=64), 2: dim('height', min=2, max=64), 3: dim('width', min=2, max=64)},)
        torch.onnx.export(module, example, str(path), dynamo=True, dynamic_shapes=shapes)
    else:
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=['x'],
                          dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})


@pytest.mark.parametrize('use_dynamo', [True, False], ids=['dynamo', 'torchscript'])
@pytest.mark.parametrize('name', list_attn())
def test_export_with_dynamic_shapes_equals_eager(name, use_dynamo, tmp_path):
    module, path = calibrated_attn(name, CHANNELS), tmp_path / f'{name}.onnx'
    _export(module, path, use_dynamo)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True], dims
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for b, h, w in OTHER_SIZES + ([] if use_dynamo else SIZES_BELOW_2):
        x = torch.randn(b, CHANNELS, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = module(x)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f'{name} at {(b, h, w)}')
