"""The 'top-1 vs plain (95% CI)' columns of the generated README / MODEL_CARD tables: a model's final-epoch top-1
minus its plain backbone's, paired by seed, from the per-seed top-1 the manifest records (issue 18 item 6)."""
import json
import math

import pytest
from scipy import stats

from zamzoo.bench.tables import marker, update_tables
from zamzoo.pretrained.manifest import record_errors
from zamzoo.publish.push import manifest_record

ZAM = {0: 77.31, 1: 76.90, 2: 77.02}
PLAIN = {0: 76.20, 1: 76.85, 2: 76.40}


def _report(tmp_path):
    row = {'model': 'resnet18_zam', 'backbone': 'resnet18', 'baseline': 'resnet18_plain', 'params': 11_220_132,
           'macs': 555_468_800, 'seed_flops': 558_225_180, 'baseline_params': 11_220_132}
    report = {'schema': 1, 'kind': 'zamzoo-bench-models', 'created': '2025-01-02T03:04:05+00:00',
              'device': {'type': 'cpu', 'name': 'Test CPU'}, 'settings': {'latency': False},
              'versions': {'torch': '2'}, 'results': [row, dict(row, model='resnet18_plain')]}
    path = tmp_path / 'models_cpu.json'
    path.write_text(json.dumps(report))
    return path


def _record(model, by_seed, tag='cifar100'):
    values = list(by_seed.values())
    return {'model': model, 'tag': tag, 'repo_id': f'zamzoo/{model}.{tag}',
            'hub_commit': '0123456789abcdef0123456789abcdef01234567', 'filename': 'model.safetensors',
            'sha256': 'ab' * 32, 'dataset': tag, 'recipe': 'zam', 'seeds': sorted(by_seed),
            'top1_mean': sum(values) / len(values), 'top1_by_seed': {str(s): v for s, v in by_seed.items()}}


def _tables(tmp_path, records):
    manifest = tmp_path / 'manifest.json'
    manifest.write_text(json.dumps({'schema': 1, 'checkpoints': records}))
    readme, card = tmp_path / 'README.md', tmp_path / 'MODEL_CARD.md'
    block = lambda name: f'{marker(name)}\nstale\n{marker(name, end=True)}\n'  # noqa: E731
    readme.write_text(block('models-table') + block('citations'))
    card.write_text(block('zoo') + block('recipes') + block('models-table') + block('overhead') + block('citations'))
    update_tables([_report(tmp_path)], manifest, readme, card)
    return [_cells(path.read_text()) for path in (readme, card)]


def _cells(text):
    """{model: {column header: cell}} of the models table in `text`."""
    table = text.split(marker('models-table'))[1].split('\n\n')[0].strip().splitlines()
    split = lambda line: [c.strip() for c in line.strip('|').split('|')]  # noqa: E731
    head = split(table[0])
    return {row[0].strip('`'): dict(zip(head, row)) for row in map(split, table[2:])}


def test_vs_plain_column_is_the_paired_t_interval(tmp_path):
    seeds = sorted(ZAM)
    result = stats.ttest_rel([ZAM[s] for s in seeds], [PLAIN[s] for s in seeds])
    ci = result.confidence_interval(0.95)
    diff = sum(ZAM[s] - PLAIN[s] for s in seeds) / len(seeds)
    expected = f'{diff:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]'
    assert expected == '+0.59 [-0.72, +1.91]'  # the numbers themselves, against a silent change
    for table in _tables(tmp_path, [_record('resnet18_zam', ZAM), _record('resnet18_plain', PLAIN)]):
        assert table['resnet18_zam']['top-1 vs plain CIFAR-100 (95% CI)'] == expected
        assert table['resnet18_zam']['top-1 vs plain CIFAR-10 (95% CI)'] == '–'  # nothing published on CIFAR-10
        assert table['resnet18_plain']['top-1 vs plain CIFAR-100 (95% CI)'] == '0 (plain)'


@pytest.mark.parametrize('records', [
    [_record('resnet18_zam', ZAM)],  # the plain backbone unpublished
    [_record('resnet18_plain', PLAIN)],  # the model unpublished
    [_record('resnet18_zam', ZAM), _record('resnet18_plain', {0: 76.2, 5: 76.0})],  # one seed in common
    [dict(_record('resnet18_zam', ZAM), top1_by_seed=None), _record('resnet18_plain', PLAIN)],  # no per-seed top-1
    [_record('resnet18_zam', ZAM), _record('resnet18_plain', PLAIN, tag='cifar10')],  # other data sets
], ids=['plain-unpublished', 'model-unpublished', 'one-shared-seed', 'no-per-seed', 'other-dataset'])
def test_vs_plain_is_a_dash_without_two_shared_seeds(tmp_path, records):
    for table in _tables(tmp_path, records):
        assert table['resnet18_zam']['top-1 vs plain CIFAR-100 (95% CI)'] == '–'
        assert table['resnet18_zam']['top-1 vs plain CIFAR-10 (95% CI)'] == '–'


@pytest.mark.parametrize('by_seed, problem', [
    ({'0': 77.0, '7': 76.0}, "keys ['7'] that are not seeds"),
    ({'0': math.nan}, "seeds ['0'] are not finite"),
    ({'0': '77.0'}, "seeds ['0'] are not finite"),
    ({'0': True}, "seeds ['0'] are not finite"),
    ([77.0], "field 'top1_by_seed' has type list"),
])
def test_manifest_checks_top1_by_seed(by_seed, problem):
    record = dict(_record('resnet18_zam', ZAM), top1_by_seed=by_seed)
    assert any(problem in e for e in record_errors(record)), record_errors(record)
    assert record_errors(_record('resnet18_zam', ZAM)) == []


def test_push_records_the_per_seed_top1_of_the_export():
    results = {'model': 'resnet18_zam', 'tag': 'cifar100', 'sha256': 'ab' * 32, 'size_bytes': 10, 'seeds': [0, 1, 2],
               'top1': {'mean': 77.0, 'std': 0.2},
               'runs': [{'seed': 0, 'top1': 77.31}, {'seed': 1, 'top1': 76.9}, {'seed': 2, 'top1': None}]}
    record = manifest_record(results, 'zamzoo/resnet18_zam.cifar100', '0123456789abcdef0123456789abcdef01234567')
    assert record['top1_by_seed'] == {'0': 77.31, '1': 76.9}
    assert manifest_record(dict(results, runs=[]), record['repo_id'], record['hub_commit'])['top1_by_seed'] is None


def test_compare_uses_the_same_paired_test():
    from zamzoo import pairing
    from zamzoo.compare import stats as compare_stats
    assert compare_stats.paired_test is pairing.paired_test
