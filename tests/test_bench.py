"""zamzoo.bench: counting conventions, `bench models`, the table generator."""
import functools
import json
import os
import re
import shutil

import pytest
import timm
import torch
from torch import nn

import zamzoo
from zamzoo.bench.flops import count_flops, count_macs, count_params, seed_flops
from zamzoo.bench.tables import marker, update_tables
from zamzoo.cli import main
from zamzoo.errors import UsageError
from conftest import skip_or_fail_in_ci
from zamzoo.layers import CBAM_SEED_KWARGS

# The ZAM seed's table (github.com/developer0hye/ZAM README, FLOPs by thop 0.0.30), and the same numbers to
# three decimals as modules.md gives them from the seed's code.
SEED_TABLE = [
    ('resnet18_plain', {}, 557.98, 557.977),
    ('resnet18_cbam', dict(attn_kwargs=CBAM_SEED_KWARGS), 558.45, 558.448),
    ('resnet18_zam', {}, 558.23, 558.225),
    ('mobilenet_plain', {}, 180.77, 180.770),
    ('mobilenet_cbam', dict(attn_kwargs=CBAM_SEED_KWARGS), 182.50, 182.495),
    ('mobilenet_zamr', {}, 181.46, 181.464),
]


@pytest.mark.parametrize('name,kwargs,readme,precise', SEED_TABLE, ids=[t[0] for t in SEED_TABLE])
def test_seed_flops_reproduce_the_seed_table(name, kwargs, readme, precise):
    model = timm.create_model(name, **kwargs)
    flops = seed_flops(model) / 1e6
    assert abs(flops - readme) <= 1e-3 * readme  # the acceptance: within 0.1% of the README figure
    assert round(flops, 3) == pytest.approx(precise, abs=1e-9)  # and in fact the thop figure itself


def test_seed_flops_of_zam_is_the_plain_count_plus_its_channel_gap():
    # ZAM adds only its channel average pool, counted as thop counts nn.AdaptiveAvgPool2d(1): (HW + 1) * C
    plain, zam = timm.create_model('resnet18_plain'), timm.create_model('resnet18_zam')
    gap = 2 * ((32 * 32 + 1) * 64 + (16 * 16 + 1) * 128 + (8 * 8 + 1) * 256 + (4 * 4 + 1) * 512)
    assert seed_flops(zam) - seed_flops(plain) == gap
    assert seed_flops(timm.create_model('resnet18_zam_max')) == seed_flops(plain)  # max pooling counts 0


def test_seed_flops_follow_the_attention_modules_a_model_holds():
    se = seed_flops(timm.create_model('resnet18_se'))
    assert se > seed_flops(timm.create_model('resnet18_plain'))
    assert seed_flops(timm.create_model('resnet18_plain', attn_layer='se')) == se
    zam_max = seed_flops(timm.create_model('resnet18_zam_max'))
    assert seed_flops(timm.create_model('resnet18_zam', attn_kwargs=dict(pool='max'))) == zam_max
    with pytest.raises(ValueError, match='no seed FLOP convention for ZCA'):  # a module the zoo table has no rule for
        seed_flops(timm.create_model('resnet18_plain', attn_layer='zca'))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)   # 8*3*9 + 8 = 224 params
        self.bn = nn.BatchNorm2d(8)                            # 16
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)  # 72
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(8, 10)                           # 90

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.pool(self.dw(x))
        return self.head(x.mean((2, 3)))


def test_counts_of_a_hand_made_net_match_hand_arithmetic():
    net = _Tiny()
    assert count_params(net) == 224 + 16 + 72 + 90
    net.bn.weight.requires_grad_(False)
    assert count_params(net, trainable_only=True) == 224 + 16 + 72 + 90 - 8
    # 16x16 input: conv 16*16*8 outputs x 27 MACs; dw 8*8*8 outputs x 9; linear 8*10
    assert count_macs(net, (3, 16, 16)) == 16 * 16 * 8 * 27 + 8 * 8 * 8 * 9 + 80
    assert count_flops(net, (3, 16, 16)) == 2 * count_macs(net, (3, 16, 16))
    expected = (16 * 16 * 8 * (27 + 1)          # conv, bias counted as one op per output
                + 4 * 8 * 16 * 16               # BN: 4 per element
                + 8 * 8 * 8 * 9                 # depthwise conv, no bias
                + (2 + 1) * 8 * 4 * 4           # AvgPool2d(2): thop 0.0.30 took prod([2]) = 2, + 1 division
                + (2 * 8 - 1) * 10)             # Linear: (2 in - 1) per output; mean() and relu() are not counted
    assert seed_flops(net, (3, 16, 16)) == expected
    assert net.training  # counting leaves the training flag alone


