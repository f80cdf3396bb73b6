"""`zamzoo zoo run --executor slurm` on a real one-node SLURM cluster (Debian's slurmctld, slurmd and munge),
started here on localhost in a temporary folder and stopped at the end (exactly the daemons started here).

Without SLURM (or without root, which slurmd and a munged of the munge user need) the tests are skipped, except
under CI=true, where that is a failure: CI installs the packages (.ci/run)."""
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch

from zamzoo.cli import main
from zamzoo.train import TrainConfig, create_model, load_checkpoint, lock_holder, train

pytestmark = pytest.mark.usefixtures('single_thread')

SBIN = os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin'])
DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'scancel', 'sinfo', 'srun')
MODELS = ('mobilenet_plain',)  # a zoo model (exportable), among the fastest on a CPU
EPOCHS = 2


def _missing() -> str:
    """Why a SLURM cluster cannot be started here ('' when it can)."""
    missing = [n for n in DAEMONS + CLIENTS if shutil.which(n, path=SBIN) is None]
    if missing:
        return f'SLURM is not installed (missing {", ".join(missing)}: apt-get install slurmctld slurmd slurm-client munge)'
    if importlib.util.find_spec('submitit') is None:
        return 'submitit is not installed (pip install -e ".[dev]")'
    if os.geteuid() != 0:
        return 'starting slurmd and munged (as the munge user) needs root'
    try:
        pwd.getpwnam('munge')
    except KeyError:
        return 'no munge user (the munge package creates it)'
    return ''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, host: str, socket_path: Path) -> str:
    return '\n'.join([
        'ClusterName=zamzootest', f'SlurmctldHost={host}(127.0.0.1)', 'SlurmUser=root',
        f'SlurmctldPort={_free_port()}', f'SlurmdPort={_free_port()}',
        'AuthType=auth/munge', f'AuthInfo=socket={socket_path}', 'CredType=cred/munge',
        f'StateSaveLocation={root}/state', f'SlurmdSpoolDir={root}/spool',
        f'SlurmctldPidFile={root}/slurmctld.pid', f'SlurmdPidFile={root}/slurmd.pid',
        f'SlurmctldLogFile={root}/slurmctld.log', f'SlurmdLogFile={root}/slurmd.log',
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
        'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
        'JobAcctGatherType=jobacct_gather/none', 'AccountingStorageType=accounting_storage/none',
        'MpiDefault=none', 'ReturnToService=2', 'KillWait=2', 'SlurmdParameters=config_overrides',
        f'NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN',
        f'PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP', ''])


