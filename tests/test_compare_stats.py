"""The statistics and the report files of `zamzoo compare` (zamzoo/compare/stats.py, report.py), on hand-made
per-seed top-1 values: numbers checked against hand computations, degenerate cells decided without NaN."""
import ast
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

import zamzoo.compare.report
import zamzoo.compare.stats
from zamzoo.compare.report import CompareSetup, write_report
from zamzoo.compare.stats import (BETTER, NO_DIFFERENCE, SINGLE_PAIR, T_TEST, TIED, WORSE, ArmResult, compare_cells,
                                  detectable_difference, holm, paired_test, probability_of_improvement, seeds_needed,
                                  verdict)
from zamzoo.errors import NonFiniteError, UsageError, ZamzooError
from zamzoo.pairing import paired_by_seed

CELL_KEYS = ['backbone', 'baseline', 'n', 'candidate_mean', 'candidate_std', 'baseline_mean', 'baseline_std',
             'diff_mean', 'diff_ci', 'p_value', 'p_holm', 'prob_improvement', 'mde', 'verdict', 'seeds_needed',
             'test', 'seeds', 'diverged_seeds', 'dropped']
REPORT_KEYS = ['name', 'module', 'source_sha256', 'dataset', 'recipe', 'epochs', 'seeds', 'method', 'cells',
               'unfinished_runs', 'cost', 'baseline_cost', 'cost_conditions', 'contract']
COST_KEYS = ['backbone', 'attention', 'params_added', 'macs_added', 'cpu_latency_ratio', 'cpu_latency_iqr',
             'train_images_per_s_ratio', 'train_images_per_s_iqr', 'train_images_per_s_note']
SETUP = CompareSetup(name='mymod', module='pkg.mod:MyMod', source_sha256='ab' * 32, dataset='cifar100',
                     recipe='cifar', epochs=2, seeds=[0, 1, 2])


def arm(attention, values, backbone='resnet18', **kwargs):
    return ArmResult(backbone, attention, dict(enumerate(values)), **kwargs)


def strict_json(path):
    def refuse(name):
        raise AssertionError(f'{name} in {path}')
    return json.loads(path.read_text(), parse_constant=refuse)


def t_quantile_df2(p):
    """The t distribution's quantile for 2 degrees of freedom, in closed form: (2p-1) sqrt(2 / (1 - (2p-1)^2))."""
    u = 2 * p - 1
    return u * math.sqrt(2 / (1 - u * u))


def test_paired_t_matches_a_hand_computation():
    # differences 1.1, 1.1, 0.3: mean 0.8333, s_d = sqrt(0.64 / 3) = 0.46188, se = s_d / sqrt(3), t = 3.125
    result = paired_test([70.1, 71.3, 69.8], [69.0, 70.2, 69.5])
    mean, s_d = 2.5 / 3, math.sqrt(0.64 / 3)
    se = s_d / math.sqrt(3)
    t = mean / se
    assert t == pytest.approx(3.125)
    # two-sided p for 2 degrees of freedom: 1 - t / sqrt(2 + t^2)
    assert result.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert result.p_value == pytest.approx(0.0889494, abs=1e-6)
    half = t_quantile_df2(0.975) * se
    assert result.diff_mean == pytest.approx(mean)
    assert result.diff_ci == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert result.diff_ci == pytest.approx((-0.31404, 1.98071), abs=1e-5)
    assert result.mde == pytest.approx((t_quantile_df2(0.975) + t_quantile_df2(0.8)) * se, rel=1e-9)


def test_identical_arms_are_no_detectable_difference_and_report_json_has_no_nan(tmp_path):
    seeds = [70.1, 71.3, 69.8]
    losses = {0: 0.91, 1: 0.88, 2: 0.93}  # the same runs: the same test losses too
    mine, theirs = arm('mymod', seeds, test_loss_by_seed=losses), arm('se', seeds, test_loss_by_seed=losses)
    (cell,) = compare_cells([mine], [theirs])
    assert (cell.diff_mean, cell.diff_ci, cell.p_value, cell.p_holm) == (0.0, (0.0, 0.0), 1.0, 1.0)
    assert cell.verdict == NO_DIFFERENCE and cell.prob_improvement == 0.5 and cell.seeds_needed is None
    write_report(tmp_path, SETUP, [mine], [theirs], contract={})
    report = strict_json(tmp_path / 'report.json')
    assert report['cells'][0]['diff_ci'] == [0.0, 0.0] and report['cells'][0]['verdict'] == NO_DIFFERENCE
    assert 'identical runs' in (tmp_path / 'report.md').read_text()


