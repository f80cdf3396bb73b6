"""Publishing: export -> Hub folder -> (hand-laid HF cache | loopback Hub server) -> timm pretrained=True.

No test reaches the network. huggingface_hub reads its environment at import time, so inside this process the
tests patch `huggingface_hub.constants` (cache folder, offline flag, endpoint, token file); one test runs a
subprocess with the real environment variables instead. Every test sets the endpoint to a loopback address, so
that a download nobody expected fails at once instead of retrying for ~50 s.
"""
import hashlib
import http.server
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
from conftest import _randomize_batchnorms, write_cifar_run
import zamzoo
from zamzoo.errors import UsageError, WeightsError
from zamzoo.pretrained import load_manifest, pinned_hub_id, sha256_file, update_manifest
from zamzoo.publish import ExportError, InvalidExportError, cache_export, export_run, push_folder, verify_published
from zamzoo.publish.export import EXPORT_FILES, write_checksums
from zamzoo.publish.push import manifest_record

MODEL = 'resnet18_zam'
TAG = 'cifar100'
REPO = f'zamzoo/{MODEL}.{TAG}'
COMMIT = 'a' * 40
DEAD_ENDPOINT = 'http://127.0.0.1:9'  # discard port: refused at once


# ------------------------------------------------------------------ helpers
def _state_dict(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a, b, skip=()):
    keys = [k for k in a if not any(k.startswith(s) for s in skip)]
    assert sorted(keys) == sorted(k for k in b if not any(k.startswith(s) for s in skip))
    for k in keys:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _publish_record(export_dir: Path, commit=COMMIT, **changes):
    results = json.loads((export_dir / 'results.json').read_text())
    return dict(manifest_record(results, results['repo_id'], commit), **changes)


def _publish(manifest: Path, export_dir: Path, commit=COMMIT, **changes):
    record = _publish_record(export_dir, commit, **changes)
    update_manifest(record, manifest)
    return record


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    weights = {}
    for seed, top1, top5 in ((1, 71.0, 91.0), (0, 70.0, 90.0)):  # seed 1 first: export must pick seed 0's weights
        weights[seed] = write_cifar_run(root / f'seed{seed}', MODEL, seed, top1, top5)
    return root, weights


@pytest.fixture(scope='module')
def exported(runs, tmp_path_factory):
    root, weights = runs
    out = tmp_path_factory.mktemp('export') / f'{MODEL}.{TAG}'
    result = export_run([root / 'seed1', root / 'seed0'], out)
    return out, result, weights[0]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty HF cache, offline mode, a dead endpoint, no token, a private manifest."""
    from huggingface_hub import constants
    cache = tmp_path / 'hf-cache'
    cache.mkdir()
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'ENDPOINT', DEAD_ENDPOINT)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', DEAD_ENDPOINT + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    monkeypatch.setattr(constants, 'AGENT_HARNESSES_PATH', str(tmp_path / 'agent-harnesses.json'), raising=False)
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.delenv('HUGGING_FACE_HUB_TOKEN', raising=False)
    manifest = tmp_path / 'manifest.json'
    manifest.write_text('{"schema": 1, "checkpoints": []}')  # nothing published yet
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(manifest))
    return cache, manifest


@pytest.fixture
def published(hub, exported):
    """The export laid out in the HF cache at COMMIT and recorded in the manifest."""
    cache, manifest = hub
    out, _, weights = exported
    cache_export(out, cache, commit=COMMIT)
    _publish(manifest, out)
    return cache, manifest, out, weights


class _Hub(http.server.BaseHTTPRequestHandler):
    """The Hub's file endpoint: HEAD/GET /{org}/{name}/resolve/{revision}/{filename}."""
    repos = {}  # repo_id -> (commit, {filename: bytes})
    log = []

    def _answer(self, body: bool):
        self.log.append((self.command, self.path))
        parts = unquote(self.path.split('?')[0]).lstrip('/').split('/')
        if len(parts) < 5 or parts[2] != 'resolve':
            return self._error(404, 'RepoNotFound')
        repo_id, revision, filename = '/'.join(parts[:2]), parts[3], '/'.join(parts[4:])
        if repo_id not in self.repos:
            return self._error(404, 'RepoNotFound')
        commit, files = self.repos[repo_id]
        if revision not in ('main', commit):
            return self._error(404, 'RevisionNotFound')
        if filename not in files:
            return self._error(404, 'EntryNotFound', commit)
        data = files[filename]
        self.send_response(200)
        self.send_header('X-Repo-Commit', commit)
        self.send_header('ETag', '"%s"' % hashlib.sha256(data).hexdigest())
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Content-Type', 'application/octet-stream')
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status, code, commit=None):
        self.send_response(status)
        self.send_header('X-Error-Code', code)
        if commit:
            self.send_header('X-Repo-Commit', commit)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_hub(hub, monkeypatch):
    from huggingface_hub import constants
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f'http://127.0.0.1:{server.server_address[1]}'
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    _Hub.repos, _Hub.log = {}, []
    yield _Hub
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------ export and model card
def test_export_folder(exported, runs):
    out, result, weights = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    assert not list(out.parent.glob('.*.tmp'))  # staging folder renamed away
    _assert_same(load_file(str(out / 'model.safetensors')), weights)  # seed 0's weights, bit for bit
    assert result.weights_seed == 0

    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == MODEL and config['num_classes'] == 100
    pcfg = config['pretrained_cfg']
    assert pcfg['input_size'] == [3, 32, 32] and pcfg['mean'] == list(timm.get_pretrained_cfg(f'{MODEL}.{TAG}').mean)
    assert 'hf_hub_id' not in pcfg  # the repo's own config never pins a revision of itself

    results = json.loads((out / 'results.json').read_text())
    assert results['seeds'] == [0, 1] and results['weights_seed'] == 0 and results['weights_from'] == 'seed0'
    assert results['top1']['mean'] == pytest.approx(70.5) and results['top1']['std'] == pytest.approx(0.5 ** 0.5)
    assert results['top5']['mean'] == pytest.approx(90.5) and results['top1']['n'] == 2
    assert results['sha256'] == sha256_file(out / 'model.safetensors') == result.sha256
    assert results['code_commit'] == 'f' * 40 and results['recipe'] == 'zam' and results['recipe_version'] == 1
    hparams = json.loads((out / 'hparams.json').read_text())
    assert hparams['zamzoo_version'] == zamzoo.__version__ == importlib.metadata.version('zamzoo')
    assert [r['seed'] for r in hparams['runs']] == [0, 1] and hparams['runs'][0]['config']['recipe']['name'] == 'zam'
    log = json.loads((out / 'train_log.json').read_text())
    assert [len(r['epochs']) for r in log['runs']] == [2, 2]


