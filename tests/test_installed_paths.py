"""zamzoo as installed users run it: push checks the manifest it records into before uploading (and an installed
zamzoo records only into a manifest it is given), records only tags a registry name uses, leaves no lock file; the
code commit is zamzoo's own, never that of a project repo it is installed in; optional extras are checked before
anything runs or is written; an explicit manifest path that does not exist is an error, not "nothing published";
the sdist holds what its tests read."""
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import save_file

import zamzoo
from conftest import skip_or_fail_in_ci
from zamzoo.cli import main
from zamzoo.errors import OutputError, UsageError, WeightsError
from zamzoo.pretrained import load_manifest, shipped_manifest, update_manifest
from zamzoo import provenance
from zamzoo.publish import export_run, push_folder
from zamzoo.publish.push import manifest_record

MODEL = 'mobilenet_plain'
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
HUB_COMMIT = 'c' * 40


class FakeHub:
    """HfApi as push uses it, recording the calls; upload_folder returns a commit."""
    calls = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, **kwargs):
        self.calls.append(('upload_folder', repo_id))
        return SimpleNamespace(oid=HUB_COMMIT)


def _run(folder: Path, dataset: str, tag: str, classes) -> Path:
    """A completed run folder of `zamzoo train` (the fields export reads; normalised as the zam recipe does)."""
    from zamzoo.recipes import get_recipe
    mean, std = get_recipe('zam').stats(dataset) if dataset == 'cifar10' else ((0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_file(timm.create_model(MODEL, num_classes=len(classes)).state_dict(), str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps(dict(
        model=MODEL, dataset=dataset, tag=tag, seed=0, num_classes=len(classes), classes=list(classes),
        img_size=32, mean=list(mean), std=list(std), loader='dataloader', model_kwargs={},
        recipe=dict(name='zam', version=1), recipe_name='zam', recipe_version=1,
        device='cpu')))
    (folder / 'results.json').write_text(json.dumps(dict(
        model=MODEL, dataset=dataset, recipe='zam', seed=0, epochs=1, top1=50.0, top5=90.0, code_commit='f' * 40,
        official_data=True if dataset == 'cifar10' else None, test_images=10_000)))
    (folder / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=1.0, lr=0.1)) + '\n')
    return folder


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """{'cifar10': an export under a registry tag, 'shapes': one of an image folder's tag}."""
    root = tmp_path_factory.mktemp('exports')
    return {tag: export_run([_run(root / f'run-{tag}', dataset, tag, classes)], root / f'{MODEL}.{tag}').path
            for tag, dataset, classes in (('cifar10', 'cifar10', CLASSES), ('shapes', 'folder', ['a', 'b', 'c']))}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import zamzoo.publish.push as push_module
    FakeHub.calls = []
    monkeypatch.setattr(push_module, 'HfApi', FakeHub)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    monkeypatch.delenv('ZAMZOO_MANIFEST', raising=False)
    return FakeHub.calls


def _installed(monkeypatch):
    """zamzoo as run from site-packages: not its source checkout."""
    import zamzoo.pretrained.manifest as manifest_module
    monkeypatch.setattr(manifest_module, 'is_source_checkout', lambda root=None: False)


# ------------------------------------------------------------------ push: the manifest before the upload
def test_an_unwritable_manifest_stops_push_before_the_upload(exports, hub, tmp_path):
    (tmp_path / 'a-file').write_text('')
    manifest = tmp_path / 'a-file' / 'manifest.json'  # its folder cannot be made (root could write anything else)
    with pytest.raises(OutputError, match='the manifest .*cannot be created'):
        push_folder(exports['cifar10'], manifest=manifest)
    assert hub == []


def test_an_invalid_manifest_stops_push_before_the_upload(exports, hub, tmp_path):
    manifest = tmp_path / 'manifest.json'
    manifest.write_text('{"schema": 1, "checkpoints": [')
    with pytest.raises(WeightsError, match='not valid JSON'):
        push_folder(exports['cifar10'], manifest=manifest)
    assert hub == []


def test_a_failed_record_after_the_upload_prints_the_record(exports, hub, tmp_path, monkeypatch):
    import zamzoo.publish.push as push_module

    def disk_full(record, path=None):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(push_module, 'update_manifest', disk_full)
    with pytest.raises(WeightsError) as e:
        push_folder(exports['cifar10'], manifest=tmp_path / 'manifest.json')
    assert [c[0] for c in hub] == ['create_repo', 'upload_folder']
    message = str(e.value)
    assert f'uploaded at commit {HUB_COMMIT}' in message and 'No space left on device' in message
    record = json.loads(message[message.index('{'):])  # the record, ready to paste into a manifest
    assert record['hub_commit'] == HUB_COMMIT and record['model'] == MODEL and record['tag'] == 'cifar10'


