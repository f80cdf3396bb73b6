"""Deploying fine-tuned exports: the pretrained cfg of an export trained at another --img-size describes its own
forward_features map (timm's default-cfg contract), ONNX Runtime's `quantize_dynamic` runs on ULSAM's ONNX exports
(every Conv weight an initializer), what README says about quantizing, and why in_chans must be 3."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import calibrated_ulsam
from zamzoo.compare.contract import _timm_default_cfgs
from zamzoo.publish import export_run

pytestmark = pytest.mark.filterwarnings('ignore')

MODEL = 'mobilenet_plain'
README = Path(__file__).resolve().parents[1] / 'README.md'


def _folder_run(folder: Path, img_size: int):
    """A completed run folder of MODEL trained on an image folder of 3 classes at `img_size`."""
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_file(timm.create_model(MODEL, num_classes=3).state_dict(), str(folder / 'model.safetensors'))
    config = dict(model=MODEL, dataset='folder', tag='mine', seed=0, num_classes=3, classes=['a', 'b', 'c'],
                  mean=[0.5] * 3, std=[0.25] * 3, img_size=img_size, loader='dataloader', model_kwargs={},
                  recipe=dict(name='finetune', version=1, epochs=1), recipe_name='finetune', recipe_version=1,
                  device='cpu')
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'results.json').write_text(json.dumps(dict(model=MODEL, dataset='folder', recipe='finetune', seed=0,
                                                         epochs=1, top1=50.0, top5=90.0, code_commit='f' * 40)))
    (folder / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=1.0, lr=0.1)) + '\n')


@pytest.mark.parametrize('img_size, pool_size', [(48, [6, 6]), (33, [5, 5])])  # 33: stride-2 convs round up
def test_an_export_at_another_img_size_announces_its_forward_features_size(tmp_path, img_size, pool_size):
    _folder_run(tmp_path / 'run', img_size)
    export_run([tmp_path / 'run'], tmp_path / 'export')
    cfg = json.loads((tmp_path / 'export' / 'config.json').read_text())['pretrained_cfg']
    assert cfg['input_size'] == [3, img_size, img_size] and cfg['pool_size'] == pool_size
    # zamzoo's own check of timm's default-cfg contract, on the model timm builds from the export
    _timm_default_cfgs(lambda: timm.create_model(f'local-dir:{tmp_path / "export"}', pretrained=True))


def test_the_zoo_cfgs_keep_the_cifar_pool_size():
    assert timm.create_model('mobilenet_zam').pretrained_cfg['pool_size'] == (4, 4)
    assert timm.create_model('resnet164_plain').pretrained_cfg['pool_size'] == (8, 8)


def test_each_backbones_pool_size_is_what_its_forward_computes():
    from zamzoo.models._zoo import BACKBONES, INPUT_SIZE
    for backbone in BACKBONES.values():
        assert backbone.pool_size == backbone.pool_size_at(INPUT_SIZE), backbone.name


def test_the_cfgs_run_no_forward(monkeypatch):
    """`import zamzoo` makes every model's cfgs (one per tag): a meta forward per backbone cost 0.55 CPU-s of it."""
    from dataclasses import replace

    from zamzoo.models._zoo import BACKBONES, ZOO, Backbone, _cfgs

    def forward(self, size):
        raise AssertionError(f'a forward of {self.name} at {size}')
    monkeypatch.setattr(Backbone, 'pool_size_at', forward)
    fresh = {name: replace(backbone) for name, backbone in BACKBONES.items()}  # nothing cached on them
    entries = [replace(entry, backbone=fresh[entry.backbone.name]) for entry in ZOO.values()]
    assert len(_cfgs(entries)) == len(ZOO)  # a DefaultCfg per model, its tags in it