def test_model_card_real_counts_and_results(exported):
    from zamzoo.bench.flops import count_macs, count_params
    out, result, _ = exported
    net = timm.create_model(MODEL)
    params, macs = count_params(net), count_macs(net)
    assert (result.params, result.macs) == (params, macs) and params == 11_220_132
    card = (out / 'README.md').read_text()
    header, body = card.split('\n---\n', 1)
    assert header.startswith('---\n') and 'library_name: timm' in header and '- uoft-cs/cifar100' in header
    assert 'license: apache-2.0' in header and 'model-index:' in header and 'value: 70.5' in header
    assert f'{params:,}' in body and f'{macs:,}' in body and '32 x 32' in body
    assert f'**zamzoo version:** {zamzoo.__version__}' in body
    assert '70.50 ± 0.71' in body and '| 0 (weights) | 70.00 | 90.00 |' in body
    for section in ('## Model Details', '### Image Classification', '### Feature Map Extraction',
                    '### Image Embeddings', '### Fine-tuning', '## Results', '## Citation'):
        assert section in body, section
    assert "timm.create_model('resnet18_zam.cifar100', pretrained=True)" in body
    assert "such images with `zamzoo.data.open_rgb('image.png')`, which rescales" in body  # 16-bit: not convert()
    citation = body.split('## Citation\n', 1)[1]  # the attention's BibTeX, then the backbone's
    assert citation.count('```bibtex\n') == 2
    assert 0 < citation.index('@misc{developer0hye_zam') < citation.index('@inproceedings{he2016deep')
    assert 'ZAM: Zero parameter Attention Module: https://github.com/developer0hye/ZAM' in body