def test_an_installed_zamzoo_records_only_into_a_manifest_it_is_given(exports, hub, tmp_path, monkeypatch, capsys):
    _installed(monkeypatch)
    shipped = Path(shipped_manifest())
    before = shipped.read_bytes()
    with pytest.raises(UsageError, match='--manifest PATH'):
        push_folder(exports['cifar10'])
    assert main(['push', str(exports['cifar10'])]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'zamzoo is installed' in err and '--manifest PATH' in err
    assert hub == [] and shipped.read_bytes() == before
    assert sorted(p.name for p in shipped.parent.iterdir() if p.name.startswith('.')) == []

    manifest = tmp_path / 'manifest.json'
    assert main(['push', str(exports['cifar10']), '--manifest', str(manifest)]) == 0
    out = capsys.readouterr().out
    assert f'recorded in {manifest}' in out and 'commit it' not in out
    assert [r['hub_commit'] for r in load_manifest(manifest)] == [HUB_COMMIT]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['manifest.json']  # no lock file left beside it
    assert shipped.read_bytes() == before


def test_the_manifest_lock_is_removed_after_use(exports, tmp_path):
    results = json.loads((exports['cifar10'] / 'results.json').read_text())
    manifest = tmp_path / 'manifest.json'
    update_manifest(manifest_record(results, results['repo_id'], HUB_COMMIT), manifest)
    update_manifest(manifest_record(results, results['repo_id'], 'd' * 40), manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['manifest.json']
    assert [r['hub_commit'] for r in load_manifest(manifest)] == ['d' * 40]


def test_push_records_only_tags_of_the_registry(exports, hub, tmp_path, capsys):
    manifest = tmp_path / 'manifest.json'
    assert main(['push', str(exports['shapes']), '--manifest', str(manifest)]) == 0
    out = capsys.readouterr().out
    assert [c[0] for c in hub] == ['create_repo', 'upload_folder']  # uploaded, but nothing to pin
    assert not manifest.exists() and 'not recorded' in out
    repo_id = json.loads((exports['shapes'] / 'results.json').read_text())['repo_id']
    assert f"timm.create_model('hf-hub:{repo_id}@{HUB_COMMIT}', pretrained=True)" in out
    results = json.loads((exports['shapes'] / 'results.json').read_text())
    with pytest.raises(WeightsError, match="tag 'shapes' is not a tag of the registry"):
        update_manifest(manifest_record(results, repo_id, HUB_COMMIT), manifest)


# ------------------------------------------------------------------ reading an explicit manifest
def test_an_explicit_manifest_that_does_not_exist_is_an_error(tmp_path, monkeypatch, capsys):
    typo = tmp_path / 'manifst.json'
    assert main(['verify', '--manifest', str(typo)]) == 2
    err = capsys.readouterr().err
    assert f'the manifest {typo} does not exist' in err and 'nothing is published' not in err
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(typo))
    assert main(['list', 'resnet18_zam']) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(WeightsError, match='does not exist'):
        timm.create_model('resnet18_zam', pretrained=True)


# ------------------------------------------------------------------ provenance
def _git(cwd, *args):
    subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True,
                   env={'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't',
                        'GIT_COMMITTER_EMAIL': 't@t', 'HOME': str(cwd), 'PATH': '/usr/bin:/bin:/usr/local/bin'})


def _project(folder: Path, ignored: str) -> str:
    """A git repo of some project, committed, with `ignored` in its .gitignore; its HEAD."""
    folder.mkdir()
    (folder / '.gitignore').write_text(f'{ignored}/\n')
    (folder / 'pyproject.toml').write_text('[project]\nname = "someproject"\n')
    try:
        _git(folder, 'init', '-q')
    except (OSError, subprocess.CalledProcessError) as e:
        skip_or_fail_in_ci(f'needs git ({e})')
    _git(folder, 'add', '-A')
    _git(folder, 'commit', '-qm', 'project')
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True, text=True).stdout.strip()


