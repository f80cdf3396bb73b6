"""`zoo run` sees its runs end: `--wait` on SLURM returns once every task has left the queue, also on a cluster
without accounting (sacct), like tests/test_zoo_slurm.py's; the local executor reads each worker's outcome from a log
of its attempt's own, so a run left to another invocation on the same --out is neither counted nor a failure;
--dry-run's node time is a makespan's lower bound and a --device cpu sweep is not priced in GPU-hours."""
import json
import subprocess
import sys
import threading
import time
from argparse import Namespace

import pytest

from zamzoo.cli import main
from zamzoo.train import train
from zamzoo.train.run_folder import lock_run_folder
from zamzoo.zoo import plan_sweep, sweep_status

from test_bench_gpu import _measured
from test_zoo import TINY, one_thread  # noqa: F401 (one thread here and in the runs: an autouse fixture)
from test_zoo_slurm import _wait_for, slurm_cluster  # noqa: F401 (the one-node cluster: a fixture)

WAIT_BOUND_S = 240  # the task left running trains one epoch of 64 images; the old wait never returned


# ------------------------------------------------------------------ D12: --wait after a task was cancelled
def test_wait_returns_when_a_cancelled_task_left_the_queue(slurm_cluster, tiny_cifar, tmp_path):
    out = tmp_path / 'sweep'
    command = [sys.executable, '-m', 'zamzoo', 'zoo', 'run', '--executor', 'slurm', '--device', 'cpu', '--models',
               'mobilenet_plain', '--seeds', '0', '1', '--epochs', '1', '--batch-size', '16', '--data',
               str(tiny_cifar), '--out', str(out), '--wait']
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        jobs = out / '_zoo' / 'jobs.json'
        _wait_for(jobs.exists, 'the job array to be submitted', timeout=120)
        cancelled = json.loads(jobs.read_text())['mobilenet_plain-cifar100-zam-s0']
        subprocess.run(['scancel', cancelled], env=slurm_cluster, check=True)
        t0 = time.time()
        printed, _ = proc.communicate(timeout=WAIT_BOUND_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, printed                          # a run did not finish
    assert time.time() - t0 < WAIT_BOUND_S, printed
    assert f'SLURM job {cancelled} left the queue without a result' in printed
    assert 'the reason is unknown: sacct gives no end state' in printed
    assert 'ended: 1 done, 0 failed, 1 interrupted' in printed
    states = {r['seed']: r['state'] for r in sweep_status(out)['runs']}
    assert states == {0: 'pending', 1: 'done'}                     # the cancelled run resumes next time


# ------------------------------------------------------------------ D12: the wait loop with a stand-in for submitit
class FakeJob:
    """A submitit job whose task never leaves a result; sacct's end state `sacct` (None: no accounting)."""

    def __init__(self, job_id, sacct=None):
        from submitit.core.utils import JobPaths
        self.job_id, self.sacct, self.done_calls = job_id, sacct, 0
        self.watcher = self
        self.paths = JobPaths('/nowhere/%j', job_id=job_id)  # where its task's log would be

    def done(self):
        self.done_calls += 1
        assert self.done_calls < 50, 'still waiting for a task that left the queue'
        return False

    def get_info(self, mode='force'):
        return {'State': self.sacct} if self.sacct else {}

    def is_done(self, job_id, mode='standard'):
        return self.sacct is not None


def test_wait_loop_ends_tasks_gone_from_the_queue_and_marks_out_of_memory(tiny_cifar, tmp_path, monkeypatch):
    pytest.importorskip('submitit')
    from zamzoo.zoo import slurm

    runs = plan_sweep([TINY], ['cifar10'], [0, 1, 2], tiny_cifar, tmp_path, epochs=1)
    jobs = [FakeJob('7_0'), FakeJob('7_1', sacct='OUT_OF_MEMORY'), FakeJob('7_2', sacct='CANCELLED by 0')]
    reads = iter([{'7_0', '7_1', '7_2'}, {'7_1'}, None, {'7_1'}, set(), set()])  # None: squeue failed
    monkeypatch.setattr(slurm, '_queued_job_ids', lambda: next(reads), raising=False)
    monkeypatch.setattr(slurm, 'POLL_S', 0)
    ended = []
    final = slurm.wait_slurm(jobs, runs, lambda kind, run, state: ended.append(run.name))
    assert ended == [runs[0].name, runs[2].name, runs[1].name]    # each after two reads without it
    assert final[runs[0].name]['state'] == 'pending' and 'the reason is unknown' in final[runs[0].name]['note']
    assert final[runs[1].name]['state'] == 'failed' and 'OUT_OF_MEMORY' in final[runs[1].name]['error']
    assert final[runs[1].name]['log'] == '/nowhere/7_1/7_1_0_log.err'
    assert final[runs[2].name]['state'] == 'pending'
    assert final[runs[2].name]['note'] == 'SLURM job 7_2 ended CANCELLED by 0 without a result'


# ------------------------------------------------------------------ D5: two invocations on one --out
def test_a_run_left_to_another_invocation_is_read_as_such_and_not_counted(tiny_cifar, tmp_path, capsys):
    """Another invocation holds the run (its lock) and writes progress lines to the run's log meanwhile: this
    invocation's worker says `running elsewhere`, which is read back although the other's output never ends a
    line; its epochs are not counted, and the sweep does not fail for it."""
    from zamzoo.zoo.commands import _print_summary, print_event
    from zamzoo.zoo.local import run_local
    from zamzoo.zoo.plan import plan_states
    from zamzoo.zoo.sweep import summarize

    out = tmp_path / 'sweep'
    runs = plan_sweep([TINY], ['cifar10'], [0], tiny_cifar, out, epochs=1, batch_size=16, device='cpu')
    train(runs[0].config)                                            # the other invocation's epoch
    before = {runs[0].name: dict(plan_states(runs)[runs[0].name], state='pending', epoch=0)}  # as planned earlier
    shared_log = out / '_zoo' / 'logs' / f'{runs[0].name}.log'
    shared_log.parent.mkdir(parents=True)
    stop = threading.Event()

    def other_invocation_logging():                                   # tqdm's \r-lines, never ended by a newline
        with open(shared_log, 'a') as f:
            while not stop.is_set():
                f.write('\repoch 1:  50%|#####     | 32/64 [00:00<?, ?img/s]')
                f.flush()
                time.sleep(0.002)
    writer = threading.Thread(target=other_invocation_logging)
    with lock_run_folder(runs[0].folder):
        writer.start()
        try:
            t0 = time.perf_counter()
            final = run_local(runs, out, device='cpu')
        finally:
            stop.set()
            writer.join()
    assert final[runs[0].name]['skipped']
    print_event('end', runs[0], final[runs[0].name])
    printed = capsys.readouterr().out
    assert f'running   {runs[0].name}: epoch 1/1' in printed and printed.rstrip().endswith('(left to another process)')
    summary = summarize(runs, runs, before, final, time.perf_counter() - t0)
    assert summary['train_images'] == 0 and summary['ended']['elsewhere'] == 1 and summary['ended']['running'] == 0
    assert _print_summary(dict(summary, finished=True, runs_per_gpu=1), Namespace(out=str(out)), 'last-run.json') == 0
    own = [p for p in shared_log.parent.glob(f'{runs[0].name}.*.log')]
    assert len(own) == 1 and own[0].read_text().strip().endswith(f'{runs[0].folder}: running elsewhere')


# ------------------------------------------------------------------ a worker killed by a signal (the OOM killer's)
def test_a_worker_killed_by_a_signal_is_said_and_counted_apart_from_interruptions(tiny_cifar, tmp_path, monkeypatch,
                                                                                 capsys):
    """A worker's SIGKILL (the out-of-memory killer's) was reported as a Ctrl-C is: pending, '1 interrupted', no
    signal, no log. Now the signal and the attempt's log are named, and counted apart; the run stays resumable."""
    from zamzoo.zoo import local
    monkeypatch.setattr(local, 'worker_command', lambda run, processes: [
        sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'])
    out = tmp_path / 'sweep'
    assert main(['zoo', 'run', '--models', TINY, '--datasets', 'cifar10', '--seeds', '0', '--epochs', '1',
                 '--device', 'cpu', '--data', str(tiny_cifar), '--out', str(out)]) == 1
    printed = capsys.readouterr().out
    [log] = (out / '_zoo' / 'logs').glob(f'{TINY}-cifar10-zam-s0.*.log')
    signal_9 = 'signal 9 (SIGKILL: e.g. the out-of-memory killer)'
    assert f'\n          killed by {signal_9}\n          log: {log}\n' in printed
    assert 'ended: 0 done, 0 failed, 0 interrupted, 1 killed by a signal this command did not send' in printed
    summary = json.loads((out / '_zoo' / 'last-run.json').read_text())
    assert summary['ended']['killed'] == 1 and summary['ended']['pending'] == 0
    assert summary['killed'] == [{'run': f'{TINY}-cifar10-zam-s0', 'signal': signal_9, 'log': str(log), 'epoch': 0}]
    assert 'the same command trains it again from the start' in printed  # it said: resumes it from its checkpoint
    assert log.read_text().endswith(f'the worker was killed by {signal_9}\n')
    assert sweep_status(out)['runs'][0]['state'] == 'pending'       # resumable, as an interrupted run is
    assert (local.signal_name(15), local.signal_name(40)) == ('signal 15 (SIGTERM)', 'signal 40')


# ------------------------------------------------------------------ D11: --dry-run's cost
def _dry_run(data, out, monkeypatch, *extra):
    from zamzoo.bench import gpu

    folder = out.parent / 'bench'
    if not folder.exists():
        _measured(folder, [('mobilenet_zam', 'eager', {'images_per_s': 2500.0})])
    monkeypatch.setattr(gpu, 'DEFAULT_RESULTS', folder)
    return main(['zoo', 'run', '--models', 'mobilenet_zam', '--datasets', 'cifar100', '--epochs', '30', '--data',
                 str(data), '--out', str(out), '--dry-run', *extra])


def test_dry_run_node_time_is_a_lower_bound(tiny_cifar, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'sweep'
    # 30 epochs x 50,000 images / 2,500 images/s = 600 s = 0.17 h a run: the node needs at least that long
    assert _dry_run(tiny_cifar, out, monkeypatch, '--seeds', '0') == 0
    assert 'cost: 0.17 GPU-hours for 1 run(s), at least 0.17 h on one 8-GPU node' in capsys.readouterr().out
    assert _dry_run(tiny_cifar, out, monkeypatch, '--seeds', *map(str, range(16))) == 0  # 2 after another per GPU
    assert 'cost: 2.67 GPU-hours for 16 run(s), at least 0.33 h on one 8-GPU node' in capsys.readouterr().out
    assert _dry_run(tiny_cifar, out, monkeypatch, '--seeds', '0', '--gpus-per-run', '2') == 0  # on 2 GPUs: half
    assert 'cost: 0.17 GPU-hours for 1 run(s), at least 0.08 h on one 8-GPU node' in capsys.readouterr().out


def test_a_cpu_sweep_is_not_priced_in_gpu_hours(tiny_cifar, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'sweep'
    assert _dry_run(tiny_cifar, out, monkeypatch, '--seeds', '0', '--device', 'cpu') == 0
    printed = capsys.readouterr().out
    assert 'GPU-hours' not in printed and 'cost: unknown' in printed and 'not a --device cpu' in printed
    assert _dry_run(tiny_cifar, out, monkeypatch, '--seeds', '0', '--device', 'cpu', '--images-per-second', '100') == 0
    assert 'cost: 4.17 CPU process-hours for 1 run(s)' in capsys.readouterr().out       # 1,500,000 images / 100/s


def test_a_run_of_several_processes_one_killed_fails_saying_so(tmp_path):
    """torchrun exits 1 when a rank is killed: the failure line was its closing rule of '=' characters."""
    from zamzoo.zoo.local import _last_line
    log = tmp_path / 'attempt.log'
    log.write_text('Traceback (most recent call last):\n  ...\ntorch.distributed.elastic.multiprocessing.errors.'
                   'ChildFailedError:\n' + '=' * 53 + '\nFailures:\n  <NO_OTHER_FAILURES>\n' + '-' * 53 +
                   '\nRoot Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n'
                   '  exitcode  : -9 (pid: 4242)\n  traceback : Signal 9 (SIGKILL) received by PID 4242\n' + '=' * 53
                   + '\n')
    assert _last_line(log) == 'a process of the run was killed by signal 9 (SIGKILL: e.g. the out-of-memory killer)'
    log.write_text('ValueError: bad things\n' + '=' * 53 + '\n')
    assert _last_line(log) == 'ValueError: bad things'
    log.write_text(  # rank 0 raised; torchrun then ended rank 1 with SIGTERM, which it lists first
        "Traceback (most recent call last):\n    raise ValueError('out of data')\nValueError: out of data\n"
        'torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n' + '=' * 53 + '\nFailures:\n[1]:\n'
        '  rank      : 1 (local_rank: 1)\n  exitcode  : -15 (pid: 11384)  (SIGTERM)\n' + '-' * 53 +
        '\nRoot Cause (first observed failure):\n[0]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 11383)\n'
        '  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html\n' + '=' * 53)
    assert _last_line(log) == 'ValueError: out of data'  # it said: killed by signal 15 (SIGTERM)
