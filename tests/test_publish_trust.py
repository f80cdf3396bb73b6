"""What an export may claim, and what push accepts: weights trained on data in CIFAR's format that is not the official
release are never published as trained on CIFAR-100 (nor pushed under the CIFAR tags); a zamzoo training checkpoint
of an unfinished run is not exported; an export whose records were edited after export is not pushed."""
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision import datasets as tvd

import zamzoo.publish.push as push_mod
from conftest import TINY_TEST, TINY_TRAIN, write_images, write_tiny_cifar
from zamzoo.cli import main
from zamzoo.data.cifar import cifar_fingerprint
from zamzoo.data.cifar_release import official_release
from zamzoo.publish import ExportError, InvalidExportError, export_run, push_folder
from zamzoo.publish.export import CHECKSUMS_FILE

pytestmark = pytest.mark.usefixtures('single_thread')
MODEL = 'mobilenet_plain'
UNOFFICIAL = f'CIFAR-100-format data (not the official release: {TINY_TRAIN} train / {TINY_TEST} test images)'


class Recorder:
    """HfApi that records what would be uploaded."""
    calls = []

    def __init__(self, token=None, **kwargs):
        self.calls.append('init')

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, **kwargs):
        self.calls.append(('upload_folder', repo_id))
        return SimpleNamespace(oid='c' * 40)


@pytest.fixture
def recorder(monkeypatch):
    Recorder.calls = []
    monkeypatch.setattr(push_mod, 'HfApi', Recorder)
    return Recorder


