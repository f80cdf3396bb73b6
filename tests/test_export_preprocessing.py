"""An export declares the preprocessing its top-1 was measured with: timm's (and so transformers') transform from
the export's cfg, the model card's ONNX snippet, and both loaders' evaluation give the same tensor; and it carries
the run's class names (a pipeline's labels)."""
import json
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from zamzoo.data import folder_transforms
from zamzoo.data.tensors import _Decoded
from zamzoo.data import EVAL_INTERPOLATION, eval_resize
from zamzoo.publish import export_run
from zamzoo.publish.card import _onnx_section
from zamzoo.quickstart import eval_transform
from zamzoo.recipes import get_recipe

MODEL = 'mobilenet_plain'
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _run(folder, dataset, classes, img_size=32, loader='dataloader'):
    torch.manual_seed(0)
    net = timm.create_model(MODEL, num_classes=len(classes))
    folder.mkdir(parents=True)
    save_file(net.state_dict(), str(folder / 'model.safetensors'))
    config = dict(model=MODEL, dataset=dataset, tag='mine' if dataset == 'folder' else dataset, seed=0,
                  num_classes=len(classes), classes=list(classes), mean=list(MEAN), std=list(STD), img_size=img_size,
                  loader=loader, model_kwargs={}, recipe=dict(name='finetune', version=1, epochs=1), recipe_name='finetune',
                  recipe_version=1, device='cpu')
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'results.json').write_text(json.dumps(dict(model=MODEL, dataset=dataset, recipe='finetune', seed=0,
                                                         epochs=1, top1=50.0, top5=90.0, code_commit='f' * 40)))
    (folder / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=1.0, lr=0.1)) + '\n')


@pytest.fixture(scope='module', params=['dataloader', 'tensor'])
def folder_export(tmp_path_factory, request):
    """(export folder, the loader its run evaluated with)"""
    root = tmp_path_factory.mktemp('fx')
    _run(root / 'run', 'folder', ['a', 'b', 'c'], img_size=48, loader=request.param)
    export_run([root / 'run'], root / 'export')
    return root / 'export', request.param


def _scored(img, loader):
    """The image as the run's evaluation fed it to the model."""
    if loader == 'dataloader':
        return folder_transforms(get_recipe('finetune'), MEAN, STD, 48, train=False)(img)
    decoded, _ = _Decoded([(img, 0)], 48)[0]  # the tensor loader's split, normalised as its batches are
    return (decoded.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


@pytest.mark.parametrize('size', [(60, 50), (50, 90), (48, 48), (33, 200)])
def test_every_reader_of_a_folder_export_preprocesses_as_the_run_was_scored(folder_export, tmp_path, size):
    export, loader = folder_export
    cfg = json.loads((export / 'config.json').read_text())['pretrained_cfg']
    assert cfg['label_names'] == ['a', 'b', 'c']
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    scored = _scored(img, loader)

    data_cfg = timm.data.resolve_data_config(pretrained_cfg=cfg)
    timm_x = timm.data.create_transform(**data_cfg, is_training=False)(img)  # what transformers' processor runs too
    torch.testing.assert_close(timm_x, scored, rtol=0, atol=1e-6)
    # the quickstart's check of the reloaded model (it had the DataLoader's crop whichever loader the run used)
    torch.testing.assert_close(eval_transform(cfg, 'finetune')(img), scored, rtol=0, atol=1e-6)

    path = tmp_path / 'image.png'
    img.save(path)
    info = dict(onnx=dict(opset=18, checked_batch_sizes=[1], max_rel_err=0.0, input_name='input',
                          output_name='logits'), input_size=tuple(cfg['input_size']), num_classes=3, repo_id='x/y',
                mean=MEAN, std=STD, crop_pct=cfg['crop_pct'], interpolation=cfg['interpolation'], tag='mine',
                model=MODEL, model_name=f'{MODEL}.mine')
    code = re.search(r"```python\n(.*?)```", _onnx_section(info), re.S).group(1)
    code = code[code.index('mean = '):code.index('logits = ')].replace("'image.png'", repr(str(path)))
    scope = {'np': np, 'Image': Image}
    exec(code, scope)  # the model card's snippet, numpy and PIL only
    torch.testing.assert_close(torch.from_numpy(scope['x'][0]), scored, rtol=0, atol=1e-5)


def test_the_folder_exports_cfg(folder_export):
    export, loader = folder_export
    cfg = json.loads((export / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['interpolation'], cfg['crop_mode']) == (EVAL_INTERPOLATION, 'center') == ('bilinear', 'center')
    assert cfg['crop_pct'] == {'dataloader': 0.875, 'tensor': 1.0}[loader] and cfg['input_size'] == [3, 48, 48]
    assert eval_resize(48, 0.875) == 54  # timm's floor(48 / 0.875)


def test_a_cifar_export_names_the_runs_classes(tmp_path):
    classes = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    _run(tmp_path / 'run', 'cifar10', classes)
    export_run([tmp_path / 'run'], tmp_path / 'export')
    config = json.loads((tmp_path / 'export' / 'config.json').read_text())
    assert config['label_names'] == classes
    assert config['pretrained_cfg']['crop_pct'] == 1.0  # CIFAR: the 32 x 32 images as they are


def test_the_local_hub_cache_holds_the_onnx_file_a_push_uploads(folder_export, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import hf_hub_download
    from zamzoo.publish.hubcache import cache_export, local_commit

    export = tmp_path / 'export'
    shutil.copytree(folder_export[0], export)
    without = local_commit(export)
    (export / 'model.onnx').write_bytes(b'onnx bytes')
    assert local_commit(export) != without  # the id covers every file a push uploads
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    snapshot = cache_export(export, tmp_path / 'cache', repo_id='local/m.mine')
    path = hf_hub_download('local/m.mine', 'model.onnx', cache_dir=tmp_path / 'cache')
    assert open(path, 'rb').read() == b'onnx bytes' and (snapshot / 'model.onnx').is_file()