def test_a_clear_effect_with_three_seeds_is_better_or_worse():
    strong, weak = [75.0, 75.6, 74.8], [70.1, 70.4, 70.0]
    (better,) = compare_cells([arm('mymod', strong)], [arm('plain', weak)])
    (worse,) = compare_cells([arm('mymod', weak)], [arm('plain', strong)])
    assert better.verdict == BETTER and better.p_holm < 0.05 and better.diff_ci[0] > 0
    assert worse.verdict == WORSE and worse.p_holm < 0.05 and worse.diff_ci[1] < 0
    assert (better.prob_improvement, worse.prob_improvement) == (1.0, 0.0)


def test_holm_over_several_cells_equals_the_formula():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # step-down: never below an earlier adjusted p
    candidate = arm('mymod', [75.0, 75.6, 74.8, 75.1])
    baselines = [arm('plain', [70.1, 70.4, 70.0, 70.6]), arm('se', [74.9, 75.2, 74.9, 74.8]),
                 arm('eca', [74.0, 75.9, 75.3, 74.2])]
    cells = compare_cells([candidate], baselines)
    p = [c.p_value for c in cells]
    order = sorted(range(3), key=p.__getitem__)
    expected, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * p[i]))
        expected[i] = running
    assert [c.p_holm for c in cells] == pytest.approx(expected)
    assert cells[0].verdict == BETTER and cells[0].p_holm == pytest.approx(3 * cells[0].p_value)


def test_probability_of_improvement_counts_ties_half():
    # 9 pairs: wins 1>0, 2>0, 3>2, 3>2, 3>0 = 5; ties 2=2 twice = 2; (5 + 2/2) / 9
    assert probability_of_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    assert probability_of_improvement([5.0], [5.0]) == 0.5


def test_smallest_detectable_difference_shrinks_with_seeds():
    mdes = [detectable_difference(0.5, n) for n in range(2, 12)]
    assert all(a > b for a, b in zip(mdes, mdes[1:]))
    # the same spread of differences, measured with more seeds
    few = paired_test([71.0, 70.2, 70.9], [70.0, 70.0, 70.0])
    many = paired_test([71.0, 70.2, 70.9] * 3, [70.0] * 9)
    assert many.mde < few.mde


def test_seeds_needed_is_the_fewest_that_detect_the_observed_difference():
    n = seeds_needed(0.3, 0.5)
    assert detectable_difference(0.5, n) <= 0.3 < detectable_difference(0.5, n - 1)
    assert seeds_needed(0.0, 0.5) is None
    result = paired_test([70.4, 70.1, 70.6], [70.0, 70.0, 70.0])
    assert result.seeds_needed == seeds_needed(result.diff_mean, statistics.stdev([0.4, 0.1, 0.6]))


def test_a_single_pair_has_no_interval_and_no_verdict():
    (cell,) = compare_cells([arm('mymod', [75.0])], [arm('plain', [70.0])])
    assert cell.n == 1 and cell.diff_mean == 5.0
    assert (cell.diff_ci, cell.p_value, cell.p_holm, cell.mde, cell.candidate_std) == (None, None, None, None, None)
    assert cell.verdict == NO_DIFFERENCE