def test_a_bare_checkpoints_recipe_gives_its_normalisation_and_a_recorded_one_wins(tmp_path):
    """--recipe spem was named on the card while the cfg normalised with the model's own recipe's std; any string
    was a recipe; a file recording its run's recipe was described as another's; a run's weights copied out of its
    folder were to be exported from that folder, which holds no run."""
    from zamzoo.recipes import get_recipe
    sd = write_cifar_run(tmp_path / 'run', 'mobilenet_zam', 0, dataset='cifar10')
    save_file(sd, str(tmp_path / 'bare.safetensors'))
    export_run([tmp_path / 'bare.safetensors'], tmp_path / 'spem', model='mobilenet_zam', tag='cifar10', recipe='spem')
    cfg = json.loads((tmp_path / 'spem' / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['mean'], cfg['std']) == tuple(map(list, get_recipe('spem').stats('cifar10')))
    assert tuple(cfg['std']) != timm.get_pretrained_cfg('mobilenet_zam.cifar10').std  # the zam recipe's
    with pytest.raises(UsageError, match=r'seed: expected an integer from 0 to 4294967295 .*got -5'):
        export_run([tmp_path / 'bare.safetensors'], tmp_path / 'x', model='mobilenet_zam', tag='cifar10', seed=-5)
    with pytest.raises(ExportError, match="--recipe 'bogus': expected one of finetune, nam, spem, zam"):
        export_run([tmp_path / 'bare.safetensors'], tmp_path / 'x', model='mobilenet_zam', tag='cifar10',
                   recipe='bogus')
    meta = {'model': 'mobilenet_zam', 'dataset': 'cifar10', 'recipe': 'zam', 'num_classes': '10'}
    save_file(sd, str(tmp_path / 'meta.safetensors'), metadata=meta)
    with pytest.raises(ExportError, match="meta.safetensors records its run's recipe, zam, not spem: drop --recipe"):
        export_run([tmp_path / 'meta.safetensors'], tmp_path / 'x', model='mobilenet_zam', recipe='spem')
    export_run([tmp_path / 'meta.safetensors'], tmp_path / 'zam', model='mobilenet_zam')
    assert "zamzoo.recipes.get_recipe('zam')" in (tmp_path / 'zam' / 'README.md').read_text()
    save_file(sd, str(tmp_path / 'plain.safetensors'), metadata=dict(meta, model='mobilenet_plain'))
    with pytest.raises(ExportError, match="records its run's model, mobilenet_plain, not mobilenet_zam"):
        export_run([tmp_path / 'plain.safetensors'], tmp_path / 'x', model='mobilenet_zam')  # the same keys
    from zamzoo.train.checkpoint import CHECKPOINT_FORMAT  # a run's checkpoint.pt copied away: its recipe as used
    config = dict(json.loads((tmp_path / 'run' / 'config.json').read_text()), mean=[0.5] * 3, std=[0.25] * 3)
    config['recipe'] = dict(config['recipe'], epochs=2, lr=0.05)
    torch.save({'format': CHECKPOINT_FORMAT, 'model': sd, 'epoch': 2, 'config': config}, tmp_path / 'copied.pt')
    export_run([tmp_path / 'copied.pt'], tmp_path / 'pt', model='mobilenet_zam')
    assert "get_recipe('zam').replace(epochs=2, lr=0.05) (version 1)" in (tmp_path / 'pt' / 'README.md').read_text()
    cfg = json.loads((tmp_path / 'pt' / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['mean'], cfg['std']) == ([0.5] * 3, [0.25] * 3)
    save_file(sd, str(tmp_path / 'pets.safetensors'), metadata=dict(meta, dataset='folder'))
    with pytest.raises(ExportError, match=rf'from a run on folder: .*the run folder it was copied from '
                                          rf'\({tmp_path} holds no run\)'):
        export_run([tmp_path / 'pets.safetensors'], tmp_path / 'x', model='mobilenet_zam')


def test_bare_checkpoint_export_no_accuracy(tmp_path):
    torch.manual_seed(3)
    net = _randomize_batchnorms(timm.create_model('mobilenet_zamr', num_classes=10))  # statistics as trained
    sd = _state_dict(net)
    torch.save({'model': sd, 'epoch': 3}, tmp_path / 'ckpt.pt')  # a training checkpoint, read with weights_only
    with pytest.raises(ExportError, match='--model'):
        export_run([tmp_path / 'ckpt.pt'], tmp_path / 'x')
    with pytest.raises(ExportError, match='10 classes'):
        export_run([tmp_path / 'ckpt.pt'], tmp_path / 'x', model='mobilenet_zamr')  # default tag cifar100
    r = export_run([tmp_path / 'ckpt.pt'], tmp_path / 'out', model='mobilenet_zamr', tag='cifar10')
    _assert_same(load_file(str(tmp_path / 'out' / 'model.safetensors')), sd)
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert 'model-index' not in card and 'accuracy' not in card.split('\n---\n', 1)[0]
    assert 'no accuracy is claimed' in card and f'{r.params:,}' in card and r.params == sum(p.numel() for p in net.parameters())
    assert not r.has_results
    with pytest.raises(ExportError, match='already exists'):
        export_run([tmp_path / 'ckpt.pt'], tmp_path / 'out', model='mobilenet_zamr', tag='cifar10')

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    torch.save({'model': sd, 'evil': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(ExportError, match='weights_only=True'):
        export_run([tmp_path / 'evil.pt'], tmp_path / 'y', model='mobilenet_zamr', tag='cifar10')
    save_file({'fc.weight': torch.zeros(10, 1024)}, str(tmp_path / 'partial.safetensors'))
    with pytest.raises(ExportError, match='do not fit'):
        export_run([tmp_path / 'partial.safetensors'], tmp_path / 'z', model='mobilenet_zamr', tag='cifar10')


def test_export_input_errors(tmp_path, runs):
    root, _ = runs
    with pytest.raises(ExportError, match='missing results.json, metrics.jsonl, model.safetensors'):
        (tmp_path / 'run').mkdir()
        (tmp_path / 'run' / 'config.json').write_text('{}')
        export_run([tmp_path / 'run'], tmp_path / 'out')
    other = tmp_path / 'other'
    write_cifar_run(other, 'resnet18_plain', 0)
    with pytest.raises(ExportError, match='disagree on model'):
        export_run([root / 'seed0', other], tmp_path / 'out')
    with pytest.raises(ExportError, match='no run has seed 7'):
        export_run([root / 'seed0', root / 'seed1'], tmp_path / 'out', weights_seed=7)


# ------------------------------------------------------------------ pretrained=True through timm
def test_roundtrip_offline_cache(published):
    cache, manifest, out, weights = published
    for name in (MODEL, f'{MODEL}.{TAG}'):
        model = timm.create_model(name, pretrained=True)
        _assert_same(_state_dict(model), weights)
        assert model.pretrained_cfg['hf_hub_id'] == f'{REPO}@{COMMIT}'  # pinned to the manifest's commit
    # hf-hub: names read config.json from the (cached) repo; 'main' resolves through refs/main
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True)
    _assert_same(_state_dict(model), weights)
    assert type(model).__name__ == 'CifarResNet' and model.num_classes == 100


def test_finetune_in_chans_features(published):
    *_, weights = published
    model = timm.create_model(MODEL, pretrained=True, num_classes=10)
    sd = _state_dict(model)
    assert sd['fc.weight'].shape == (10, 512)
    assert not torch.equal(sd['fc.bias'], weights['fc.bias'][:10])
    _assert_same(sd, weights, skip=('fc.',))  # backbone loaded, head re-initialised

    model = timm.create_model(MODEL, pretrained=True, in_chans=1)
    sd = _state_dict(model)
    assert torch.allclose(sd['stem.conv.weight'], weights['stem.conv.weight'].sum(dim=1, keepdim=True))
    _assert_same(sd, weights, skip=('stem.conv.',))
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 100)

    model = timm.create_model(MODEL, pretrained=True, features_only=True).eval()
    feats = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == model.feature_info.channels() and len(feats) >= 3
    assert torch.equal(model.state_dict()['stem.conv.weight'], weights['stem.conv.weight'])


def test_loopback_hub_download(loopback_hub, exported, hub):
    cache, manifest = hub
    out, _, weights = exported
    loopback_hub.repos[REPO] = (COMMIT, {f: (out / f).read_bytes() for f in EXPORT_FILES})
    _publish(manifest, out)
    model = timm.create_model(MODEL, pretrained=True)  # huggingface_hub's own download code fills the cache
    _assert_same(_state_dict(model), weights)
    snap = cache / f'models--zamzoo--{MODEL}.{TAG}' / 'snapshots' / COMMIT
    assert (snap / 'model.safetensors').is_file()
    assert ('GET', f'/{REPO}/resolve/{COMMIT}/model.safetensors') in loopback_hub.log
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True)  # resolves 'main' on the server
    _assert_same(_state_dict(model), weights)
    # verify reads what the server serves; a repo the server does not have is a clear error, not a retry loop
    assert [r.ok for r in verify_published(MODEL)] == [True]
    with pytest.raises(WeightsError, match='zamzoo/nothing-here does not exist or is private'):
        timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='zamzoo/nothing-here'))
    _publish(manifest, out, commit='d' * 40)  # a commit the Hub does not have
    with pytest.raises(WeightsError, match=f'{MODEL}.{TAG}: commit d{{40}} of {REPO} does not exist'):
        timm.create_model(MODEL, pretrained=True)
    loopback_hub.repos[REPO] = ('d' * 40, {'config.json': (out / 'config.json').read_bytes()})  # weights missing
    with pytest.raises(WeightsError, match=f'{MODEL}.{TAG}: .* has no file model.safetensors'):
        timm.create_model(MODEL, pretrained=True)


