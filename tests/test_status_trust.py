"""A run's status trusts only what its folder can prove (the sweep review's D3, D4, D6, D7, D9, D10): a completed run
whose weights or metrics are gone or cut is `corrupt`, not done, and --retry-failed repairs it; the checkpoint is on
disk before metrics.jsonl claims its epoch; a resumed run keeps the commits that trained it; a run another
invocation finished with other settings is refused, not counted; the aggregate counts only what this invocation
trained."""
import json
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

import zamzoo
from zamzoo.cli import main
from zamzoo.errors import ZamzooError
from zamzoo.train.run_folder import read_run, run_status

from test_zoo import TINY, one_thread  # noqa: F401 (one thread here and in the runs: an autouse fixture)

pytestmark = pytest.mark.usefixtures('forked_zoo_workers')

RUN = f'{TINY}-cifar10-zam-s0'


def _zoo_run(data, out, *extra):
    return ['zoo', 'run', '--models', TINY, '--datasets', 'cifar10', '--data', str(data), '--out', str(out),
            '--batch-size', '16', '--device', 'cpu', '--seeds', '0', *extra]


@pytest.fixture(scope='module')
def done_sweep(tiny_cifar, tmp_path_factory):
    """A sweep of one run trained for 1 epoch (copy it before changing it)."""
    out = tmp_path_factory.mktemp('done') / 'sweep'
    torch.set_num_threads(1)
    assert main(_zoo_run(tiny_cifar, out, '--epochs', '1')) == 0
    return out


@pytest.fixture
def sweep(done_sweep, tmp_path):
    out = tmp_path / 'sweep'
    shutil.copytree(done_sweep, out)
    return out


def _status_line(out, capsys) -> str:
    capsys.readouterr()
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    return capsys.readouterr().out


