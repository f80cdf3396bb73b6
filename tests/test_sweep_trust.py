"""Issue 19, the sweep part: one run status (a diverged run is failed everywhere), a run's identity (every setting
that changes its result: zoo run, --resume and zoo export compare it), corrupt sweep files reported per run, the
aggregate images/s of one invocation, sbatch's gres refusal explained, zoo export's destinations checked first."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from zamzoo.cli import main
from zamzoo.errors import UsageError, WeightsError, ZamzooError
from zamzoo.train import TrainConfig, train
from zamzoo.train.run_folder import read_run
from zamzoo.zoo import plan_sweep, sweep_status

from test_zoo import REPO, TINY, one_thread  # noqa: F401 (one thread here and in the runs: an autouse fixture)

pytestmark = pytest.mark.usefixtures('forked_zoo_workers')


def _zoo_run(data, out, *extra):
    return ['zoo', 'run', '--models', TINY, '--datasets', 'cifar10', '--data', str(data), '--out', str(out),
            '--batch-size', '16', '--device', 'cpu', *extra]


@pytest.fixture(scope='module')
def mixed_sweep(tiny_cifar, tmp_path_factory):
    """A sweep whose seed 0 ran 1 epoch and seed 1 ran 2 epochs: `zoo run` refuses to add the second (see
    test_zoo_run_refuses_to_add_a_seed_with_other_settings), so it is trained elsewhere and copied in."""
    from zamzoo.sweep_files import PLAN_FILE
    from zamzoo.zoo.state import read_plan, update_record
    root = tmp_path_factory.mktemp('mixed')
    out, other, name = root / 'sweep', root / 'other', f'{TINY}-cifar10-zam-s1'
    torch.set_num_threads(1)
    assert main(_zoo_run(tiny_cifar, out, '--seeds', '0', '--epochs', '1')) == 0
    assert main(_zoo_run(tiny_cifar, other, '--seeds', '1', '--epochs', '2')) == 0
    shutil.copytree(other / name, out / name)
    update_record(out, PLAN_FILE, {name: read_plan(other)[0][name]})
    return out


def test_zoo_run_refuses_to_add_a_seed_with_other_settings(mixed_sweep, tiny_cifar, capsys):
    """A seed with other settings than the group's finished seeds was trained into it, and `zoo export` then refused
    the whole group ('the runs differ in more than the seed')."""
    capsys.readouterr()
    assert main(_zoo_run(tiny_cifar, mixed_sweep, '--seeds', '2', '--epochs', '1', '--lr', '0.5')) == 2
    err = capsys.readouterr().err
    assert f'seed 2 of {TINY}-cifar10: the sweep folder holds seed 0 of it ({TINY}-cifar10-zam-s0) with ' \
           f'lr=0.1, the plan has lr=0.5: one setting per model and data set in a sweep folder' in err
    assert main(_zoo_run(tiny_cifar, mixed_sweep, '--seeds', '2', '--epochs', '1', '--dry-run')) == 2  # seed 1's
    assert 'refuse (other settings' in capsys.readouterr().out
    assert not (mixed_sweep / f'{TINY}-cifar10-zam-s2').exists()


# ------------------------------------------------------------------ row 1: a diverged run is failed everywhere
def test_diverged_run_is_failed_in_status_retried_and_never_exported(tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'sweep'
    args = _zoo_run(tiny_cifar, out, '--seeds', '0', '--epochs', '2', '--lr', '1e30')
    assert main(args) == 1
    assert 'ended: 0 done, 1 failed' in capsys.readouterr().out
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('failed ') and 'NonFiniteError: ' in printed and 'NaN or infinite' in printed
    assert '0 done' in printed and '1 failed' in printed

    from zamzoo.train.run_folder import run_status
    folder = out / f'{TINY}-cifar10-zam-s0'
    status = run_status(folder)
    assert status.state == 'failed' and status.error.startswith('NonFiniteError: ')
    assert not (folder / 'results.json').exists()             # results.json: completed runs only
    with pytest.raises(ZamzooError, match='is a failed run'):
        read_run(folder)
    from zamzoo.train import evaluate
    with pytest.raises(ZamzooError, match='is a failed run'):
        evaluate(TINY, str(tiny_cifar), 'cifar10', checkpoint=folder, device='cpu')

    assert main(args) == 1                                    # skipped without --retry-failed
    assert '0 to train, 1 skipped' in capsys.readouterr().out
    assert main([*args, '--dry-run', '--retry-failed']) == 0
    assert '1 to train, 0 skipped' in capsys.readouterr().out

    from zamzoo.zoo import export_sweep                      # the failed seed is named, not silently dropped
    [group] = export_sweep(out, min_seeds=1, staging=tmp_path / 'staging')['too_few']
    assert (group['seeds'], group['left_out']) == ([], [{'seed': 0, 'state': 'failed'}])


def test_status_of_a_failed_attempt_is_failed_whatever_epochs_the_plan_now_has(tiny_cifar, tmp_path, capsys):
    """A failed attempt with other --epochs than the plan's was `refused` in zoo status, while zoo run --retry-failed
    trains it again as planned: the folder holds nothing to keep."""
    out = tmp_path / 'sweep'
    assert main(_zoo_run(tiny_cifar, out, '--seeds', '0', '--epochs', '1', '--lr', '1e30')) == 1
    assert main(_zoo_run(tiny_cifar, out, '--seeds', '0', '--epochs', '2', '--lr', '1e30')) == 1  # failed: skipped
    capsys.readouterr()
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'failed   {TINY} cifar10 zam seed 0') and 'refused' not in printed
    assert ': 0 done, 0 running, 0 pending, 1 failed; epochs 0/2' in printed


# ------------------------------------------------------------------ row 2: identity, in zoo run and zoo export
def test_zoo_run_refuses_a_finished_run_with_other_settings(mixed_sweep, tiny_cifar, capsys):
    capsys.readouterr()
    args = _zoo_run(tiny_cifar, mixed_sweep, '--seeds', '0', '2', '--epochs', '3')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f'seed 0 of {TINY}-cifar10: finished with epochs=1, the plan has epochs=3' in err
    assert 'another --out' in err
    assert not (mixed_sweep / f'{TINY}-cifar10-zam-s2').exists()  # nothing trained
    assert main([*args, '--dry-run']) == 2
    assert 'refuse (other settings' in capsys.readouterr().out
    assert main(_zoo_run(tiny_cifar, mixed_sweep, '--seeds', '0', '--epochs', '1', '--dry-run')) == 0  # same: done
    assert 'skip (done)' in capsys.readouterr().out
    # on 2 processes each one's batch and BatchNorm statistics are others: a run to resume failed on it, a finished
    # one was skipped as done
    assert main(_zoo_run(tiny_cifar, mixed_sweep, '--seeds', '0', '--epochs', '1', '--gpus-per-run', '2',
                         '--dry-run')) == 2
    assert f'seed 0 of {TINY}-cifar10: finished with world_size=1, the plan has world_size=2 (--gpus-per-run)' in \
        capsys.readouterr().err


def test_zoo_run_refuses_a_finished_run_of_data_replaced_at_its_path(tmp_path, capsys, monkeypatch):
    """A plan names its data by path: a finished run was counted done (skipped) after its data was replaced there,
    and its results mixed with runs of the new data. The finished run's recorded fingerprint is checked now."""
    import pickle

    from conftest import write_tiny_cifar
    from zamzoo.data import open_data
    from zamzoo.zoo import plan
    data, out = write_tiny_cifar(tmp_path / 'data'), tmp_path / 'sweep'
    args = _zoo_run(data, out, '--seeds', '0', '--epochs', '1')
    assert main(args) == 0
    opened = []
    monkeypatch.setattr(plan, 'open_data', lambda source: opened.append(source) or open_data(source))
    assert main(args) == 0 and '0 to train, 1 skipped' in capsys.readouterr().out  # the same data: done
    assert len(opened) == 1  # once per invocation (the command's plan goes to run_sweep: not opened again there)
    batch = data / 'cifar-10-batches-py' / 'data_batch_1'
    content = pickle.loads(batch.read_bytes())
    content['data'][0, 0] ^= 1  # one pixel of one image
    batch.write_bytes(pickle.dumps(content, protocol=2))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f'seed 0 of {TINY}-cifar10: {data} is not the data the run in' in err and 'its train split is' in err
    assert 'another --out' in err
    folder = out / f'{TINY}-cifar10-zam-s0'
    (folder / 'results.json').unlink()  # a run to resume (its checkpoint kept): planned to resume, then marked failed
    assert (folder / 'checkpoint.pt').is_file() and main([*args, '--dry-run']) == 2
    assert f'{data} is not the data the run in' in capsys.readouterr().err