def _start_munge(root: Path):
    """munged as the munge user, with a fresh key, its socket in `root`."""
    user = pwd.getpwnam('munge')
    d = root / 'munge'
    d.mkdir()
    d.chmod(0o755)  # munged requires execute permission for all on its socket's folder
    key = d / 'munge.key'
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (d, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    sock = d / 'munge.socket.2'
    proc = subprocess.Popen(
        [shutil.which('munged', path=SBIN), '--foreground', f'--key-file={key}', f'--socket={sock}',
         f'--pid-file={d}/munged.pid', f'--log-file={d}/munged.log', f'--seed-file={d}/munged.seed'],
        user='munge', group='munge', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, sock


def _wait_for(condition, what: str, timeout: float = 60, every: float = 0.1, diagnose=lambda: ''):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f'timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}')
        time.sleep(every)


def _job_logs(out, env) -> str:
    """The queue, submitit's task logs of a sweep and the daemons' logs, for a failure message."""
    daemons = Path(env['SLURM_CONF']).parent
    tasks = sorted((Path(out) / '_zoo' / 'slurm').rglob('*_log.*'))
    files = [*tasks, daemons / 'slurmctld.log', daemons / 'slurmd.log']
    logs = ''.join(f'--- {p}\n{p.read_text()[-3000:]}\n' for p in files if p.exists())
    queue = subprocess.run(['scontrol', 'show', 'job'], env=env, capture_output=True, text=True).stdout
    return f'{queue}\n{logs}'


def _squeue(env) -> str:
    return subprocess.run(['squeue', '-h'], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope='module')
def slurm_cluster():
    why = _missing()
    if why:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'CI=true: the SLURM tests must run, but {why}')
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix='zamzoo-slurm-'))
    root.chmod(0o755)
    procs = []
    try:
        munged, sock = _start_munge(root)
        procs.append(munged)
        _wait_for(sock.exists, 'munged')
        host = socket.gethostname().split('.')[0]
        for d in ('state', 'spool'):
            (root / d).mkdir()
        conf = root / 'slurm.conf'
        conf.write_text(_slurm_conf(root, host, sock))
        env = dict(os.environ, SLURM_CONF=str(conf))
        for daemon, flags in (('slurmctld', ['-D', '-c']), ('slurmd', ['-D'])):
            procs.append(subprocess.Popen([shutil.which(daemon, path=SBIN), *flags, '-f', str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle():
            r = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env, capture_output=True, text=True)
            return r.stdout.strip() == 'idle'
        _wait_for(idle, 'the SLURM node to be idle')
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('SLURM_CONF', str(conf))
            mp.setenv('OMP_NUM_THREADS', '1')  # the jobs inherit it (sbatch exports the environment)
            yield env
        subprocess.run(['scancel', '--user', 'root'], env=env, check=False)
        _wait_for(lambda: not _squeue(env), 'the cancelled jobs to end', timeout=30)
    finally:
        for proc in reversed(procs):  # exactly the daemons started here
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope='module', autouse=True)
def quick_poll():
    """The sweeps look at their jobs every 0.2 s instead of every 2 s (zamzoo's courtesy to a real cluster's
    controller): the same waits, ended sooner."""
    from zamzoo.zoo import slurm
    saved, slurm.POLL_S = slurm.POLL_S, 0.2
    yield
    slurm.POLL_S = saved



def _zoo_run(data, out, *models, seeds=(0, 1), epochs=EPOCHS, extra=()):
    return ['zoo', 'run', '--executor', 'slurm', '--device', 'cpu', '--models', *models,
            '--seeds', *map(str, seeds), '--epochs', str(epochs), '--batch-size', '16', '--data', str(data),
            '--out', str(out), *extra]


@pytest.fixture(scope='module')
def sweep(slurm_cluster, tiny_cifar, tmp_path_factory):
    """1 model x 2 seeds x 2 epochs through --executor slurm --wait (one array of 2 tasks): the sweep folder."""
    out = tmp_path_factory.mktemp('slurm-sweep')
    assert main(_zoo_run(tiny_cifar, out, *MODELS, extra=['--wait'])) == 0
    return out


def _weights(folder):
    from safetensors.torch import load_file
    return load_file(str(Path(folder) / 'model.safetensors'))


def test_sweep_status_and_export(sweep, tmp_path, capsys):
    capsys.readouterr()
    assert main(['zoo', 'status', '--out', str(sweep), '--json']) == 0
    status = json.loads(capsys.readouterr().out)
    assert status['totals'] == {'runs': 2, 'pending': 0, 'running': 0, 'done': 2, 'failed': 0, 'refused': 0,
                                'epochs_done': 2 * EPOCHS, 'epochs_total': 2 * EPOCHS}
    assert sorted((r['model'], r['seed']) for r in status['runs']) == [(m, s) for m in sorted(MODELS) for s in (0, 1)]
    job_ids = {r['job_id'] for r in status['runs']}
    assert len(job_ids) == 2 and len({j.split('_')[0] for j in job_ids}) == 1  # one array, one task per run
    for r in status['runs']:
        assert r['state'] == 'done' and r['epoch'] == r['epochs'] == EPOCHS and r['recipe'] == 'zam'
        assert Path(r['folder']).name == f"{r['model']}-cifar100-zam-s{r['seed']}"
        assert r['top1'] == json.loads((Path(r['folder']) / 'results.json').read_text())['top1']
        assert r['log'] == str(sweep / '_zoo' / 'slurm' / r['job_id'] / f"{r['job_id']}_0_log.err")  # submitit's
        assert Path(r['log']).is_file()

    readme, card = tmp_path / 'README.md', tmp_path / 'MODEL_CARD.md'
    repo = Path(__file__).resolve().parent.parent
    shutil.copy(repo / 'README.md', readme)
    shutil.copy(repo / 'MODEL_CARD.md', card)
    staging = tmp_path / 'staging'
    assert main(['zoo', 'export', '--out', str(sweep), '--min-seeds', '3', '--staging', str(staging),
                 '--readme', str(readme), '--model-card', str(card)]) == 0
    printed = capsys.readouterr().out
    assert printed.count('not exported') == 1 and not staging.exists()
    assert main(['zoo', 'export', '--out', str(sweep), '--min-seeds', '2', '--staging', str(staging),
                 '--readme', str(readme), '--model-card', str(card)]) == 0
    assert sorted(p.name for p in staging.iterdir()) == sorted(f'{m}.cifar100' for m in MODELS)
    for model in MODELS:
        results = json.loads((staging / f'{model}.cifar100' / 'results.json').read_text())
        top1 = [r['top1'] for r in status['runs'] if r['model'] == model]
        assert results['seeds'] == [0, 1] and results['top1']['n'] == 2
        assert results['top1']['mean'] == pytest.approx(statistics.fmean(top1))
        assert results['top1']['std'] == pytest.approx(statistics.stdev(top1))
    assert 'tables:' in capsys.readouterr().out


def test_killed_run_resumes_to_the_same_weights(sweep, slurm_cluster, tiny_cifar, tmp_path):
    """SIGKILL of a run's process in the middle of its second epoch, then the same `zoo run` again: it resumes
    from the checkpoint and ends with the weights of the uninterrupted run of the same seed, bit for bit."""
    out = tmp_path / 'killed'
    command = _zoo_run(tiny_cifar, out, MODELS[0], seeds=(0,))
    assert main(command) == 0                                       # submits, does not wait
    assert main(command) == 0                                       # queued or running: not submitted twice
    last = json.loads((out / '_zoo' / 'last-run.json').read_text())
    assert last['launched'] == 0 and last['skipped']['queued'] + last['skipped']['running'] == 1
    folder = out / f'{MODELS[0]}-cifar100-zam-s0'
    _wait_for(lambda: (folder / 'checkpoint.pt').exists(), 'the first checkpoint', timeout=120, every=0.01)
    holder = lock_holder(folder)
    os.kill(holder['pid'], signal.SIGKILL)                           # as a crash or a lost node: no clean-up
    _wait_for(lambda: not _squeue(slurm_cluster), 'the killed job to end')
    assert not (folder / 'results.json').exists() and lock_holder(folder) is None
    assert load_checkpoint(folder / 'checkpoint.pt')['epoch'] == 1

    assert main([*command, '--wait']) == 0                          # the same command: resubmits, resumes
    a, b = _weights(folder), _weights(sweep / folder.name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    reference = [json.loads(line) for line in (sweep / folder.name / 'metrics.jsonl').read_text().splitlines()]
    assert [r['train_loss'] for r in history] == [r['train_loss'] for r in reference]


def test_preempted_task_is_requeued_and_resumes(sweep, slurm_cluster, tiny_cifar, tmp_path):
    """SIGUSR2 (SLURM's warning before a time limit or a pre-emption) in the middle of the second epoch: submitit
    calls the task's checkpoint() and requeues the job, which resumes the run from its checkpoint to the same
    weights as the uninterrupted run."""
    out = tmp_path / 'preempted'
    assert main(_zoo_run(tiny_cifar, out, MODELS[0], seeds=(1,))) == 0
    folder = out / f'{MODELS[0]}-cifar100-zam-s1'
    _wait_for(lambda: (folder / 'checkpoint.pt').exists(), 'the first checkpoint', timeout=120, every=0.01)
    os.kill(lock_holder(folder)['pid'], signal.SIGUSR2)
    job = json.loads((out / '_zoo' / 'jobs.json').read_text())[folder.name]

    held_since = []

    def finished():
        # SLURM holds a requeued batch job back for about two minutes (its BeginTime, for the job's revoked
        # credential to expire): release it, but seconds after the requeue. slurmd refuses a credential issued no
        # later than the second it revoked the job's: released 0.4 s after its requeue, a job was killed at its
        # launch in CI ("Killing non-startable batch JobId=7: Job credential revoked" in slurmctld.log)
        if 'BeginTime' in _squeue(slurm_cluster):
            held_since[:] = held_since or [time.time()]
            if time.time() > held_since[0] + 5:
                subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], env=slurm_cluster, check=True)
        return (folder / 'results.json').exists()
    _wait_for(finished, 'the requeued task to finish the run', timeout=120, every=0.5,
              diagnose=lambda: _job_logs(out, slurm_cluster))
    _wait_for(lambda: not _squeue(slurm_cluster), 'the job to end')
    log = ''.join(p.read_text() for p in (out / '_zoo' / 'slurm').rglob('*_log.*'))  # submitit's task logs
    assert 'this job is preempted' in log and 'Requeued job' in log and lock_holder(folder) is None
    a, b = _weights(folder), _weights(sweep / folder.name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_tasks_with_gloo_match_one_process(slurm_cluster, tiny_cifar, tmp_path):
    """--gpus-per-run 2 on CPU: one job of 2 tasks joined by gloo from submitit's JobEnvironment, against one
    process. The model is BatchNorm-free (SyncBatchNorm is GPU-only) and the loader the tensor one, as in
    tests/test_train.py's torchrun test, with the same tolerance."""
    model = 'test_efficientnet_gn'
    out = tmp_path / 'ddp'
    assert main(_zoo_run(tiny_cifar, out, model, seeds=(3,), epochs=1,
                         extra=['--gpus-per-run', '2', '--loader', 'tensor', '--wait'])) == 0
    folder = out / f'{model}-cifar100-zam-s3'
    config = json.loads((folder / 'config.json').read_text())
    assert config['world_size'] == 2 and config['per_rank_batch_size'] == 8 and config['steps_per_epoch'] == 4
    train(TrainConfig(model=model, data=str(tiny_cifar), recipe='zam', epochs=1, batch_size=16, seed=3,
                      loader='tensor', device='cpu', out=str(tmp_path / 'single')))
    a, b = _weights(folder), _weights(tmp_path / 'single')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    torch.manual_seed(3)
    init = create_model(model, 100).state_dict()                    # the weights before training moved them
    assert any(not torch.equal(a[k], init[k]) for k in a)
    d = json.loads((folder / 'metrics.jsonl').read_text().splitlines()[0])
    s = json.loads((tmp_path / 'single' / 'metrics.jsonl').read_text().splitlines()[0])
    assert d['train_loss'] == pytest.approx(s['train_loss'], rel=1e-5) and d['train_images'] == 64


def test_sbatch_errors_are_one_line(slurm_cluster, tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'refused'
    assert main(_zoo_run(tiny_cifar, out, MODELS[0], extra=['--slurm-partition', 'nope'])) == 2
    assert 'sbatch refused the job array: sbatch: error: invalid partition specified: nope' in capsys.readouterr().err


def test_compare_of_a_module_file_through_slurm(slurm_cluster, tiny_cifar, tmp_path, capsys, light_contract):
    """`zamzoo compare` with a module given as a file path, through the cluster: the candidate's and the baseline's
    runs are SLURM jobs, each candidate job imports the module from the file before building its model. (The
    contract check without its latency and ONNX parts: tests/test_compare.py runs its latency, tests/test_contract.py
    its exports; a report of several backbones: tests/test_compare_stats.py.)"""
    from zamzoo.models.plugins import unregister_attention

    module = tmp_path / 'gate.py'
    module.write_text('import torch\nfrom torch import nn\n\n\nclass MeanGate(nn.Module):\n'
                      '    def __init__(self, channels, device=None, dtype=None):\n        super().__init__()\n\n'
                      '    def forward(self, x):\n        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))\n')
    out = tmp_path / 'runs'
    try:
        assert main(['compare', '--attn', f'{module}:MeanGate', '--baselines', 'plain', '--backbones', 'mobilenet',
                     '--seeds', '0', '--dataset', 'cifar10', '--data', str(tiny_cifar), '--out',
                     str(out), '--epochs', '1', '--batch-size', '16', '--executor', 'slurm', '--device', 'cpu',
                     '--wait']) == 0, _job_logs(out, slurm_cluster)
    finally:
        unregister_attention('meangate')
    report = json.loads((out / '_compare' / 'meangate' / 'report.json').read_text())
    assert [(c['backbone'], c['baseline'], c['n']) for c in report['cells']] == [('mobilenet', 'plain', 1)]
    assert [c['backbone'] for c in report['cost']] == ['mobilenet']
    jobs = json.loads((out / '_zoo' / 'jobs.json').read_text())
    assert len(jobs) == 2  # (candidate, plain) x 1 seed, each a SLURM job
    recorded = json.loads((out / 'mobilenet_meangate-cifar10-zam-s0' / 'config.json').read_text())
    assert recorded['attention_module']['source'] == str(module.resolve())
    assert 'submitted' in capsys.readouterr().out


def test_status_tells_a_cancelled_run_from_a_queued_one(slurm_cluster, tiny_cifar, tmp_path, capsys):
    """The node drained, so the submitted job stays pending; `zoo status` says it is queued, and after scancel that
    SLURM no longer holds it (the run folders alone showed both as `pending ... job N`)."""
    host = socket.gethostname().split('.')[0]
    out = tmp_path / 'held'
    subprocess.run(['scontrol', 'update', f'nodename={host}', 'state=drain', 'reason=held'], env=slurm_cluster,
                   check=True)
    try:
        assert main(_zoo_run(tiny_cifar, out, MODELS[0], seeds=(0,), epochs=1)) == 0
        job = json.loads((out / '_zoo' / 'jobs.json').read_text())[f'{MODELS[0]}-cifar100-zam-s0']
        capsys.readouterr()
        assert main(['zoo', 'status', '--out', str(out)]) == 0
        assert f'job {job} (queued)' in capsys.readouterr().out
        subprocess.run(['scancel', job.split('_')[0]], env=slurm_cluster, check=True)
        _wait_for(lambda: not _squeue(slurm_cluster), 'the cancelled job to leave the queue', timeout=30)
        assert main(['zoo', 'status', '--out', str(out), '--json']) == 0
        [run] = json.loads(capsys.readouterr().out)['runs']
        assert (run['state'], run['job_id'], run['queued']) == ('pending', job, False)
    finally:
        subprocess.run(['scancel', '--user', 'root'], env=slurm_cluster, check=False)
        subprocess.run(['scontrol', 'update', f'nodename={host}', 'state=resume'], env=slurm_cluster, check=False)


_RANK_1_FAILS = '''import os
from torch import nn


class RankOneFails(nn.Module):
    def __init__(self, channels, device=None, dtype=None):
        super().__init__()

    def forward(self, x):
        if self.training and os.environ.get('RANK') == '1':
            raise ValueError('the real error, on rank 1')
        return x
'''


def test_a_run_of_two_tasks_records_the_failing_tasks_error_and_log(slurm_cluster, tiny_cifar, tmp_path, capsys):
    """--gpus-per-run 2, rank 1 raises: failed.json and `zoo run` named rank 0's "Connection closed by peer" and
    task 0's log; now rank 1's error and task 1's log, which holds it."""
    from zamzoo.models.plugins import unregister_attention

    module = tmp_path / 'raiser.py'
    module.write_text(_RANK_1_FAILS)
    out = tmp_path / 'ranks'
    try:
        assert main(_zoo_run(tiny_cifar, out, 'mobilenet_rankonefails', seeds=(0,), epochs=1,
                             extra=['--attn', f'{module}:RankOneFails', '--gpus-per-run', '2', '--loader', 'tensor',
                                    '--wait'])) == 1, _job_logs(out, slurm_cluster)
    finally:
        unregister_attention('rankonefails')
    failure = json.loads((out / 'mobilenet_rankonefails-cifar100-zam-s0' / 'failed.json').read_text())
    assert (failure['error'], failure['rank']) == ('rank 1: ValueError: the real error, on rank 1', 1)
    assert failure['log'].endswith(f"{failure['job_id']}_1_log.err")
    assert 'the real error, on rank 1' in Path(failure['log']).read_text()
    assert f"rank 1: ValueError: the real error, on rank 1\n          log: {failure['log']}" in capsys.readouterr().out