def test_failed_run_is_marked_and_retried_only_when_asked(tiny_cifar, tmp_path, capsys, monkeypatch):
    """What a failed run leaves: failed.json and its log's traceback; skipped until --retry-failed."""
    from zamzoo.train import loop, train
    from zamzoo.zoo import plan_sweep, sweep_status
    data = tmp_path / 'data'                       # CIFAR-100 only: the CIFAR-10 run fails, the other goes on
    data.mkdir()
    (data / 'cifar-100-python').symlink_to(Path(tiny_cifar) / 'cifar-100-python')
    out = tmp_path / 'sweep'
    args = ['zoo', 'run', '--models', TINY, '--datasets', 'cifar10', 'cifar100', '--seeds', '0', '--epochs', '1',
            '--batch-size', '16', '--device', 'cpu', '--runs-per-gpu', '2', '--data', str(data), '--out', str(out)]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert 'ended: 1 done, 1 failed' in printed
    status = {r['dataset']: r for r in sweep_status(out)['runs']}
    assert status['cifar100']['state'] == 'done' and status['cifar10']['state'] == 'failed'
    error = status['cifar10']['error']
    assert error.startswith('DataError: ') and 'cifar-10-batches-py' in error
    failed = json.loads((out / f'{TINY}-cifar10-zam-s0' / 'failed.json').read_text())
    assert failed['error'] == error
    [failed_log] = (out / '_zoo' / 'logs').glob(f'{TINY}-cifar10-zam-s0.*.log')  # named where the failure is
    assert f'\n          log: {failed_log}\n' in printed and printed.count('log: ') == 1
    assert status['cifar10']['log'] == failed['log'] == str(failed_log)
    assert main(['zoo', 'status', '--out', str(out)]) == 0
    assert f'\n         log: {failed_log}\n' in capsys.readouterr().out

    assert main(args) == 1                                            # skipped, still failed
    assert '0 to train, 2 skipped' in capsys.readouterr().out
    (data / 'cifar-10-batches-py').symlink_to(Path(tiny_cifar) / 'cifar-10-batches-py')
    # the run fails again, in `zamzoo train` (no log of its own): no log is named, not the earlier attempt's
    [run] = plan_sweep([TINY], ['cifar10'], [0], str(data), str(out), epochs=1, batch_size=16, device='cpu')
    monkeypatch.setattr(loop, '_one_epoch', lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train(run.config)
    monkeypatch.undo()
    [row] = [r for r in sweep_status(out)['runs'] if r['dataset'] == 'cifar10']
    assert (row['state'], row['error'], row['log']) == ('failed', 'ZeroDivisionError: division by zero', None)
    assert main([*args, '--retry-failed']) == 0                       # the data is there now
    assert 'ended: 1 done, 0 failed' in capsys.readouterr().out
    assert sweep_status(out)['totals']['done'] == 2
    assert not (out / f'{TINY}-cifar10-zam-s0' / 'failed.json').exists()
    # each attempt has a log of its own: the failed one holds its traceback, the retry's none
    logs = sorted((out / '_zoo' / 'logs').glob(f'{TINY}-cifar10-zam-s0.*.log'))
    assert [p.read_text().count('Traceback') for p in logs] == [1, 0]


# ------------------------------------------------------------------ D3: weights cut or gone
@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_a_completed_run_with_cut_or_missing_weights_is_corrupt_and_retry_repairs_it(sweep, tiny_cifar, capsys,
                                                                                     damage):
    weights = sweep / RUN / 'model.safetensors'
    if damage == 'truncate':
        with open(weights, 'r+b') as f:
            f.truncate(1000)
    else:
        weights.unlink()
    status = run_status(sweep / RUN)
    assert status.state == 'failed' and status.error.startswith('corrupt: ') and 'model.safetensors' in status.error
    assert 'records no completed run' not in status.error
    printed = _status_line(sweep, capsys)
    assert printed.startswith('failed ') and 'corrupt: ' in printed
    with pytest.raises(ZamzooError, match='failed run'):
        read_run(sweep / RUN)
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed', '--dry-run']) == 0
    assert '1 to train, 0 skipped' in capsys.readouterr().out
    if damage == 'truncate':  # the retry itself, trained once: the same run, whichever way its weights were lost
        assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 0
        assert run_status(sweep / RUN).state == 'done'
        assert read_run(sweep / RUN).weights.stat().st_size == json.loads(
            (sweep / RUN / 'results.json').read_text())['weights_size_bytes']


def test_a_completed_run_without_its_checkpoint_says_it_cannot_be_repaired(sweep, tiny_cifar, capsys):
    """Its checkpoint deleted (disk space), then its weights lost: a retry has nothing to repair it from, and said
    to pass --resume, which a sweep has not (and which needs the checkpoint). Status and failure say to move it."""
    folder = sweep / RUN
    for name in ('checkpoint.pt', 'model.safetensors'):
        (folder / name).unlink()
    status = run_status(folder)
    assert status.state == 'failed' and status.error.startswith('corrupt: ') and 'model.safetensors' in status.error
    assert status.error.endswith(f'; it has no checkpoint.pt, so it can be neither resumed nor repaired: to train it '
                                 f'from the start again, move {folder} away')
    assert 'neither resumed nor repaired' in _status_line(sweep, capsys)
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 1
    assert 'ended: 0 done, 1 failed' in capsys.readouterr().out
    failure = json.loads((folder / 'failed.json').read_text())['error']
    assert failure == (f'ZamzooError: {folder} holds a run (results.json) but no checkpoint.pt, so it can be '
                       f'neither resumed nor repaired: to train it from the start again, move {folder} away, or choose '
                       f'another --out')
    assert '--resume' not in failure
    folder.rename(sweep.parent / 'moved')                           # as it says: the run is trained again
    assert main(_zoo_run(tiny_cifar, sweep, '--epochs', '1')) == 0
    assert run_status(folder).state == 'done'


def test_weights_of_another_size_than_recorded_are_corrupt(sweep):
    weights = sweep / RUN / 'model.safetensors'
    results = json.loads((sweep / RUN / 'results.json').read_text())
    assert results['weights_size_bytes'] == weights.stat().st_size
    with open(weights, 'ab') as f:  # still a readable safetensors file (trailing bytes aside): the size tells
        f.write(b'\0' * 8)
    assert run_status(sweep / RUN).error.startswith('corrupt: ')


def test_a_completed_run_without_metrics_is_corrupt_not_done_at_epoch_0(sweep, tiny_cifar, capsys):
    (sweep / RUN / 'metrics.jsonl').write_text('')  # emptied: was 'done' at epoch 0
    status = run_status(sweep / RUN)
    assert status.state == 'failed' and status.error == (f"corrupt: {sweep / RUN / 'metrics.jsonl'} has 0 epoch(s), "
                                                          f"results.json records 1")
    (sweep / RUN / 'metrics.jsonl').unlink()
    status = run_status(sweep / RUN)
    assert status.state == 'failed' and 'metrics.jsonl' in status.error and status.error.startswith('corrupt: ')
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 0
    assert run_status(sweep / RUN).state == 'done' and len(read_run(sweep / RUN).metrics) == 1


# ------------------------------------------------------------------ D9: the checkpoint before metrics.jsonl
def test_metrics_never_claim_an_epoch_the_checkpoint_on_disk_lacks(tiny_cifar, tmp_path, monkeypatch):
    """However slowly the checkpoint is written, metrics.jsonl gains an epoch only once the checkpoint holds it
    (a kill between the two once left metrics 2 epochs, checkpoint 1: status and --dry-run claimed epoch 2)."""
    from zamzoo.train import TrainConfig, load_checkpoint, train
    from zamzoo.train import run_folder

    out = tmp_path / 'run'
    seen = []  # (epochs metrics.jsonl is given, the epoch of the checkpoint on disk then)
    write_checkpoint, write_metrics = run_folder.write_checkpoint, run_folder.write_metrics

    def slow_checkpoint(path, state):
        time.sleep(0.3)
        return write_checkpoint(path, state)

    def observed_metrics(path, history):
        ckpt = out / 'checkpoint.pt'
        seen.append((len(history), load_checkpoint(ckpt)['epoch'] if ckpt.is_file() else 0))
        return write_metrics(path, history)

    monkeypatch.setattr(run_folder, 'write_checkpoint', slow_checkpoint)
    monkeypatch.setattr(run_folder, 'write_metrics', observed_metrics)
    train(TrainConfig(model=TINY, data=str(tiny_cifar), dataset='cifar10', epochs=2, batch_size=16, device='cpu',
                      out=str(out)))
    assert [n for n, _ in seen] == [1, 2]
    assert all(ckpt_epoch >= n for n, ckpt_epoch in seen), seen


def test_metrics_without_a_checkpoint_are_not_an_epoch_to_resume_after(sweep, tiny_cifar, capsys):
    folder = sweep / RUN
    for name in ('results.json', 'model.safetensors', 'checkpoint.pt'):
        (folder / name).unlink()
    capsys.readouterr()
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--dry-run']) == 0
    printed = capsys.readouterr().out
    assert 'resume after' not in printed and ' 0/1 ' in printed


# ------------------------------------------------------------------ D7: the commits that trained a resumed run
A, B = '1' * 40 + '+dirty', '2' * 40


def test_a_resumed_run_keeps_every_commit_that_trained_it(tiny_cifar, tmp_path, monkeypatch):
    from zamzoo.train import TrainConfig, loop, train

    out = tmp_path / 'run'
    config = dict(model=TINY, data=str(tiny_cifar), dataset='cifar10', epochs=2, batch_size=16, device='cpu',
                  out=str(out))
    one_epoch, calls = loop._one_epoch, []

    def killed_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return one_epoch(*args)

    monkeypatch.setenv('ZAMZOO_CODE_COMMIT', A)
    monkeypatch.setattr(loop, '_one_epoch', killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config))
    monkeypatch.setattr(loop, '_one_epoch', one_epoch)
    monkeypatch.setenv('ZAMZOO_CODE_COMMIT', B)
    monkeypatch.setattr(zamzoo, '__version__', '99.0')              # and a newer release
    results = train(TrainConfig(resume=True, **config))          # epoch 2 at B
    recorded = json.loads((out / 'results.json').read_text())
    assert recorded['code_commits'] == [A, B] == results['code_commits']
    assert A in recorded['code_commit'] and B in recorded['code_commit']   # never B alone
    first = json.loads((out / 'config.json').read_text())
    assert first['code_commit'] == A and first['zamzoo'] != '99.0'   # config.json: the session that started the run
    assert read_run(out).summary()['code_commit'] == recorded['code_commit']  # what zamzoo export reads

    (out / 'metrics.jsonl').write_text('{"epoch": ')                 # a repair at a third commit trains nothing
    monkeypatch.setenv('ZAMZOO_CODE_COMMIT', '3' * 40)
    train(TrainConfig(resume=True, **config))
    assert json.loads((out / 'results.json').read_text())['code_commits'] == [A, B]
    assert json.loads((out / 'config.json').read_text())['code_commit'] == A


