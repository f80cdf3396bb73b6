"""OpenVINO, the other CPU runtime deployers use, computes what eager PyTorch computes for every attention module, on
both of its routes: the ONNX file zamzoo's export writes (`export_onnx` with the dynamo exporter, as `zamzoo export
--onnx` writes it, spellings for ONNX Runtime's NCHWc layout included) and the PyTorch module converted by OpenVINO's
own PyTorch frontend (`openvino.convert_model`, which traces the plain formula), each at batch sizes (and the
converted module at map sizes) other than its example's. In float32: on a CPU with bfloat16 instructions OpenVINO's
CPU plugin infers in bfloat16 unless told otherwise (its default there, for the plain backbones too)."""
import pytest
import torch

from conftest import calibrated_attn
from zamzoo.bench.onnx import export_onnx
from zamzoo.layers import list_attn

ov = pytest.importorskip('openvino')  # in `dev`

pytestmark = pytest.mark.filterwarnings('ignore')  # the tracers' warnings on the modules' shape checks

CHANNELS = 32
FP32 = {'INFERENCE_PRECISION_HINT': 'f32'}


@pytest.fixture(autouse=True, scope='module')
def telemetry_declined(tmp_path_factory):
    """OpenVINO's model conversion sends usage telemetry (unless CI=true) to a network these tests do not need: 8
    forked processes per ov.convert_model, 1-2 s of CPU time here. Its opt-out file (`intel/openvino_telemetry`
    holding 0), in a home of this module's own, also keeps its files out of the user's."""
    home = tmp_path_factory.mktemp('home')
    (home / 'intel').mkdir()
    (home / 'intel' / 'openvino_telemetry').write_text('0')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HOME', str(home))
        yield


def _assert_runs_as_eager(model, module, sizes):
    compiled = ov.Core().compile_model(model, 'CPU', FP32)
    for b, h, w in sizes:
        x = torch.randn(b, CHANNELS, h, w, generator=torch.Generator().manual_seed(b * h * w))
        with torch.no_grad():
            expected = module(x)
        got = torch.from_numpy(compiled(x.numpy())[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f'{module} at {(b, h, w)}')


@pytest.mark.parametrize('name', list_attn())
def test_the_onnx_export_runs_in_openvino_as_in_pytorch(name, tmp_path):
    module, path = calibrated_attn(name, CHANNELS), tmp_path / f'{name}.onnx'
    export_onnx(module, path, (CHANNELS, 8, 8), use_dynamo=True)
    _assert_runs_as_eager(ov.Core().read_model(str(path)), module, [(1, 8, 8), (3, 8, 8)])


@pytest.mark.parametrize('name', list_attn())
def test_openvino_converts_the_module_from_pytorch(name):
    module = calibrated_attn(name, CHANNELS)
    model = ov.convert_model(module, example_input=torch.randn(2, CHANNELS, 6, 6), input=[-1, CHANNELS, -1, -1])
    _assert_runs_as_eager(model, module, [(1, 6, 6), (3, 5, 9), (2, 9, 5)])
