"""Equal top-1 in every seed is no proof of identical runs (zamzoo.pairing.paired_test): two networks both at
chance score alike. Only runs shown to be the same computation (the same final test loss to the last bit, as an
identity module and the plain backbone give) are 'identical runs' with [0, 0]; other ties get the test set's noise
floor, or no interval where the test set's size is unknown -- never [0, 0] and a detectable difference of 0."""
import math
from types import SimpleNamespace

import pytest
from scipy import stats as sps

from zamzoo.bench.tables import _vs_plain
from zamzoo.compare.report import CompareSetup, write_report
from zamzoo.compare.runs import Arms, arm_results
from zamzoo.compare.stats import NO_DIFFERENCE, ArmResult, compare_cells
from zamzoo.pairing import (FLOORED_T_TEST, IDENTICAL, SIGN_TEST_MIN_PAIRS, SINGLE_PAIR, TIED, detectable_difference,
                            paired_by_seed, paired_test)

CHANCE = [100 / 3] * 3  # three classes, every seed at chance
ZERO_LOSS, PLAIN_LOSS = [1.0994, 1.0987, 1.0988], [1.3196, 1.3748, 1.4650]  # a module that zeroes its input, plain
SETUP = CompareSetup(name='zero', module='known.py:Zero', source_sha256=None, dataset='folder', recipe='finetune',
                     epochs=1, seeds=[0, 1, 2])


def floor(p: float, test_images: int) -> float:
    """The test set's binomial noise of a difference of two runs at accuracy p, as statistics.md writes it."""
    return 100 * math.sqrt(2 * p * (1 - p) / test_images)


def test_equal_top1_from_different_runs_gets_the_test_sets_noise_floor():
    result = paired_test(CHANCE, CHANCE, 90, candidate_loss=ZERO_LOSS, baseline_loss=PLAIN_LOSS)
    noise = floor(1 / 3, 90)
    half = sps.t.ppf(0.975, 2) * noise / math.sqrt(3)
    assert result.test == FLOORED_T_TEST and result.diff_mean == 0.0 and result.p_value == pytest.approx(1.0)
    assert result.diff_ci == pytest.approx((-half, half)) and half > 15  # one image in 90 is 1.1 points
    assert result.mde == pytest.approx(detectable_difference(noise, 3)) and result.mde > 20
    # as wide as the interval of one image's difference in every seed, which already had the floor
    apart = paired_test([100 / 3 + 100 / 90] * 3, CHANCE, 90)
    assert result.diff_ci[1] - result.diff_ci[0] == pytest.approx(apart.diff_ci[1] - apart.diff_ci[0], rel=0.01)


@pytest.mark.parametrize('losses', [None, (ZERO_LOSS, None), (ZERO_LOSS, PLAIN_LOSS),
                                    (PLAIN_LOSS[:2] + [None], PLAIN_LOSS[:2] + [None]),
                                    (PLAIN_LOSS[:2], PLAIN_LOSS[:2])])
def test_runs_are_identical_only_with_equal_test_losses_for_every_pair(losses):
    """No losses, one arm's missing, losses that differ, a seed without one, fewer losses than pairs: not shown
    identical, so an interval from the noise floor."""
    candidate_loss, baseline_loss = losses or (None, None)
    result = paired_test(CHANCE, CHANCE, 90, candidate_loss=candidate_loss, baseline_loss=baseline_loss)
    assert result.test == FLOORED_T_TEST and result.diff_ci[0] < -15 and result.mde > 20


def test_the_same_runs_twice_stay_identical():
    result = paired_test(CHANCE, CHANCE, 90, candidate_loss=PLAIN_LOSS, baseline_loss=list(PLAIN_LOSS))
    assert (result.test, result.diff_mean, result.diff_ci, result.p_value, result.mde) == (
        IDENTICAL, 0.0, (0.0, 0.0), 1.0, 0.0)


def test_equal_losses_with_unequal_top1_are_not_identical_runs():
    """Equal losses are evidence only together with equal top-1 in every pair."""
    result = paired_test([70.0, 71.0, 72.0], [69.0, 70.0, 71.0], 90, candidate_loss=PLAIN_LOSS,
                         baseline_loss=PLAIN_LOSS)
    assert result.test == FLOORED_T_TEST and result.diff_mean == pytest.approx(1.0)


