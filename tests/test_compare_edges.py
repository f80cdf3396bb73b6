"""Edges of `zamzoo compare`'s statistics and report, on hand-made run folders and top-1 values (nothing trains):
a mean difference that is float noise, an absurd seeds-needed count, runs that diverged, failed or are missing,
ties at 100%, repeated seeds, the MACs convention."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from zamzoo.cli import main
from zamzoo.compare.report import CompareSetup, write_report
from zamzoo.compare.runs import Arms, arm_results, run_outcomes
from zamzoo.compare.stats import (DIVERGED, FAILED, HARMFUL, MISSING, NO_DIFFERENCE, NO_VERDICT, TIED, ArmResult,
                                  UnfinishedRun, compare_cells)
from zamzoo.errors import UsageError
from zamzoo.pairing import SEEDS_NEEDED_CAP, paired_by_seed, paired_test, seeds_needed

SETUP = CompareSetup(name='mymod', module='pkg.mod:MyMod', source_sha256=None, dataset='folder', recipe='finetune',
                     epochs=3, seeds=[0, 1, 2])
DIVERGED_LINE = ('NonFiniteError: the training loss is NaN or infinite (7 bad steps by step 12 of this epoch, 0 '
                 'tolerated): the training diverged (learning rate too high?)')


def top1(correct, n):
    return 100.0 * correct / n  # as zamzoo/train/evaluate.py computes it


def strict_json(path):
    def refuse(name):
        raise AssertionError(f'{name} in {path}')
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def verdict_row(md: str, baseline: str) -> str:
    verdicts = md.split('## Cost')[0]  # the cost table has a row per arm too
    [row] = [line for line in verdicts.splitlines() if line.startswith('| mobilenet') and f'| {baseline} |' in line]
    return row


# ------------------------------------------------------------------ 1. a mean difference that is float noise
@pytest.mark.parametrize('n, candidate, baseline', [
    (10000, (7766, 7727), (7764, 7729)),  # CIFAR: +2 then -2 images, float mean -7.1e-15
    (30, (12, 20, 29), (17, 27, 17)),      # -5, -7, +12 images, float mean 4.7e-15
])
def test_a_mean_difference_of_float_noise_is_zero(tmp_path, n, candidate, baseline):
    a, b = [top1(c, n) for c in candidate], [top1(c, n) for c in baseline]
    assert sum(x - y for x, y in zip(a, b)) != 0  # the float noise these cases are about
    mine = ArmResult('mobilenet', 'mine', dict(enumerate(a)), test_images=n)
    plain = ArmResult('mobilenet', 'plain', dict(enumerate(b)), test_images=n)
    [cell] = compare_cells([mine], [plain])
    assert cell.diff_mean == 0.0 and cell.seeds_needed is None and cell.verdict == NO_DIFFERENCE
    assert paired_by_seed(dict(enumerate(a)), dict(enumerate(b))).seeds_needed is None  # the tables' path
    write_report(tmp_path, SETUP, [mine], [plain], contract={})
    row = verdict_row((tmp_path / 'report.md').read_text(), 'plain')
    assert row.split(' | ')[9] == '–'  # seeds needed


def test_an_absurd_seeds_needed_count_is_capped_and_shown_as_such(tmp_path):
    assert seeds_needed(1e-6, 10) == SEEDS_NEEDED_CAP + 1
    assert seeds_needed(1e-12, 1.0) == SEEDS_NEEDED_CAP + 1  # once ~1e24: no overflow, no TypeError
    # ordinary counts unchanged: the fewest pairs whose detectable difference is at most 0.3 (t quantiles, scipy)
    from scipy import stats
    mde = lambda k: (stats.t.ppf(0.975, k - 1) + stats.t.ppf(0.8, k - 1)) * 0.5 / k ** 0.5  # noqa: E731
    assert seeds_needed(0.3, 0.5) == 24 and mde(24) <= 0.3 < mde(23)
    a, b = [70.0, 71.0, 72.0], [70.5, 70.0, 72.49]  # mean difference 0.0033, s_d 0.86
    assert paired_test(a, b).seeds_needed == SEEDS_NEEDED_CAP + 1
    write_report(tmp_path, SETUP, [ArmResult('mobilenet', 'mine', dict(enumerate(a)))],
                 [ArmResult('mobilenet', 'plain', dict(enumerate(b)))], contract={})
    assert f'| > {SEEDS_NEEDED_CAP} |' in verdict_row((tmp_path / 'report.md').read_text(), 'plain')


# ------------------------------------------------------------------ 2, 3. runs without a result
def make_runs(root: Path, outcomes: dict):
    """Run folders as train and the zoo leave them: (attention, seed) -> a top-1 (done), DIVERGED, FAILED or MISSING
    (no folder); returns the planned runs as arm_results reads them."""
    runs = []
    for (attention, seed), outcome in outcomes.items():
        name = f'mobilenet_{attention}-folder-finetune-s{seed}'
        folder = root / name
        runs.append(SimpleNamespace(name=name, folder=folder,
                                    config=SimpleNamespace(model=f'mobilenet_{attention}', seed=seed)))
        if outcome == MISSING:
            continue
        folder.mkdir(parents=True)
        if outcome in (DIVERGED, FAILED):
            error = DIVERGED_LINE if outcome == DIVERGED else 'RuntimeError: DataLoader worker (pid 1234) was killed'
            (folder / 'failed.json').write_text(json.dumps({'status': 'failed', 'error': error}))
        else:
            (folder / 'results.json').write_text(json.dumps({
                'status': 'completed', 'top1': outcome, 'test_images': 36, 'test_loss': 1.0 + outcome / 1000,
                'images_per_s': 10.0}))
            (folder / 'config.json').write_text(json.dumps({'model': f'mobilenet_{attention}', 'seed': seed}))
            (folder / 'metrics.jsonl').write_text(json.dumps({'epoch': 1, 'train_loss': 1.0}) + '\n')
            save_file({'w': torch.zeros(1)}, str(folder / 'model.safetensors'))  # a finished run's files are whole
    return runs


def report_of(tmp_path, candidate: str, baselines, outcomes):
    runs = make_runs(tmp_path / 'runs', outcomes)
    results, unfinished = run_outcomes(runs)
    candidates, arms = arm_results(Arms(candidate, tuple(baselines), ('mobilenet',)), runs, results, {}, unfinished)
    out = tmp_path / 'report'
    write_report(out, SETUP, candidates, arms, contract={})
    return (out / 'report.md').read_text(), strict_json(out / 'report.json')


def test_runs_trained_on_other_data_are_not_paired(tmp_path):
    """Finished runs are reused by their settings, which name the data's path: data changed at that path after the
    baselines trained gave a report pairing candidate and baseline runs of different data, without a word."""
    from zamzoo.compare.runs import check_one_data
    runs = make_runs(tmp_path / 'runs', {('mine', 0): 60.0, ('mine', 1): 61.0, ('plain', 0): 50.0, ('plain', 1): 52.0})
    for run in runs:
        run.config.data = 'data/colours'
        old = run.config.model == 'mobilenet_plain'
        config = json.loads((run.folder / 'config.json').read_text())
        config['data_fingerprint'] = {'train': 'sha256 aaa' if old else 'sha256 bbb', 'val': 'sha256 ccc'}
        (run.folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r'trained on different data: 2 run\(s\) on .*aaa.* \(e.g. '
                                         r'mobilenet_plain-folder-finetune-s0\); 2 run\(s\) on .*bbb.*data/colours '
                                         r'changed after some of them were trained'):
        check_one_data(sorted(runs, key=lambda r: r.config.model, reverse=True))
    for run in runs[:2]:  # the candidate's runs made from the baselines' data: one data set again
        config = json.loads((run.folder / 'config.json').read_text())
        config['data_fingerprint']['train'] = 'sha256 aaa'
        (run.folder / 'config.json').write_text(json.dumps(config))
    check_one_data(runs)


def test_runs_whose_validation_images_were_held_out_by_seed_are_one_data_set(tmp_path):
    """--holdout holds out other images for each seed: a compare of two seeds trained every run, then refused to
    report, saying the data had changed."""
    from zamzoo.compare.runs import check_one_data
    runs = make_runs(tmp_path / 'runs', {('mine', 0): 60.0, ('mine', 1): 61.0, ('plain', 0): 50.0, ('plain', 1): 52.0})

    def record(run, whole):
        run.config.data = 'data/pets'
        config = json.loads((run.folder / 'config.json').read_text())
        config['data_fingerprint'] = {'train': f'sha256 t{run.config.seed}', 'val': f'sha256 v{run.config.seed}',
                                      'whole': whole}
        (run.folder / 'config.json').write_text(json.dumps(config))
    for run in runs:
        record(run, '12 files, sha256 www')
    check_one_data(runs)
    record(runs[-1], '12 files, sha256 xxx')  # the folder the split was made from changed
    with pytest.raises(UsageError, match=r'trained on different data: 3 run\(s\) on .*www.*; 1 run\(s\) on .*xxx'):
        check_one_data(runs)
    for run in runs:  # runs from before `whole`: said so, not that the data changed
        record(run, None)
        config = json.loads((run.folder / 'config.json').read_text())
        (run.folder / 'config.json').write_text(json.dumps(dict(config, args={'holdout': 0.25})))
    with pytest.raises(UsageError, match=r'mobilenet_mine-folder-finetune-s0 and 3 more: runs that hold out their '
                                         r'validation images by seed \(--holdout\), trained before zamzoo recorded'):
        check_one_data(runs)


def test_a_candidate_that_diverged_on_every_seed_is_harmful_and_reported(tmp_path):
    outcomes = {**{('huge', s): DIVERGED for s in range(3)}, **{('plain', s): 60.0 + s for s in range(3)}}
    md, report = report_of(tmp_path, 'huge', ['plain'], outcomes)
    [cell] = report['cells']
    assert cell['verdict'] == HARMFUL and cell['n'] == 0 and cell['diverged_seeds'] == [0, 1, 2]
    assert cell['diff_mean'] is None and cell['p_value'] is None and cell['prob_improvement'] is None
    assert cell['test'] is None and cell['seeds'] == 3  # no seed to test, of the three planned
    assert [(r['arm'], r['seed'], r['state']) for r in cell['dropped']] == [('candidate', s, DIVERGED)
                                                                           for s in range(3)]
    assert [(r['attention'], r['seed'], r['state']) for r in report['unfinished_runs']] == [
        ('huge', s, DIVERGED) for s in range(3)]
    assert report['unfinished_runs'][0]['detail'].startswith('NonFiniteError')
    row = verdict_row(md, 'plain')
    assert '**harmful**' in row and 'diverged on 3 of 3 seeds (0, 1, 2)' in row
    assert '## Runs without a result' in md and 'mobilenet_huge-folder-finetune-s1' in md


def test_a_candidate_that_diverged_on_some_seeds_is_not_scored_on_the_survivors(tmp_path):
    # seeds 0 and 1: far better than both baselines; seed 2: diverged (where se diverged too, the seed is dropped)
    outcomes = {('mine', 0): 90.0, ('mine', 1): 91.0, ('mine', 2): DIVERGED, ('mine', 3): 90.5,
                ('plain', 0): 50.0, ('plain', 1): 50.5, ('plain', 2): 51.0, ('plain', 3): 50.2,
                ('se', 0): 50.0, ('se', 1): 50.5, ('se', 2): DIVERGED, ('se', 3): 50.2}
    md, report = report_of(tmp_path, 'mine', ['plain', 'se'], outcomes)
    plain, se = report['cells']
    assert plain['verdict'] == HARMFUL and plain['n'] == 3 and plain['diverged_seeds'] == [2]
    assert plain['diff_mean'] > 30  # the survivors' numbers are shown, with no improvement claimed
    assert se['verdict'] == 'better' and se['n'] == 3 and se['diverged_seeds'] == []
    assert {(r['arm'], r['state']) for r in se['dropped']} == {('candidate', DIVERGED), ('baseline', DIVERGED)}
    row = verdict_row(md, 'plain')
    assert 'diverged on 1 of 4 seeds (2)' in row and 'no improvement claimed' in row and 'better' not in row
    assert 'n = 3 of 4 seeds: candidate diverged on seed 2; baseline se diverged on seed 2' in verdict_row(md, 'se')


@pytest.mark.parametrize('baseline_state', [MISSING, FAILED])
def test_a_divergence_where_the_baseline_has_no_result_is_only_dropped(tmp_path, baseline_state):
    """The cell was called harmful 'where the baseline did not' diverge, when the baseline's run of that seed was
    pending or failed: how the baseline fares there is not known."""
    outcomes = {('mine', 0): 71.0, ('mine', 1): 72.0, ('mine', 2): DIVERGED,
                ('plain', 0): 70.0, ('plain', 1): 70.5, ('plain', 2): baseline_state}
    md, report = report_of(tmp_path, 'mine', ['plain'], outcomes)
    [cell] = report['cells']
    assert cell['verdict'] != HARMFUL and cell['diverged_seeds'] == [] and cell['n'] == 2
    assert {(r['arm'], r['state']) for r in cell['dropped']} == {('candidate', DIVERGED), ('baseline', baseline_state)}
    assert f'candidate diverged on seed 2; baseline plain {baseline_state} on seed 2' in verdict_row(md, 'plain')
    # the report's method says so too (it said: harmful where the baseline 'did not' diverge)
    assert 'A seed where the candidate diverged and the baseline finished is a failure of the module' in md
    assert 'where the baseline diverged too, failed or has no result yet, the seed is only dropped' in md


def test_a_cell_significant_alone_but_not_after_holm_says_so():
    """Its verdict gave the smallest detectable difference as the reason, 0.87 points against an observed 0.92."""
    from zamzoo.compare.report import verdict_text
    mine = ArmResult('resnet18', 'mine', {0: 71.0, 1: 72.0, 2: 71.5, 3: 70.8, 4: 71.9})
    plain = ArmResult('resnet18', 'plain', {0: 70.2, 1: 70.3, 2: 71.2, 3: 70.1, 4: 70.8})
    others = [ArmResult('resnet18', name, {s: v + 0.01 * (s % 2) for s, v in mine.top1_by_seed.items()})
              for name in ('se', 'eca', 'simam', 'zam')]
    cell = compare_cells([mine], [plain, *others])[0]
    assert cell.p_value < 0.05 <= cell.p_holm and cell.verdict == NO_DIFFERENCE
    assert verdict_text(cell) == ("no detectable difference (p 0.017 alone, 0.084 after Holm's correction for the "
                                  "report's other comparisons)")


def test_a_baseline_without_a_finished_run_leaves_the_other_cells_report(tmp_path):
    outcomes = {**{('mine', s): 80.0 + s for s in range(3)}, **{('plain', s): 70.0 + 2 * s for s in range(3)},
                ('se', 0): FAILED, ('se', 1): DIVERGED, ('se', 2): MISSING}
    md, report = report_of(tmp_path, 'mine', ['plain', 'se'], outcomes)
    plain, se = report['cells']
    assert plain['verdict'] == 'better' and plain['dropped'] == []
    assert se['verdict'] == NO_VERDICT and se['n'] == 0 and se['diverged_seeds'] == []
    assert [(r['seed'], r['state']) for r in se['dropped']] == [(0, FAILED), (1, DIVERGED), (2, MISSING)]
    assert [r['detail'] for r in report['unfinished_runs']] == [
        'RuntimeError: DataLoader worker (pid 1234) was killed', DIVERGED_LINE, 'pending']
    row = verdict_row(md, 'se')
    assert ('no verdict: no seed both arms finished (baseline se failed on seed 0; baseline se diverged on seed 1; '
            'baseline se missing on seed 2)') in row
    assert '3 run(s) have no result' in md


def test_a_seed_one_arm_lacks_is_named_in_its_cell_and_the_header(tmp_path):
    # runs7: the baseline's seed 2 marked failed; the header names seeds 0, 1, 2 while the cell has n = 2
    outcomes = {**{('identity', s): 80.0 + s for s in range(3)}, ('plain', 0): 80.0, ('plain', 1): 81.0,
                ('plain', 2): FAILED}
    md, report = report_of(tmp_path, 'identity', ['plain'], outcomes)
    [cell] = report['cells']
    assert cell['n'] == 2 and [(r['arm'], r['seed'], r['state']) for r in cell['dropped']] == [
        ('baseline', 2, FAILED)]
    assert 'n = 2 of 3 seeds: baseline plain failed on seed 2' in verdict_row(md, 'plain')
    assert 'seeds 0, 1, 2. 1 run(s) have no result' in md


def test_an_arm_refuses_a_seed_that_is_both_finished_and_unfinished():
    with pytest.raises(ValueError, match='have a top-1 and are unfinished'):
        ArmResult('mobilenet', 'mine', {0: 70.0}, unfinished=(UnfinishedRun(0, FAILED, 'x'),))


# ------------------------------------------------------------------ 4. ties at 100%
def test_a_tie_at_100_percent_says_the_binomial_noise_is_zero(tmp_path):
    mine = ArmResult('mobilenet', 'ident2', {0: 100.0, 1: 100.0}, test_images=36,
                     test_loss_by_seed={0: 0.01, 1: 0.02})
    plain = ArmResult('mobilenet', 'plain', {0: 100.0, 1: 100.0}, test_images=36,
                      test_loss_by_seed={0: 0.03, 1: 0.04})  # runs that differ
    [cell] = compare_cells([mine], [plain])
    assert cell.test == TIED
    write_report(tmp_path, SETUP, [mine], [plain], contract={})
    row = verdict_row((tmp_path / 'report.md').read_text(), 'plain')
    assert 'unknown' not in row and "both arms at 100%: the test set's binomial noise is 0" in row


def test_a_cell_whose_differences_are_all_equal_names_the_test_its_numbers_come_from(tmp_path):
    """A module at chance (25%) against plain at 100% on 2 seeds: worse, -75 [-113.90, -36.10], p 0.026 from the
    test set's binomial noise, not from ttest_rel (whose s_d is 0) as the method's first line says: the cell did not
    say so; at 6 pairs of -1.0 without a test set size, the sign test's 'worse' neither."""
    mine = ArmResult('mobilenet', 'kill', {1: 25.0, 2: 25.0}, test_images=100, test_loss_by_seed={1: 1.4, 2: 1.39})
    plain = ArmResult('mobilenet', 'plain', {1: 100.0, 2: 100.0}, test_images=100, test_loss_by_seed={1: 0.1, 2: 0.2})
    write_report(tmp_path, SETUP, [mine], [plain], contract={})
    row = verdict_row((tmp_path / 'report.md').read_text(), 'plain')
    assert "-75.00 [-113.90, -36.10] | 0.026 |" in row
    assert "**worse** (all differences equal: t-test at the test set's binomial noise)" in row
    seeds = range(6)
    mine = ArmResult('mobilenet', 'kill', {s: 70.0 for s in seeds}, test_loss_by_seed={s: 1.0 + s for s in seeds})
    plain = ArmResult('mobilenet', 'plain', {s: 71.0 for s in seeds}, test_loss_by_seed={s: 2.0 + s for s in seeds})
    write_report(tmp_path, SETUP, [mine], [plain], contract={})
    row = verdict_row((tmp_path / 'report.md').read_text(), 'plain')
    assert '**worse** (all differences equal: sign test)' in row


