"""A run of an attention module registered at run time, read by another process with no manual registration:
`zamzoo eval`, `zamzoo export` and viz import the module from the run's config.json (`ensure_attention`), refuse a
module whose source changed since, and the export says the module is needed (and is not pushed)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zamzoo.cli import main
from zamzoo.errors import UsageError
from zamzoo.models import ATTENTIONS
from zamzoo.models.plugins import unregister_attention
from zamzoo.publish import InvalidExportError, export_run, push_folder
from zamzoo.publish.export import ExportError

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'mobilenet_plugrun'

MODULE_SOURCE = '''
from torch import nn


class Halving(nn.Module):
    """Multiplies its input by 0.5 (output shaped like the input)."""

    def __init__(self, channels, device=None, dtype=None):
        super().__init__()

    def forward(self, x):
        return x * 0.5
'''


def _forget_plugins(before):
    for name in set(ATTENTIONS) - before:
        unregister_attention(name)


@pytest.fixture(autouse=True)
def forget_registrations():
    """Each test starts with the module unregistered in this process, as a new process would."""
    before = set(ATTENTIONS) - {'plugrun'}
    _forget_plugins(before)
    yield
    _forget_plugins(before)


@pytest.fixture(scope='module')
def plugin_run(tmp_path_factory):
    """(module file, image folder, run folder) of a 1-epoch run of `--attn file.py:Halving --name plugrun`."""
    from PIL import Image
    import torch
    root = tmp_path_factory.mktemp('plugin_run')
    module, data, run = root / 'halving.py', root / 'images', root / 'run'
    module.write_text(MODULE_SOURCE)
    rng = torch.Generator().manual_seed(0)
    for c in ('a', 'b'):
        (data / c).mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(data / c / f'{i}.png')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = set(ATTENTIONS)
    try:
        assert main(['train', '--attn', f'{module}:Halving', '--name', 'plugrun', '--model', MODEL, '--data',
                     str(data), '--dataset', 'folder', '--holdout', '0.5', '--epochs', '1', '--device', 'cpu',
                     '--batch-size', '4', '--out', str(run)]) == 0
    finally:
        _forget_plugins(before)
        torch.set_num_threads(threads)
    return module, data, run


def _zamzoo(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'zamzoo', *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _eval_args(data, run):
    return ['eval', '--model', MODEL, '--checkpoint', run, '--data', data, '--dataset', 'folder', '--device', 'cpu',
            '--batch-size', '4']


def test_eval_and_export_of_a_plugin_run_in_a_new_process(plugin_run, tmp_path):
    module, data, run = plugin_run
    r = _zamzoo(*_eval_args(data, run), cwd=tmp_path)
    assert r.returncode == 0 and 'top-1' in r.stdout.lower(), r.stdout + r.stderr

    out = tmp_path / 'export'
    r = _zamzoo('export', run, '--out', out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recorded = json.loads((run / 'config.json').read_text())['attention_module']
    load = f"import zamzoo; zamzoo.load_attention('{module}:Halving', name='plugrun')"
    for name in ('config.json', 'results.json'):
        written = json.loads((out / name).read_text())['attention_module']
        assert written == dict(recorded, register_before_create_model=load), name
    card = (out / 'README.md').read_text()
    assert '## Attention module' in card and load in card and recorded['sha256'] in card
    # the card's own snippet, in a new process: it said `import zamzoo` and loaded a Hub repo push never makes
    assert 'hf-hub:' not in card and f"from_pretrained('PATH')" in card
    snippet = card.split('### Image Classification\n```python\n', 1)[1].split('```', 1)[0]
    from PIL import Image
    Image.new('RGB', (40, 30), (200, 30, 30)).save(tmp_path / 'image.png')
    snippet = snippet.replace("'local-dir:PATH'", repr(f'local-dir:{out}')) + '\nprint(tuple(output.shape))\n'
    r = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1'))
    assert r.returncode == 0 and r.stdout.strip() == '(1, 2)', r.stderr[-2000:]

    # what the export says to run is enough to build the exported model in a new process
    code = (f'{load}\nimport timm\nfrom safetensors.torch import load_file\n'
            f'm = timm.create_model("{MODEL}", num_classes=2)\n'
            f'm.load_state_dict(load_file("{out / "model.safetensors"}")); print("built")')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1'))
    assert r.returncode == 0 and r.stdout.strip() == 'built', r.stderr

    with pytest.raises(InvalidExportError, match="attention module 'plugrun' registered at run time"):
        push_folder(out, token='unused')  # refused before any upload is tried


def test_an_edited_module_is_refused_by_eval_export_and_viz(plugin_run, tmp_path, capsys):
    """In this process (the module unregistered by `forget_registrations`, as a new process meets it): the test
    above already runs eval and export in new processes."""
    from zamzoo.viz import load_model
    module, data, run = plugin_run
    try:
        module.write_text(MODULE_SOURCE + '# edited\n')
        for args in (_eval_args(data, run), ['export', run, '--out', tmp_path / 'export']):
            code = main([str(a) for a in args])
            err = capsys.readouterr().err
            assert code == 2 and f'{module} changed since' in err, (args[0], err)
            assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / 'export').exists()
        with pytest.raises(UsageError, match=f'{module} changed since'):
            load_model(MODEL, checkpoint=str(run))
        assert 'plugrun' not in ATTENTIONS  # nothing registered from the edited file
    finally:
        module.write_text(MODULE_SOURCE)
    model = load_model(MODEL, checkpoint=str(run))  # restored: viz builds the run's model by itself
    assert model.num_classes == 2 and 'plugrun' in ATTENTIONS


def test_export_refuses_runs_whose_module_sources_differ(plugin_run, tmp_path):
    module, _, run = plugin_run
    other = tmp_path / 'seed1'
    shutil.copytree(run, other)
    config = json.loads((other / 'config.json').read_text())
    config['seed'], config['attention_module']['sha256'] = 1, 'f' * 64  # a run of another version of the file
    (other / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ExportError, match=f'{module} changed since'):
        export_run([run, other], tmp_path / 'export')
    assert not (tmp_path / 'export').exists()


def test_push_refuses_a_packaged_modules_model_without_advising_the_package_it_came_from(monkeypatch, tmp_path):
    """A module of an installed package (entry point) was refused as 'registered at run time', with the advice to
    share it as such a package."""
    from types import SimpleNamespace

    import zamzoo.models.plugins as plugins
    from zamzoo.publish.push import _refuse_run_time_module
    record = {'name': 'mine', 'spec': 'my_package.attention:MyAttention', 'options': {}, 'imports': {}}
    monkeypatch.setattr(plugins, 'entry_points', lambda group: [SimpleNamespace(name='mine', value=record['spec'])])
    with pytest.raises(InvalidExportError, match=r"module 'mine' of an installed package \(entry-point group "
                                                 r"zamzoo.attention\) \(from my_package.attention:MyAttention\)") as e:
        _refuse_run_time_module(tmp_path, {'attention_module': record})
    assert "push publishes models of the zoo's own modules" in str(e.value) and 'share the module' not in str(e.value)