def test_input_size_defaults_to_the_pretrained_cfg():
    model = timm.create_model('mobilenet_plain')
    assert count_macs(model) == count_macs(model, (3, 32, 32))
    assert count_macs(model, (3, 64, 64)) > 3 * count_macs(model)
    with pytest.raises(ValueError, match=r'\(C, H, W\)'):
        count_macs(model, (32, 32))


def test_bench_models_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / 'bench'
    threads = torch.get_num_threads()
    rc = main(['bench', 'models', '--models', 'mobilenet_zam', 'mobilenet_simam', '--repeats', '1', '--warmup', '1',
               '--min-time', '0', '--batch-sizes', '1', '--train-step', '--train-batch', '2', '--threads', '1',
               '--timer', 'process', '--out', str(out), '--quiet'])
    assert rc == 0
    assert torch.get_num_threads() == threads  # restored
    report = json.loads((out / 'models_cpu_process.json').read_text())
    assert report['kind'] == 'zamzoo-bench-models' and report['device']['type'] == 'cpu'
    assert report['device']['threads'] == 1 and report['settings']['timer'] == 'process'
    assert report['command'].startswith('zamzoo bench models --models mobilenet_zam mobilenet_simam')
    assert '--threads 1 --timer process' in report['command']
    rows = {r['model']: r for r in report['results']}
    assert sorted(rows) == ['mobilenet_simam', 'mobilenet_zam']
    for row in rows.values():
        assert row['baseline'] == 'mobilenet_plain'
        assert row['params'] == row['baseline_params'] == 3_309_476
        assert row['macs'] > 0 and row['seed_flops'] > row['baseline_seed_flops'] - 1
        assert set(row['latency']) == {'infer_b1', 'train_b2'}
        for lat in row['latency'].values():
            assert lat['ms'] > 0 and lat['baseline_ms'] > 0 and lat['ratio'] > 0
            assert len(lat['samples_ms']) == len(lat['baseline_samples_ms']) == 1
            assert lat['ratio'] == pytest.approx(lat['ms'] / lat['baseline_ms'], rel=1e-3)
    md = (out / 'models_cpu_process.md').read_text()
    assert '| mobilenet_zam | 3,309,476 |' in md and 'train_b2 vs plain' in md
    assert 'wrote' in capsys.readouterr().out


def test_bench_models_rejects_unknown_patterns(capsys):
    assert main(['bench', 'models', '--models', 'nosuchnet_*', '--counts-only']) == 2
    assert 'no zamzoo model matches' in capsys.readouterr().err


def blank_docs(folder):
    """README.md and MODEL_CARD.md in `folder` holding every generated block, empty."""
    from zamzoo.bench.tables import marker

    paths = folder / 'README.md', folder / 'MODEL_CARD.md'
    for path in paths:
        path.write_text(''.join(f'{marker(b)}\n{marker(b, end=True)}\n'
                                for b in ('models-table', 'overhead', 'recipes', 'zoo', 'citations')))
    return paths