@pytest.fixture(scope='module')
def fake_run(tiny_cifar, tmp_path_factory):
    """A run trained by `zamzoo train` on the tiny CIFAR-format pickles (not the official release)."""
    run = tmp_path_factory.mktemp('fake') / 'run'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(['train', '--model', MODEL, '--data', str(tiny_cifar), '--epochs', '1', '--batch-size', '16',
                     '--device', 'cpu', '--out', str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def _official_run(folder: Path, seed=0) -> Path:
    """A completed run folder on the official release, as `zamzoo train` writes it (the fields export reads)."""
    torch.manual_seed(seed)
    net = timm.create_model(MODEL)
    folder.mkdir(parents=True)
    save_file(net.state_dict(), str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps(dict(
        model=MODEL, dataset='cifar100', tag='cifar100', seed=seed, num_classes=100, model_kwargs={},
        recipe=dict(name='zam', version=1, epochs=2), train_images=50_000)))
    (folder / 'results.json').write_text(json.dumps(dict(
        model=MODEL, dataset='cifar100', seed=seed, epochs=2, top1=70.0, top5=90.0, best_top1=70.0,
        test_images=10_000, official_data=True)))
    (folder / 'metrics.jsonl').write_text('{"epoch": 1}\n{"epoch": 2}\n')
    return folder


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ D1: the official release, or not
def _make_tiny_cifar_official(tiny_cifar, monkeypatch):
    """torchvision's md5 lists of the CIFAR-100 release replaced by the tiny files' md5."""
    folder = Path(tiny_cifar) / 'cifar-100-python'
    monkeypatch.setattr(tvd.CIFAR100, 'train_list', [['train', _md5(folder / 'train')]])
    monkeypatch.setattr(tvd.CIFAR100, 'test_list', [['test', _md5(folder / 'test')]])
    monkeypatch.setattr(tvd.CIFAR100, 'meta', dict(tvd.CIFAR100.meta, md5=_md5(folder / 'meta')))


def test_official_release_is_torchvisions_md5_of_every_file(tiny_cifar, monkeypatch):
    assert not official_release(tiny_cifar, 'cifar100') and not official_release(tiny_cifar, 'cifar10')
    _make_tiny_cifar_official(tiny_cifar, monkeypatch)  # torchvision's lists are what is compared
    assert official_release(tiny_cifar, 'cifar100') and official_release(Path(tiny_cifar) / 'cifar-100-python',
                                                                          'cifar100')
    monkeypatch.setattr(tvd.CIFAR100, 'meta', dict(tvd.CIFAR100.meta, md5='0' * 32))
    assert not official_release(tiny_cifar, 'cifar100')


def test_a_run_on_cifar_format_data_is_not_published_as_cifar100(fake_run, tmp_path, recorder):
    results = json.loads((fake_run / 'results.json').read_text())
    assert results['official_data'] is False and results['test_images'] == TINY_TEST
    out = export_run([fake_run], tmp_path / 'export').path  # export still works: an experiment on one's own data
    card = (out / 'README.md').read_text()
    header = card.split('\n---\n', 1)[0]
    assert 'uoft-cs/cifar100' not in card and 'trained on CIFAR-100 ' not in card
    assert 'Training dataset:** CIFAR-100\n' not in card and 'CIFAR-100 test set' not in card
    assert f'trained on {UNOFFICIAL} with zamzoo' in card and f'{UNOFFICIAL} test set' in card
    assert f"name: '{UNOFFICIAL}'" in header and "type: 'cifar100-format'" in header
    assert "timm.create_model('mobilenet_plain.cifar100', pretrained=True)" not in card  # those are zamzoo's weights
    # nor by that tag's repo, which push refuses them: every snippet loads them from this folder
    assert 'hf-hub:' not in card and "from_pretrained('PATH')" in card
    assert "timm.create_model('local-dir:PATH', pretrained=True)" in card and '--init local-dir:PATH' in card
    description = json.loads((out / 'config.json').read_text())['pretrained_cfg']['description']
    assert description.endswith(f'; trained on {UNOFFICIAL}')
    assert json.loads((out / 'results.json').read_text())['training_data'] == dict(
        official=False, train_images=TINY_TRAIN, test_images=TINY_TEST)

    manifest = tmp_path / 'manifest.json'
    with pytest.raises(InvalidExportError, match=r'trained on CIFAR-100-format data \(not the official release.*'
                                                 r'not pushed as mobilenet_plain.cifar100'):
        push_folder(out, token='hf_test', manifest=manifest)
    assert recorder.calls == [] and not manifest.exists()  # nothing uploaded: nothing for the tables to show


def test_the_cli_does_not_send_an_export_push_refuses_to_push(fake_run, tmp_path, capsys):
    from zamzoo.cli import main
    assert main(['export', str(fake_run), '--out', str(tmp_path / 'export')]) == 0
    printed = capsys.readouterr().out
    assert 'next: zamzoo push' not in printed and 'not for the Hub: ' in printed and 'not pushed as' in printed


def test_runs_on_the_official_release_are_published_as_cifar100(tmp_path, recorder):
    out = export_run([_official_run(tmp_path / 's0'), _official_run(tmp_path / 's1', 1)], tmp_path / 'export').path
    card = (out / 'README.md').read_text()
    assert '- uoft-cs/cifar100' in card and 'trained on CIFAR-100 with zamzoo' in card and 'not the official' not in card
    record, _ = push_folder(out, token='hf_test', manifest=tmp_path / 'manifest.json')
    assert record['dataset'] == 'cifar100' and recorder.calls[-1] == ('upload_folder', f'zamzoo/{MODEL}.cifar100')


def test_push_refuses_weights_trained_with_other_model_args_even_of_the_same_shapes(tmp_path, recorder):
    """ZAM(Avg) has the parameters of ZAM(Avg&Max) (none): push checked shapes only, recorded the weights under
    mobilenet_zam, and pretrained=True loaded them into the default network, which computes something else."""
    run = _official_run(tmp_path / 's0')
    config = json.loads((run / 'config.json').read_text())
    net = timm.create_model('mobilenet_zam', attn_kwargs={'pool': 'avg'})
    save_file(net.state_dict(), str(run / 'model.safetensors'))
    (run / 'config.json').write_text(json.dumps(dict(config, model='mobilenet_zam',
                                                     model_kwargs={'attn_kwargs': {'pool': 'avg'}})))
    results = json.loads((run / 'results.json').read_text())
    (run / 'results.json').write_text(json.dumps(dict(results, model='mobilenet_zam')))
    out = export_run([run], tmp_path / 'export').path
    assert json.loads((out / 'config.json').read_text())['model_args']['attn_kwargs'] == {'pool': 'avg'}
    with pytest.raises(InvalidExportError, match=r"model_args \{'attn_kwargs': \{'pool': 'avg'\}\} build another "
                                                 r"network than timm.create_model\('mobilenet_zam'\) does"):
        push_folder(out, token='hf_test', manifest=tmp_path / 'manifest.json')
    assert recorder.calls == [] and not (tmp_path / 'manifest.json').exists()


def test_a_run_normalised_by_another_recipe_exports_its_statistics_and_is_not_pushed_under_the_registry_name(
        tmp_path, recorder):
    """A CIFAR run under another recipe than the model's (`--recipe spem`: other mean and std) was exported with the
    registry cfg's statistics: timm, transformers and `zamzoo eval` of the export preprocessed otherwise than training
    did. pretrained=True on the registry name reads the registry's cfg, so such weights are not pushed there."""
    from zamzoo.publish.push import push_refusal
    from zamzoo.recipes import get_recipe
    runs = {}
    for recipe in ('zam', 'spem'):
        run = _official_run(tmp_path / recipe)
        config = json.loads((run / 'config.json').read_text())
        mean, std = get_recipe(recipe).stats('cifar100')
        config.update(mean=list(mean), std=list(std), recipe=dict(config['recipe'], name=recipe))
        (run / 'config.json').write_text(json.dumps(config))
        runs[recipe] = export_run([run], tmp_path / f'export_{recipe}').path
        exported = json.loads((runs[recipe] / 'config.json').read_text())['pretrained_cfg']
        assert (exported['mean'], exported['std']) == (list(mean), list(std))  # config.json: JSON lists
        assert list(timm.data.resolve_data_config({}, pretrained_cfg=exported)['mean']) == list(mean)
    assert get_recipe('spem').stats('cifar100') != get_recipe('zam').stats('cifar100')
    assert push_refusal(runs['zam']) is None
    refusal = push_refusal(runs['spem'])
    assert 'was trained with mean [0.4914' in refusal and f'the registry\'s cfg of {MODEL}.cifar100' in refusal
    with pytest.raises(InvalidExportError, match='train with the model\'s own recipe to publish under that name'):
        push_folder(runs['spem'], token='hf_test', manifest=tmp_path / 'manifest.json')
    assert recorder.calls == []
    push_folder(runs['zam'], token='hf_test', manifest=tmp_path / 'manifest.json')


def test_an_export_removes_what_an_export_killed_mid_write_left_beside_it(tmp_path):
    """A killed export left its staging folder (8.8 MB of weights, mode 0700) next to the export for good."""
    run = _official_run(tmp_path / 'run')
    staging = tmp_path / 'staging'
    left = [staging / f'.{MODEL}.cifar100.uuih2hha.tmp', staging / f'.{MODEL}.cifar100.k2j4l1aa.old']
    other = staging / f'.{MODEL}.cifar10.uuih2hha.tmp'  # another export's
    for folder in (*left, other):
        folder.mkdir(parents=True)
        (folder / 'model.safetensors').write_bytes(b'half')
    out = export_run([run], staging / f'{MODEL}.cifar100').path
    assert sorted(p.name for p in staging.iterdir()) == sorted([out.name, other.name])
    assert (out / 'model.safetensors').stat().st_size > 4


def test_a_run_without_the_record_is_not_claimed(tmp_path):
    run = _official_run(tmp_path / 'old')  # a run from before official_data was recorded
    results = json.loads((run / 'results.json').read_text())
    del results['official_data']
    (run / 'results.json').write_text(json.dumps(results))
    card = (export_run([run], tmp_path / 'export').path / 'README.md').read_text()
    assert 'uoft-cs/cifar100' not in card and 'CIFAR-100-format data (not the official release: 50,000 train' in card


def test_a_run_without_the_record_is_told_by_its_data_fingerprint(tiny_cifar, tmp_path, monkeypatch):
    """A run from before `official_data`: its data, still where it was with the fingerprint it recorded, is checked
    against torchvision's lists at export."""
    run = _official_run(tmp_path / 'old')
    results = json.loads((run / 'results.json').read_text())
    del results['official_data']
    (run / 'results.json').write_text(json.dumps(results))
    config = json.loads((run / 'config.json').read_text())
    fingerprint = {part: cifar_fingerprint(tiny_cifar, 'cifar100', part == 'train') for part in ('train', 'val')}
    (run / 'config.json').write_text(json.dumps(dict(config, data=str(tiny_cifar), data_fingerprint=fingerprint)))
    _make_tiny_cifar_official(tiny_cifar, monkeypatch)
    card = (export_run([run], tmp_path / 'official').path / 'README.md').read_text()
    assert '- uoft-cs/cifar100' in card and 'not the official' not in card
    fingerprint['val'] = '1 files, sha256 0123456789abcdef'  # the data there now is not what the run read
    (run / 'config.json').write_text(json.dumps(dict(config, data=str(tiny_cifar), data_fingerprint=fingerprint)))
    card = (export_run([run], tmp_path / 'other').path / 'README.md').read_text()
    assert 'uoft-cs/cifar100' not in card and 'not the official release' in card


# ------------------------------------------------------------------ D2: a training checkpoint of an unfinished run
def test_the_checkpoint_of_an_unfinished_run_is_refused(fake_run, tmp_path):
    assert (fake_run / 'checkpoint.pt').is_file()
    state = torch.load(fake_run / 'checkpoint.pt', weights_only=True)
    state['config']['recipe']['epochs'] = 6  # epoch 1 of 6: what a run killed after its first epoch leaves
    half = tmp_path / 'half'
    half.mkdir()
    (half / 'config.json').write_text(json.dumps(state['config']))
    torch.save(state, half / 'checkpoint.pt')
    with pytest.raises(ExportError, match=r'is from an unfinished run \(epoch 1 of 6; its run folder .*half is pending\).*'
                                          r'`zamzoo export .*half`'):
        export_run([half / 'checkpoint.pt'], tmp_path / 'x', model=MODEL)
    (tmp_path / 'loose').mkdir()
    shutil.copy(half / 'checkpoint.pt', tmp_path / 'loose' / 'checkpoint.pt')  # no run folder: its epochs tell
    with pytest.raises(ExportError, match=r'epoch 1 of 6; no run folder holds it'):
        export_run([tmp_path / 'loose' / 'checkpoint.pt'], tmp_path / 'x', model=MODEL)
    shutil.copy(fake_run / 'checkpoint.pt', half / 'checkpoint.pt')  # all epochs, but the folder is not done
    with pytest.raises(ExportError, match='its run folder .*half is pending'):
        export_run([half / 'checkpoint.pt'], tmp_path / 'x', model=MODEL)
    assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize('name', ['checkpoint.pt', 'model.safetensors'])
def test_a_file_of_a_completed_run_is_exported_as_its_run(fake_run, tmp_path, capsys, name):
    assert main(['export', str(fake_run / name), '--model', MODEL, '--out', str(tmp_path / 'e')]) == 0
    card = (tmp_path / 'e' / 'README.md').read_text()
    assert 'uoft-cs/cifar100' not in card and f'trained on {UNOFFICIAL}' in card  # the run's record, not --tag's


def test_the_weights_of_a_failed_run_are_refused(fake_run, tmp_path, capsys):
    failed = tmp_path / 'failed'
    shutil.copytree(fake_run, failed)
    (failed / 'failed.json').write_text(json.dumps(dict(error='RuntimeError: boom')))
    (failed / 'results.json').unlink()
    assert main(['export', str(failed / 'model.safetensors'), '--model', MODEL, '--out', str(tmp_path / 'e')]) == 2
    err = capsys.readouterr().err
    assert 'is from an unfinished run (its run folder' in err and 'is failed)' in err and 'Traceback' not in err


def test_weights_damaged_or_replaced_in_place_are_refused_where_they_are_read(fake_run, tmp_path, capsys):
    """A run's model.safetensors with 4 KiB zeroed (its size unchanged: run_status's check) was exported as the run's
    weights, under the run's top-1."""
    from zamzoo.train.checkpoint import load_weights
    damaged = tmp_path / 'damaged'
    shutil.copytree(fake_run, damaged)
    weights = damaged / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)
    weights.write_bytes(data)
    assert main(['export', str(damaged), '--out', str(tmp_path / 'e')]) == 2
    err = capsys.readouterr().err
    assert f'{weights} is not the weights file its run wrote' in err and 'damaged or replaced' in err
    assert 'Traceback' not in err and not (tmp_path / 'e').exists()
    assert main(['export', str(fake_run), '--out', str(tmp_path / 'ok')]) == 0  # the run's own file, and its export
    assert load_weights(tmp_path / 'ok' / 'model.safetensors').keys() == load_weights(fake_run).keys()


def test_an_export_folder_or_loose_weights_of_own_data_as_the_source_say_what_to_export(fake_run, tmp_path, capsys):
    """An export folder given as the source (to add --onnx) was called a failed run with missing files; loose weights
    of 3 classes were told to pick a --tag, which no tag fits."""
    assert main(['export', str(fake_run), '--out', str(tmp_path / 'e')]) == 0
    assert main(['export', str(tmp_path / 'e'), '--onnx', '--out', str(tmp_path / 'again')]) == 2
    err = capsys.readouterr().err
    assert f'{tmp_path / "e"} is an export folder (written by zamzoo export), not a run folder: export the run ' \
           f'folder(s) it was made from ({fake_run.name}) again' in err
    torch.manual_seed(0)
    save_file(timm.create_model(MODEL, num_classes=3).state_dict(), str(tmp_path / 'three.safetensors'))
    assert main(['export', str(tmp_path / 'three.safetensors'), '--model', MODEL, '--out', str(tmp_path / 'x')]) == 2
    assert 'export the run folder they were trained in' in capsys.readouterr().err
    assert not (tmp_path / 'again').exists() and not (tmp_path / 'x').exists()


# ------------------------------------------------------------------ D8: records edited after export
@pytest.mark.parametrize('name,edit', [
    ('results.json', lambda r: r['top1'].update(mean=91.5)),
    ('config.json', lambda c: c['pretrained_cfg'].update(mean=[0, 0, 0])),
])
def test_push_refuses_records_edited_after_export(tmp_path, recorder, name, edit):
    out = export_run([_official_run(tmp_path / 'run')], tmp_path / 'export').path
    sums = dict(reversed(line.split('  ', 1)) for line in (out / CHECKSUMS_FILE).read_text().splitlines())
    assert sorted(sums) == sorted(p.name for p in out.iterdir() if p.name != CHECKSUMS_FILE)
    assert all(hashlib.sha256((out / f).read_bytes()).hexdigest() == digest for f, digest in sums.items())
    record = json.loads((out / name).read_text())
    edit(record)
    (out / name).write_text(json.dumps(record))
    with pytest.raises(InvalidExportError, match=f'{name} changed after export'):
        push_folder(out, token='hf_test', manifest=tmp_path / 'manifest.json')
    assert recorder.calls == [] and not (tmp_path / 'manifest.json').exists()


def test_push_refuses_an_edited_card_and_an_unlisted_file(tmp_path, recorder):
    out = export_run([_official_run(tmp_path / 'run')], tmp_path / 'export').path
    (out / 'README.md').write_text((out / 'README.md').read_text().replace('70.0', '97.0'))
    with pytest.raises(InvalidExportError, match='README.md changed after export'):
        push_folder(out, token='hf_test', manifest=tmp_path / 'manifest.json')
    (out / CHECKSUMS_FILE).write_text('\n'.join(line for line in (out / CHECKSUMS_FILE).read_text().splitlines()
                                                if not line.endswith('  README.md')) + '\n')
    with pytest.raises(InvalidExportError, match=f'README.md not in {CHECKSUMS_FILE}'):
        push_folder(out, token='hf_test', manifest=tmp_path / 'manifest.json')
    assert recorder.calls == []


@pytest.mark.parametrize('dataset, tag', [('cifar10', None), ('cifar10', 'cifar100'), ('folder', None)])
def test_a_file_of_a_completed_run_is_described_by_its_runs_data(tmp_path, capsys, dataset, tag):
    """Not by --tag or a cifar100 default: a CIFAR-10 run's file is a cifar10 export, a --tag naming other data is
    refused, and a run on an image folder is exported from its folder (its classes and preprocessing)."""
    run = tmp_path / 'run'
    data = tmp_path / 'data'
    if dataset == 'folder':
        write_images(data / 'train', {'a': 4, 'b': 4})
        write_images(data / 'val', {'a': 2, 'b': 2}, seed=1)
    else:
        write_tiny_cifar(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(['train', '--model', MODEL, '--dataset', dataset, '--data', str(data), '--epochs', '1',
                     '--batch-size', '8', '--device', 'cpu', '--out', str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    args = ['export', str(run / 'model.safetensors'), '--model', MODEL, '--out', str(tmp_path / 'e')]
    code = main(args + (['--tag', tag] if tag else []))
    err = capsys.readouterr().err
    if dataset == 'cifar10' and tag is None:
        assert code == 0 and json.loads((tmp_path / 'e' / 'results.json').read_text())['tag'] == 'cifar10'
    else:
        assert code == 2 and f'is from a run on {dataset}' in err and f'zamzoo export {run}' in err


def _card_info(tag, training_data, num_classes=100, results=None):
    """What render_model_card reads, for the sections below."""
    onnx = dict(opset=18, checked_batch_sizes=[1, 3], max_rel_err=1e-6, input_name='input', output_name='logits')
    return dict(model=MODEL, tag=tag, model_name=f'{MODEL}.{tag}', repo_id=f'zamzoo/{MODEL}.{tag}', onnx=onnx,
                input_size=(3, 32, 32), num_classes=num_classes, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0,
                interpolation='bilinear', training_data=training_data, results=results)


@pytest.mark.parametrize('official', [False, None])
def test_the_onnx_snippet_of_weights_that_load_from_their_folder_reads_that_folder(official):
    """It downloaded model.onnx from the registry name's repo, which holds other weights (or none)."""
    from zamzoo.publish.card import _onnx_section
    text = _onnx_section(_card_info('cifar100', dict(official=official)))
    assert "ort.InferenceSession('PATH/model.onnx'" in text and 'hf_hub_download' not in text
    text = _onnx_section(_card_info('cifar100', dict(official=True)))
    assert f"hf_hub_download('zamzoo/{MODEL}.cifar100', 'model.onnx')" in text


def test_a_card_reports_top5_only_above_five_classes_and_names_own_data_as_validation():
    """With 3 classes top-5 is 100% by definition: it was claimed in model-index."""
    from zamzoo.publish.card import _front_matter_extra, _results_section
    run = dict(seed=0, top1=60.0, top5=100.0, best_top1=61.0)
    results = dict(runs=[run], weights_seed=0, seeds=[0], top1=dict(mean=60.0), top5=dict(mean=100.0),
                   best_top1=dict(mean=61.0))
    few = _card_info('mine', None, num_classes=3, results=results)
    header, section = _front_matter_extra(few), _results_section(few)
    assert 'Top-5' not in header and 'top-5' not in section and 'split: validation' in header
    assert '| seed | top-1 | best top-1 |' in section and '| 0 (weights) | 60.00 | 61.00 |' in section
    assert section.startswith('## Results\nmine validation images, top-1 accuracy (%)')
    cifar = _card_info('cifar100', dict(official=True), results=results)
    header, section = _front_matter_extra(cifar), _results_section(cifar)
    assert 'Top-5 accuracy' in header and 'split: test' in header
    assert '| seed | top-1 | top-5 | best top-1 |' in section and '| 0 (weights) | 60.00 | 100.00 | 61.00 |' in section
