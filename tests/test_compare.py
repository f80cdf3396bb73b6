"""`zamzoo compare` end to end on CPU with small data: the contract check stops broken modules before anything
trains; a module that zeroes its input is worse than plain with three seeds; an identity module is no detectable
difference and its runs equal plain's; a second compare reuses the baseline runs; an edited source is refused."""
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import lighten_contract
from zamzoo.cli import main
from zamzoo.compare.contract import LATENCY_AFTER_RUNS, LATENCY_CONDITIONS
from zamzoo.models.plugins import unregister_attention

MODULES = textwrap.dedent('''
    import torch
    from torch import nn


    class Identity(nn.Module):
        def __init__(self, channels, device=None, dtype=None):
            super().__init__()

        def forward(self, x):
            return x


    class Zero(nn.Module):
        def __init__(self, channels, device=None, dtype=None):
            super().__init__()

        def forward(self, x):
            return x * 0


    class Pools(nn.Module):
        def __init__(self, channels, device=None, dtype=None):
            super().__init__()

        def forward(self, x):
            return x.mean((2, 3), keepdim=True)


    class Nan(nn.Module):
        def __init__(self, channels, device=None, dtype=None):
            super().__init__()

        def forward(self, x):
            return x * float('nan')


    class Broken(nn.Module):
        def __init__(self, channels, device=None, dtype=None):
            raise RuntimeError('no such thing')
''')
pytestmark = pytest.mark.usefixtures('forked_zoo_workers')

COLOURS = {'red': (200, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 200)}
SEEDS = ('0', '1', '2')


@pytest.fixture(autouse=True, scope='module')
def forget_registered_modules():
    """The modules these tests register stay out of the zoo that later test files see."""
    from zamzoo.models import ATTENTIONS

    before = set(ATTENTIONS)
    yield
    for name in set(ATTENTIONS) - before:
        unregister_attention(name)