def test_zoo_export_refuses_to_average_runs_with_other_settings(mixed_sweep, tmp_path, capsys):
    staging = tmp_path / 'staging'
    assert main(['zoo', 'export', '--out', str(mixed_sweep), '--min-seeds', '2', '--staging', str(staging)]) == 1
    captured = capsys.readouterr()
    assert 'differ in more than the seed' in captured.err
    assert f'epochs=2 in {TINY}-cifar10-zam-s1, epochs=1 in {TINY}-cifar10-zam-s0' in captured.err
    assert not (staging / f'{TINY}.cifar10').exists()


def test_identity_is_every_setting_but_an_exclude_list():
    from zamzoo.train.run_folder import identity_changes, run_identity
    record = {'model': 'm', 'seed': 0, 'data': '/a', 'device': 'CPU', 'code_commit': 'abc',
              'recipe': {'name': 'zam', 'version': 1, 'epochs': 3},
              'args': {'out': 'runs/x', 'workers': 4, 'eval_batch_size': 500, 'holdout': 0.2, 'amp': 'auto'}}
    moved = dict(record, device='NVIDIA H200', code_commit='def', args=dict(record['args'], out='y', workers=0))
    assert identity_changes(record, moved) == []               # where and how fast it ran
    assert identity_changes(record, dict(record, args=dict(record['args'], holdout=0.3))) == [('holdout', 0.2, 0.3)]
    plugin = dict(record, attention_module={'path': 'my.attn', 'sha256': 'ab'})   # a key train may add later
    assert identity_changes(record, plugin) == [('attention_module.path', None, 'my.attn'),
                                                ('attention_module.sha256', None, 'ab')]
    fingerprinted = dict(record, data_fingerprint='f1')        # the data itself, not its path
    assert 'data' not in run_identity(fingerprinted) and 'data' in run_identity(record)
    assert identity_changes(fingerprinted, dict(fingerprinted, data='/b')) == []
    assert identity_changes(fingerprinted, dict(fingerprinted, data_fingerprint='f2')) == [
        ('data_fingerprint', 'f1', 'f2')]


