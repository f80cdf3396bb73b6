"""Every attention module exported with dynamic shapes computes what eager PyTorch computes at every shape the ONNX
graph accepts: a batch-1 example keeps the batch dynamic (dynamo exporter), and a dynamic H and W (both exporters)
give the right numbers at other map sizes, where a spelling that baked the example's H and W in (a pooling window,
InstanceNormalization's epsilon) gave wrong ones or failed in ONNX Runtime."""
import pytest
import torch
from torch import nn

from zamzoo.layers import create_attn, list_attn

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

pytestmark = pytest.mark.filterwarnings('ignore')

CHANNELS = 32
OTHER_SIZES = [(1, 8, 8), (3, 5, 9), (2, 9, 5)]  # (batch, H, W), none the example's


def _module(name: str) -> nn.Module:
    """`name`'s module in eval mode with random BN statistics and affines (a fresh one's are the identity)."""
    torch.manual_seed(0)
    module = create_attn(name, CHANNELS)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


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
    module, path = _module(name), tmp_path / f'{name}.onnx'
    _export(module, path, use_dynamo)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True], dims
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for b, h, w in OTHER_SIZES:
        x = torch.randn(b, CHANNELS, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = module(x)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f'{name} at {(b, h, w)}')
