"""zamzoo.zoo without a cluster: the plan and its cost, the local executor (two runs at once on a CPU, exactly
`zamzoo train`'s weights), idempotence, failure marking and --retry-failed, status and export of groups.
(The SLURM executor: tests/test_zoo_slurm.py.)"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from zamzoo.cli import main
from conftest import skip_or_fail_in_ci
from zamzoo.train import TrainConfig, train
from zamzoo.zoo import plan_sweep, run_sweep, sweep_status

REPO = Path(__file__).resolve().parent.parent
TINY = 'test_resnet'  # timm's tiny test ResNet: fast on a CPU (zoo models are exported in the SLURM test)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread here and in the runs' processes (they inherit OMP_NUM_THREADS): weights comparable bit for bit."""
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _options(**kw):
    return dict(dict(epochs=2, batch_size=16, device='cpu'), **kw)


def test_dry_run_prints_the_plan_and_its_cost(tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'sweep'
    args = ['zoo', 'run', '--models', 'mobilenet_z*_max', TINY, '--datasets', 'cifar100', 'cifar10',
            '--seeds', '0', '1', '--epochs', '3', '--data', str(tiny_cifar), '--out', str(out), '--dry-run']
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert '8 run(s) planned' in printed and 'cost: unknown' in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith(('mobilenet', TINY))]
    assert [(r[0], r[1], r[3], r[4], r[5], r[6], Path(r[7]).name) for r in rows[:2]] == [
        ('mobilenet_zam_max', 'cifar100', '0', 'pending', '0/3', 'train', 'mobilenet_zam_max-cifar100-zam-s0'),
        ('mobilenet_zam_max', 'cifar100', '1', 'pending', '0/3', 'train', 'mobilenet_zam_max-cifar100-zam-s1')]
    assert len(rows) == 8 and not out.exists()                       # a dry run writes nothing
    assert main([*args, '--images-per-second', '2000', '--gpus-per-run', '2']) == 0
    # 8 runs x 3 epochs x 50,000 images / 2,000 images/s = 600 s = 1/6 h, on 2 GPUs per run
    assert 'cost: 0.33 GPU-hours for 8 run(s)' in capsys.readouterr().out

    runs = plan_sweep(['resnet164_nam'], ['cifar10'], [4], tiny_cifar, out)   # the model's own recipe
    assert [(r.recipe, r.epochs, r.name) for r in runs] == [('spem', 164, 'resnet164_nam-cifar10-spem-s4')]
    with pytest.raises(ValueError, match=r"no zamzoo model matches 'nothing_\*'"):
        plan_sweep(['nothing_*'], ['cifar100'], [0], tiny_cifar, out)
    with pytest.raises(ValueError, match='did you mean resnet18_zam'):
        plan_sweep(['resnet18_zm'], ['cifar100'], [0], tiny_cifar, out)


def test_data_that_is_not_there_is_refused_before_any_run(tmp_path, capsys):
    """--data that does not exist: --dry-run priced the runs (exit 0), a real run started each one to fail with the
    same DataError. Now one line and exit 2 before anything starts or is written; CIFAR with --download and a Hub
    name read no local path, so are planned as before."""
    out, missing = tmp_path / 'sweep', tmp_path / 'nodata'
    args = ['zoo', 'run', '--models', TINY, '--seeds', '0', '1', '--epochs', '1', '--device', 'cpu', '--out', str(out)]
    cifar = f'{missing}/cifar-100-python/{{train,test,meta}} (or --download to fetch it)'
    for dry in (['--dry-run', '--images-per-second', '100'], []):
        assert main([*args, '--data', str(missing), *dry]) == 2
        printed = capsys.readouterr()
        assert printed.err == f'zamzoo zoo: error: --data {missing} does not exist; expected {cifar}\n'
        assert printed.out == '' and not out.exists()
    assert main([*args, '--datasets', 'folder', '--data', str(missing), '--dry-run']) == 2
    assert f'--data {missing} does not exist; expected {missing}/train/<class>/<image>' in capsys.readouterr().err
    assert main([*args, '--datasets', 'hf', '--data', str(missing), '--dry-run']) == 2
    assert f'the local path {missing} does not exist' in capsys.readouterr().err
    assert main([*args, '--data', str(missing), '--download', '--dry-run']) == 0
    assert main([*args, '--datasets', 'hf', '--data', 'owner/name', '--dry-run']) == 0