def _fake_report(tmp_path):
    row = {'model': 'resnet18_zam', 'backbone': 'resnet18', 'baseline': 'resnet18_plain', 'params': 11_220_132,
           'macs': 555_468_800, 'seed_flops': 558_225_180, 'input_size': [3, 32, 32],
           'baseline_params': 11_220_132, 'baseline_macs': 555_468_800, 'baseline_seed_flops': 557_977_500,
           'latency': {
               'infer_b1': {'batch': 1, 'train': False, 'ms': 10.5, 'baseline_ms': 10.0, 'ratio': 1.05,
                            'samples_ms': [10.5], 'baseline_samples_ms': [10.0]},
               'infer_b64': {'batch': 64, 'train': False, 'ms': 510.0, 'baseline_ms': 500.0, 'ratio': 1.02,
                             'samples_ms': [510.0], 'baseline_samples_ms': [500.0]}}}
    cbam = dict(row, model='resnet18_cbam', params=11_310_012, seed_flops=558_448_220, latency={})
    report = {'schema': 1, 'kind': 'zamzoo-bench-models', 'created': '2025-01-02T03:04:05+00:00',
              'command': 'zamzoo bench models --models resnet18_zam --device cpu',
              'device': {'type': 'cpu', 'name': 'Test CPU', 'threads': 2, 'cpu_count': 2, 'load_avg': [0.5, 0.4, 0.3]},
              'versions': {'python': '3', 'torch': '2', 'timm': '1', 'zamzoo': '0.1.0'}, 'code_commit': 'abc' * 10,
              'settings': {'repeats': 5, 'warmup': 1, 'min_time_s': 0.2, 'infer_batches': [1, 64],
                           'train_batch': None, 'latency': True, 'dtype': 'float32'},
              'results': [row, cbam]}
    path = tmp_path / 'models_cpu.json'
    path.write_text(json.dumps(report))
    return path


def test_table_generator_fills_readme_and_model_card(tmp_path):
    results = _fake_report(tmp_path)
    manifest = tmp_path / 'manifest.json'
    manifest.write_text(json.dumps({'schema': 1, 'checkpoints': [{
        'model': 'resnet18_zam', 'tag': 'cifar100', 'repo_id': 'zamzoo/resnet18_zam.cifar100',
        'hub_commit': '0123456789abcdef0123456789abcdef01234567', 'filename': 'model.safetensors',
        'sha256': 'ab' * 32, 'dataset': 'cifar100', 'recipe': 'zam', 'seeds': [0, 1, 2, 3, 4],
        'top1_mean': 76.954, 'top1_std': 0.2}]}))
    readme, card = tmp_path / 'README.md', tmp_path / 'MODEL_CARD.md'
    block = lambda name: f'{marker(name)}\nstale\n{marker(name, end=True)}\n'  # noqa: E731
    readme.write_text('# title\n\nkept\n\n' + block('models-table') + '\nafter\n' + block('citations'))
    card.write_text('# card\n' + block('zoo') + block('recipes') + block('models-table') + '\n## Overhead\n' +
                    block('overhead') + block('citations'))

    changed = update_tables([results], manifest, readme, card)
    assert sorted(changed) == sorted([readme, card])
    text = readme.read_text()
    assert text.startswith('# title\n\nkept\n\n') and '\nafter\n' in text and 'stale' not in text
    zam = next(line for line in text.splitlines() if line.startswith('| `resnet18_zam`'))
    assert zam == ('| `resnet18_zam` | 11.22M | 555.47M | 558.23M | +5.0% / +2.0% | 76.95 ± 0.20 (5 seeds) '
                   '| not yet trained | – | – |')
    cbam = next(line for line in text.splitlines() if line.startswith('| `resnet18_cbam`'))
    assert '11.31M (+89,880)' in cbam and cbam.endswith('| - | not yet trained | not yet trained | – | – |')
    overhead = card.read_text().split(marker('overhead'))[1]
    assert 'Test CPU' in overhead and '2025-01-02' in overhead and 'zamzoo bench models --models resnet18_zam' in overhead
    assert '| `resnet18_zam` | 10.50 (10.00) | +5.0% | 510.00 (500.00) | +2.0% |' in overhead
    assert 'not measured on GPU' in overhead
    recipes = card.read_text().split(marker('recipes'))[1]
    assert '| `spem` v2 | resnet164 | 164 | 128 |' in recipes and 'x0.2 from epochs 60, 120, 160' in recipes
    zam_row = next(line for line in recipes.splitlines() if line.startswith('| `zam` v3 |'))
    assert zam_row.endswith('| 0.0001 * L1 of the NAM BN scales (models with NAM); 0.1 * SPEM penalty (models with '
                            'SPEM) |')
    # a second run changes nothing, and --check says so
    assert update_tables([results], manifest, readme, card) == []
    assert main(['bench', 'tables', '--results', str(results), '--manifest', str(manifest), '--readme', str(readme),
                 '--model-card', str(card), '--check']) == 0


