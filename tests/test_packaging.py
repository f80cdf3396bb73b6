"""zamzoo as a user installs it: the wheel and sdist built from the checkout, the wheel installed outside it; and
the import layering that keeps the model factory free of publishing code."""
import ast
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import zamzoo
from conftest import skip_or_fail_in_ci

PACKAGE = Path(zamzoo.__file__).parent
ROOT = PACKAGE.parent
DATA_FILES = ('zamzoo/pretrained/manifest.json', 'zamzoo/publish/templates/usage.md')
COMMIT = 'e' * 40
DEAD_ENDPOINT = 'http://127.0.0.1:9'


# ------------------------------------------------------------------ layering
def _imported_modules(path: Path) -> set:
    """Absolute names of the zamzoo modules a file imports (`from . import x` counts as importing x)."""
    package = ['zamzoo', *path.parent.relative_to(PACKAGE).parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            names.update(f'{module}.{a.name}' for a in node.names)
            if node.module:
                names.add(module)
    return {n for n in names if n.split('.')[0] == 'zamzoo'}


def _unit(module: str) -> str:
    """The subpackage or top-level module of zamzoo a module belongs to ('zamzoo' for the package itself and the
    names its __init__ defines, such as __version__)."""
    parts = module.split('.')
    is_module = len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f'{parts[1]}.py').is_file())
    return parts[1] if is_module else 'zamzoo'


def import_graph() -> dict:
    graph = {}
    for path in PACKAGE.rglob('*.py'):
        rel = path.relative_to(PACKAGE)
        unit = 'zamzoo' if rel == Path('__init__.py') else rel.parts[0].removesuffix('.py')
        targets = {_unit(m) for m in _imported_modules(path)} - {unit}
        graph.setdefault(unit, set()).update(targets)
    return graph


def _cycle(graph: dict):
    """One import cycle between units, as a list of names, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_import_graph_reads_imports():
    graph = import_graph()
    assert {'layers', 'pretrained', 'recipes'} <= graph['models']  # relative imports, `from ..x import y`
    assert {'models', 'pretrained', 'train', 'bench', 'zamzoo'} <= graph['publish']  # also `import zamzoo`
    assert 'provenance' in graph['train']  # `from .. import provenance`
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']


# ARCHITECTURE.md's layers, lowest first ('zamzoo' is the package's __init__, which registers the models)
LAYERS = (('errors', '_io', '_paths', '_argtypes', 'dataset_table', 'recipes', 'provenance', '_process', 'pairing',
           'sweep_files'),
          ('layers',), ('pretrained',), ('models', 'zamzoo'), ('data',), ('train',), ('bench',), ('publish',),
          ('zoo',), ('compare', 'viz', 'quickstart'), ('cli', '__main__'))


def test_no_import_cycle_and_layers_respected():
    graph = import_graph()
    assert _cycle(graph) is None, f'import cycle: {" -> ".join(_cycle(graph))}'
    rank = {unit: level for level, units in enumerate(LAYERS) for unit in units}
    assert set(graph) <= set(rank), f'units ARCHITECTURE.md does not place: {sorted(set(graph) - set(rank))}'
    upward = sorted(f'{a} -> {b}' for a in graph for b in graph[a] if rank[b] > rank[a])
    assert upward == []


def test_layers_are_architecture_mds():
    """LAYERS above is ARCHITECTURE.md's diagram: `a, b < c` puts a and b on one level below c."""
    text = (ROOT / 'ARCHITECTURE.md').read_text().split('## Layers', 1)[1].split('```')[1]
    levels = [{u.strip() for u in level.split(',')} for level in ' '.join(text.split()).split('<')]
    bottom, rest = set(LAYERS[0]), [set(level) for level in LAYERS[1:]]
    assert levels == [bottom, *rest]


def test_models_do_not_import_publishing():
    code = 'import json, sys, zamzoo.models; print(json.dumps(sorted(m for m in sys.modules if m.startswith("zamzoo"))))'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    loaded = json.loads(proc.stdout)
    assert 'zamzoo.pretrained.guard' in loaded and 'zamzoo.models._zoo' in loaded
    assert [m for m in loaded if m.split('.')[1:2] in (['publish'], ['bench'], ['train'], ['data'])] == []