def _copy_package(dest: Path):
    for path in Path(zamzoo.__file__).parent.rglob('*'):
        if path.is_file() and '__pycache__' not in path.parts:
            target = dest / 'zamzoo' / path.relative_to(Path(zamzoo.__file__).parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


@pytest.mark.parametrize('site', ['site', '.venv/lib/python3/site-packages'])
def test_an_install_inside_a_project_repo_has_no_code_commit(tmp_path, monkeypatch, site):
    monkeypatch.delenv('ZAMZOO_CODE_COMMIT', raising=False)
    project = tmp_path / 'project'
    head = _project(project, site.split('/')[0])
    _copy_package(project / site)
    assert provenance.code_commit(project / site) is None, f'the project commit {head} taken for zamzoo\'s'
    assert not provenance.is_source_checkout(project / site)
    probe = 'from zamzoo.provenance import code_commit; print(code_commit())'
    proc = subprocess.run([sys.executable, '-c', probe], cwd=project, capture_output=True, text=True, timeout=60,
                          env={'PYTHONPATH': str(project / site), 'PATH': '/usr/bin:/bin:/usr/local/bin'})
    assert proc.stdout.strip() == 'None', proc.stdout + proc.stderr


def test_a_source_checkout_has_its_commit(tmp_path, monkeypatch):
    monkeypatch.delenv('ZAMZOO_CODE_COMMIT', raising=False)
    checkout = tmp_path / 'zamzoo-src'
    _project(checkout, 'runs')
    (checkout / 'pyproject.toml').write_text('[project]\nname = "zamzoo"\n')
    _copy_package(checkout)
    assert provenance.code_commit(checkout) is None  # the package is not tracked there yet: not zamzoo's checkout
    _git(checkout, 'add', '-A')
    _git(checkout, 'commit', '-qm', 'zamzoo')
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=checkout, capture_output=True, text=True).stdout.strip()
    assert provenance.is_source_checkout(checkout) and provenance.code_commit(checkout) == head


# ------------------------------------------------------------------ extras checked before anything runs
def test_bench_export_without_the_onnx_extra_stops_before_any_model(tmp_path, monkeypatch, capsys):
    import zamzoo.bench.export as bench_export
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # `import onnxruntime` raises ImportError

    def built(*args, **kwargs):
        raise AssertionError('a model was exported without the onnx extra')
    monkeypatch.setattr(bench_export, '_export_one', built)
    assert main(['bench', 'export', '--models', MODEL, '--out', str(tmp_path / 'out'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "zamzoo[onnx]" in err and 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


def test_zoo_run_on_slurm_without_submitit_writes_nothing(tiny_cifar, tmp_path, monkeypatch, capsys):
    import zamzoo.zoo.slurm as slurm
    monkeypatch.setattr(slurm, 'submitit', None)
    out = tmp_path / 'sweep'
    assert main(['zoo', 'run', '--models', 'test_resnet', '--datasets', 'cifar10', '--seeds', '0', '--epochs', '1',
                 '--data', str(tiny_cifar), '--out', str(out), '--executor', 'slurm']) == 2
    assert 'zamzoo[slurm]' in capsys.readouterr().err
    assert not out.exists() or list(out.rglob('*')) == []
    # compare said so only after checking its module's contract (a minute per backbone on a laptop)
    assert main(['compare', '--attn', 'eca', '--baselines', 'plain', '--backbones', 'resnet18', '--seeds', '0', '1',
                 '--dataset', 'cifar10', '--data', str(tiny_cifar), '--out', str(out), '--executor', 'slurm']) == 2
    captured = capsys.readouterr()
    assert 'zamzoo[slurm]' in captured.err and 'contract' not in captured.out
    assert not out.exists() or list(out.rglob('*')) == []


# ------------------------------------------------------------------ the sdist
def test_the_sdist_holds_what_its_tests_read(tmp_path):
    from test_packaging import _source_copy
    src = _source_copy(tmp_path / 'src')
    proc = subprocess.run([sys.executable, '-m', 'build', '--sdist', '--no-isolation', '--outdir',
                           str(tmp_path / 'dist'), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sdist, = (tmp_path / 'dist').glob('*.tar.gz')
    with tarfile.open(sdist) as tar:
        names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
    read_by_tests = {str(p.relative_to(src)) for folder in ('tests', 'docs') for p in (src / folder).rglob('*')
                     if p.is_file()}
    missing = sorted((read_by_tests | {'README.md', 'MODEL_CARD.md', 'pyproject.toml'}) - names)
    assert 'docs/bench/models_counts.json' in read_by_tests and missing == []
