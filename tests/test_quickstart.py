"""`zamzoo quickstart` end to end (through the console entry point, in a subprocess with the real offline
environment), the shapes data set, and the local Hugging Face cache it loads from."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import timm
import zamzoo  # noqa: F401
from zamzoo.data.shapes import CLASSES, make_shapes, render_shape, write_shapes
from zamzoo.pretrained import sha256_file
from zamzoo.publish.export import EXPORT_FILES
from zamzoo.publish.hubcache import cache_export, local_commit, offline_hub

DEAD_ENDPOINT = 'http://127.0.0.1:9'  # discard port: any request that slips through fails at once
MODEL = 'mobilenet_zam'
SMALL = ['--train-images', '40', '--val-images', '20', '--epochs', '1', '--batch-size', '8',
         '--attention-images', '2', '--device', 'cpu']


def _zamzoo(args, tmp_path):
    """Run the `zamzoo` CLI as a user would, offline: HF_HUB_OFFLINE=1, an empty cache, a dead endpoint, an
    empty manifest, one thread (the machine is shared)."""
    (tmp_path / 'empty-manifest.json').write_text('{"schema": 1, "checkpoints": []}')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'user-hf-cache'),
               HF_ENDPOINT=DEAD_ENDPOINT, ZAMZOO_MANIFEST=str(tmp_path / 'empty-manifest.json'),
               OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    code = 'import sys, torch; torch.set_num_threads(1); from zamzoo.cli import main; sys.exit(main(sys.argv[1:]))'
    return subprocess.run([sys.executable, '-c', code, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


@pytest.fixture(scope='module')
def quickstart_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('quickstart')
    out = tmp / 'qs'
    proc = _zamzoo(['quickstart', '--out', str(out), '--model', MODEL, *SMALL], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, out, proc


def test_quickstart_artefacts(quickstart_run):
    tmp, out, proc = quickstart_run
    # 1. the data set: an image folder, 10 classes in train/ and val/, 32x32 RGB
    for split, n in (('train', 40), ('val', 20)):
        folders = sorted(p.name for p in (out / 'data' / 'shapes' / split).iterdir())
        assert folders == sorted(CLASSES)
        files = sorted((out / 'data' / 'shapes' / split).glob('*/*.png'))
        assert len(files) == n
        with Image.open(files[0]) as im:
            assert im.size == (32, 32) and im.mode == 'RGB'
    # 2. the training run folder, as zamzoo train writes it
    run = out / 'run'
    config = json.loads((run / 'config.json').read_text())
    assert (config['model'], config['dataset'], config['num_classes'], config['tag']) == (MODEL, 'folder', 10, 'shapes')
    assert config['classes'] == sorted(CLASSES)
    metrics = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [m['epoch'] for m in metrics] == [1] and metrics[0]['test_top1'] is not None
    assert (run / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    checkpoint = torch.load(run / 'checkpoint.pt', map_location='cpu', weights_only=True)
    results = json.loads((run / 'results.json').read_text())
    assert checkpoint['epoch'] == results['epochs'] == 1
    # 3. the export: Hub-ready, described with the run's own data (tag, classes, normalisation)
    export = out / 'export'
    assert sorted(p.name for p in export.iterdir()) == sorted(EXPORT_FILES)
    hub_config = json.loads((export / 'config.json').read_text())
    cfg = hub_config['pretrained_cfg']
    assert hub_config['architecture'] == MODEL and hub_config['num_classes'] == 10
    assert cfg['mean'] == config['mean'] and cfg['std'] == config['std'] and cfg['tag'] == 'shapes'
    assert list(cfg['label_names']) == sorted(CLASSES)
    exported = json.loads((export / 'results.json').read_text())
    assert exported['repo_id'] == f'local/{MODEL}.shapes' and exported['top1']['mean'] == results['top1']
    assert 'shapes' in (export / 'README.md').read_text()
    # 4. the attention maps
    pngs = sorted((out / 'attention').glob('*.png'))
    assert len(pngs) == 2
    for png in pngs:
        with Image.open(png) as im:
            assert im.format == 'PNG' and im.size[0] > 100
    # 5. the summary: accuracy, equality, where everything is, next commands
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['max_logit_diff'] == 0.0   # (other predictions stop the quickstart: tests/test_inputs.py)
    assert summary['top1'] == pytest.approx(results['top1'])  # same images, same transforms, same weights
    assert summary['val_images'] == 20 and summary['chance'] == 10.0
    assert sorted(summary['attention']) == [str(p) for p in pngs]
    for key in ('run', 'metrics', 'curves', 'checkpoint', 'weights', 'export', 'hf_cache', 'attention'):
        assert Path(summary['paths'][key]).exists(), key
    text = proc.stdout
    assert f"top-1 {summary['top1']:.1f}%" in text and 'predictions identical' in text
    for key in ('run', 'metrics', 'curves', 'checkpoint', 'export', 'hf_cache'):
        assert summary['paths'][key] in text, key
    assert '--download' in text and 'zamzoo push' in text and '--dataset folder' in text
    assert not (tmp / 'user-hf-cache').exists()  # nothing touched the user's own cache


def test_quickstart_reload_is_bit_identical(quickstart_run):
    """Independently of the quickstart's own check: the cache it left holds the trained weights, and timm loads
    them through huggingface_hub offline, bit for bit."""
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    tmp, out, _ = quickstart_run
    repo_id = f'local/{MODEL}.shapes'
    cache = out / 'hf-cache'
    info = scan_cache_dir(cache)
    repo, = info.repos
    assert repo.repo_id == repo_id and not info.warnings
    revision, = repo.revisions
    assert revision.refs == {'main'} and revision.commit_hash == local_commit(out / 'export')
    assert sorted(f.file_name for f in revision.files) == sorted(EXPORT_FILES)
    cached = try_to_load_from_cache(repo_id, 'model.safetensors', cache_dir=str(cache))
    assert sha256_file(cached) == sha256_file(out / 'export' / 'model.safetensors')

    trained = load_file(str(out / 'run' / 'model.safetensors'))
    with offline_hub(cache):
        model = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    state = model.state_dict()
    assert sorted(state) == sorted(trained)
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert model.num_classes == 10 and model.pretrained_cfg['tag'] == 'shapes'


def test_quickstart_refuses_existing_out(quickstart_run, capsys):
    from zamzoo.cli import main

    _, out, _ = quickstart_run
    before = sorted(p.relative_to(out) for p in out.rglob('*'))
    assert main(['quickstart', '--out', str(out), *SMALL]) == 2
    assert 'already exists' in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob('*')) == before  # nothing overwritten


@pytest.mark.parametrize('option, value, expected', [
    ('--seed', '-5', 'seed: expected an integer from 0 to 4294967295'),  # numpy's ValueError traceback
    ('--batch-size', '1', 'batch_size: expected at least 2'),            # refused after the data set was written
    ('--device', 'tpu', "device: unknown 'tpu'"),                        # the same
    ('--attention-images', '20', 'attention_images: expected at most 10 (one image of each class)'),  # drew 10
])
def test_quickstart_refuses_bad_options_before_writing_anything(option, value, expected, tmp_path, capsys):
    from zamzoo.cli import main

    assert main(['quickstart', '--out', str(tmp_path / 'qs'), option, value]) == 2
    err = capsys.readouterr().err
    assert expected in err and 'Traceback' not in err and not (tmp_path / 'qs').exists()


def test_offline_hub_restores_and_blocks(tmp_path):
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    before = constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE
    with offline_hub(tmp_path):
        assert constants.HF_HUB_OFFLINE is True and constants.HF_HUB_CACHE == str(tmp_path)
        with pytest.raises(LocalEntryNotFoundError):
            hf_hub_download('zamzoo/not-cached', 'model.safetensors')
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE) == before


def test_cache_export_needs_a_complete_export(tmp_path):
    from zamzoo.publish import InvalidExportError

    (tmp_path / 'export').mkdir()
    (tmp_path / 'export' / 'model.safetensors').write_bytes(b'x')
    with pytest.raises(InvalidExportError, match='missing config.json'):
        cache_export(tmp_path / 'export', tmp_path / 'cache')
    assert not (tmp_path / 'cache').exists()


# ------------------------------------------------------------------ the shapes data set
def test_shapes_deterministic_balanced():
    a = make_shapes(20, 10, seed=3)
    b = make_shapes(20, 10, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    xtr, ytr, xva, yva = a
    assert xtr.shape == (20, 32, 32, 3) and xtr.dtype == np.uint8 and xva.shape == (10, 32, 32, 3)
    assert np.bincount(ytr, minlength=10).tolist() == [2] * 10 and sorted(yva.tolist()) == list(range(10))
    assert not np.array_equal(xtr[:10], xva)  # val is another random stream
    assert not np.array_equal(make_shapes(20, 10, seed=4)[0], xtr)


def test_shapes_classes_differ_in_shape_only():
    """Same random draws (colours, size, position, noise), different class: only the shape changes, and it
    covers a class-specific area (a ring less than a disc, a frame less than a square)."""
    def area(shape):
        img = render_shape(shape, np.random.default_rng(7)).astype(int)
        background = np.median(img[0], axis=0)
        return (np.abs(img - background).sum(-1) > 120).sum()

    areas = {shape: area(shape) for shape in CLASSES}
    assert areas['ring'] < areas['circle'] and areas['frame'] < areas['square']
    assert areas['plus'] < areas['square'] and areas['star'] < areas['circle']
    assert len({render_shape(s, np.random.default_rng(7)).tobytes() for s in CLASSES}) == len(CLASSES)
    with pytest.raises(ValueError, match='unknown shape'):
        render_shape('hexagon', np.random.default_rng(0))


def test_write_shapes_atomic(tmp_path, monkeypatch):
    root = write_shapes(tmp_path / 'shapes', 10, 10)
    assert len(list(root.glob('train/*/*.png'))) == 10 and len(list(root.glob('val/*/*.png'))) == 10
    with pytest.raises(FileExistsError):
        write_shapes(root, 10, 10)

    calls = []

    def failing_save(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise OSError('disk full')
        return original(self, path, *args, **kwargs)

    original = Image.Image.save
    monkeypatch.setattr(Image.Image, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        write_shapes(tmp_path / 'broken', 10, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['shapes']  # nothing half-written left behind