@pytest.fixture(scope='module')
def colours(tmp_path_factory) -> Path:
    """Three classes a plain MobileNet learns in a few short epochs: the colour of noisy images."""
    root = tmp_path_factory.mktemp('colours')
    rng = np.random.default_rng(0)
    for split, n in (('train', 12), ('val', 12)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def modules(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('modules') / 'mods.py'
    path.write_text(MODULES)
    return path


def _compare(modules, cls, data, out, *extra, seeds=SEEDS):
    # 16 x 16 pixels, 12 images a class, 8 epochs, evaluated after the last one only (the report scores the final
    # epoch): a plain MobileNet from scratch at 32 x 32 for 3 epochs scored 33-100% from seed to seed in eval mode
    # (100% with the batch's statistics: its BatchNorm running statistics lag), too noisy to tell the Zero module
    # from it; here seeds 0-5 all scored 100% (24 images a class for 6 epochs: seed 1 80.56%, and 16% more CPU time).
    # --channels-last: at one thread and this batch, PyTorch runs contiguous 1x1 convolutions through its THNN
    # kernels (the profiler's aten::_slow_conv2d_*), whose backward made a step 2x slower (this test: 110 s -> 68 s)
    return main(['compare', '--attn', f'{modules}:{cls}', '--baselines', 'plain', '--backbones', 'mobilenet',
                 '--seeds', *seeds, '--dataset', 'folder', '--data', str(data), '--out', str(out), '--epochs', '8',
                 '--img-size', '16', '--batch-size', '6', '--lr', '0.05', '--eval-every', '8', '--device', 'cpu',
                 '--runs-per-gpu', '2', '--channels-last', *extra])


def _without_contract_exports(monkeypatch) -> list:
    """The contract check of `compare` without its ONNX exports (tests/test_contract.py runs them; here they took 14
    of the test's 80 s under cProfile); returns the list to which each call appends whether the command asked for
    them."""
    from zamzoo.compare import contract

    asked, check = [], contract.check_contract

    def without_exports(*args, onnx=True, **kwargs):
        asked.append(onnx)
        return check(*args, onnx=False, **kwargs)
    monkeypatch.setattr(contract, 'check_contract', without_exports)
    return asked


def _report(out, name) -> dict:
    return json.loads((out / '_compare' / name / 'report.json').read_text(), parse_constant=float.__call__)


def _files(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('cls, broke', [('Pools', 'shape'), ('Nan', 'finite'), ('Broken', 'cannot build')])
def test_contract_stops_a_broken_module_before_anything_trains(modules, colours, tmp_path, capsys, cls, broke):
    out = tmp_path / 'runs'
    assert _compare(modules, cls, colours, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and broke in err[0].lower() and 'Traceback' not in err[0]
    assert not out.exists()  # nothing trained, nothing written to the sweep


def test_zero_is_worse_identity_is_no_difference_and_baselines_are_reused(modules, colours, tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / 'runs'
    exports_asked = _without_contract_exports(monkeypatch)
    assert _compare(modules, 'Zero', colours, out) == 0
    assert exports_asked == [True]  # the contract check's ONNX exports: asked for, run in test_contract instead
    printed = capsys.readouterr().out
    report = _report(out, 'zero')
    assert set(report) == {'name', 'module', 'source_sha256', 'dataset', 'recipe', 'epochs', 'seeds', 'method',
                           'cells', 'unfinished_runs', 'cost', 'baseline_cost', 'cost_conditions', 'contract'}
    assert report['method'] == {'interval_level': 0.95, 'alpha': 0.05,
                                'correction': 'holm over the cells of this report that have a p-value'}
    [plain_cost] = report['baseline_cost']  # plain costs nothing, by definition; same threads: speed ratio 1
    assert (plain_cost['attention'], plain_cost['cpu_latency_ratio'], plain_cost['train_images_per_s_ratio']) == (
        'plain', 1.0, 1.0)
    assert report['unfinished_runs'] == []
    [cell] = report['cells']
    assert (cell['backbone'], cell['baseline'], cell['n']) == ('mobilenet', 'plain', 3)
    assert cell['candidate_mean'] == 100 / 3 and cell['candidate_std'] == 0  # zeroed features: chance on every seed
    assert cell['baseline_mean'] > 100 / 3 and cell['diff_mean'] == pytest.approx(
        cell['candidate_mean'] - cell['baseline_mean'])
    # worse whenever the plain runs learned alike (all seeds at 100% here); a plain seed whose running statistics
    # still lag widens the interval to "no detectable difference", the honest verdict (the decision: test_compare_stats)
    assert cell['verdict'] == ('worse' if cell['p_holm'] < 0.05 else 'no detectable difference'), cell
    assert cell['verdict'] == 'worse' or cell['baseline_std'] > 0, cell
    assert report['cost'][0]['params_added'] == 0 and report['cost'][0]['macs_added'] == 0
    for name in ('report.md', 'forest.png', 'cost.png'):
        assert (out / '_compare' / 'zero' / name).is_file()
    assert str(out / '_compare' / 'zero' / 'report.md') in printed
    # the latency of the cost table is timed after the runs (the contract check leaves it): the report says how,
    # and nothing printed says it is not measured
    assert report['cost'][0]['cpu_latency_ratio'] is not None
    # at the runs' --img-size, not the backbone's own 32 x 32 (a module's MACs and time grow with its feature maps)
    assert report['cost_conditions']['input_size'] == {'mobilenet': [3, 16, 16]}
    latency = report['cost_conditions']['latency']
    assert latency == {**LATENCY_CONDITIONS, **{k: latency[k] for k in ('device', 'load_avg_start', 'load_avg')}}
    assert 'torch threads (cpu' in latency['device'] and len(latency['load_avg_start']) == len(latency['load_avg']) == 3
    assert LATENCY_AFTER_RUNS in printed and 'latency not measured' not in printed
    assert f"CPU latency on {latency['device']}: wall clock" in (out / '_compare' / 'zero' / 'report.md').read_text()

    # the identity on two of the three seeds (one round of --runs-per-gpu 2; two pairs give the [0, 0] interval),
    # its contract check without the latency rounds that the first comparison ran
    lighten_contract(monkeypatch)
    plain = {s: out / f'mobilenet_plain-folder-finetune-s{s}' for s in SEEDS}
    before = {s: _files(folder) for s, folder in plain.items()}
    identity_seeds = SEEDS[:2]
    assert _compare(modules, 'Identity', colours, out, seeds=identity_seeds) == 0
    assert 'to train, 2 reused' in capsys.readouterr().out  # only the identity's runs trained
    assert {s: _files(folder) for s, folder in plain.items()} == before  # the baseline runs untouched
    identity = _report(out, 'identity')
    assert identity['cost_conditions']['latency'] is None  # timed nowhere (lightened), said so
    [cell] = identity['cells']
    assert cell['verdict'] == 'no detectable difference' and cell['n'] == 2
    assert cell['diff_mean'] == 0 and cell['diff_ci'] == [0, 0]
    for s in identity_seeds:  # an identity module trains exactly the plain network
        mine = load_file(out / f'mobilenet_identity-folder-finetune-s{s}' / 'model.safetensors')
        theirs = load_file(plain[s] / 'model.safetensors')
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    moved = colours.with_name(colours.name + '-moved')
    colours.rename(moved)  # every run has finished: the report is made again without the data
    try:
        assert _compare(modules, 'Identity', colours, out, seeds=identity_seeds) == 0
        assert ': 0 to train, 4 reused' in capsys.readouterr().out
    finally:
        moved.rename(colours)

    modules.write_text(modules.read_text() + '\n# edited\n')
    unregister_attention('identity')  # as a new process would meet it: the edited module registers, then is refused
    try:
        assert _compare(modules, 'Identity', colours, out, seeds=identity_seeds) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(modules) in err[0] and 'changed' in err[0], err
    finally:
        modules.write_text(MODULES)