def test_an_argument_equal_to_the_recipes_value_is_the_recipes_run():
    """`--lr 0.1` (the recipe's own lr) against a run made without --lr was refused as another setting."""
    from zamzoo.train.run_folder import identity_changes
    recipe = {'name': 'zam', 'version': 1, 'epochs': 200, 'batch_size': 128, 'lr': 0.1}
    plain = {'model': 'm', 'recipe': recipe, 'args': {'lr': None, 'epochs': None, 'holdout': None}, 'overrides': {}}
    same = dict(plain, args=dict(plain['args'], lr=0.1), overrides={'lr': 0.1})
    assert identity_changes(plain, same) == [] and identity_changes(same, plain) == []
    other = dict(plain, recipe=dict(recipe, lr=0.05, epochs=2), args=dict(plain['args'], lr=0.05, epochs=2),
                 overrides={'lr': 0.05, 'epochs': 2})
    assert identity_changes(plain, other) == [('epochs', 200, 2), ('lr', 0.1, 0.05)]  # named as the arguments
    assert identity_changes(plain, other, within=('args', 'recipe')) == [('epochs', 200, 2), ('lr', 0.1, 0.05)]
    no_recipe = {'model': 'm', 'args': {'lr': 0.1}}  # a record without the recipe as used: the argument is all
    assert identity_changes(no_recipe, dict(no_recipe, args={'lr': None})) == [('lr', 0.1, None)]


def _image_folder(root, n=6):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for c in 'ab':
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g).numpy()).save(
                root / c / f'{i}.png')
    return root


def test_resume_refuses_another_holdout(tmp_path):
    """Row 13: --resume with another --holdout kept the old split and recorded the new value."""
    args = dict(model=TINY, data=str(_image_folder(tmp_path / 'img')), dataset='folder', batch_size=4, img_size=32,
                out=str(tmp_path / 'run'), device='cpu')
    train(TrainConfig(holdout=0.25, epochs=1, **args))
    with pytest.raises(UsageError, match=r'holdout: checkpoint 0\.25, now 0\.5'):
        train(TrainConfig(holdout=0.5, epochs=1, resume=True, **args))
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['args']['holdout'] == 0.25


# ------------------------------------------------------------------ row 11: corrupt sweep state files
def _fake_run(out, name, *, results=None, metrics='', seed=0):
    folder = out / name
    folder.mkdir(parents=True)
    config = {'model': TINY, 'dataset': 'cifar10', 'seed': seed, 'recipe': {'name': 'zam', 'epochs': 2}}
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'metrics.jsonl').write_text(metrics)
    if results is not None:
        (folder / 'results.json').write_text(results)
    return {'model': TINY, 'dataset': 'cifar10', 'recipe': 'zam', 'seed': seed, 'epochs': 2}


def test_corrupt_files_are_reported_per_run(tmp_path, capsys):
    out = tmp_path / 'sweep'
    epoch = json.dumps({'epoch': 1, 'test_top1': 10.0, 'images_per_s': 5.0}) + '\n'
    plan = {'a': _fake_run(out, 'a', results='{"status": "comp'),
            'b': _fake_run(out, 'b', metrics=epoch + '{"epoch": 2, "test_top1": 1\n', seed=1),
            'c': _fake_run(out, 'c', metrics=epoch, seed=2)}
    torch.save({}, out / 'c' / 'checkpoint.pt')  # metrics.jsonl's epoch is resumable only with a checkpoint
    (out / '_zoo').mkdir()
    (out / '_zoo' / 'plan.json').write_text(json.dumps(plan))
    rows = {r['folder'][-1]: r for r in sweep_status(out)['runs']}
    assert rows['a']['state'] == 'failed' and rows['a']['error'].startswith('corrupt: ')
    assert 'results.json is not valid JSON' in rows['a']['error']
    assert rows['b']['state'] == 'failed' and 'metrics.jsonl line 2 is not JSON' in rows['b']['error']
    assert rows['c']['state'] == 'pending' and rows['c']['epoch'] == 1

    (out / '_zoo' / 'plan.json').write_text('{"a": {"model": ')  # corrupt plan: runs rebuilt from their folders
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'corrupt: ' in printed and 'plan.json is not valid JSON' in printed
    assert '3 runs: 0 done, 0 running, 1 pending, 2 failed' in printed
    (out / '_zoo' / 'plan.json').unlink()  # a lost plan, as a corrupt one (status said the sweep did not exist)
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"missing: {out / '_zoo' / 'plan.json'} (runs listed from their run folders)" in printed
    assert '3 runs: 0 done, 0 running, 1 pending, 2 failed' in printed

    from zamzoo.sweep_files import PLAN_FILE
    from zamzoo.zoo.state import update_record
    (out / '_zoo' / 'plan.json').write_text(json.dumps({'a': plan['a'], 'b': 'garbage'}))
    merged = update_record(out, PLAN_FILE, {'d': plan['c']})
    assert merged == {'a': plan['a'], 'b': plan['b'], 'd': plan['c']}   # the bad entry rebuilt from b/config.json

    (out / '_zoo' / 'plan.json').write_text('{"a": ')  # both plan.json and c's config.json corrupt: c was left out
    (out / 'c' / 'config.json').write_text('{"model": ')
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'c'}: not listed (no readable config.json to list it from)" in printed and '2 runs:' in printed