def test_a_ratio_is_shown_rounded_once_from_its_rounds(tmp_path):
    """Rounds whose median ratio is 1.047475 are +4.7% and 1.047x; the stored ratio, 1.0475 (4 places), rounded again
    gave +4.8% and 1.048x."""
    from zamzoo.bench.models import markdown_report

    report = json.loads(_fake_report(tmp_path).read_text())
    report['results'][0]['latency']['infer_b1'].update(ms=10.47475, ratio=1.0475, samples_ms=[10.47475])
    (tmp_path / 'models_cpu.json').write_text(json.dumps(report))
    readme, card = blank_docs(tmp_path)
    (tmp_path / 'none.json').write_text('{"schema": 1, "checkpoints": []}')
    update_tables([tmp_path / 'models_cpu.json'], tmp_path / 'none.json', readme, card)
    assert '| +4.7% / +2.0% |' in next(line for line in readme.read_text().splitlines() if '`resnet18_zam`' in line)
    assert '| `resnet18_zam` | 10.47 (10.00) | +4.7% |' in card.read_text()
    assert '| 10.47 | 1.047x (+4.7%) |' in markdown_report(dict(report, results=report['results'][:1]))


def test_table_generator_needs_markers_and_reports(tmp_path, capsys):
    results = _fake_report(tmp_path)
    readme = tmp_path / 'README.md'
    readme.write_text('# no markers\n')
    card = tmp_path / 'MODEL_CARD.md'
    card.write_text(f"{marker('models-table')}\n{marker('models-table', end=True)}\n")
    (tmp_path / 'none.json').write_text('{"schema": 1, "checkpoints": []}')
    args = ['bench', 'tables', '--manifest', str(tmp_path / 'none.json'), '--readme', str(readme),
            '--model-card', str(card)]
    assert main(args + ['--results', str(results)]) == 2
    assert 'no <!-- zamzoo:models-table:start -->' in capsys.readouterr().err
    (tmp_path / 'junk.json').write_text('{"kind": "other"}')
    assert main(args + ['--results', str(tmp_path / 'junk.json')]) == 2
    assert 'not a `zamzoo bench models` report' in capsys.readouterr().err


def test_a_partial_report_or_one_holding_nan_is_refused_with_its_field(tmp_path):
    """A report lacking a field the tables read (a row's MACs, a latency entry's rounds, the settings' repeats) gave a
    KeyError traceback, and a NaN was written into the table as 'nan'."""
    from zamzoo.bench.tables import load_reports

    report = json.loads(_fake_report(tmp_path).read_text())
    path = tmp_path / 'partial.json'
    cuts = {'results[0].macs': lambda r: r['results'][0].pop('macs'),
            'results[0].latency.infer_b1.samples_ms': lambda r: r['results'][0]['latency']['infer_b1'].pop(
                'samples_ms'),
            'settings.repeats': lambda r: r['settings'].pop('repeats'),
            'device.type': lambda r: r['device'].pop('type')}
    for field, cut in cuts.items():
        partial = json.loads(json.dumps(report))
        cut(partial)
        path.write_text(json.dumps(partial))
        with pytest.raises(UsageError, match=rf'partial.json is an incomplete `zamzoo bench models` report: no '
                                             rf'{re.escape(field)}$'):
            load_reports([path])
    path.write_text(json.dumps(report).replace('10.5', 'NaN', 1))
    with pytest.raises(UsageError, match='partial.json is not valid JSON: .*NaN'):
        load_reports([path])
    path.write_text(json.dumps(report))
    assert load_reports([path])[0]['results'] == report['results']


def test_the_models_table_lists_the_zoos_own_models_and_says_what_it_leaves_out(tmp_path):
    """Any row of a report became a table row (a plugin's model, one removed from the zoo), and a zoo model without
    a row vanished from the table without a word."""
    from zamzoo.bench.tables import load_reports, models_table
    report = json.loads(_fake_report(tmp_path).read_text())
    stale = dict(report['results'][0], model='resnet18_zca')
    (tmp_path / 'mine.json').write_text(json.dumps(dict(report, results=[*report['results'], stale])))  # --name mine
    (tmp_path / 'gpu_x.json').write_text('{"kind": "zamzoo-bench-gpu"}')  # another command's report: passed over
    reports = load_reports([tmp_path])
    assert [r['_source'].name for r in reports] == ['mine.json', 'models_cpu.json']
    with pytest.warns(UserWarning) as caught:
        table = models_table(reports, [])
    said = [str(w.message) for w in caught]
    assert any('the rows of resnet18_zca in the bench reports are left out' in m for m in said), said
    assert any(f'no row of {len(zamzoo.list_models()) - 2} of the zoo\'s {len(zamzoo.list_models())} models' in m
               for m in said), said
    assert [line.split(' | ')[0] for line in table.splitlines()[2:4]] == ['| `resnet18_zam`', '| `resnet18_cbam`']
    assert 'resnet18_zca' not in table
    (tmp_path / 'cut.json').write_text(json.dumps({'kind': 'zamzoo-bench-models', 'results': []}))
    with pytest.raises(UsageError, match="cut.json is an incomplete `zamzoo bench models` report: no 'created', "
                                         "'device', 'settings'"):
        load_reports([tmp_path])


