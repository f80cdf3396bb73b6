"""The SLURM executor, through submitit (`pip install "zamzoo[slurm]"`): one array task per run, G tasks (one per
GPU) per run joined by torch.distributed from submitit's JobEnvironment (the variables torchrun would set), and
requeue on timeout or pre-emption through submitit's checkpoint(): the requeued task resumes the run from its own
checkpoint (train() writes one every epoch). submitit's job folders and logs: `<out>/_zoo/slurm/<job id>_*`."""
import re
import shutil
import subprocess
import time
from collections import Counter
from typing import Callable, Optional, Sequence

from .._process import freeze_imports
from ..errors import ZamzooError
from .plan import PlannedRun
from ..train.run_folder import mark_failed
from ..sweep_files import JOBS_FILE
from .state import read_record, run_state, slurm_dir, sweep_dir, update_record
from .worker import SKIPPED, run_one

try:
    import submitit
    from submitit.core.utils import FailedJobError, UncompletedJobError
except ImportError:  # an optional extra: the error says how to install it when a SLURM sweep is asked for
    submitit = None

POLL_S = 2.0
GONE_READS = 2  # successive squeue reads a task must be missing from to count as ended (a requeue's gap)
MAX_REQUEUES = 100  # timeouts a run may span: each requeue resumes from the last epoch


def require_slurm():
    if submitit is None:
        raise ZamzooError('--executor slurm needs submitit: pip install "zamzoo[slurm]"')
    if shutil.which('sbatch') is None:
        raise ZamzooError("--executor slurm: no sbatch here; run `zamzoo zoo run` on one of the cluster's nodes")


class SweepTask(submitit.helpers.Checkpointable if submitit else object):
    """The callable every array task runs; checkpoint() (submitit's default) resubmits it with the same run."""

    def __call__(self, config):
        from ..train.reporting import TqdmReporter

        freeze_imports()  # the array task's process, submitit's own, runs this call alone
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, as torchrun sets them
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        reporter = TqdmReporter() if env.global_rank == 0 else None
        return run_one(config, job_id=env.job_id, log=str(env.paths.stderr), reporter=reporter,
                       interruptions=(UncompletedJobError,))


def still_queued(out, runs: Sequence[PlannedRun]) -> set:
    """Names of the runs whose last recorded job SLURM still holds (pending, or starting): submitting them again
    would only queue a task that finds the run taken."""
    jobs, problem = read_record(out, JOBS_FILE)
    if problem:  # as unknown as squeue's silence: a second submission would queue every held run again
        raise ZamzooError(f'{JOBS_FILE} is {problem}, so the runs an earlier submission queued cannot be told apart: '
                          f'nothing submitted; check `squeue --me`, then remove {sweep_dir(out) / JOBS_FILE} to submit')
    if not any(run.name in jobs for run in runs):
        return set()  # nothing submitted before: nothing to ask SLURM
    require_slurm()
    held = _queued_job_ids()
    if held is None:  # no answer is not "nothing queued": a second submission would queue every held run again
        raise ZamzooError('squeue failed, so the runs an earlier submission queued cannot be told apart: nothing '
                          'submitted; run this command again once the SLURM controller answers (squeue --me)')
    return {run.name for run in runs if jobs.get(run.name) in held}


def mark_queued(runs: Sequence[dict]) -> None:
    """Set `queued` on each run of `sweep_status`: whether SLURM still holds the last job of a pending run (False:
    cancelled, or ended without starting; `zoo run` submits it again) or of a failed one (True: its retry, submitted
    with --retry-failed, waits in the queue; None when not: its job ended, as a failed one does); None where nothing
    was asked (no job, another state) or squeue is not here or fails. The run folders alone show a cancelled run as
    one waiting in the queue, and a failed run whose retry waits as failed."""
    def asked(r):
        return r['state'] in ('pending', 'failed') and r['job_id']
    held = _queued_job_ids() if any(map(asked, runs)) and shutil.which('squeue') else None
    for r in runs:
        queued = r['job_id'] in held if held is not None and asked(r) else None
        r['queued'] = None if r['state'] == 'failed' and not queued else queued


def held_jobs(out, runs: Sequence[PlannedRun]) -> list:
    """submitit's handles of the jobs an earlier submission recorded for `runs` (jobs.json), to wait for them."""
    jobs = read_record(out, JOBS_FILE)[0]
    return [submitit.SlurmJob(folder=slurm_dir(out) / '%j', job_id=jobs[run.name]) for run in runs]


def _queued_job_ids() -> Optional[set]:
    """The ids of this user's jobs SLURM holds (pending, running, completing), array tasks one by one; None when
    squeue fails (a busy or unreachable controller says nothing about the jobs)."""
    r = subprocess.run(['squeue', '--noheader', '--array', '--me', '--format=%i'], capture_output=True, text=True)
    return set(r.stdout.split()) if r.returncode == 0 else None