@pytest.mark.parametrize('use_dynamo', [True, False], ids=['dynamo', 'torchscript'])
def test_quantize_dynamic_runs_on_a_ulsam_export(tmp_path, use_dynamo):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from onnxruntime.quantization import quantize_dynamic

    from zamzoo.bench.onnx import RTOL, export_onnx
    torch.manual_seed(0)
    # 1024 channels as in mobilenet_ulsam's last blocks: a computed Conv weight larger than the exporters fold
    net = nn.Sequential(nn.Conv2d(3, 1024, 1), calibrated_ulsam(1024, seed=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(1024, 5)).eval()
    path = tmp_path / 'model.onnx'
    assert export_onnx(net, path, (3, 8, 8), use_dynamo=use_dynamo, batch_sizes=(1, 3)) <= RTOL  # equal to eager
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    assert all(n.input[1] in initializers for n in graph.node if n.op_type == 'Conv')
    quantize_dynamic(str(path), str(tmp_path / 'quantized.onnx'))
    session = ort.InferenceSession(str(tmp_path / 'quantized.onnx'), providers=['CPUExecutionProvider'])
    x = torch.randn(2, 3, 8, 8)
    got = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
    with torch.no_grad():
        expected = net(x)
    assert got.shape == (2, 5) and got.argmax(1).tolist() == expected.argmax(1).tolist()


@pytest.mark.parametrize('use_dynamo, opset', [(True, 18), (False, 18), (False, 17)],
                         ids=['dynamo', 'torchscript', 'torchscript-opset17'])
@pytest.mark.parametrize('attn', ['zam', 'cbam', 'spem'])
def test_quant_pre_process_runs_on_the_max_exports(tmp_path, monkeypatch, attn, use_dynamo, opset):
    """README's two ways to pre-process the exports with a ReduceMax / ReduceMin, which ONNX Runtime's symbolic shape
    inference cannot follow at opset 18: `skip_symbolic_shape=True`, or an export at opset 17 (axes an attribute) with
    the defaults; then `quantize_dynamic`, and the quantized model runs."""
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from zamzoo.bench.onnx import RTOL, export_onnx
    from zamzoo.layers import CBAM, SPEM, ZAM
    monkeypatch.chdir(tmp_path)  # where ONNX Runtime's tools leave files they fail on
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), dict(zam=ZAM, cbam=CBAM, spem=SPEM)[attn](16),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    with torch.no_grad():
        for param in net[1].parameters():  # away from the inits (SPEM's gate is a constant there)
            param.normal_()
    assert export_onnx(net, tmp_path / 'model.onnx', (3, 8, 8), use_dynamo=use_dynamo, opset=opset,
                       batch_sizes=(1, 3)) <= RTOL
    tool = subprocess.run([sys.executable, '-m', 'onnxruntime.tools.symbolic_shape_infer', '--input', 'model.onnx',
                           '--output', 'inferred.onnx'], capture_output=True, text=True, timeout=300)
    failure = (tool.stderr.strip().splitlines() or [''])[-1]
    if opset >= 18:  # the tool's error, as README quotes it for this module and exporter
        assert tool.returncode != 0 and f'`{failure}`' in _readme_quantizing(), tool.stderr[-2000:]
    else:
        assert tool.returncode == 0, tool.stderr[-2000:]
    quant_pre_process(str(tmp_path / 'model.onnx'), str(tmp_path / 'pre.onnx'), skip_symbolic_shape=opset >= 18)
    quantize_dynamic(str(tmp_path / 'pre.onnx'), str(tmp_path / 'quantized.onnx'))
    session = ort.InferenceSession(str(tmp_path / 'quantized.onnx'), providers=['CPUExecutionProvider'])
    x = torch.randn(3, 3, 8, 8)
    assert session.run(None, {'input': x.numpy()})[0].shape == (3, 5)


def _readme_quantizing() -> str:
    text = ' '.join(README.read_text().split())
    return text[text.index('Quantizing:'):text.index('## Models')]


def test_readme_says_how_to_quantize_the_max_exports():
    for phrase in ('runs on every export', 'onnxruntime.tools.symbolic_shape_infer', '--auto_merge',
                   'skip_symbolic_shape=True'):
        assert phrase in _readme_quantizing(), phrase


def test_in_chans_1_is_refused_for_what_zamzoo_does_with_grayscale_images():
    from zamzoo.errors import UsageError
    from zamzoo.train.build import check_model_kwargs
    with pytest.raises(UsageError, match=re.escape('zamzoo loads every image as 3-channel RGB (grayscale and other '
                                                   'modes converted); in_chans must be 3')):
        check_model_kwargs(MODEL, {'in_chans': 1}, 32)