def test_tables_merge_runs_and_show_onnxruntime(tmp_path):
    """Batch sizes measured in separate runs fill one cell; ONNX Runtime settings get their own column."""
    first = json.loads(_fake_report(tmp_path).read_text())
    zam = first['results'][0]
    ort = {'batch': 64, 'train': False, 'runtime': 'onnxruntime', 'ms': 130.0, 'baseline_ms': 100.0, 'ratio': 1.3,
           'samples_ms': [130.0], 'baseline_samples_ms': [100.0]}
    second = dict(first, created='2025-01-03T00:00:00+00:00', results=[dict(zam, latency={
        'infer_b64': dict(zam['latency']['infer_b64'], ratio=1.1, samples_ms=[550.0]), 'onnxruntime_infer_b64': ort})])
    zam['latency'] = {'infer_b1': zam['latency']['infer_b1']}
    for i, report in enumerate((first, second)):
        (tmp_path / f'run{i}.json').write_text(json.dumps(report))
    readme, card = blank_docs(tmp_path)
    (tmp_path / 'none.json').write_text('{"schema": 1, "checkpoints": []}')  # nothing published
    update_tables([tmp_path / 'run0.json', tmp_path / 'run1.json'], tmp_path / 'none.json', readme, card)
    lines = readme.read_text().splitlines()
    assert ('| CPU latency, 2 threads vs plain (b1 / b64) | CPU latency, 2 threads, ONNX Runtime vs plain (b1 / b64) |'
            in lines[1])
    row = next(line for line in lines if line.startswith('| `resnet18_zam`'))
    assert '| +5.0% / +10.0% | - / +30.0% |' in row
    assert 'ONNX Runtime: the model exported with timm' in readme.read_text()
    assert '| 130.00 (100.00) | +30.0% |' in card.read_text()
    compiled = dict(ort, batch=1, runtime='compile', ratio=1.02, samples_ms=[102.0])
    second['results'][0]['latency']['compile_infer_b1'] = compiled
    (tmp_path / 'run1.json').write_text(json.dumps(second))
    update_tables([tmp_path / 'run0.json', tmp_path / 'run1.json'], tmp_path / 'none.json', readme, card)
    lines = readme.read_text().splitlines()
    assert ('| CPU latency, 2 threads vs plain (b1 / b64) | CPU latency, 2 threads, torch.compile vs plain (b1 / b64) '
            '| CPU latency, 2 threads, ONNX Runtime vs plain (b1 / b64) |' in lines[1])
    assert '| +5.0% / +10.0% | +2.0% / - | - / +30.0% |' in next(l for l in lines if l.startswith('| `resnet18_zam`'))
    assert 'torch.compile: the model through `torch.compile`' in readme.read_text()


class _Net(nn.Module):
    """A conv and a mean; twice that where `lie_when()` is True (a recorder that computes something else)."""

    def __init__(self, lie_when=None):
        super().__init__()
        self.conv, self.lie_when = nn.Conv2d(3, 4, 3), lie_when

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return y * 2 if self.lie_when is not None and self.lie_when() else y