# ------------------------------------------------------------------ row 13: aggregate images/s, sbatch's gres
def test_a_run_another_invocation_trained_is_not_counted(mixed_sweep, tiny_cifar):
    """The other invocation finished the run between this one's planning and its worker: nothing of it counts."""
    from zamzoo.zoo.local import run_local
    from zamzoo.zoo.plan import plan_states
    from zamzoo.zoo.sweep import summarize

    runs = plan_sweep([TINY], ['cifar10'], [1], tiny_cifar, mixed_sweep, epochs=2, batch_size=16, device='cpu')
    before = {runs[0].name: dict(plan_states(runs)[runs[0].name], state='pending', epoch=0)}  # as planned earlier
    final = run_local(runs, mixed_sweep, device='cpu')
    assert final[runs[0].name]['skipped'] and final[runs[0].name]['state'] == 'done'
    assert summarize(runs, runs, before, final, 1.0)['train_images'] == 0


def test_a_failing_squeue_is_not_taken_for_an_empty_queue(tiny_cifar, tmp_path, monkeypatch):
    """Runs an earlier submission queued are not submitted again; when squeue fails, which they are is unknown: it
    was read as "none", and every held run was queued a second time."""
    import subprocess

    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE
    from zamzoo.zoo.state import update_record
    runs = plan_sweep([TINY], ['cifar10'], [0, 1], tiny_cifar, tmp_path, epochs=1)
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    answer = subprocess.CompletedProcess(['squeue'], 0, stdout='41_0\n41_1\n', stderr='')
    monkeypatch.setattr(slurm.subprocess, 'run', lambda *a, **k: answer)
    assert slurm.still_queued(tmp_path, runs) == set()  # nothing submitted yet
    update_record(tmp_path, JOBS_FILE, {runs[0].name: '41_0', runs[1].name: '40_1'})
    assert slurm.still_queued(tmp_path, runs) == {runs[0].name}
    answer = subprocess.CompletedProcess(['squeue'], 1, stdout='', stderr='slurm_load_jobs error: timeout')
    with pytest.raises(ZamzooError, match='squeue failed, so the runs an earlier submission queued cannot be told'):
        slurm.still_queued(tmp_path, runs)
    (tmp_path / '_zoo' / JOBS_FILE).write_text('{"a": ')  # corrupt: read as nothing submitted, every run went again
    with pytest.raises(ZamzooError, match='jobs.json is corrupt: .* cannot be told apart: nothing submitted'):
        slurm.still_queued(tmp_path, runs)


def test_a_task_that_raised_is_a_failure_not_a_job_that_left_the_queue(tiny_cifar, tmp_path):
    """submitit's FailedJobError (the task raised; the run folder says why) is an UncompletedJobError too: `--wait`
    added that the job had left the queue without a result, cancelled or killed."""
    pytest.importorskip('submitit')
    from submitit.core.utils import FailedJobError, JobPaths
    from zamzoo.train.run_folder import mark_failed
    from zamzoo.zoo import slurm
    from zamzoo.zoo.state import log_dir, run_log
    [run] = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, tmp_path, epochs=1)
    run.folder.mkdir()
    task_log = tmp_path / '_zoo' / 'slurm' / '17_0' / '17_0_0_log.err'
    mark_failed(run.folder, ValueError('no data'), '17_0', str(task_log))  # as the task's worker records it

    class Raised:
        job_id = '17_0'
        paths = JobPaths(tmp_path / '_zoo' / 'slurm' / '%j', job_id='17_0')  # as zoo run's executor makes them
        done = staticmethod(lambda: True)
        exception = staticmethod(lambda: FailedJobError('Job (task=0) failed during processing'))

        def get_info(self):
            raise AssertionError('a task that raised has its own record: no sacct call')
    ended = slurm._ended_state(Raised(), run)
    assert ended['state'] == 'failed' and 'no data' in ended['error'] and ended['note'] is None
    assert ended['log'] == str(task_log)  # the failure's line names the log of the attempt that failed
    # the newest log of a run that did not fail (zoo status), of its local and SLURM attempts
    assert run_log(tmp_path, run.name, '17_0') is None  # not written yet
    task_log.parent.mkdir(parents=True)
    task_log.write_text('Traceback ...')
    assert run_log(tmp_path, run.name, '17_0') == str(task_log) and run_log(tmp_path, run.name) is None
    local_log = log_dir(tmp_path) / f'{run.name}.20261207T060000.000000-1.log'
    local_log.parent.mkdir(parents=True)
    local_log.write_text('')
    os.utime(task_log, ns=(local_log.stat().st_mtime_ns - 10**9,) * 2)
    assert run_log(tmp_path, run.name, '17_0') == str(local_log)