# ------------------------------------------------------------------ errors
def test_unpublished_model_error(hub, exported):
    out, _, weights = exported
    assert timm.get_pretrained_cfg('resnet18_plain').hf_hub_id is None  # timm alone would load nothing, silently
    with pytest.raises(WeightsError) as e:
        timm.create_model('resnet18_plain', pretrained=True)
    msg = str(e.value)
    assert 'resnet18_plain.cifar100' in msg and '`zamzoo train --model resnet18_plain' in msg
    assert "'local-dir:EXPORT' for a `zamzoo export` folder (its class names and preprocessing come with it)" in msg
    assert 'pretrained_cfg_overlay=dict(file=..., num_classes=N, label_names=[...], mean=..., std=...)' in msg
    with pytest.raises(WeightsError, match=r'mobilenet_se\.cifar10 '):
        timm.create_model('mobilenet_se.cifar10', pretrained=True)
    # a user-given source needs no manifest record
    model = timm.create_model(MODEL, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors')))
    _assert_same(_state_dict(model), weights)
    names = json.loads((out / 'config.json').read_text())['label_names']  # the advice's label_names reach the cfg
    named = timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(
        file=str(out / 'model.safetensors'), num_classes=len(names), label_names=names[::-1]))
    assert list(named.pretrained_cfg['label_names']) == names[::-1]
    bad = out.parent / 'bad.safetensors'
    bad.write_bytes(b'not a safetensors file')
    with pytest.raises(WeightsError, match=f'pretrained weights for {MODEL}: the file .*bad.safetensors is corrupt'):
        timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    with pytest.raises(WeightsError, match=f"file={out} is a folder; give the weights file in it "
                                           f"\\({out / 'model.safetensors'}\\), or load the folder with 'local-dir:"):
        timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))  # it said: no file
    _assert_same(_state_dict(timm.create_model(f'local-dir:{out}', pretrained=True)), weights)