# ------------------------------------------------------------------ D6: another invocation's run with other settings
REFUSED = 'refused (other settings)'  # the worker's outcome


def test_a_run_another_invocation_finished_with_other_settings_is_refused_not_done(sweep, tiny_cifar, capsys):
    """The plan saw an empty folder; by the time the worker ran, another `zoo run --epochs 1` had finished it."""
    from zamzoo.zoo import plan_sweep
    from zamzoo.zoo.local import run_local
    from zamzoo.zoo.worker import run_one

    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=2, batch_size=16, device='cpu')
    assert run_one(runs[0].config) == REFUSED
    assert 'finished by another invocation with epochs=1, the plan has epochs=2' in capsys.readouterr().err
    events = []
    final = run_local(runs, sweep, device='cpu', on_event=lambda *event: events.append(event))[RUN]
    assert final['skipped'] == REFUSED and final['returncode'] != 0   # not trained here, and the worker says it failed
    from zamzoo.zoo.commands import print_event
    capsys.readouterr()
    print_event(*events[-1])                                   # zoo run's line for it: refused, not done
    printed = capsys.readouterr().out
    assert printed.startswith(f'refused   {RUN}: ') and f'({REFUSED})' in printed
    log = sorted((sweep / '_zoo' / 'logs').glob(f'{RUN}.*.log'))[-1].read_text()  # this attempt's own (the newest)
    assert f'{runs[0].folder}: {REFUSED}' in log.splitlines()
    assert len(read_run(sweep / RUN).metrics) == 1             # the other invocation's run, untouched

    same = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=1, batch_size=16, device='cpu')
    assert run_one(same[0].config) == 'already done'