# ------------------------------------------------------------------ 6. repeated seeds, the MACs convention
def test_repeated_seeds_are_refused(tmp_path, capsys):
    rc = main(['compare', '--attn', 'zam', '--baselines', 'plain', '--backbones', 'mobilenet', '--seeds', '0', '0',
               '1', '--dataset', 'folder', '--data', str(tmp_path / 'data'), '--out', str(tmp_path / 'runs'),
               '--device', 'cpu'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and '--seeds: 0 given more than once' in err[0]
    assert not (tmp_path / 'runs').exists()


def test_the_report_states_the_macs_convention(tmp_path):
    write_report(tmp_path, SETUP, [ArmResult('mobilenet', 'mine', {0: 70.0})],
                 [ArmResult('mobilenet', 'plain', {0: 69.0})], contract={})
    md = (tmp_path / 'report.md').read_text()
    assert 'FlopCounterMode' in md and 'element-wise multiplies' in md and 'not counted' in md


def test_a_divergence_whose_message_spans_lines_is_told_by_its_recorded_type(tmp_path):
    """failed.json keeps a failure's last line only; the exception's class is recorded beside it, so a NonFiniteError
    whose message ends on a line of its own is still a divergence."""
    from zamzoo.errors import NonFiniteError
    from zamzoo.train.run_folder import mark_failed
    runs = make_runs(tmp_path, {('huge', 0): MISSING, ('huge', 1): MISSING})
    for run, error in zip(runs, (NonFiniteError('the loss is NaN at step 3\n(learning rate too high?)'),
                                 RuntimeError('boom\nNonFiniteError: quoted, not raised'))):
        run.folder.mkdir(parents=True)
        mark_failed(run.folder, error)
    _, unfinished = run_outcomes(runs)
    assert [unfinished[run.name].state for run in runs] == [DIVERGED, FAILED]