def test_local_runs_two_at_once_exactly_as_zamzoo_train(tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'sweep'
    runs = plan_sweep([TINY], ['cifar100'], [0, 1], tiny_cifar, out, **_options())
    events = []
    summary = run_sweep(runs, out, runs_per_gpu=2, device='cpu', on_event=lambda kind, run, _: events.append(kind))
    assert events == ['start', 'start', 'end', 'end']                # both processes ran at the same time
    assert summary['ended']['done'] == 2 and summary['launched'] == 2
    assert summary['train_images'] == 2 * 2 * 64                      # 2 runs x 2 epochs x 64 images
    assert summary['aggregate_images_per_s'] == pytest.approx(256 / summary['wall_s'])
    recorded = json.loads((out / '_zoo' / 'last-run.json').read_text())
    assert recorded['aggregate_images_per_s'] == summary['aggregate_images_per_s'] and recorded['runs_per_gpu'] == 2

    direct = train(TrainConfig(model=TINY, data=str(tiny_cifar), seed=1, out=str(tmp_path / 'direct'), **_options()))
    from safetensors.torch import load_file
    a, b = load_file(str(runs[1].folder / 'model.safetensors')), load_file(str(tmp_path / 'direct' / 'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((runs[1].folder / 'results.json').read_text())['top1'] == direct['top1']

    again = run_sweep(runs, out, runs_per_gpu=2, device='cpu')        # idempotent: nothing left to train
    assert again['launched'] == 0 and again['skipped']['done'] == 2
    assert main(['zoo', 'status', '--out', str(out), '--json']) == 0
    status = json.loads(capsys.readouterr().out)
    assert status['totals'] == {'runs': 2, 'pending': 0, 'running': 0, 'done': 2, 'failed': 0, 'refused': 0,
                                'epochs_done': 4, 'epochs_total': 4}
    assert [(r['state'], r['seed'], r['epoch'], r['job_id']) for r in status['runs']] == [('done', 0, 2, None),
                                                                                        ('done', 1, 2, None)]

    # export: 2 finished seeds are too few for --min-seeds 3; with 2 the group is exported, or here refused since
    # timm's test model is no zoo model (the error is reported, the command exits 1)
    readme, card = tmp_path / 'README.md', tmp_path / 'MODEL_CARD.md'
    shutil.copy(REPO / 'README.md', readme)
    shutil.copy(REPO / 'MODEL_CARD.md', card)
    export = ['zoo', 'export', '--out', str(out), '--staging', str(tmp_path / 'staging'), '--readme', str(readme),
              '--model-card', str(card)]
    assert main(export) == 0
    assert f'not exported {TINY}.cifar100: 2 finished seed(s) of 2 (--min-seeds 3)' in capsys.readouterr().out
    assert main([*export, '--min-seeds', '2']) == 1
    assert f"'{TINY}' is not a zamzoo model" in capsys.readouterr().err


def test_an_interrupted_zoo_run_records_what_it_did_in_place_of_the_last_runs_record(tiny_cifar, tmp_path,
                                                                                    monkeypatch, capsys):
    """Ctrl-C while the second run trains: last-run.json was the earlier invocation's (finished, its counts); it is
    this one's, unfinished and interrupted, with the run that ended before (failed) and the one stopped (pending)."""
    from zamzoo.zoo import commands, local
    out = tmp_path / 'sweep'
    (out / '_zoo').mkdir(parents=True)
    (out / '_zoo' / 'last-run.json').write_text(json.dumps({'planned': 9, 'launched': 9, 'finished': True}))
    monkeypatch.setattr(local, 'worker_command', lambda run, processes: [
        sys.executable, '-c', f'import time, sys; sys.exit(3) if {run.config.seed} == 0 else time.sleep(60)'])
    print_event = commands.print_event

    def interrupted_at_the_second_start(kind, run, detail):
        print_event(kind, run, detail)
        if kind == 'start' and run.config.seed == 1:
            raise KeyboardInterrupt  # as Ctrl-C does, in the executor's loop
    monkeypatch.setattr(commands, 'print_event', interrupted_at_the_second_start)
    assert main(['zoo', 'run', '--models', TINY, '--datasets', 'cifar10', '--seeds', '0', '1', '2', '--epochs', '1',
                 '--device', 'cpu', '--data', str(tiny_cifar), '--out', str(out)]) == 130
    recorded = json.loads((out / '_zoo' / 'last-run.json').read_text())
    assert {k: recorded.get(k) for k in ('planned', 'launched', 'finished', 'interrupted', 'error')} == {
        'planned': 3, 'launched': 2, 'finished': False, 'interrupted': True, 'error': None}, recorded  # seed 2: never
    assert (recorded['ended']['failed'], recorded['ended']['pending'], recorded['ended']['done']) == (1, 1, 0)
    assert recorded['failed'][0]['run'] == f'{TINY}-cifar10-zam-s0'


def test_status_and_export_need_a_sweep(tmp_path, capsys):
    assert main(['zoo', 'status', '--out', str(tmp_path)]) == 2
    assert 'holds no sweep' in capsys.readouterr().err
    assert main(['zoo', 'run', '--models', TINY, '--executor', 'slurm', '--runs-per-gpu', '2',
                 '--data', str(tmp_path)]) == 2
    assert '--runs-per-gpu is for --executor local' in capsys.readouterr().err
    assert main(['zoo', 'run', '--models', TINY, '--executor', 'slurm', '--mps', '--data', str(tmp_path)]) == 2
    assert '--mps is for --executor local' in capsys.readouterr().err


def test_a_run_another_process_trains_is_left_to_it(tiny_cifar, tmp_path, capsys):
    """Two invocations on one --out: the run folder's lock (held here, as by a training process) makes the second
    skip the run, both when planning and in the worker (a run started between the two)."""
    from zamzoo.train import lock_run_folder
    from zamzoo.zoo.worker import run_one

    out = tmp_path / 'sweep'
    runs = plan_sweep([TINY], ['cifar100'], [0], tiny_cifar, out, **_options())
    with lock_run_folder(runs[0].folder):
        summary = run_sweep(runs, out, device='cpu')
        assert summary['launched'] == 0 and summary['skipped']['running'] == 1
        assert run_one(runs[0].config) == 'running elsewhere'
        assert sweep_status(out)['runs'][0]['state'] == 'running'
        assert main(['zoo', 'run', '--models', TINY, '--seeds', '0', '--epochs', '2', '--batch-size', '16',
                     '--data', str(tiny_cifar), '--out', str(out), '--dry-run']) == 0
        assert 'skip (being trained by another process)' in capsys.readouterr().out
    assert not (runs[0].folder / 'checkpoint.pt').exists()


def test_gpu_slots_and_commands(monkeypatch):
    """GPU assignment (no GPU needed): groups of --gpus-per-run visible GPUs, each --runs-per-gpu times, spread
    over the GPUs first; a run's CUDA_VISIBLE_DEVICES is its slot; several processes per run go through torchrun."""
    from zamzoo.errors import ZamzooError
    from zamzoo.zoo.local import _environment, local_slots, worker_command

    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6')
    assert local_slots(None, 1, 2) == ['4', '5', '6', '4', '5', '6']
    assert local_slots('cuda', 2, 2) == ['4,5', '4,5']                # GPU 6 cannot hold a 2-GPU run
    assert local_slots('cpu', 1, 3) == [None, None, None]             # --device cpu: K runs at once on the CPU
    with pytest.raises(ZamzooError, match='--gpus-per-run 4: only 3 GPU'):
        local_slots(None, 4, 1)
    assert _environment('4,5', 3)['CUDA_VISIBLE_DEVICES'] == '4,5' and _environment(None, 3)['OMP_NUM_THREADS'] == '1'
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    assert local_slots(None, 1, 2) == [None, None]
    with pytest.raises(ZamzooError, match='no GPU is visible'):
        local_slots('cuda', 1, 1)

    run = plan_sweep([TINY], ['cifar100'], [0], '/data', '/out', **_options())[0]
    one, two = worker_command(run, 1), worker_command(run, 2)
    assert one[1:3] == ['-m', 'zamzoo.zoo.worker'] and TrainConfig(**json.loads(one[-1])) == run.config
    assert two[1:6] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'] and two[-1] == one[-1]


FAKE_MPS = """#!/usr/bin/env bash
# a stand-in for NVIDIA's nvidia-cuda-mps-control: records its calls, answers commands once started
if [ "$1" = "-d" ]; then
    echo "start CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES logs=$CUDA_MPS_LOG_DIRECTORY" >>"$FAKE_MPS_CALLS"
    %s
fi
%s
read -r command
[ -e "$CUDA_MPS_PIPE_DIRECTORY/control" ] || exit 1
echo "$command" >>"$FAKE_MPS_CALLS"
[ "$command" != quit ] || rm "$CUDA_MPS_PIPE_DIRECTORY/control"
"""
STARTS = 'touch "$CUDA_MPS_PIPE_DIRECTORY/control"; exit 0'


@pytest.fixture
def mps_sweep(tmp_path, monkeypatch, request):
    """Four planned runs, two visible GPUs (4 and 6), workers that record their environment instead of training, a
    temporary folder of the test's own; returns a function that installs a stand-in MPS control daemon."""
    from zamzoo.zoo import local
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,6')
    seen = tmp_path / 'workers.jsonl'
    record = (f'import json, os; open({str(seen)!r}, "a").write(json.dumps({{k: os.environ.get(k) for k in '
              '("CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY")}) + "\\n")')
    monkeypatch.setattr(local, 'worker_command', lambda run, processes: [sys.executable, '-c', record])
    temp = Path(tempfile.mkdtemp(prefix='zz-', dir='/tmp'))  # short: the daemon's socket paths must fit (107 bytes)
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    monkeypatch.setattr(tempfile, 'tempdir', str(temp))
    monkeypatch.setenv('FAKE_MPS_CALLS', str(tmp_path / 'mps-calls'))

    def install(start=STARTS, answer=''):
        bin_dir = tmp_path / 'bin'
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / 'nvidia-cuda-mps-control').write_text(FAKE_MPS % (start, answer))
        (bin_dir / 'nvidia-cuda-mps-control').chmod(0o755)
        monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = plan_sweep([TINY], ['cifar100'], [0, 1, 2, 3], '/data', tmp_path / 'out', **_options())
    return runs, install, seen, temp


def test_mps_serves_the_runs_sharing_the_gpus_and_quits_after_them(mps_sweep, tmp_path):
    """--mps without a GPU (a stand-in daemon, workers that record their environment): one daemon for the slots'
    GPUs, answering before the first run starts; each run a client naming its GPU as the daemon numbers them (4 ->
    0, 6 -> 1), the events naming the real GPU; the daemon quit after the last run, its pipe folder removed."""
    from zamzoo.zoo.local import run_local
    runs, install, seen, temp = mps_sweep
    install()
    events = []
    final = run_local(runs, tmp_path / 'out', runs_per_gpu=2, device='cuda', mps=True,
                      on_event=lambda kind, run, detail: events.append((kind, detail)))
    assert sorted(final) == sorted(run.name for run in runs)
    assert all(state['returncode'] == 0 for state in final.values())
    calls = (tmp_path / 'mps-calls').read_text().splitlines()
    assert calls[0] == f"start CUDA_VISIBLE_DEVICES=4,6 logs={tmp_path / 'out' / '_zoo' / 'logs' / 'mps'}"
    assert calls[1:] == ['get_server_list', 'quit']
    workers = [json.loads(line) for line in seen.read_text().splitlines()]
    assert sorted(w['CUDA_VISIBLE_DEVICES'] for w in workers) == ['0', '0', '1', '1']
    pipes = {w['CUDA_MPS_PIPE_DIRECTORY'] for w in workers}
    assert len(pipes) == 1 and Path(pipes.pop()).parent == temp
    assert sorted(d for kind, d in events if kind == 'start') == ['4', '4', '6', '6']
    assert not list(temp.iterdir())


def test_mps_that_cannot_start_stops_the_sweep_before_any_run(mps_sweep, tmp_path, monkeypatch, capsys):
    """No daemon program, a start that fails, a daemon that is not listening or never answers (within the time
    given): an error that says so, no run started (a run that could not reach the daemon would silently train
    without MPS), no folder left but the one of a daemon that would not quit, which is named; --mps without a GPU
    is refused, by `zoo run` before anything else."""
    from zamzoo.errors import UsageError, ZamzooError
    from zamzoo.zoo import mps
    from zamzoo.zoo.local import run_local
    runs, install, seen, temp = mps_sweep
    out = tmp_path / 'out'
    path = os.environ['PATH']
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    with pytest.raises(ZamzooError, match='nvidia-cuda-mps-control is not on PATH'):
        run_local(runs, out, device='cuda', mps=True)
    monkeypatch.setenv('PATH', path)
    install('echo "no GPU for MPS" >&2; exit 3')
    with pytest.raises(ZamzooError, match=r'-d` failed \(exit 3: no GPU for MPS\)'):
        run_local(runs, out, device='cuda', mps=True)
    monkeypatch.setattr(mps, 'READY_S', 1.0)
    install('exit 0')  # started, not listening: the control program exits 1
    with pytest.raises(ZamzooError, match=r'did not answer within 1 s \(no output\)'):
        run_local(runs, out, device='cuda', mps=True)
    assert not list(temp.iterdir())
    install(answer='exec sleep 30')  # a daemon that takes the command and never answers
    monkeypatch.setattr(mps, 'QUIT_S', 1.0)
    capsys.readouterr()
    with pytest.raises(ZamzooError, match='did not answer within 1 s'):
        run_local(runs, out, device='cuda', mps=True)
    (kept,) = temp.iterdir()
    assert f'did not quit within 1 s; stop it with `echo quit | CUDA_MPS_PIPE_DIRECTORY={kept} ' in capsys.readouterr().err
    assert not seen.exists()
    with pytest.raises(UsageError, match='no GPU is visible here'):
        run_local(runs, out, device='cpu', mps=True)
    assert main(['zoo', 'run', '--models', TINY, '--device', 'cpu', '--mps', '--data', str(tmp_path)]) == 2


def test_mps_with_nvidias_own_control_daemon(mps_sweep, tmp_path):
    """The same against NVIDIA's nvidia-cuda-mps-control (Debian's nvidia-cuda-mps, which .ci/run installs: the daemon
    starts, answers and quits without a GPU): it listened in the runs' pipe folder, was asked for its servers before
    they started and told to quit after them, exited with status 0, and the pipe folder is gone."""
    from zamzoo.zoo.local import run_local
    if shutil.which('nvidia-cuda-mps-control') is None:
        skip_or_fail_in_ci("nvidia-cuda-mps-control is not installed (Debian non-free's nvidia-cuda-mps)")
    runs, _, seen, _ = mps_sweep
    final = run_local(runs, tmp_path / 'out', runs_per_gpu=2, device='cuda', mps=True)
    assert all(state['returncode'] == 0 for state in final.values())
    (pipe,) = {json.loads(line)['CUDA_MPS_PIPE_DIRECTORY'] for line in seen.read_text().splitlines()}
    log = (tmp_path / 'out' / '_zoo' / 'logs' / 'mps' / 'control.log').read_text()
    assert f'Starting control daemon using socket {pipe}/control' in log
    assert log.index('Cmd:get_server_list') < log.index('Cmd:quit') < log.index('Exit with status 0')
    assert not Path(pipe).exists()


def test_mps_daemon_is_quit_when_the_sweep_gets_sigterm(mps_sweep, tmp_path, monkeypatch):
    """SIGTERM (`timeout`, `kill`, a container stopping) ends the sweep as Ctrl-C does: the runs are stopped and
    the daemon told to quit, its folder removed; without the handler the process would end at once and leave both."""
    import signal
    import threading
    from zamzoo.zoo import local
    runs, install, _, temp = mps_sweep
    install()
    monkeypatch.setattr(local, 'worker_command', lambda run, processes: [sys.executable, '-c',
                                                                         'import time; time.sleep(60)'])
    procs = []

    def on_event(kind, run, detail):
        if kind == 'start' and len(procs) == 1:  # the second run started: the sweep is under way
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        procs.append(kind)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        local.run_local(runs, tmp_path / 'out', runs_per_gpu=1, device='cuda', mps=True, on_event=on_event)
    assert signal.getsignal(signal.SIGTERM) is handler
    assert (tmp_path / 'mps-calls').read_text().splitlines()[-1] == 'quit'
    assert not list(temp.iterdir())


DAEMON_THAT_ENDS_LATE = """
import fcntl, os, time
pipe = os.environ['CUDA_MPS_PIPE_DIRECTORY']
lock = os.open(os.path.join(pipe, 'control_lock'), os.O_RDWR | os.O_CREAT)
fcntl.lockf(lock, fcntl.LOCK_EX)  # as NVIDIA's daemon holds it while it runs
open(os.path.join(pipe, 'control'), 'w').close()
while os.path.exists(os.path.join(pipe, 'control')):
    time.sleep(0.02)
time.sleep(0.5)  # `quit` has returned; the daemon's last log lines come now
open(os.environ['FAKE_MPS_CALLS'], 'a').write('exited\\n')
"""


def test_mps_sweep_ends_after_the_daemon_has_ended(mps_sweep, tmp_path):
    """NVIDIA's `quit` can return before the daemon's process ends (its log thread still writing): the sweep waits
    until the daemon has let go of its lock on <pipe>/control_lock, then removes the pipe folder."""
    from zamzoo.zoo.local import run_local
    runs, install, _, temp = mps_sweep
    (tmp_path / 'daemon.py').write_text(DAEMON_THAT_ENDS_LATE)
    install(start=f'{sys.executable} {tmp_path / "daemon.py"} </dev/null >/dev/null 2>&1 & exit 0')
    run_local(runs, tmp_path / 'out', runs_per_gpu=2, device='cuda', mps=True)
    assert (tmp_path / 'mps-calls').read_text().splitlines()[-2:] == ['quit', 'exited']
    assert not list(temp.iterdir())


def test_a_control_lock_that_cannot_be_opened_means_nothing_to_wait_for(tmp_path):
    """Where <pipe>/control_lock cannot be opened (here a folder: opening it for writing fails even for root) the
    daemon's end cannot be told from it: the sweep does not wait, and no error hides the one that ended the runs."""
    from zamzoo.zoo import mps
    (tmp_path / 'control_lock').mkdir()
    assert mps._has_exited(str(tmp_path))
    assert mps._has_exited(str(tmp_path / 'no-such-pipe'))


def test_mps_pipe_folder_fits_a_socket_address(monkeypatch):
    """The daemon's sockets live in its pipe folder, and a Unix socket's path is at most 107 bytes: under a long
    TMPDIR the folder goes to /tmp."""
    from zamzoo.zoo import mps
    monkeypatch.setattr(tempfile, 'tempdir', '/var/tmp')
    assert mps._pipe_parent() == '/var/tmp'
    monkeypatch.setattr(tempfile, 'tempdir', '/' + 'x' * 80)
    assert mps._pipe_parent() == '/tmp'


def test_an_interrupted_retry_does_not_count_the_failed_runs_it_did_not_reach_as_skipped(tmp_path):
    """Interrupted while the first of two failed runs was retried: the second was counted as a failed run left for
    lack of --retry-failed."""
    from types import SimpleNamespace
    from zamzoo.zoo.sweep import summarize
    runs = [SimpleNamespace(name=name, folder=tmp_path / name) for name in 'ab']
    summary = summarize(runs, runs[:1], {'a': {'state': 'failed'}, 'b': {'state': 'failed'}},
                        {'a': {'state': 'pending', 'epoch': 0}}, 5.0, meant=runs)
    assert (summary['launched'], summary['skipped']['failed']) == (1, 0)