def test_a_run_another_invocation_left_to_resume_with_other_settings_is_refused_not_marked(sweep, tiny_cifar):
    """Another invocation (--epochs 1) was interrupted in the run before its weights were written: its folder holds
    a checkpoint to resume. The worker of a plan made before that run existed refuses it; it does not resume it and
    fail, writing failed.json into the other invocation's folder."""
    from zamzoo.zoo import plan_sweep
    from zamzoo.zoo.worker import run_one

    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=2, batch_size=16, device='cpu')
    for name in ('results.json', 'model.safetensors'):
        (sweep / RUN / name).unlink()
    assert run_status(sweep / RUN).state == 'pending'
    assert run_one(runs[0].config) == REFUSED
    assert not (sweep / RUN / 'failed.json').exists() and run_status(sweep / RUN).state == 'pending'


def test_a_run_being_trained_with_other_settings_is_refused(sweep, tiny_cifar):
    from zamzoo.train.run_folder import lock_run_folder
    from zamzoo.zoo import plan_sweep
    from zamzoo.zoo.worker import run_one

    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=2, batch_size=16, device='cpu')
    with lock_run_folder(sweep / RUN):                          # "another process" holds the run
        assert run_one(runs[0].config) == REFUSED
        same = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=1, batch_size=16, device='cpu')
        assert run_one(same[0].config) == 'running elsewhere'