def test_a_dry_run_on_slurm_counts_the_runs_still_queued_as_zoo_run_does(tiny_cifar, tmp_path, monkeypatch, capsys):
    """`zoo run --dry-run --executor slurm` counted and priced a run whose job an earlier submission still had queued
    as to train; `zoo run` does not submit it again. SLURM played by squeue's answer."""
    pytest.importorskip('submitit')
    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE
    from zamzoo.zoo.state import update_record
    args = ['zoo', 'run', '--executor', 'slurm', '--dry-run', '--models', TINY, '--datasets', 'cifar10', '--seeds',
            '0', '1', '--epochs', '1', '--device', 'cpu', '--images-per-second', '100', '--data', str(tiny_cifar),
            '--out', str(tmp_path)]
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: None)      # no SLURM here, nothing submitted: not asked
    assert main(args) == 0
    assert ': 2 to train, 0 skipped\n' in capsys.readouterr().out
    update_record(tmp_path, JOBS_FILE, {f'{TINY}-cifar10-zam-s0': '41_0', f'{TINY}-cifar10-zam-s1': '41_1'})
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0'})   # seed 0 still held, seed 1's job ended
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert ': 1 to train, 0 skipped, 1 still queued from an earlier submission (not submitted again)' in printed
    assert 'skip (still queued)' in printed and 'for 1 run(s)' in printed
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: None)       # squeue failed: unknown, said so
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert ': 2 to train, 0 skipped\n' in printed and 'is unknown, so they count as to train: squeue failed' in printed


def test_a_submission_with_other_settings_leaves_the_plan_of_a_run_still_queued(tiny_cifar, tmp_path, monkeypatch,
                                                                               capsys):
    """A run whose job is still queued has an empty folder, so nothing refused a second submission with other
    --epochs: it rewrote plan.json, and the queued job's run, trained with its own epochs, then showed as refused.
    SLURM played by squeue's answer."""
    pytest.importorskip('submitit')
    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE, PLAN_FILE
    from zamzoo.zoo.state import update_record
    [run] = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, tmp_path, epochs=1)
    update_record(tmp_path, PLAN_FILE, {run.name: run.record()})
    update_record(tmp_path, JOBS_FILE, {run.name: '41_0'})
    plan = (tmp_path / '_zoo' / PLAN_FILE).read_text()
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0'})
    args = ['zoo', 'run', '--executor', 'slurm', '--models', TINY, '--datasets', 'cifar10', '--seeds', '0',
            '--device', 'cpu', '--data', str(tiny_cifar), '--out', str(tmp_path)]
    for dry in ([], ['--dry-run']):
        capsys.readouterr()
        assert main([*args, '--epochs', '2', *dry]) == 2
        assert f"{run.name}: queued with epochs=1, the plan has epochs=2" in capsys.readouterr().err
        assert (tmp_path / '_zoo' / PLAN_FILE).read_text() == plan
    assert main([*args, '--epochs', '1', '--dry-run']) == 0   # the same settings: left to the queued job
    assert '0 to train, 0 skipped, 1 still queued' in capsys.readouterr().out


def test_wait_waits_for_the_runs_an_earlier_submission_left_in_the_queue(tiny_cifar, tmp_path, monkeypatch):
    """`zoo run --wait` waited only for what it submitted itself: with every run queued or running from an earlier
    submission it returned at once, exit 0 (and `zoo run --wait && zoo export` exported too early). SLURM played by
    its three calls; the handles of the held jobs are submitit's own, at the paths of the original submission."""
    pytest.importorskip('submitit')
    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE
    from zamzoo.zoo.state import update_record
    from zamzoo.zoo.sweep import run_sweep
    runs = plan_sweep([TINY], ['cifar10'], [0, 1], tiny_cifar, tmp_path, epochs=1)
    update_record(tmp_path, JOBS_FILE, {runs[0].name: '41_0', runs[1].name: '41_1'})
    waited = []

    def wait_slurm(jobs, waited_runs, on_event):
        waited.append(([job.job_id for job in jobs], [run.name for run in waited_runs]))
        return {run.name: {'state': 'done', 'skipped': None, 'images_per_s': 1.0} for run in waited_runs}
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0'})   # seed 0 still held, seed 1's job ended
    monkeypatch.setattr(slurm, 'submit_slurm', lambda launch, *a, **k: [type('Job', (), {'job_id': '42_0'})()])
    monkeypatch.setattr(slurm, 'wait_slurm', wait_slurm)
    summary = run_sweep(runs, tmp_path, executor='slurm', wait=True)
    assert waited == [(['42_0', '41_0'], [runs[1].name, runs[0].name])]  # its own job, then the held one
    assert summary['finished'] and summary['ended']['done'] == summary['launched'] == 2
    [held] = slurm.held_jobs(tmp_path, runs[:1])
    assert held.paths.result_pickle == tmp_path / '_zoo' / 'slurm' / '41_0' / '41_0_0_result.pkl'


def test_a_sweep_larger_than_the_clusters_max_array_size_goes_in_several_arrays(tiny_cifar, tmp_path, monkeypatch):
    """One array for the whole sweep: above MaxArraySize (SLURM's default 1001; 78 models x 2 data sets x 7 seeds
    is more) sbatch refused it ("Invalid job array specification")."""
    import subprocess
    pytest.importorskip('submitit')
    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE
    from zamzoo.zoo.state import read_record

    config = subprocess.CompletedProcess(['scontrol'], 0, stdout='MaxArraySize            = 3\nMaxJobCount = 10000\n')
    monkeypatch.setattr(slurm.subprocess, 'run', lambda *a, **k: config)
    assert slurm._max_array_size() == 3
    arrays = []

    class Executor:
        def __init__(self, **kwargs):
            pass

        def update_parameters(self, **params):
            pass

        def map_array(self, fn, configs):
            arrays.append(len(configs))
            return [type('Job', (), {'job_id': f'{len(arrays)}_{i}'})() for i in range(len(configs))]

    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm.submitit, 'AutoExecutor', Executor)
    runs = plan_sweep([TINY], ['cifar10'], [0, 1, 2, 3], tiny_cifar, tmp_path, epochs=1)
    jobs = slurm.submit_slurm(runs, tmp_path, device='cpu')
    assert arrays == [3, 1] and [job.job_id for job in jobs] == ['1_0', '1_1', '1_2', '2_0']
    assert read_record(tmp_path, JOBS_FILE)[0] == {run.name: job.job_id for run, job in zip(runs, jobs)}