def test_offline_without_cache(hub, exported):
    cache, manifest = hub
    _publish(manifest, exported[0])
    with pytest.raises(WeightsError) as e:
        timm.create_model(MODEL, pretrained=True)
    msg = str(e.value)
    assert f'{MODEL}.{TAG}' in msg and 'not in the Hugging Face cache' in msg and 'Go online' in msg


def test_checksum_mismatch_and_corrupt_file(published):
    cache, manifest, out, weights = published
    _publish(manifest, out, sha256='0' * 64)
    with pytest.raises(WeightsError, match=f'{MODEL}.{TAG}: checksum mismatch'):
        timm.create_model(MODEL, pretrained=True)
    _publish(manifest, out)
    snap = cache / f'models--zamzoo--{MODEL}.{TAG}' / 'snapshots' / COMMIT
    blob = (snap / 'model.safetensors').resolve()
    blob.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}' + b'\0' * 64)  # corrupt bytes in the cache
    with pytest.raises(WeightsError, match='checksum mismatch'):
        timm.create_model(MODEL, pretrained=True)  # the manifest's sha256 catches it before loading
    with pytest.raises(WeightsError, match='corrupt or truncated'):
        timm.create_model(f'hf-hub:{REPO}', pretrained=True)  # no manifest check on this path: the loader's error
    results = verify_published(MODEL)
    assert not results[0].ok and 'checksum mismatch' in results[0].message
    # the fix it names: the repo's folder (blobs included), not the snapshot's link to the corrupt blob
    assert f"or remove {cache / f'models--zamzoo--{MODEL}.{TAG}'})" in results[0].message


