"""Issue 19, hub and publish rows: every hub call fails as one WeightsError (row 7), an export can be redone
without its model.onnx (row 8), --init refuses non-finite weights naming the file (row 10), and the manifest
judges each record on its own (row 12)."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import timm
import zamzoo
from conftest import write_cifar_run
from zamzoo.cli import main
from zamzoo.errors import NonFiniteError, WeightsError
from zamzoo.pretrained import find_checkpoint, load_manifest, manifest_problems
from zamzoo.publish import export_run
from zamzoo.train.init import load_init

MODEL, TAG = 'mobilenet_zamr', 'cifar10'
DEAD_ENDPOINT = 'http://127.0.0.1:9'  # discard port: the connection is refused at once


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """The weights file of a finished run on the official CIFAR-10 (a bare checkpoint is not pushed as it)."""
    run = tmp_path_factory.mktemp('weights') / 'run'
    write_cifar_run(run, MODEL, 0, dataset=TAG)
    return run / 'model.safetensors'


@pytest.fixture(scope='module')
def exported(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'export'
    export_run([weights], out, model=MODEL, tag=TAG)
    return out


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache in offline mode, a private manifest."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'ENDPOINT', DEAD_ENDPOINT)
    (tmp_path / 'manifest.json').write_text('{"schema": 1, "checkpoints": []}')  # nothing published yet
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(tmp_path / 'manifest.json'))
    return tmp_path


# ------------------------------------------------------------------ row 7: one WeightsError for every hub call
def test_push_to_an_unreachable_hub_is_one_line(exported, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'ENDPOINT', DEAD_ENDPOINT)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(tmp_path / 'manifest.json'))
    assert main(['push', str(exported)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert f'pushing {exported} to zamzoo/{MODEL}.{TAG}' in err and DEAD_ENDPOINT in err and 'cannot be reached' in err
    assert not (tmp_path / 'manifest.json').exists()
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert main(['push', str(exported)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'offline mode is on (HF_HUB_OFFLINE=1)' in err and 'unset HF_HUB_OFFLINE' in err


def test_init_from_the_hub_offline(offline):
    with pytest.raises(WeightsError) as e:
        load_init('resnet18')  # a timm model: timm downloads its weights from timm/resnet18.a1_in1k
    assert '--init resnet18: ' in str(e.value) and 'timm/resnet18' in str(e.value)
    assert 'not in the Hugging Face cache' in str(e.value) and 'Go online' in str(e.value)
    with pytest.raises(WeightsError, match=r'--init hf-hub:someone/net: model.safetensors of someone/net is not in '
                                           r'the Hugging Face cache'):
        load_init('hf-hub:someone/net')


def test_pretrained_timm_model_offline(offline):
    """`zamzoo train/eval --model resnet18 --pretrained` (a timm model, downloaded by timm itself)."""
    from zamzoo.train.build import create_model

    with pytest.raises(WeightsError, match='resnet18 pretrained weights: .*not in the Hugging Face cache'):
        create_model('resnet18', num_classes=3, pretrained=True)


def test_viz_of_a_pretrained_timm_model_offline_is_one_line(offline, capsys):
    """`zamzoo viz --pretrained` called timm itself: LocalEntryNotFoundError's traceback, where eval said one line."""
    from PIL import Image
    Image.new('RGB', (8, 8)).save(offline / 'photo.png')
    assert main(['viz', '--model', 'resnet18', '--pretrained', '--image', str(offline / 'photo.png'),
                 '--out', str(offline / 'maps.png')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'resnet18 pretrained weights: ' in err and 'not in the Hugging Face cache' in err


# ------------------------------------------------------------------ row 8: an export may hold its optional files
def test_export_force_replaces_an_export_with_its_onnx(weights, exported, tmp_path):
    import shutil
    out = tmp_path / 'export'
    shutil.copytree(exported, out)
    (out / 'model.onnx').write_bytes(b'what `export --onnx` left')   # an earlier export made with --onnx
    export_run([weights], out, model=MODEL, tag=TAG, overwrite=True)  # now without --onnx
    assert not (out / 'model.onnx').exists()  # a stale model.onnx would disagree with the new weights
    assert 'onnx' not in json.loads((out / 'results.json').read_text())
    (out / 'notes.txt').write_text('mine')    # anything else is still not ours to replace
    with pytest.raises(zamzoo.errors.ZamzooError, match='earlier export'):
        export_run([weights], out, model=MODEL, tag=TAG, overwrite=True)


# ------------------------------------------------------------------ row 10: --init weights checked at load
def test_init_with_infinite_weights_names_the_file(weights, tmp_path):
    from safetensors.torch import load_file
    state = load_file(str(weights))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][0] = math.inf
    bad = tmp_path / 'inf.safetensors'
    save_file(state, str(bad))
    with pytest.raises(NonFiniteError) as e:
        load_init(str(bad))
    assert str(bad) in str(e.value) and first in str(e.value) and 'diverged' not in str(e.value)


# ------------------------------------------------------------------ row 12: the manifest, record by record
def _record(**changes):
    return dict(dict(model=MODEL, tag=TAG, repo_id=f'zamzoo/{MODEL}.{TAG}', hub_commit='a' * 40,
                     filename='model.safetensors', sha256='b' * 64, dataset=TAG, recipe='zam', seeds=[0]), **changes)


BAD_RECORDS = {
    'mobilenet_se': dict(filename='../x'),
    'mobilenet_cbam': dict(filename='/etc/passwd'),
    'mobilenet_eca': dict(sha256='B' * 64),
    'mobilenet_plain': dict(top1_mean=math.inf),
    'mobilenet_simam': dict(repo_id=f'zamzoo/{MODEL}.{TAG}'),  # another model's repo
    # timm would load the repo's model.safetensors, unchecked, in place of the .bin checked
    'mobilenet_bam': dict(filename='pytorch_model.bin'),
}
PROBLEMS = ('not a plain file name', 'not a plain file name', 'not 64 hex digits', "['top1_mean'] are not finite",
            f"is not a repo of mobilenet_simam.{TAG}", "'pytorch_model.bin' is not 'model.safetensors'")


def _write_manifest(path):
    records = [_record()] + [_record(model=m, **{'repo_id': f'zamzoo/{m}.{TAG}', **c}) for m, c in BAD_RECORDS.items()]
    records += [_record(model='resnet18_zam', repo_id=f'zamzoo/resnet18_zam.{TAG}')] * 2  # a duplicate
    path.write_text(json.dumps({'schema': 1, 'checkpoints': records}))  # Infinity is what json writes for inf
    return records


def test_manifest_keeps_valid_records_and_reports_each_invalid_one(offline, weights, caplog, capsys):
    manifest = offline / 'manifest.json'
    _write_manifest(manifest)
    with caplog.at_level('WARNING', logger='zamzoo'):
        assert load_manifest() == [_record()]
    problems = manifest_problems()
    assert len(problems) == len(BAD_RECORDS) + 2
    for problem, (model, expected) in zip(problems, zip(BAD_RECORDS, PROBLEMS)):
        assert f'({model}.{TAG}) is invalid' in problem and expected in problem, problem
    assert all('2 records for resnet18_zam.cifar10' in p for p in problems[-2:])
    with pytest.raises(WeightsError, match=r'\(mobilenet_se.cifar10\) is invalid: filename'):
        find_checkpoint('mobilenet_se', TAG)
    with pytest.raises(WeightsError, match=re.escape(  # the bare name is cifar100's: the error names what is published
            f"for {MODEL}.cifar100 (the manifest {manifest} has no record for it) (published: {MODEL}.{TAG}, e.g. "
            f"timm.create_model('{MODEL}.{TAG}', pretrained=True)): train it")):
        timm.create_model(MODEL, pretrained=True)
    with pytest.raises(zamzoo.errors.ZamzooError, match=f"'me/resnet18_zam.{TAG}' is not a repo of {MODEL}.{TAG}"):
        export_run([weights], offline / 'e', model=MODEL, tag=TAG,
                   repo_id=f'me/resnet18_zam.{TAG}')  # refused at export already, not after an upload
    assert main(['list', 'mobilenet_se', '--manifest', str(manifest)]) == 1  # it was 0 after FAILED, verify's 1
    captured = capsys.readouterr()  # each problem was a warning when the manifest was read (test_list_...)
    assert 'not yet trained' in captured.out
    assert captured.err == (f'FAILED: {len(problems)} invalid record(s) in the weights manifest, each named in a '
                            'warning above\n')
    manifest.write_text(json.dumps({'schema': 1, 'checkpoints': [_record(model='mobilenet_se', filename='../x',
                                                                         repo_id=f'zamzoo/mobilenet_se.{TAG}')]}))
    assert main(['verify', '--manifest', str(manifest)]) == 1
    assert 'FAILED: ' in capsys.readouterr().err


def _import_zamzoo(manifest, *then_cli: str) -> subprocess.CompletedProcess:
    """Prints the zoo's pretrained names, then what the bare name MODEL builds: its tag and classes; then runs the
    command `zamzoo *then_cli` in the same process, if given."""
    code = ("import timm, zamzoo; print(sorted(n for n in timm.list_models(pretrained=True) "
            f"if n.split('.')[0] in zamzoo.list_models())); m = timm.create_model({MODEL!r}); "
            "print(m.pretrained_cfg['tag'], m.num_classes)"
            + (f"; from zamzoo.cli import main; main({list(then_cli)!r})" if then_cli else ''))
    env = dict(os.environ, ZAMZOO_MANIFEST=str(manifest), HF_HUB_OFFLINE='1')
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)