def test_onnx_session_times_only_a_graph_that_matches_pytorch(tmp_path):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    from zamzoo.bench.models import _OrtRunner, onnx_session
    from zamzoo.bench.onnx import OnnxExportError

    torch.manual_seed(0)
    session = onnx_session(_Net(), (3, 8, 8), 1, tmp_path)
    assert session.get_session_options().intra_op_num_threads == 1
    runner = _OrtRunner('net', session, 5, (3, 8, 8))
    runner.warmup(1, 0.0)
    assert runner.measure() > 0 and session.run(None, runner.feed)[0].shape == (5, 4)  # dynamic batch
    with pytest.raises(OnnxExportError, match='differs from PyTorch'):
        onnx_session(_Net(lie_when=torch.onnx.is_in_onnx_export), (3, 8, 8), 1, tmp_path / 'lie')
    assert not (tmp_path / 'lie' / 'model.onnx').exists()  # a wrong graph is not kept


def _needs_a_cpp_compiler():
    if not (os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')):
        skip_or_fail_in_ci('torch.compile on a CPU needs a C++ compiler (g++)')


def test_compiled_runner_times_only_a_model_that_matches_pytorch(monkeypatch):
    """--runtime compile: the compiled model's output on the timed batch is checked against eager PyTorch first; a
    compiled model that computes something else is refused, not timed. (Dynamo with its 'eager' backend: the check
    is the runner's whatever the backend; inductor's C++ compile of two graphs took 19 s here, and
    test_bench_models_under_torch_compile runs inductor.)"""
    from zamzoo.bench.models import _CompiledRunner
    from zamzoo.errors import ZamzooError

    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='eager'))

    torch.manual_seed(0)
    runner = _CompiledRunner('net', _Net(), 5, (3, 8, 8), torch.device('cpu'))
    runner.warmup(1, 0.0)
    assert runner.measure() > 0 and runner.call().shape == (5, 4)
    with pytest.raises(ZamzooError, match='torch.compile gives other outputs than eager PyTorch'):
        _CompiledRunner('liar', _Net(lie_when=torch.compiler.is_compiling), 5, (3, 8, 8),
                        torch.device('cpu')).warmup(1, 0.0)


def test_compile_limits_give_each_group_room_for_its_graphs():
    """The zoo's models of a backbone share one forward function, whose compiled graphs Dynamo caps at 8; with the
    whole forward as one graph, the 9th model would be an error. `_compile_limits` gives a group a fresh cache with
    room for its graphs, so 9 models compile, and a second group is not charged for the first one's graphs."""
    from zamzoo.bench.models import _compile_limits

    class Net(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return x * self.scale

    x = torch.randn(3)
    # Dynamo's caps, whatever the backend: 'eager' compiles no C++ (inductor took 1-2 s per graph here)
    compiled = lambda scale: torch.compile(Net(scale), backend='eager', fullgraph=True, dynamic=False)(x)  # noqa: E731
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):  # Dynamo's own cap
        for scale in range(1, 10):
            compiled(float(scale))
    for first in (1, 20):  # two groups of 9 in a row
        with _compile_limits('compile', 9):
            assert all(torch.equal(compiled(float(s)), x * s) for s in range(first, first + 9))
    torch._dynamo.reset()


def test_bench_models_under_torch_compile(tmp_path):
    """--runtime compile: a compiled column next to eager PyTorch, each model against the plain backbone compiled
    alike, in the same rounds."""
    _needs_a_cpp_compiler()
    rc = main(['bench', 'models', '--models', 'mobilenet_zam', '--repeats', '1', '--warmup', '1', '--min-time', '0',
               '--batch-sizes', '1', '--runtime', 'compile', '--out', str(tmp_path), '--quiet'])
    assert rc == 0
    report = json.loads((tmp_path / 'models_cpu.json').read_text())
    assert report['settings']['runtimes'] == ['torch', 'compile'] and '--runtime compile' in report['command']
    (row,) = report['results']
    lat = row['latency']['compile_infer_b1']
    assert lat['runtime'] == 'compile' and lat['ms'] > 0 and lat['baseline_ms'] > 0
    assert set(row['latency']) == {'infer_b1', 'compile_infer_b1'}
    assert 'compile_infer_b1 vs plain' in (tmp_path / 'models_cpu.md').read_text()