def test_force_download_offline_is_a_failure_of_the_record_not_a_traceback(published, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    [result] = verify_published(MODEL, force_download=True)
    assert not result.ok and 'offline mode is on (HF_HUB_OFFLINE); unset HF_HUB_OFFLINE' in result.message


def test_file_changed_in_place_is_caught(published):
    """One byte of the cached weights changed, size and mtime kept: the second load in the process must notice."""
    cache, manifest, out, weights = published
    _assert_same(_state_dict(timm.create_model(MODEL, pretrained=True)), weights)
    blob = (cache / f'models--zamzoo--{MODEL}.{TAG}' / 'snapshots' / COMMIT / 'model.safetensors').resolve()
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor: still a valid safetensors file, other weights
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (blob.stat().st_size, blob.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(WeightsError, match=f'{MODEL}.{TAG}: checksum mismatch'):
        timm.create_model(MODEL, pretrained=True)


def test_manifest_errors(hub, exported, capsys):
    cache, manifest = hub
    manifest.write_text('{"schema": 2, "checkpoints": []}')
    with pytest.raises(WeightsError, match='schema 2'):
        timm.create_model(MODEL, pretrained=True)
    manifest.unlink()
    manifest.mkdir()  # ZAMZOO_MANIFEST=<a folder>
    with pytest.raises(WeightsError, match=f'the manifest {manifest} is a folder; expected a JSON file'):
        timm.create_model(MODEL, pretrained=True)
    with pytest.raises(WeightsError, match='is a folder'):
        update_manifest(_publish_record(exported[0]), manifest)
    from zamzoo.cli import main
    assert main(['list', MODEL]) == 2
    err = capsys.readouterr().err
    assert err == f'zamzoo list: error: the manifest {manifest} is a folder; expected a JSON file (ZAMZOO_MANIFEST must name a file)\n'
    manifest.rmdir()
    manifest.write_text(json.dumps({'schema': 1, 'checkpoints': [{'model': MODEL, 'tag': TAG}]}))
    assert load_manifest() == []  # the invalid record is left out, and named when its weights are asked for
    with pytest.raises(WeightsError, match="missing field 'repo_id'"):
        timm.create_model(MODEL, pretrained=True)
    manifest.unlink()
    record = _publish(manifest, exported[0])
    assert load_manifest() == [record]
    _publish(manifest, exported[0], commit='b' * 40)  # a new push replaces the record of the same model/tag
    assert [r['hub_commit'] for r in load_manifest()] == ['b' * 40]
    with pytest.raises(WeightsError, match='hub_commit'):
        update_manifest(dict(record, hub_commit='main'), manifest)
    assert pinned_hub_id(record) == f'{REPO}@{COMMIT}'
    from timm.models._hub import hf_split
    assert hf_split(pinned_hub_id(record)) == (REPO, COMMIT)


# ------------------------------------------------------------------ push
class Recorder:
    calls = []

    def __init__(self, token=None, **kwargs):
        self.calls.append(('init', token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))
        from huggingface_hub import RepoUrl
        return RepoUrl(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir()
                       if allow_patterns is None or p.name in allow_patterns)
        self.calls.append(('upload_folder', repo_id, files, kwargs.get('repo_type')))
        from types import SimpleNamespace
        return SimpleNamespace(oid='c' * 40, commit_url=f'https://huggingface.co/{repo_id}/commit/' + 'c' * 40)


def test_a_push_without_a_token_offline_says_both(hub, exported, monkeypatch):
    """Offline, the advice was only to log in, which cannot help there."""
    from huggingface_hub import constants
    out = exported[0]
    with pytest.raises(WeightsError, match=r'needs the Hub, and offline mode is on \(HF_HUB_OFFLINE=1\): unset '
                                           r'HF_HUB_OFFLINE; it also needs a token with write access: run `hf auth'):
        push_folder(out)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    with pytest.raises(WeightsError, match=r'^pushing to the Hugging Face Hub needs a token with write access: run'):
        push_folder(out)


def test_push_with_recorder(hub, exported, tmp_path, monkeypatch):
    import shutil
    import zamzoo.publish.push as push_mod
    cache, manifest = hub
    Recorder.calls = []
    monkeypatch.setattr(push_mod, 'HfApi', Recorder)
    folder = tmp_path / 'export'
    shutil.copytree(exported[0], folder)

    with pytest.raises(WeightsError, match='HF_TOKEN'):
        push_folder(folder)  # no token: nothing contacted
    assert Recorder.calls == []
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')

    with pytest.raises(InvalidExportError, match='exported for zamzoo/resnet18_zam.cifar100 .* export again with '
                                                 '--repo-id ORG/resnet18_zam.cifar100 '):
        push_folder(folder, 'someone/else')
    record, recorded_in = push_folder(folder, REPO)
    assert Recorder.calls == [
        ('init', 'hf_test_token'),
        ('create_repo', REPO, dict(repo_type='model', private=False, exist_ok=True)),
        ('upload_folder', REPO, sorted(EXPORT_FILES), 'model'),
    ]
    assert record['hub_commit'] == 'c' * 40 and load_manifest() == [record] and recorded_in == manifest
    assert record['sha256'] == sha256_file(folder / 'model.safetensors')
    assert (record['seeds'], record['weights_seed'], record['recipe'], record['dataset']) == ([0, 1], 0, 'zam', TAG)
    assert record['top1_mean'] == pytest.approx(70.5) and record['top5_std'] == pytest.approx(0.5 ** 0.5)

    # invalid exports are refused before anything is contacted
    Recorder.calls = []
    (folder / 'pytorch_model.bin').write_bytes(b'pickle')
    with pytest.raises(InvalidExportError, match='unexpected files'):
        push_folder(folder)
    (folder / 'pytorch_model.bin').unlink()
    sd = load_file(str(folder / 'model.safetensors'))
    sd['fc.bias'] += 1
    save_file(sd, str(folder / 'model.safetensors'))
    with pytest.raises(InvalidExportError, match='changed after export'):
        push_folder(folder)
    (folder / 'README.md').unlink()
    with pytest.raises(InvalidExportError, match='missing README.md'):
        push_folder(folder)
    assert Recorder.calls == []


def test_a_push_deletes_the_export_files_an_earlier_push_left(hub, exported, tmp_path, monkeypatch):
    """huggingface_hub's own upload_folder, its commit captured and the repo listed as an earlier push with --onnx left
    it: the new commit adds this export's files and deletes the model.onnx it lacks (the pinned commit would hold an
    ONNX file of other weights); files that no export makes stay."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, RepoUrl

    import zamzoo.publish.push as push_mod
    commits = []

    class Hub(hf_api.HfApi):
        def create_repo(self, repo_id, **kwargs):
            return RepoUrl(f'https://huggingface.co/{repo_id}')

        def list_repo_files(self, repo_id, **kwargs):
            return ['.gitattributes', 'notes.md', 'model.onnx', *EXPORT_FILES]

        def create_commit(self, repo_id, operations, **kwargs):
            commits.append(operations)
            return SimpleNamespace(oid='d' * 40)

        def _validate_yaml(self, *args, **kwargs):  # the Hub's check of README.md's metadata: a server call
            pass

    monkeypatch.setattr(hf_api, 'is_xet_available', lambda: False)  # the single-commit path, whose operations we see
    monkeypatch.setattr(push_mod, 'HfApi', Hub)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    folder = tmp_path / 'export'
    shutil.copytree(exported[0], folder)
    assert not (folder / 'model.onnx').exists()
    record, _ = push_folder(folder, REPO)
    [operations] = commits
    assert [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)] == ['model.onnx']
    assert sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)) == sorted(EXPORT_FILES)
    assert record['hub_commit'] == 'd' * 40


def test_push_refuses_wrong_architecture(hub, exported, tmp_path, monkeypatch):
    import shutil
    import zamzoo.publish.push as push_mod
    Recorder.calls = []
    monkeypatch.setattr(push_mod, 'HfApi', Recorder)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    folder = tmp_path / 'export'
    shutil.copytree(exported[0], folder)
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, architecture='resnet18_plain')))
    with pytest.raises(InvalidExportError, match='architecture'):
        push_folder(folder)
    results = json.loads((folder / 'results.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, architecture='resnet18_nam')))
    (folder / 'results.json').write_text(json.dumps(dict(results, model='resnet18_nam')))
    with pytest.raises(InvalidExportError, match='config.json, results.json changed after export'):
        push_folder(folder)
    write_checksums(folder)  # records that agree with each other, as an export of the wrong weights writes them
    with pytest.raises(InvalidExportError, match=r'does not match resnet18_nam as .*missing \[.*bn'):
        push_folder(folder)  # NAM's BatchNorms are not in resnet18_zam's weights
    assert Recorder.calls == []


# ------------------------------------------------------------------ CLI
def test_cli_verify_and_list(published, capsys):
    from zamzoo.cli import main
    assert main(['verify']) == 0
    assert 'ok' in capsys.readouterr().out
    assert main(['verify', 'resnet18_plain']) == 2
    assert '`zamzoo train --model resnet18_plain' in capsys.readouterr().err
    assert main(['verify', f'{MODEL}.cifar10']) == 2          # says which tag is published
    assert f'no published weights for {MODEL}.cifar10 in the manifest (published: {MODEL}.{TAG})' in \
        capsys.readouterr().err
    assert main(['verify', 'resnet18_zma']) == 2              # not "train it" for a model that does not exist
    assert "unknown zamzoo model 'resnet18_zma' (`zamzoo list` lists them)" in capsys.readouterr().err
    assert main(['list', 'resnet18_zam', 'resnet18_zma']) == 1   # a typo among the patterns was dropped in silence
    assert capsys.readouterr().err == "no zamzoo model matches 'resnet18_zma'\n"
    assert main(['list', 'resnet18_zam', 'resnet18_plain']) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert '11,220,132' in lines['resnet18_plain'] and 'not yet trained' in lines['resnet18_plain']
    assert f'published@{COMMIT[:12]}' in lines['resnet18_zam'] and 'not yet trained' in lines['resnet18_zam']


def test_subprocess_env_offline_and_pinned_registry(published):
    """The real environment variables, read at import: offline mode, cache folder, and the registry's cfg pinned
    to the manifest's commit at `import zamzoo`."""
    cache, manifest, out, weights = published
    code = (
        'import timm, torch, zamzoo\n'
        f'cfg = timm.get_pretrained_cfg("{MODEL}.{TAG}")\n'
        f'assert cfg.hf_hub_id == "{REPO}@{COMMIT}", cfg.hf_hub_id\n'
        f'assert timm.get_pretrained_cfg("{MODEL}.cifar10").hf_hub_id is None\n'
        'zoo = set(zamzoo.list_models())\n'
        'listed = [n for n in timm.list_models(pretrained=True) if n.split(".")[0] in zoo]\n'
        f'assert listed == [n for n in timm.list_pretrained() if n.split(".")[0] in zoo] == ["{MODEL}.{TAG}"], listed\n'
        f'm = timm.create_model("{MODEL}", pretrained=True)\n'
        'from safetensors.torch import load_file\n'
        f'ref = load_file("{out / "model.safetensors"}")\n'
        'assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())\n'
        'print("ok")\n'
    )
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_ENDPOINT=DEAD_ENDPOINT,
               ZAMZOO_MANIFEST=str(manifest))
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]