# ------------------------------------------------------------------ wheel and sdist
def _source_copy(dest: Path) -> Path:
    """The checkout's files as a release would see them (tracked + untracked but not ignored) in `dest`."""
    try:
        listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split('\0')
    except (OSError, subprocess.CalledProcessError) as e:
        skip_or_fail_in_ci(f'building from the checkout needs git to list its files ({e})')
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(sdist, wheel): `python -m build` builds the sdist, then the wheel from the sdist (not from the checkout)."""
    tmp = tmp_path_factory.mktemp('build')
    src = _source_copy(tmp / 'src')
    proc = subprocess.run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(tmp / 'dist'), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,), (wheel,) = (tmp / 'dist').glob('*.tar.gz'), (tmp / 'dist').glob('*.whl')
    return sdist, wheel


def test_wheel_and_sdist_ship_the_data(built):
    sdist, wheel = built
    assert set(DATA_FILES) <= set(zipfile.ZipFile(wheel).namelist())
    # the Apache-2.0 text travels with the package (its section 4(a)), named in the metadata
    info = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith('.dist-info/METADATA')).rsplit('/', 1)[0]
    assert 'Apache License' in zipfile.ZipFile(wheel).read(f'{info}/licenses/LICENSE').decode()
    assert 'License-File: LICENSE' in zipfile.ZipFile(wheel).read(f'{info}/METADATA').decode()
    with tarfile.open(sdist) as tar:
        names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
    assert set(DATA_FILES) <= names and 'pyproject.toml' in names
    # what the sdist's tests and README read (scripts/onnx_spellings.py was left out): every tracked file but CI's
    tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert set(tracked) - names == {'.ci/run', '.gitignore'}  # (`built` needs git too)


EXPORT_AND_RECORD = '''
import importlib.metadata, json, sys
from pathlib import Path
import timm, torch, zamzoo
from safetensors.torch import save_file
from zamzoo.cli import main

site, cache, commit = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
assert Path(zamzoo.__file__).is_relative_to(site), zamzoo.__file__
assert zamzoo.__version__ == importlib.metadata.version('zamzoo') != '0+unknown'
zoo = set(zamzoo.list_models())
assert [n for n in timm.list_models(pretrained=True) if n.split('.')[0] in zoo] == []

# a run folder as `zamzoo train` leaves it
torch.manual_seed(0)
run = Path('run')
run.mkdir()
save_file(timm.create_model('resnet18_zam').state_dict(), str(run / 'model.safetensors'))
(run / 'config.json').write_text(json.dumps(dict(model='resnet18_zam', dataset='cifar100', seed=0, num_classes=100,
    model_kwargs={}, recipe=dict(name='zam', version=1, epochs=1), recipe_name='zam', recipe_version=1)))
(run / 'results.json').write_text(json.dumps(dict(model='resnet18_zam', dataset='cifar100', seed=0, epochs=1,
    top1=12.5, top5=40.0)))
(run / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=4.2)) + '\\n')
assert main(['export', 'run', '--out', 'export']) == 0
assert f'**zamzoo version:** {zamzoo.__version__}' in Path('export/README.md').read_text()

from zamzoo.errors import UsageError
from zamzoo.pretrained import shipped_manifest, update_manifest
from zamzoo.publish import cache_export
from zamzoo.publish.push import manifest_record
results = json.loads(Path('export/results.json').read_text())
cache_export('export', cache, commit=commit)
record = manifest_record(results, results['repo_id'], commit)
try:  # an install records into the manifest it is given, never into the one in site-packages
    update_manifest(record)
    raise AssertionError('recorded into the shipped manifest of an install')
except UsageError as e:
    assert '--manifest PATH' in str(e), e
assert shipped_manifest().is_relative_to(site)
assert update_manifest(record, 'manifest.json') == Path('manifest.json')
assert [p.name for p in shipped_manifest().parent.iterdir() if p.name.startswith('.manifest')] == []
print('ok')
'''

LOAD_AND_LIST = '''
import contextlib, io, sys
import timm, torch, zamzoo
from safetensors.torch import load_file
from zamzoo.cli import main

commit = sys.argv[3]
model = timm.create_model('resnet18_zam', pretrained=True)
assert model.pretrained_cfg['hf_hub_id'] == f'zamzoo/resnet18_zam.cifar100@{commit}'
ref, got = load_file('run/model.safetensors'), model.state_dict()
assert sorted(got) == sorted(ref) and all(torch.equal(v, ref[k]) for k, v in got.items())
zoo = set(zamzoo.list_models())
assert [n for n in timm.list_models(pretrained=True) if n.split('.')[0] in zoo] == ['resnet18_zam.cifar100']
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(['list', 'resnet18_zam']) == 0
row = out.getvalue().splitlines()[1].split()
assert row[0] == 'resnet18_zam' and row[3:] == [f'published@{commit[:12]}', 'not', 'yet', 'trained'], row
from pathlib import Path
from zamzoo.bench.tables import DEFAULT_MODEL_CARD, DEFAULT_README, DEFAULT_RESULTS  # here, not site-packages
assert DEFAULT_RESULTS == Path('docs', 'bench'), DEFAULT_RESULTS  # `bench gpu` writes, `zoo run --dry-run` reads
assert (DEFAULT_README, DEFAULT_MODEL_CARD) == (Path('README.md'), Path('MODEL_CARD.md'))  # `bench tables`
print('ok')
'''


def test_installed_wheel_outside_the_checkout(built, tmp_path):
    """A wheel install, run from outside the checkout: export writes its card; a record in the manifest given
    (ZAMZOO_MANIFEST: an install records into no other) plus a Hugging Face cache laid out as the Hub serves it make
    pretrained=True load the exact weights offline."""
    _, wheel = built
    site, work, cache = tmp_path / 'site', tmp_path / 'work', tmp_path / 'hf-cache'
    work.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--no-compile', '--quiet',
                    '--disable-pip-version-check', '--target', str(site), str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('ZAMZOO_', 'HF_', 'HUGGING_FACE_'))}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_ENDPOINT=DEAD_ENDPOINT,
               HF_TOKEN_PATH=str(tmp_path / 'no-token'), OMP_NUM_THREADS='1')
    given = {'ZAMZOO_MANIFEST': str(work / 'manifest.json')}  # what EXPORT_AND_RECORD wrote
    for script, manifest in ((EXPORT_AND_RECORD, {}), (LOAD_AND_LIST, given)):
        proc = subprocess.run([sys.executable, '-c', textwrap.dedent(script), str(site), str(cache), COMMIT],
                              cwd=work, env={**env, **manifest}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stdout[-2000:] + proc.stderr[-3000:]