@pytest.mark.parametrize('n', [3, SIGN_TEST_MIN_PAIRS, 10])
def test_equal_top1_without_the_test_sets_size_has_no_interval(n):
    """The generated tables know only each seed's top-1: a tie is no detectable difference without an interval,
    however many pairs (the sign test has no untied pair), and both arms at 100% alike (no binomial noise)."""
    for top1, test_images in (([100 / 3] * n, None), ([100.0] * n, None), ([100.0] * n, 90)):
        result = paired_test(top1, top1, test_images)
        assert (result.test, result.diff_ci, result.p_value, result.mde) == (TIED, None, 1.0, None)


def test_the_tables_print_no_zero_width_interval_for_a_tie():
    tie = paired_by_seed({0: 70.0, 1: 71.0, 2: 69.0}, {0: 70.0, 1: 71.0, 2: 69.0})
    assert tie.diff_ci is None and tie.test == TIED
    by_key = {(name, 'cifar100'): {'top1_by_seed': {'0': 70.0, '1': 71.0, '2': 69.0}}
              for name in ('resnet18_se', 'resnet18_plain')}
    assert _vs_plain('resnet18_se', 'cifar100', by_key) == '+0.00 (no 95% interval: 3 equal differences)'


def test_compare_reports_a_zero_module_at_chance_with_the_noise_floor(tmp_path):
    """The reviewer's run (1 epoch, both arms at chance on 90 images, the losses apart): not 'identical runs'."""
    zero = ArmResult('mobilenet', 'zero', dict(enumerate(CHANCE)), test_images=90,
                     test_loss_by_seed=dict(enumerate(ZERO_LOSS)))
    plain = ArmResult('mobilenet', 'plain', dict(enumerate(CHANCE)), test_images=90,
                      test_loss_by_seed=dict(enumerate(PLAIN_LOSS)))
    [cell] = compare_cells([zero], [plain])
    assert cell.verdict == NO_DIFFERENCE and cell.diff_ci[0] < -15 < 15 < cell.diff_ci[1] and cell.mde > 20
    write_report(tmp_path, SETUP, [zero], [plain], contract={})
    verdicts = (tmp_path / 'report.md').read_text().split('## Cost')[0]  # the cost table has a plain row too
    [row] = [line for line in verdicts.splitlines() if line.startswith('| mobilenet') and '| plain |' in line]
    assert 'identical runs' not in row and '[+0.00, +0.00]' not in row
    assert f'smallest detectable difference {cell.mde:.2f} points' in row


def test_compare_takes_each_runs_test_loss_from_its_results():
    """arm_results hands results.json's test_loss on, so the same runs twice are 'identical runs'."""
    arms = Arms('identity', ('plain',), ('mobilenet',))
    runs, results = [], {}
    for attention in ('identity', 'plain'):
        for seed, loss in enumerate(PLAIN_LOSS):
            name = f'mobilenet_{attention}-s{seed}'
            runs.append(SimpleNamespace(name=name, folder=name,
                                        config=SimpleNamespace(model=f'mobilenet_{attention}', seed=seed)))
            results[name] = {'top1': 100 / 3, 'test_loss': loss, 'test_images': 90, 'images_per_s': 100.0}
    candidates, baselines = arm_results(arms, runs, results, {})
    assert candidates[0].test_loss_by_seed == dict(enumerate(PLAIN_LOSS)) == baselines[0].test_loss_by_seed
    [cell] = compare_cells(candidates, baselines)
    assert cell.test == IDENTICAL and cell.diff_ci == (0.0, 0.0)


def test_one_seed_of_identical_runs_is_identical_and_one_of_other_runs_a_single_pair():
    """One pair shown to be one computation is known exactly ([0, 0]); one pair of other runs has no interval."""
    same = paired_test([70.0], [70.0], 10000, candidate_loss=[1.0], baseline_loss=[1.0])
    assert (same.test, same.n, same.diff_mean, same.diff_ci, same.p_value) == (IDENTICAL, 1, 0.0, (0.0, 0.0), 1.0)
    for loss in ([1.25], None):
        other = paired_test([70.0], [70.0], 10000, candidate_loss=loss, baseline_loss=[1.0])
        assert (other.test, other.diff_ci, other.p_value) == (SINGLE_PAIR, None, None)