def test_an_export_killed_with_sigterm_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    """`timeout` or `kill` (SIGTERM) left the staging folder with its weights and the lock beside the output."""
    import signal

    import zamzoo.publish.export as export_mod
    from zamzoo.cli import main
    save_file(timm.create_model('mobilenet_plain').state_dict(), str(tmp_path / 'w.safetensors'))
    fill = export_mod._fill_staging

    def killed_while_writing(staging, *args):
        fill(staging, *args)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'SIGTERM would end the export here'
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(export_mod, '_fill_staging', killed_while_writing)
    (tmp_path / 'exports').mkdir()
    args = ['export', str(tmp_path / 'w.safetensors'), '--model', 'mobilenet_plain', '--out']
    assert main([*args, str(tmp_path / 'exports' / 'out')]) == 130
    assert 'zamzoo export: interrupted' in capsys.readouterr().err
    assert list((tmp_path / 'exports').iterdir()) == []


def test_cli_export_and_push(hub, tmp_path, monkeypatch, capsys):
    import zamzoo.publish.push as push_mod
    from zamzoo.cli import main
    torch.manual_seed(5)
    save_file(timm.create_model('mobilenet_plain').state_dict(), str(tmp_path / 'w.safetensors'))
    out = tmp_path / 'export'
    assert main(['export', str(tmp_path / 'w.safetensors'), '--out', str(out)]) == 2
    assert 'needs --model' in capsys.readouterr().err
    assert main(['export', str(tmp_path / 'w.safetensors'), '--model', 'mobilenet_plain', '--out', str(out)]) == 0
    # a bare checkpoint's data is the exporter's word: described so, and not pushed as the registry's CIFAR weights
    bare = "CIFAR-100 by the exporter's word (a bare checkpoint: no run recorded its training data)"
    assert f'not for the Hub: {out} was trained on {bare}' in capsys.readouterr().out
    card = (out / 'README.md').read_text()
    assert bare in card and 'uoft-cs/cifar100' not in card and "timm.create_model('local-dir:PATH'" in card
    Recorder.calls = []
    monkeypatch.setattr(push_mod, 'HfApi', Recorder)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    assert main(['push', str(out)]) == 2
    assert bare in capsys.readouterr().err and Recorder.calls == []
    monkeypatch.delenv('HF_TOKEN')
    write_cifar_run(tmp_path / 'run', 'mobilenet_plain', 5)  # a run on the official release
    assert main(['export', str(tmp_path / 'run'), '--out', str(out), '--force']) == 0
    assert f'zamzoo push {out}' in capsys.readouterr().out
    assert main(['push', str(out)]) == 2
    assert 'hf auth login' in capsys.readouterr().err and Recorder.calls == []
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    assert main(['push', str(out)]) == 0
    assert 'zamzoo/mobilenet_plain.cifar100 at commit ' + 'c' * 40 in capsys.readouterr().out
    record, = load_manifest()
    assert (record['model'], record['recipe'], record['seeds'], record['top1_mean']) == ('mobilenet_plain', 'zam', [5], None)


