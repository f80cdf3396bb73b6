"""Issue 21: an export loads in 🤗 transformers through its timm wrapper (AutoModelForImageClassification,
AutoImageProcessor, pipeline) after `import zamzoo`, with timm's logits exactly; from a folder and, by its Hub id,
from a hand-laid Hugging Face cache offline. Without `import zamzoo` the user gets an error, tested for its text."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import timm
import zamzoo  # noqa: F401 - registers the architectures, as a user must before loading
from zamzoo.publish import cache_export, export_run, validate_export
from zamzoo.publish.push import InvalidExportError

from conftest import skip_or_fail_in_ci

MODEL, TAG = 'mobilenet_zamr', 'shapes'
CLASSES = ['circle', 'square', 'triangle']
REPO = f'local/{MODEL}.{TAG}'
COMMIT = 'c' * 40


@pytest.fixture(scope='module', autouse=True)
def transformers_installed():
    try:
        import transformers  # noqa: F401
    except ImportError:
        skip_or_fail_in_ci('transformers is not installed (pip install "zamzoo[transformers]")')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """The export of a 3-class run on an image folder ('shapes'), as `zamzoo train --dataset folder` leaves it."""
    root = tmp_path_factory.mktemp('transformers')
    run = root / 'run'
    run.mkdir()
    torch.manual_seed(0)
    net = timm.create_model(MODEL, num_classes=len(CLASSES))
    for m in net.modules():  # running stats away from (0, 1): eval-mode batch norm must be loaded, not default
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_file(net.state_dict(), str(run / 'model.safetensors'))
    config = dict(model=MODEL, dataset='folder', tag=TAG, seed=0, num_classes=len(CLASSES), classes=CLASSES,
                  mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], img_size=32, model_kwargs={},
                  recipe=dict(name='finetune', version=1), recipe_name='finetune', recipe_version=1, device='cpu')
    (run / 'config.json').write_text(json.dumps(config))
    (run / 'results.json').write_text(json.dumps(dict(model=MODEL, dataset='folder', seed=0, top1=90.0, top5=100.0)))
    (run / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=1.0)) + '\n')
    export_run([run], root / 'export', repo_id=REPO)
    return root / 'export'


def _image(seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def _timm_model(folder: Path):
    """The export as timm loads it: its config.json's pretrained cfg (preprocessing), its weights file."""
    cfg = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    return timm.create_model(MODEL, pretrained=True, num_classes=len(CLASSES),
                             pretrained_cfg_overlay=dict(cfg, file=str(folder / 'model.safetensors'))).eval()


def test_config_is_what_the_wrapper_reads(exported):
    config = json.loads((exported / 'config.json').read_text())
    assert config['architecture'] == MODEL and config['num_classes'] == len(CLASSES)
    assert config['label_names'] == CLASSES and 'num_classes' not in config.get('model_args', {})
    card = (exported / 'README.md').read_text()
    usage = card[card.index('### With 🤗 transformers'):]
    assert usage.index('import zamzoo') < usage.index('from transformers import')
    assert f"AutoModelForImageClassification.from_pretrained('{REPO}')" in usage and 'Without `import zamzoo`' in usage
    validate_export(exported)
    broken = dict(config, model_args=dict(config.get('model_args', {}), num_classes=len(CLASSES)))
    (exported / 'config.json').write_text(json.dumps(broken))
    try:
        with pytest.raises(InvalidExportError, match=r"model_args holds \['num_classes'\], which transformers"):
            validate_export(exported)
    finally:
        (exported / 'config.json').write_text(json.dumps(config, indent=2) + '\n')


def test_auto_classes_and_pipeline_from_the_folder(exported):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model = AutoModelForImageClassification.from_pretrained(str(exported)).eval()
    processor = AutoImageProcessor.from_pretrained(str(exported))
    net = _timm_model(exported)
    assert model.config.id2label == dict(enumerate(CLASSES))
    pixels = processor(_image(), return_tensors='pt')['pixel_values']
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(net), is_training=False)
    assert torch.equal(pixels, transform(_image()).unsqueeze(0))  # the same preprocessing as timm's
    x = torch.randn(2, 3, 32, 32)
    trained = timm.create_model(MODEL, num_classes=len(CLASSES)).eval()  # the run's weights, not the export's
    trained.load_state_dict(load_file(str(exported.parent / 'run' / 'model.safetensors')))
    with torch.no_grad():
        # to float32 rounding: transformers keeps the weights as views into the file, whose alignment can change how
        # a convolution rounds (bit-equal weights, logits 5e-6 apart seen on mobilenetv2_se)
        torch.testing.assert_close(model(pixel_values=x).logits, net(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(pixel_values=x).logits, trained(x), rtol=1e-4, atol=1e-5)
    answer = pipeline('image-classification', model=str(exported), top_k=len(CLASSES))(_image())
    assert sorted(a['label'] for a in answer) == CLASSES
    with torch.no_grad():
        best = net(transform(_image()).unsqueeze(0)).argmax(1).item()
    assert answer[0]['label'] == CLASSES[best]


_SCRIPT = '''
import json, sys
import torch
if sys.argv[1] == 'zamzoo':
    import zamzoo
import timm
from transformers import AutoModelForImageClassification, pipeline
repo = sys.argv[2]
try:
    model = AutoModelForImageClassification.from_pretrained(repo).eval()
except Exception as e:
    print(json.dumps({'error': f'{type(e).__name__}: {e}'}))
    raise SystemExit(0)
net = timm.create_model('hf-hub:' + repo, pretrained=True).eval()
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    same = torch.allclose(model(pixel_values=x).logits, net(x), rtol=1e-4, atol=1e-5)
from PIL import Image
image = Image.new('RGB', (40, 36), (120, 30, 200))
labels = [a['label'] for a in pipeline('image-classification', model=repo, top_k=3)(image)]
print(json.dumps({'same': same, 'labels': sorted(labels)}))
'''


def _run(cache: Path, *args) -> dict:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE='1', HF_ENDPOINT='http://127.0.0.1:9',
               PYTHONPATH=str(Path(zamzoo.__file__).parent.parent))
    proc = subprocess.run([sys.executable, '-c', _SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hub_id_through_an_offline_cache_with_and_without_import_zamzoo(exported, tmp_path):
    cache = tmp_path / 'hf-cache'
    cache_export(exported, cache, commit=COMMIT)
    assert _run(cache, 'zamzoo', REPO) == {'same': True, 'labels': CLASSES}
    error = _run(cache, 'plain', REPO)['error']  # what a user sees who forgot `import zamzoo`
    assert f"ImportError: The model architecture '{MODEL}' is not supported in your version of timm" in error, error