def test_sbatch_gres_refusal_says_how_to_run_on_cpus(tiny_cifar, tmp_path, monkeypatch):
    pytest.importorskip('submitit')
    from submitit.core.utils import FailedJobError

    from zamzoo.zoo import slurm

    class NoGpus:
        def __init__(self, **kwargs):
            pass

        def update_parameters(self, **params):
            self.params = params

        def map_array(self, fn, configs):
            raise FailedJobError('sbatch: error: Invalid generic resource (gres) specification')

    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm.submitit, 'AutoExecutor', NoGpus)
    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, tmp_path, epochs=1)
    with pytest.raises(ZamzooError, match=r'Invalid generic resource.*--device cpu to run on CPUs'):
        slurm.submit_slurm(runs, tmp_path)


# ------------------------------------------------------------------ row 9: zoo export checks destinations first
def test_zoo_export_checks_destinations_first_and_runs_outside_a_checkout(mixed_sweep, tmp_path, capsys,
                                                                          monkeypatch):
    staging = tmp_path / 'staging'
    export = ['zoo', 'export', '--out', str(mixed_sweep), '--min-seeds', '1', '--staging', str(staging)]
    assert main([*export, '--readme', '/nonexistent/README.md']) == 2
    assert '/nonexistent/README.md not found' in capsys.readouterr().err
    assert not staging.exists()                                # refused before the first write

    from zamzoo.bench import tables                            # a wheel install: no README, MODEL_CARD, docs/bench
    for name in ('DEFAULT_README', 'DEFAULT_MODEL_CARD', 'DEFAULT_RESULTS'):
        monkeypatch.setattr(tables, name, tmp_path / 'site-packages' / name)
    main(export)
    captured = capsys.readouterr()
    assert 'tables: skipped (no README.md, MODEL_CARD.md and docs/bench here' in captured.out
    assert f'failed {TINY}.cifar10: the runs differ' in captured.err   # each group's outcome is still reported


def test_zoo_export_names_an_image_folder_sweeps_export_by_its_tag(tmp_path, capsys):
    """A sweep on an image folder is exported to staging/<model>.<folder name>, the tag its export, card and repo
    carry (as `zamzoo export` names it), not to <model>.folder."""
    pets, out, staging = _image_folder(tmp_path / 'pets'), tmp_path / 'sweep', tmp_path / 'staging'
    assert main(['zoo', 'run', '--models', 'mobilenet_plain', '--datasets', 'folder', '--data', str(pets),
                 '--holdout', '0.25', '--seeds', '0', '--epochs', '1', '--batch-size', '4', '--device', 'cpu',
                 '--out', str(out)]) == 0
    readme, card = tmp_path / 'README.md', tmp_path / 'MODEL_CARD.md'
    shutil.copy(REPO / 'README.md', readme)
    shutil.copy(REPO / 'MODEL_CARD.md', card)
    assert main(['zoo', 'export', '--out', str(out), '--min-seeds', '1', '--staging', str(staging),
                 '--readme', str(readme), '--model-card', str(card)]) == 0
    assert [p.name for p in staging.iterdir()] == ['mobilenet_plain.pets']
    assert json.loads((staging / 'mobilenet_plain.pets' / 'results.json').read_text())['tag'] == 'pets'
    assert 'exported mobilenet_plain.pets (seeds 0): top-1' in capsys.readouterr().out