def test_equal_non_zero_differences_use_the_sign_test():
    # equal up to float rounding: 70.1 - 69.0 and 71.1 - 70.0 differ in the last bits
    few = paired_test([70.1, 71.1, 72.1], [69.0, 70.0, 71.0])
    assert few.p_value == pytest.approx(0.25) and few.diff_ci is None and few.mde is None
    (cell,) = compare_cells([arm('mymod', [70.1, 71.1, 72.1])], [arm('plain', [69.0, 70.0, 71.0])])
    assert cell.verdict == NO_DIFFERENCE and cell.seeds_needed == 6
    (cell,) = compare_cells([arm('mymod', [71.5] * 6)], [arm('plain', [70.0] * 6)])
    assert cell.p_value == pytest.approx(2 / 2 ** 6) and cell.diff_ci == pytest.approx((1.5, 1.5))
    assert cell.verdict == BETTER


def test_only_seeds_both_arms_have_are_paired():
    candidate = ArmResult('resnet18', 'mymod', {0: 71.0, 1: 72.0, 5: 99.0})
    (cell,) = compare_cells([candidate], [ArmResult('resnet18', 'plain', {0: 70.0, 1: 70.5, 2: 10.0})])
    assert cell.n == 2 and cell.candidate_mean == 71.5 and cell.baseline_mean == 70.25
    assert [(r['seed'], r['arm'], r['state']) for r in cell.dropped] == [(2, 'candidate', 'missing'),
                                                                          (5, 'baseline', 'missing')]
    (cell,) = compare_cells([candidate], [ArmResult('resnet18', 'plain', {3: 70.0})])  # no seed in common
    assert (cell.n, cell.diff_mean, cell.p_value, cell.verdict) == (0, None, None, 'no verdict')


def test_bad_inputs_are_refused():
    with pytest.raises(NonFiniteError, match='seeds'):
        arm('mymod', [70.0, float('nan')])
    with pytest.raises(UsageError, match='no candidate'):
        compare_cells([arm('mymod', [70.0])], [arm('plain', [70.0], backbone='resnet34')])
    # a candidate backbone without baselines was left out of the report in silence
    with pytest.raises(UsageError, match=r"candidate runs on backbones \['mobilenet'\] have no baseline"):
        compare_cells([arm('mymod', [70.0, 71.0]), arm('mymod', [60.0, 61.0], backbone='mobilenet')],
                      [arm('plain', [69.0, 70.0])])
    with pytest.raises(UsageError, match='cost'):
        arm('mymod', [70.0], cost={'latency': 1.0})
    # top-1 is a number in [0, 100] (178 made the noise floor's p (1 - p) negative); a test set has images
    for values in ([None], [0.71, 178.0], ['70.0']):
        with pytest.raises(UsageError, match=r'top-1 must be a'):
            arm('mymod', values)
    for size in (-5, 0, 2.5, True):
        with pytest.raises(UsageError, match='test_images must be a positive whole number'):
            arm('mymod', [70.0], test_images=size)
    # the pairing itself (bench tables' "top-1 vs plain" too): a NaN top-1 was a difference of 0.00
    with pytest.raises(NonFiniteError, match='finite'):
        paired_by_seed({0: float('nan'), 1: 70.0, 2: 71.0}, {0: 70.0, 1: 69.0, 2: 70.5})
    assert verdict(float('nan'), 1.0) == verdict(float('nan'), -1.0) == NO_DIFFERENCE  # was better / worse