def submit_slurm(runs: Sequence[PlannedRun], out, *, gpus_per_run: int = 1, device: Optional[str] = None,
                 partition: Optional[str] = None, timeout_min: int = 1440, array_parallelism: int = 256) -> list:
    """Submit `runs` as one job array (several, of at most the cluster's MaxArraySize tasks each, for a larger sweep);
    returns submitit's jobs (in the order of `runs`), job ids recorded."""
    require_slurm()
    executor = submitit.AutoExecutor(folder=slurm_dir(out) / '%j', cluster='slurm',
                                     slurm_max_num_timeout=MAX_REQUEUES)
    params = dict(name='zamzoo-zoo', timeout_min=timeout_min, nodes=1, tasks_per_node=gpus_per_run,
                  slurm_array_parallelism=array_parallelism)
    if device != 'cpu':
        params['gpus_per_node'] = gpus_per_run
    if partition:
        params['slurm_partition'] = partition
    executor.update_parameters(**params)
    size = _max_array_size() or len(runs)  # SLURM refuses an array with more tasks than its MaxArraySize
    try:
        jobs = [job for start in range(0, len(runs), size)
                for job in executor.map_array(SweepTask(), [run.config for run in runs[start:start + size]])]
    except FailedJobError as e:  # sbatch's own message: an unknown partition, a time limit above the maximum...
        message = '; '.join(line.strip() for line in str(e).splitlines() if line.strip()) or 'no message'
        raise ZamzooError(f'sbatch refused the job array: {message}{_gres_hint(message, device)}') from e
    update_record(out, JOBS_FILE, {run.name: job.job_id for run, job in zip(runs, jobs)})
    return jobs


def _max_array_size() -> Optional[int]:
    """The cluster's MaxArraySize (an array's task indices stay below it; SLURM's default 1001), None when scontrol
    does not say."""
    r = subprocess.run(['scontrol', 'show', 'config'], capture_output=True, text=True)
    found = re.search(r'^MaxArraySize\s*=\s*(\d+)', r.stdout, re.MULTILINE) if r.returncode == 0 else None
    if found is None:
        return None
    return int(found.group(1)) or None


def _gres_hint(message: str, device: Optional[str]) -> str:
    """What sbatch's gres refusal means here: the GPUs zamzoo asked for (none are asked with --device cpu)."""
    if device == 'cpu' or 'gres' not in message.lower():
        return ''
    return ('. zamzoo asks SLURM for one GPU per process (--gres gpu) unless --device cpu is given; this cluster '
            '(or --slurm-partition) has no GPUs it can give: pass --device cpu to run on CPUs, or a --slurm-partition '
            'with GPUs')


def wait_slurm(jobs: Sequence, runs: Sequence[PlannedRun], on_event: Callable = lambda *a: None) -> dict:
    """Wait until every task has ended: it left its result (submitit's done()), or it left SLURM's queue without
    one (cancelled, killed, its node lost), which submitit alone cannot tell on a cluster without accounting
    (sacct): it would wait for ever. Run folder name -> final state (_ended_state)."""
    waiting, missing, final = list(zip(jobs, runs)), Counter(), {}
    while waiting:
        queued = _queued_job_ids()
        for job, run in list(waiting):
            if queued is not None:
                missing[job.job_id] = 0 if job.job_id in queued else missing[job.job_id] + 1
            if job.done() or missing[job.job_id] >= GONE_READS:
                waiting.remove((job, run))
                final[run.name] = _ended_state(job, run)
                on_event('end', run, final[run.name])
        if waiting:
            time.sleep(POLL_S)
    return final


def _ended_state(job, run: PlannedRun) -> dict:
    """run_state of an ended task's run, with its job id, whether the task left the run to another process
    (skipped) and, for a task that ended without a result, how it ended (note). One the cluster killed for memory
    is marked failed; one cancelled, or lost with its node, stays resumable (pending)."""
    done = job.done()  # a result, or (with accounting) sacct's end state
    error = job.exception() if done else None
    state = run_state(run.folder, run.epochs)
    note = None
    # submitit's FailedJobError (the task raised: the run folder says why) is an UncompletedJobError too
    if not done or (isinstance(error, UncompletedJobError) and not isinstance(error, FailedJobError)):
        end = _end_state(job)
        if state['state'] == 'pending' and end and 'OUT_OF_MEMORY' in end:
            mark_failed(run.folder, RuntimeError(f'SLURM job {job.job_id} ended {end}'), job.job_id,
                        str(job.paths.stderr))
            state = run_state(run.folder, run.epochs)
        note = (f'SLURM job {job.job_id} ended {end} without a result' if end else
                f'SLURM job {job.job_id} left the queue without a result (cancelled, or killed outside Python); the '
                'reason is unknown: sacct gives no end state (this cluster keeps no job accounting, or has not yet '
                'recorded it)')
    skipped = (next((outcome for outcome in job.results() if outcome in SKIPPED), None)
               if done and error is None else None)
    return dict(state, job_id=job.job_id, skipped=skipped, note=note)


def _end_state(job) -> Optional[str]:
    """sacct's end state of a task ('OUT_OF_MEMORY', 'CANCELLED by 0'...); None without accounting (submitit then
    says 'UNKNOWN'), or while sacct still has it running."""
    state = job.get_info().get('State')  # a sacct call now, not submitit's cached one
    return state if state and job.watcher.is_done(job.job_id, mode='cache') else None