def test_zoo_export_names_the_seeds_it_leaves_out_and_an_export_the_sweep_outgrew(tmp_path, capsys, monkeypatch):
    """A seed that failed was dropped from the card, its model-index and results.json without a word; an export made
    before it failed stayed in staging unmentioned; an export whose push failed was reported as a failure only."""
    from zamzoo.train.run_folder import mark_failed
    import zamzoo.publish.push as push

    pets, out, staging = tmp_path / 'pets', tmp_path / 'sweep', tmp_path / 'staging'
    _image_folder(pets / 'train'), _image_folder(pets / 'val', n=2)
    assert main(['zoo', 'run', '--models', 'mobilenet_plain', '--datasets', 'folder', '--data', str(pets),
                 '--seeds', '0', '1', '--epochs', '1', '--batch-size', '4', '--device', 'cpu', '--out', str(out)]) == 0
    export = ['zoo', 'export', '--out', str(out), '--staging', str(staging), '--readme', str(tmp_path / 'README.md'),
              '--model-card', str(tmp_path / 'MODEL_CARD.md')]
    shutil.copy(REPO / 'README.md', tmp_path / 'README.md')
    shutil.copy(REPO / 'MODEL_CARD.md', tmp_path / 'MODEL_CARD.md')
    assert main([*export, '--min-seeds', '2']) == 0
    seed1 = out / 'mobilenet_plain-folder-finetune-s1'
    for name in ('results.json', 'model.safetensors'):
        (seed1 / name).unlink()
    mark_failed(seed1, FloatingPointError('loss is nan'))
    capsys.readouterr()
    assert main([*export, '--min-seeds', '2']) == 0
    assert (f"not exported mobilenet_plain.pets: 1 finished seed(s) of 2 (--min-seeds 2); "  # the tag, not 'folder'
            f"{staging / 'mobilenet_plain.pets'} still holds an earlier export, of seeds 0 1 (done now: 0)"
            in capsys.readouterr().out)

    monkeypatch.setattr(push, 'push_folder', lambda *a, **k: (_ for _ in ()).throw(WeightsError('no Hub here')))
    assert main([*export, '--min-seeds', '1', '--push']) == 1
    captured = capsys.readouterr()
    assert 'exported mobilenet_plain.pets (seeds 0; seed 1 left out: failed): top-1' in captured.out
    assert 'failed to push mobilenet_plain.pets: no Hub here' in captured.err
    results = json.loads((staging / 'mobilenet_plain.pets' / 'results.json').read_text())
    assert (results['seeds'], results['seeds_left_out']) == ([0], [{'seed': 1, 'state': 'failed'}])
    card = (staging / 'mobilenet_plain.pets' / 'README.md').read_text()
    assert 'Left out of these figures, though the sweep planned them: seed 1 (failed).' in card
    assert "name: 'Top-1 accuracy (mean of 1 seed(s), final epoch; 1 more planned, left out)'" in card


def test_zoo_export_averages_the_seeds_of_a_split_held_out_by_seed(tmp_path, capsys):
    """Each seed holds out other images (--holdout): the export refused the seeds as runs of other data."""
    pets, out, staging = _image_folder(tmp_path / 'pets'), tmp_path / 'sweep', tmp_path / 'staging'
    assert main(['zoo', 'run', '--models', 'mobilenet_plain', '--datasets', 'folder', '--data', str(pets),
                 '--holdout', '0.25', '--seeds', '0', '1', '--epochs', '1', '--batch-size', '4', '--device', 'cpu',
                 '--out', str(out)]) == 0
    folders = [out / f'mobilenet_plain-folder-finetune-s{seed}' for seed in (0, 1)]
    configs = [json.loads((f / 'config.json').read_text()) for f in folders]
    assert configs[0]['data_fingerprint']['val'] != configs[1]['data_fingerprint']['val']
    assert configs[0]['data_fingerprint']['whole'] == configs[1]['data_fingerprint']['whole']
    export = ['zoo', 'export', '--out', str(out), '--min-seeds', '2', '--staging', str(staging), '--readme',
              str(tmp_path / 'README.md'), '--model-card', str(tmp_path / 'MODEL_CARD.md')]
    shutil.copy(REPO / 'README.md', tmp_path / 'README.md')
    shutil.copy(REPO / 'MODEL_CARD.md', tmp_path / 'MODEL_CARD.md')
    assert main(export) == 0
    assert json.loads((staging / 'mobilenet_plain.pets' / 'results.json').read_text())['seeds'] == [0, 1]
    configs[1]['data_fingerprint']['whole'] = '12 files, sha256 0123456789abcdef'  # made from other data
    (folders[1] / 'config.json').write_text(json.dumps(configs[1]))
    capsys.readouterr()
    assert main(export) == 1
    assert "data_fingerprint.whole='12 files, sha256 0123456789abcdef' in mobilenet_plain-folder-finetune-s1" in \
        capsys.readouterr().err
    del configs[1]['data_fingerprint']['whole']  # a run from before the record: said so, not "other settings"
    (folders[1] / 'config.json').write_text(json.dumps(configs[1]))
    assert main(export) == 1
    assert ('mobilenet_plain-folder-finetune-s0 and mobilenet_plain-folder-finetune-s1: runs that hold out their '
            'validation images by seed (--holdout), trained before zamzoo recorded') in capsys.readouterr().err