def test_bench_overhead_reports_which_zam_path_it_timed_and_checks_its_arguments_first(tmp_path, capsys):
    """The GPU script's overhead report could not be told from a run of ZAM's Triton kernels; a bad --json or
    --out failed after minutes of measuring, with a traceback; --batch 0 and --threads 0 were taken."""
    out = tmp_path / 'overhead.json'
    assert main(['bench', 'overhead', '--models', 'mobilenet_zam', '--batch', '2', '--repeats', '1', '--warmup', '0',
                 '--min-time', '0', '--threads', '1', '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['settings']['zam_kernels'] == 'eager PyTorch (not CUDA)'
    assert set(report['results'][0]['ratio']) == {'fused', 'reference'}
    assert "ZAM's kernels: eager PyTorch (not CUDA)" in capsys.readouterr().out
    (tmp_path / 'afile').write_text('')
    for args, said in ((['bench', 'overhead', '--json', str(tmp_path / 'afile' / 'x.json')], 'is a file, not a folder'),
                       (['bench', 'export', '--out', str(tmp_path / 'afile' / 'sub')], 'is a file, not a folder'),
                       (['bench', 'overhead', '--device', 'cuda'], 'torch sees no CUDA device')
                       if not torch.cuda.is_available() else (['bench', 'overhead', '--batch', '0'], 'positive')):
        assert main(args) == 2
        assert said in capsys.readouterr().err
    for args, said in ((['overhead', '--batch', '0'], 'a positive integer'),
                       (['overhead', '--threads', '0'], 'a positive integer'),
                       (['models', '--train-batch', '0'], 'a positive integer'),
                       (['models', '--warmup', '-1'], 'an integer >= 0'),
                       (['models', '--min-time', '-1'], 'a finite number >= 0')):
        with pytest.raises(SystemExit) as e:
            main(['bench', *args])
        assert e.value.code == 2 and f'{args[1]}: expected {said}, got {args[2]}' in capsys.readouterr().err


def test_the_bench_commands_defaults_are_the_functions_defaults():
    """What `bench models` and `bench train` run without options is what the library functions run by default (the
    commands read the defaults from the modules that own them)."""
    import inspect

    from zamzoo.bench.models import bench_models
    from zamzoo.cli import build_parser
    from zamzoo.train.bench import bench_train

    models = build_parser().parse_args(['bench', 'models'])
    defaults = {k: p.default for k, p in inspect.signature(bench_models).parameters.items()}
    assert (tuple(models.batch_sizes), models.train_batch, models.timer, models.runtime) == (
        tuple(defaults['infer_batches']), defaults['train_batch'], defaults['timer'], defaults['runtime'])
    train = build_parser().parse_args(['bench', 'train'])
    defaults = {k: p.default for k, p in inspect.signature(bench_train).parameters.items()}
    assert (train.model, train.batch_size, train.recipe) == (
        defaults['model'], defaults['batch_size'], defaults['recipe']) == ('resnet18_zam', 128, 'zam')


def test_bench_models_checks_its_onnx_and_compiled_models_with_calibrated_batchnorm(monkeypatch):
    """With BatchNorm's default statistics a random mobilenet's logits do not depend on its input (to the bit), so the
    check of its ONNX Runtime session or compiled model against PyTorch passed whatever graph ran."""
    import zamzoo.bench.models as bench_models_module

    checked = {}

    def record(model, input_size, threads, folder):
        checked[type(model).__name__ + str(len(checked))] = model
        raise RuntimeError('recorded')

    monkeypatch.setattr(bench_models_module, 'onnx_session', record)
    with pytest.raises(RuntimeError, match='recorded'):
        bench_models_module.bench_models(['mobilenet_zam'], runtime='onnxruntime', repeats=1, infer_batches=[1])
    model = next(iter(checked.values()))
    assert not model.training
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
        assert not torch.equal(logits[0], logits[1])  # the inputs' logits differ: a wrong graph would not match
        fresh = timm.create_model('mobilenet_zam').eval()(x)
    assert torch.equal(fresh[0], fresh[1])  # what the check compared before


@pytest.mark.parametrize('warmup, min_time, calls', [(0, 0.0, 0), (0, 0.01, 1), (2, 0.0, 2), (2, 0.01, 3)])
def test_warm_up_makes_the_calls_it_records(warmup, min_time, calls):
    """`--warmup 0` was recorded as 0 while two untimed calls ran (at least one, and the call sizing the rounds)."""
    from zamzoo.bench.models import _Runner

    seen = []
    model = _Net()
    model.register_forward_hook(lambda *args: seen.append(1))
    _Runner('net', model, 1, (3, 8, 8), torch.device('cpu'), train=False).warmup(warmup, min_time)
    assert len(seen) == calls