def test_import_lists_the_valid_records_and_warns_about_the_rest(tmp_path):
    manifest = tmp_path / 'manifest.json'
    _write_manifest(manifest)
    proc = _import_zamzoo(manifest, 'list', 'mobilenet_se')
    assert proc.returncode == 0, proc.stderr
    # only the cifar10 weights published: timm would make that tag the default; the bare name stays cifar100's
    assert proc.stdout.splitlines()[:2] == [repr([f'{MODEL}.{TAG}']), 'cifar100 100']
    # each problem once, though the import and `zamzoo list` both read the manifest; the list counts them
    assert 'Traceback' not in proc.stderr and proc.stderr.count('is invalid') == len(BAD_RECORDS) + 2
    assert proc.stderr.endswith(f'FAILED: {len(BAD_RECORDS) + 2} invalid record(s) in the weights manifest, each '
                                'named in a warning above\n'), proc.stderr
    manifest.write_text('{"schema": 1, "checkpoints": [')  # bad JSON: reported, nothing listed
    proc = _import_zamzoo(manifest)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ['[]', 'cifar100 100']
    assert 'Traceback' not in proc.stderr and 'is not valid JSON' in proc.stderr
    assert 'no weights are listed as published' in proc.stderr and 'the record is ignored' not in proc.stderr


def test_a_truncated_weights_file_of_an_export_folder_is_named(exported, tmp_path):
    """`local-dir:EXPORT` with a cut model.safetensors: the error named the folder as 'the file' to save again."""
    import shutil
    folder = tmp_path / 'export'
    shutil.copytree(exported, folder)
    weights = folder / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    with pytest.raises(WeightsError, match=rf"the file {re.escape(str(weights))} is corrupt or truncated \(.*\); "
                                           r"write it again \(an export folder's: `zamzoo export` again"):
        timm.create_model(f'local-dir:{folder}', pretrained=True)