def test_status_says_when_a_pending_runs_job_left_the_slurm_queue(tiny_cifar, tmp_path, monkeypatch, capsys):
    """A cancelled SLURM run showed as `pending ... job N`, like one still queued: status read only the folders.
    SLURM played by squeue's answer."""
    from zamzoo.zoo import slurm
    from zamzoo.sweep_files import JOBS_FILE, PLAN_FILE
    from zamzoo.zoo.state import update_record
    runs = plan_sweep([TINY], ['cifar10'], [0, 1, 2], tiny_cifar, tmp_path, epochs=1)
    update_record(tmp_path, PLAN_FILE, {run.name: run.record() for run in runs})  # as `zoo run` submitted them
    update_record(tmp_path, JOBS_FILE, {runs[0].name: '41_0', runs[1].name: '41_1'})
    monkeypatch.setattr(slurm.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0'})   # seed 1's job was cancelled
    assert main(['zoo', 'status', '--out', str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith('seed 0: epoch 0/1, top-1 -%, - img/s, job 41_0 (queued)')
    assert lines[1].endswith("seed 1: epoch 0/1, top-1 -%, - img/s, job 41_1 (not in SLURM's queue: cancelled, or "
                             "ended without starting; `zoo run` submits it again)")
    assert lines[2].endswith('seed 2: epoch 0/1, top-1 -%, - img/s')
    assert main(['zoo', 'status', '--out', str(tmp_path), '--json']) == 0
    assert [r['queued'] for r in json.loads(capsys.readouterr().out)['runs']] == [True, False, None]
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: None)       # squeue failed: not known, nothing said
    assert main(['zoo', 'status', '--out', str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith('seed 1: epoch 0/1, top-1 -%, - img/s, job 41_1')
    # a failed run whose retry (--retry-failed) waits in the queue: its folder says failed, SLURM says queued
    from zamzoo.train.run_folder import mark_failed
    runs[2].folder.mkdir()
    mark_failed(runs[2].folder, RuntimeError('diverged'), job_id='40_2')
    update_record(tmp_path, JOBS_FILE, {runs[2].name: '42_0'})
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0', '42_0'})
    assert main(['zoo', 'status', '--out', str(tmp_path), '--json']) == 0
    assert [(r['state'], r['queued']) for r in json.loads(capsys.readouterr().out)['runs']] == [
        ('pending', True), ('pending', False), ('failed', True)]
    assert main(['zoo', 'status', '--out', str(tmp_path)]) == 0
    assert 'seed 2: epoch 0/1, top-1 -%, - img/s, job 42_0 (its retry is queued)' in capsys.readouterr().out
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: {'41_0'})   # its job ended: nothing to say of it
    assert main(['zoo', 'status', '--out', str(tmp_path), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['runs'][2]['queued'] is None


def test_the_worker_keeps_the_error_the_failing_process_recorded_and_adds_its_log(tiny_cifar, tmp_path,
                                                                                   monkeypatch):
    """With several processes a run, the zoo worker (rank 0's) overwrote failed.json with its own exception, gloo's
    "Connection closed by peer", after train() had recorded the failing rank's. A record from an earlier attempt
    is not taken for this one's."""
    from zamzoo.train.run_folder import mark_attempt_failed, mark_failed, read_failure
    from zamzoo.zoo import worker
    [run] = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, tmp_path, epochs=1)

    def train_where_rank_1_failed(config, **kwargs):
        Path(config.out).mkdir(exist_ok=True)
        mark_failed(config.out, ValueError('the real error'), rank=1)  # as rank 1's train() records it
        mark_failed(config.out, RuntimeError('Connection closed by peer'), rank=0)  # second: kept out
        raise RuntimeError('Connection closed by peer')
    monkeypatch.setattr(worker, 'train', train_where_rank_1_failed)
    with pytest.raises(RuntimeError, match='Connection closed by peer'):
        worker.run_one(run.config, job_id='17_0', log='/logs/17_0.err')  # rank 0 alone: its log
    failure = read_failure(run.folder)
    assert (failure['error'], failure['rank'], failure['job_id'], failure['log']) == (
        'rank 1: ValueError: the real error', 1, '17_0', '/logs/17_0.err')

    def rank_1_failed_and_its_worker_added_its_log(config, **kwargs):  # while rank 0 trained (a SLURM task each)
        mark_failed(config.out, ValueError('the real error'), rank=1)
        mark_attempt_failed(config.out, ValueError('the real error'), '17_0', '/logs/17_0_1.err', None, rank=1)
        raise RuntimeError('Connection closed by peer')
    run.folder.joinpath('failed.json').unlink()
    monkeypatch.setattr(worker, 'train', rank_1_failed_and_its_worker_added_its_log)
    with pytest.raises(RuntimeError):
        worker.run_one(run.config, job_id='17_0', log='/logs/17_0_0.err')
    failure = read_failure(run.folder)
    assert (failure['error'], failure['log']) == ('rank 1: ValueError: the real error', '/logs/17_0_1.err')

    def rank_1_raises(config, **kwargs):
        mark_failed(config.out, ValueError('the real error'), rank=1)
        raise ValueError('the real error')
    run.folder.joinpath('failed.json').unlink()
    monkeypatch.setattr(worker, 'train', rank_1_raises)
    monkeypatch.setenv('RANK', '1')  # rank 1's worker, as a SLURM task's: its own log is the one named
    with pytest.raises(ValueError):
        worker.run_one(run.config, job_id='17_0', log='/logs/17_0_1.err')
    assert read_failure(run.folder)['log'] == '/logs/17_0_1.err'
    monkeypatch.delenv('RANK')

    def train_that_fails_before_training(config, **kwargs):
        raise RuntimeError('no data')  # failed.json still holds the earlier attempt's record
    monkeypatch.setattr(worker, 'train', train_that_fails_before_training)
    with pytest.raises(RuntimeError, match='no data'):
        worker.run_one(run.config, job_id='18_0', log='/logs/18_0.err')
    failure = read_failure(run.folder)
    assert (failure['error'], failure['rank'], failure['job_id']) == ('RuntimeError: no data', None, '18_0')


def test_a_group_of_runs_never_started_has_no_tag_to_name(tmp_path):
    """A run folder without config.json gave the export folder 'None.None': `zoo export` named the group by tag
    'None' ("not exported MODEL.None")."""
    from zamzoo.zoo.export import _not_exported
    group = _not_exported({'model': 'mobilenet_zam'}, [{'folder': str(tmp_path / 'never-started')}], tmp_path)
    assert (group['tag'], group['earlier_export']) == (None, None)