def test_the_four_files_and_report_json_keys(tmp_path):
    cost = {'params_added': 120, 'macs_added': 34000, 'cpu_latency_ratio': 1.12, 'train_images_per_s_ratio': 0.9}
    candidates = [arm('mymod', [75.0, 75.6, 74.8], runs=['a0', 'a1', 'a2'], cost=cost),
                  arm('mymod', [60.0, 61.0, 60.5], backbone='mobilenetv2')]
    baselines = [arm('plain', [70.1, 70.4, 70.0], runs=['p0', 'p1', 'p2'], cost={'cpu_latency_ratio': 1.0}),
                 arm('se', [75.0, 75.6, 74.8]), arm('plain', [60.0], backbone='mobilenetv2')]
    path = write_report(tmp_path / 'report', SETUP, candidates, baselines, contract={'shape': 'ok'})
    out = tmp_path / 'report'
    assert path == out / 'report.md'
    assert sorted(p.name for p in out.iterdir()) == ['cost.png', 'forest.png', 'report.json', 'report.md']
    for png in ('cost.png', 'forest.png'):
        assert (out / png).read_bytes().startswith(b'\x89PNG')
    report = strict_json(out / 'report.json')
    assert list(report) == REPORT_KEYS and report['contract'] == {'shape': 'ok'} and report['seeds'] == [0, 1, 2]
    assert [list(cell) for cell in report['cells']] == [CELL_KEYS] * 3
    assert [(c['backbone'], c['baseline'], c['verdict']) for c in report['cells']] == [
        ('resnet18', 'plain', BETTER), ('resnet18', 'se', NO_DIFFERENCE), ('mobilenetv2', 'plain', NO_DIFFERENCE)]
    # which test made each cell's interval and p-value (equal top-1 without test losses or a test-set size: tied)
    assert [(c['test'], c['seeds']) for c in report['cells']] == [(T_TEST, 3), (TIED, 3), (SINGLE_PAIR, 3)]
    assert report['cost'] == [{'backbone': 'resnet18', 'attention': 'mymod', 'cpu_latency_iqr': None,
                               'train_images_per_s_iqr': None, 'train_images_per_s_note': None, **cost},
                              {'backbone': 'mobilenetv2', 'attention': 'mymod', **{k: None for k in COST_KEYS[2:]}}]
    assert [list(row) for row in report['cost']] == [COST_KEYS] * 2
    md = path.read_text()
    for text in ('| resnet18 | plain | 3 |', 'insufficient seeds: 1 pair', '`p0`', 'paired t-test', 'Holm',
                 'final epoch', '34,000'):
        assert text in md


def test_nothing_is_written_when_the_report_cannot_be_made(tmp_path):
    with pytest.raises(NonFiniteError):
        write_report(tmp_path, SETUP, [arm('mymod', [75.0, 75.6])], [arm('plain', [70.0, 70.2])],
                     contract={'latency': float('nan')})
    assert list(tmp_path.iterdir()) == []


def test_scipy_and_matplotlib_are_imported_only_inside_functions():
    # so `import zamzoo` (and the lead's CLI wiring) does not load them; checked on the source, without a slow
    # fresh interpreter
    for module in (zamzoo.compare.stats, zamzoo.compare.report):
        tree = ast.parse(Path(module.__file__).read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top_level for a in n.names] + [n.module or '' for n in top_level
                                                                 if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split('.')[0] in ('scipy', 'matplotlib')], module.__name__


def test_without_scipy_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'scipy', None)  # what `import scipy` meets where it is not installed
    with pytest.raises(ZamzooError, match=r"need scipy: pip install scipy"):
        paired_test([70.0, 71.0], [69.0, 71.0])


def test_equal_nonzero_differences_use_the_test_sets_binomial_noise():
    """Three seeds where plain scores 100% and a module that zeroes its input 33.3% every time: s_d is 0, so the
    t-test takes the test set's own noise as s_d (36 test images) and calls it worse; without the test set's size
    only the sign test is left, which cannot reach 5% with three pairs."""
    from scipy import stats as sps

    zero = ArmResult('mobilenet', 'zero', {0: 100 / 3, 1: 100 / 3, 2: 100 / 3}, test_images=36)
    plain = ArmResult('mobilenet', 'plain', {0: 100.0, 1: 100.0, 2: 100.0}, test_images=36)
    [cell] = compare_cells([zero], [plain])
    noise = 100 * math.sqrt((1 / 3) * (2 / 3) / 36)
    t = (100 / 3 - 100) / (noise / math.sqrt(3))
    assert cell.verdict == 'worse'
    assert cell.p_value == pytest.approx(2 * sps.t.sf(abs(t), 2))
    half = sps.t.ppf(0.975, 2) * noise / math.sqrt(3)
    assert cell.diff_ci == pytest.approx((100 / 3 - 100 - half, 100 / 3 - 100 + half))
    unknown = compare_cells([ArmResult('mobilenet', 'zero', zero.top1_by_seed)],
                            [ArmResult('mobilenet', 'plain', plain.top1_by_seed)])[0]
    assert unknown.verdict == 'no detectable difference' and unknown.p_value == pytest.approx(0.25)