def test_zoo_run_whose_run_another_invocation_finished_with_other_settings_exits_nonzero(sweep, tiny_cifar, capsys,
                                                                                        monkeypatch):
    """The race of two `zoo run`s on one --out, made deterministic: the plan is made while the folder is empty."""
    from zamzoo.zoo import plan

    kept = sweep / 'kept'
    (sweep / RUN).rename(kept)
    plan_states = plan.plan_states

    def states_then_other_invocation(runs, *args):
        states = plan_states(runs, *args)
        kept.rename(sweep / RUN)                                # the other `zoo run --epochs 1` finishes now
        return states

    monkeypatch.setattr(plan, 'plan_states', states_then_other_invocation)  # the command's plan, run_sweep's too
    capsys.readouterr()
    assert main(_zoo_run(tiny_cifar, sweep, '--epochs', '2')) == 1
    summary = json.loads((sweep / '_zoo' / 'last-run.json').read_text())
    assert summary['ended']['done'] == 0 and summary['ended']['refused'] == 1
    assert 'epochs=1, the plan has epochs=2' in summary['refused'][0]['error']
    assert summary['train_images'] == 0
    # the plan entry is the other invocation's again: this one trained nothing there, and its entry made zoo status
    # call that invocation's finished run refused (and zoo export leave it out)
    capsys.readouterr()
    assert main(['zoo', 'status', '--out', str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'done     {TINY} cifar10 zam seed 0')
    assert ': 1 done, 0 running, 0 pending, 0 failed; epochs 1/1' in printed


def test_a_second_zoo_run_with_other_settings_leaves_a_run_being_trained_and_its_plan_alone(sweep, tiny_cifar,
                                                                                           capsys):
    """A run another invocation trains (its lock held here) was skipped without comparing its settings: the second
    `zoo run --epochs 2` exited 0 and rewrote plan.json, so the first one's finished run showed as refused."""
    from zamzoo.train import lock_run_folder

    plan = (sweep / '_zoo' / 'plan.json').read_text()
    capsys.readouterr()
    with lock_run_folder(sweep / RUN):
        assert main(_zoo_run(tiny_cifar, sweep, '--epochs', '2')) == 2
    err = capsys.readouterr().err
    assert 'seed 0 of' in err and 'being trained with epochs=1, the plan has epochs=2' in err
    assert (sweep / '_zoo' / 'plan.json').read_text() == plan
    assert _status_line(sweep, capsys).startswith(f'done     {TINY} cifar10 zam seed 0')


def test_a_sweep_folder_takes_one_recipe_per_model_and_data_set(sweep, tiny_cifar, capsys):
    """A second recipe makes other run folders, so nothing refused it: zoo status listed both recipes' runs done, and
    zoo export refused the group ("the runs disagree on recipe"), with no option to export either."""
    capsys.readouterr()
    assert main(_zoo_run(tiny_cifar, sweep, '--epochs', '1', '--recipe', 'nam')) == 2
    err = capsys.readouterr().err
    assert f'the sweep already plans this model on this data set under recipe zam ({RUN}), this plan has recipe nam' \
        in err
    assert sorted(p.name for p in sweep.iterdir()) == ['_zoo', RUN]
    assert main(_zoo_run(tiny_cifar, sweep, '--epochs', '1')) == 0       # the sweep's own recipe still runs


def test_a_folder_copied_from_another_run_is_refused_by_status_and_left_out_of_the_export(sweep, tmp_path):
    """status compared only the epochs with the plan: a copy of seed 0's folder in seed 1's place was `done`, and
    `zoo export` exported seed 0's run as two seeds."""
    from zamzoo.zoo import export_sweep, sweep_status
    from zamzoo.sweep_files import PLAN_FILE
    from zamzoo.zoo.state import update_record

    other = RUN.replace('-s0', '-s1')
    shutil.copytree(sweep / RUN, sweep / other)
    update_record(sweep, PLAN_FILE, {other: dict(json.loads((sweep / '_zoo' / PLAN_FILE).read_text())[RUN], seed=1)})
    runs = {r['seed']: r for r in sweep_status(sweep)['runs']}
    assert runs[0]['state'] == 'done' and runs[1]['state'] == 'refused'
    assert runs[1]['error'].startswith('the folder holds a run with seed=0, the plan has 1: other settings')
    result = export_sweep(sweep, min_seeds=2, staging=tmp_path / 'staging')
    assert result['exported'] == [] and result['too_few'][0]['left_out'] == [{'seed': 1, 'state': 'refused'}]


def test_a_copy_of_the_data_at_another_path_is_the_same_data_for_the_plan(sweep, tiny_cifar, tmp_path):
    """The plan compared the arguments' data path: every finished run was a conflict once the data moved."""
    from zamzoo.zoo import plan_sweep
    from zamzoo.zoo.plan import plan_states
    copy = tmp_path / 'copy'
    shutil.copytree(tiny_cifar, copy)
    [run] = plan_sweep([TINY], ['cifar10'], [0], copy, sweep, epochs=1, batch_size=16, device='cpu')
    assert plan_states([run])[RUN]['conflict'] is None and plan_states([run])[RUN]['state'] == 'done'
    batch = copy / 'cifar-10-batches-py' / 'data_batch_1'
    content = pickle.loads(batch.read_bytes())
    content['data'][0, 0] ^= 1  # one pixel: other data at that path
    batch.write_bytes(pickle.dumps(content, protocol=2))
    assert 'is not the data the run in' in plan_states([run])[RUN]['conflict']


def test_a_held_out_run_is_not_done_on_other_data_at_its_path(tmp_path):
    """The plan reopens the data with the run's split file: data lacking the images it lists raised, which was taken
    as data that cannot be opened now, so a run trained on other classes was 'done' (image folders and hf alike)."""
    from conftest import write_images
    from zamzoo.zoo import plan_sweep
    from zamzoo.zoo.plan import plan_states
    data, out = tmp_path / 'data', tmp_path / 'sweep'
    options = dict(holdout=0.34, epochs=1, batch_size=2, img_size=16, device='cpu')
    assert main(['zoo', 'run', '--models', TINY, '--datasets', 'folder', '--data', str(write_images(data, {
        'a': 3, 'b': 3})), '--holdout', '0.34', '--seeds', '0', '--epochs', '1', '--batch-size', '2', '--img-size',
        '16', '--device', 'cpu', '--out', str(out)]) == 0
    [run] = plan_sweep([TINY], ['folder'], [0], data, out, **options)
    assert plan_states([run])[run.name] == dict(plan_states([run])[run.name], state='done', conflict=None)
    shutil.rmtree(data)
    write_images(data, {'c': 3, 'd': 3})  # other classes, at the same path
    assert "listed in the run's split file but missing" in plan_states([run])[run.name]['conflict']
    shutil.rmtree(data)  # not there now: a finished run does not need it
    assert plan_states([run])[run.name]['conflict'] is None


# ------------------------------------------------------------------ D4: a checkpoint that cannot be read
def test_an_unreadable_checkpoint_is_corrupt_and_the_failure_says_how_to_start_over(sweep, tiny_cifar, capsys):
    folder = sweep / RUN
    for name in ('results.json', 'model.safetensors'):
        (folder / name).unlink()
    with open(folder / 'checkpoint.pt', 'r+b') as f:
        f.truncate(5000)
    status = run_status(folder)
    assert status.state == 'failed' and status.error.startswith('corrupt: ') and 'checkpoint.pt' in status.error
    assert 'move' in status.error
    printed = _status_line(sweep, capsys)
    assert printed.startswith('failed ') and 'resum' not in printed
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 1
    error = run_status(folder).error                           # the attempt's failure, as zoo status shows it
    assert 'not a readable zamzoo checkpoint' in error and 'move' in error and 'away' in error
    (folder / 'checkpoint.pt').rename(sweep / 'moved.pt')       # as it says: the run starts over
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 0
    assert run_status(folder).state == 'done'


# ------------------------------------------------------------------ D10: the aggregate counts what was trained
def test_the_aggregate_counts_only_epochs_this_invocation_trained(sweep, tiny_cifar):
    summary = json.loads((sweep / '_zoo' / 'last-run.json').read_text())
    assert summary['train_images'] == read_run(sweep / RUN).metrics[0]['train_images'] > 0   # the epoch it trained
    (sweep / RUN / 'metrics.jsonl').write_text('{"epoch": ')       # corrupt: repaired from the checkpoint
    assert main([*_zoo_run(tiny_cifar, sweep, '--epochs', '1'), '--retry-failed']) == 0
    summary = json.loads((sweep / '_zoo' / 'last-run.json').read_text())
    assert summary['ended']['done'] == 1 and summary['train_images'] == 0   # the repair trained no epoch


def test_a_slurm_sweep_with_nothing_left_to_train_or_wait_for_is_finished(sweep, tiny_cifar):
    """`compare --executor slurm` without --wait never wrote its report: once every run had ended, each rerun said
    'submitted 0 run(s); run this command again once they have ended'."""
    from zamzoo.zoo import plan_sweep, run_sweep
    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, sweep, epochs=1, batch_size=16, device='cpu')
    summary = run_sweep(runs, sweep, executor='slurm')  # nothing to submit: no SLURM needed
    assert summary['launched'] == 0 and summary['finished'] is True

    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, '-c', (  # the SLURM job training the run holds its folder's lock
        'import time, zamzoo.train.run_folder as rf\n'
        f'with rf.lock_run_folder({str(runs[0].folder)!r}):\n    print("locked", flush=True); time.sleep(120)')],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        assert run_sweep(runs, sweep, executor='slurm')['finished'] is False  # it was True: a report of nothing
    finally:
        holder.kill()