def test_cli_export_onnx_and_push(hub, tmp_path, monkeypatch, capsys):
    """`export --onnx` adds a checked model.onnx (opset 18, dynamic batch) and its card section; push validates and
    uploads it; without --onnx nothing changes."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import zamzoo.publish.push as push_mod
    from zamzoo.bench.calibration import calibrate_batchnorm
    from zamzoo.cli import main
    write_cifar_run(tmp_path / 'run', 'mobilenet_zam', 5)
    torch.manual_seed(5)
    net = calibrate_batchnorm(timm.create_model('mobilenet_zam'), (3, 32, 32))  # logits that depend on the input
    save_file(net.state_dict(), str(tmp_path / 'run' / 'model.safetensors'))
    out = tmp_path / 'export'
    assert main(['export', str(tmp_path / 'run'), '--out', str(out), '--onnx']) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES + ('model.onnx',))
    record = json.loads((out / 'results.json').read_text())['onnx']
    assert record['sha256'] == sha256_file(out / 'model.onnx') and record['opset'] == 18
    assert record['max_rel_err'] <= 1e-4 and record['input_name'] == 'input'
    graph = onnx.load(str(out / 'model.onnx')).graph
    assert graph.input[0].name == 'input' and graph.input[0].type.tensor_type.shape.dim[0].dim_param
    opsets = onnx.load(str(out / 'model.onnx')).opset_import
    assert max(i.version for i in opsets if i.domain in ('', 'ai.onnx')) >= 18
    x = torch.randn(3, 3, 32, 32)
    got = ort.InferenceSession(str(out / 'model.onnx')).run(None, {'input': x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-4 * float(net(x).abs().max()))
    card = (out / 'README.md').read_text()
    assert '`model.onnx` (the model for ONNX Runtime, below)' in card  # in the card's list of the files
    cfg = net.pretrained_cfg
    assert '## ONNX' in card and "{'input': x}" in card
    assert str(list(cfg['mean'])) in card and str(list(cfg['std'])) in card

    Recorder.calls = []
    monkeypatch.setattr(push_mod, 'HfApi', Recorder)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    exported = (out / 'model.onnx').read_bytes()
    (out / 'model.onnx').write_bytes(exported + b'\0')
    with pytest.raises(InvalidExportError, match='model.onnx changed after export'):
        push_folder(out)
    (out / 'model.onnx').unlink()
    with pytest.raises(InvalidExportError, match='records model.onnx but the folder has none'):
        push_folder(out)
    assert Recorder.calls == []
    (out / 'model.onnx').write_bytes(exported)  # as exported, instead of a second export
    capsys.readouterr()
    assert main(['push', str(out)]) == 0
    assert Recorder.calls[-1][2] == sorted(EXPORT_FILES + ('model.onnx',))
    plain = tmp_path / 'plain'
    assert main(['export', str(tmp_path / 'run'), '--out', str(plain)]) == 0
    assert sorted(p.name for p in plain.iterdir()) == sorted(EXPORT_FILES)
    assert 'onnx' not in json.loads((plain / 'results.json').read_text())
    assert '## ONNX' not in (plain / 'README.md').read_text()
