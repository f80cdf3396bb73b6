"""`zoo run`: record the plan, hand the runs that need training to an executor, and sum up what was done.

Idempotent: a run that is done is skipped, an interrupted one resumes from its checkpoint, a failed one runs again
only with retry_failed, one that another process is training (or, on SLURM, that an earlier submission still has
in the queue) is left to it; a run folder holding a run with other settings (another --epochs...) stops the sweep
before anything is trained (plan.check_conflicts); train()'s lock per run folder keeps two invocations from ever
training the same run at once."""
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .._io import write_json_atomic
from ..errors import ZamzooError
from .plan import PlannedRun, action, check_conflicts, check_queued, plan_states, settings_conflict
from ..train.run_folder import run_status
from ..sweep_files import LAST_RUN_FILE, PLAN_FILE
from .state import planned_from_folder, run_state, sweep_dir, update_record

EXECUTORS = ('local', 'slurm')


def runs_to_launch(runs: Sequence[PlannedRun], states: dict, retry_failed: bool) -> list:
    return [run for run in runs if action(states[run.name], retry_failed)]


def run_sweep(runs: Sequence[PlannedRun], out, *, states: Optional[dict] = None, executor: str = 'local',
              retry_failed: bool = False, gpus_per_run: int = 1, runs_per_gpu: int = 1, device: Optional[str] = None,
              mps: bool = False, wait: bool = False, slurm_options: Optional[dict] = None,
              on_event: Callable = lambda *a: None) -> dict:
    """Train what `runs` still need with `executor`; returns the summary (also written to _zoo/last-run.json, and
    written there too when the invocation is interrupted or fails: `finished` False, `interrupted` or `error`, and
    what ended before, the runs it stopped counted as pending).

    local trains and returns when every run has ended (with `mps`, its runs as clients of an MPS daemon); slurm
    submits one job array and returns, or with `wait` returns when every job has ended, those an earlier submission
    left in the queue (pending or running) included. on_event(kind, run, detail): 'start', 'submitted' and 'end'
    (final state). `states`: plan_states' of `runs`, when the caller has made them (each opens the data of the
    finished runs to check it: not twice)."""
    if executor not in EXECUTORS:
        raise ZamzooError(f"executor: unknown '{executor}'; expected one of {list(EXECUTORS)}")
    states = plan_states(runs, gpus_per_run) if states is None else states
    check_conflicts(runs, states)
    launch = runs_to_launch(runs, states, retry_failed)
    if executor == 'slurm' and launch:  # a sweep that cannot be submitted writes nothing (no plan, no lock)
        from .slurm import require_slurm
        require_slurm()
    queued = set()
    if executor == 'slurm' and (launch or wait):
        from .slurm import still_queued
        queued = still_queued(out, runs if wait else launch)
        check_queued(runs, queued, out)
        launch = [run for run in launch if run.name not in queued]
    update_record(out, PLAN_FILE, {run.name: run.record() for run in runs})
    # with wait, the runs whose job an earlier submission left in SLURM's queue (pending or running) are waited for
    held = [run for run in runs if run.name in queued] if wait else []
    facts = dict(executor=executor, gpus_per_run=gpus_per_run, runs_per_gpu=runs_per_gpu,
                 mps=mps and executor == 'local' and bool(launch))
    reported, t0 = _Reported(on_event), time.perf_counter()
    try:
        final = _train(launch, held, out, executor, wait, reported, gpus_per_run=gpus_per_run,
                       runs_per_gpu=runs_per_gpu, device=device, mps=mps, slurm_options=slurm_options)
    except BaseException as e:  # this invocation's record, not an earlier one's finished record left in its place
        interrupted = isinstance(e, KeyboardInterrupt)
        began = [run for run in launch + held if run.name in reported.started]  # not those it never reached
        summary = summarize(runs, began, states, reported.so_far(), time.perf_counter() - t0, meant=launch + held)
        _record(out, summary, queued, facts, finished=False, interrupted=interrupted,
                error=None if interrupted else f'{type(e).__name__}: {e}')
        raise
    summary = summarize(runs, launch + held, states, final, time.perf_counter() - t0)
    _replan_refused(out, summary['refused'])
    training = any(states[run.name]['state'] == 'running' for run in runs)  # its job holds the folder's lock
    finished = executor == 'local' or wait or not (launch or queued or training)  # slurm: nothing left out there
    return _record(out, summary, queued, facts, finished=finished, interrupted=False, error=None)


def _train(launch, held, out, executor: str, wait: bool, on_event: Callable, *, gpus_per_run: int,
           runs_per_gpu: int, device: Optional[str], mps: bool, slurm_options: Optional[dict]) -> dict:
    """Run folder name -> final state of the runs the executor trained and saw end (see run_sweep)."""
    if executor == 'local' and launch:
        from .local import run_local
        return run_local(launch, out, gpus_per_run=gpus_per_run, runs_per_gpu=runs_per_gpu, device=device, mps=mps,
                         on_event=on_event)
    if not (launch or held):
        return {}
    from .slurm import held_jobs, submit_slurm, wait_slurm
    jobs = submit_slurm(launch, out, gpus_per_run=gpus_per_run, device=device, **(slurm_options or {})) \
        if launch else []
    for run, job in zip(launch, jobs):
        on_event('submitted', run, job.job_id)
    return wait_slurm(jobs + held_jobs(out, held), launch + held, on_event) if wait else {}


class _Reported:
    """on_event, which remembers the runs started and the final states reported: what an interrupted invocation
    did."""

    def __init__(self, on_event: Callable):
        self.on_event, self.started, self.ended = on_event, {}, {}

    def __call__(self, kind, run, detail):
        if kind in ('start', 'submitted'):
            self.started[run.name] = run
        elif kind == 'end':
            self.ended[run.name] = detail
        self.on_event(kind, run, detail)

    def so_far(self) -> dict:
        """The final states reported, and the state of each run started that has not ended (stopped)."""
        return {**{name: run_state(run.folder, run.epochs) for name, run in self.started.items()}, **self.ended}


def _record(out, summary: dict, queued: set, facts: dict, **how) -> dict:
    """`summary` with the runs left in SLURM's queue, `facts` (the executor's settings) and `how` it ended, written
    to _zoo/last-run.json."""
    summary['skipped']['queued'] = len(queued)
    summary.update(facts, **how)
    write_json_atomic(sweep_dir(out) / LAST_RUN_FILE, summary)
    return summary


def _replan_refused(out, refused: list):
    """The plan.json entries of the runs refused (another invocation's, with other settings, in their folders) are
    theirs again: this invocation wrote its own before the folders held anything, and trained none of them."""
    entries = {r['run']: planned_from_folder(Path(out) / r['run']) for r in refused}
    entries = {name: entry for name, entry in entries.items() if entry is not None}
    if entries:
        update_record(out, PLAN_FILE, entries)


def summarize(runs, launch, states: dict, final: dict, wall_s: float, meant=None) -> dict:
    """Counts, failures and throughput of one invocation. aggregate_images_per_s: the training images of the
    epochs this invocation trained (a repair that trains none counts none), over its wall time (start-up and
    evaluation included), the figure to compare --runs-per-gpu settings by (a run another invocation trained
    meanwhile is not counted);
    run_images_per_s: each run's own median epoch throughput. ended: the final states of the runs this invocation
    trained; `refused`, the runs another invocation finished (or is training) meanwhile with other settings than the
    plan's (error: the setting), not done; `elsewhere`, the other runs its workers left to another process;
    `killed`, the runs left to resume (pending) because a signal this invocation did not send ended their process
    (the out-of-memory killer's SIGKILL...), apart from `pending`, those its own interruption stopped. `meant`: the
    runs it was to launch, where it was interrupted before it launched them all (`launch`, those it did)."""
    to_launch = {run.name for run in (launch if meant is None else meant)}
    refused = _refused(launch, final)
    final = {name: dict(st, state='refused', error=refused[name]) if name in refused else st
             for name, st in final.items()}
    trained = {name: st for name, st in final.items() if not st.get('skipped')}
    started = time.time() - wall_s  # an epoch this invocation trained ended its training pass after this
    images = sum(r.get('train_images', 0) for run in launch if run.name in trained
                 for r in run_status(run.folder).history if r.get('train_end_unix', 0) >= started)
    killed = {name: st for name, st in trained.items() if st['state'] == 'pending' and st.get('killed')}
    counts = {s: sum(1 for name, st in trained.items() if st['state'] == s and name not in killed)
              for s in ('done', 'failed', 'pending', 'running')}
    counts['killed'] = len(killed)
    counts['refused'] = len(refused)
    counts['elsewhere'] = len(final) - len(trained) - sum(1 for name in refused if name not in trained)
    return {
        'planned': len(runs),
        'launched': len(launch),
        'skipped': {s: sum(1 for run in runs if run.name not in to_launch and states[run.name]['state'] == s)
                    for s in ('done', 'running', 'failed')},
        'ended': counts,
        'failed': [{'run': name, 'error': st['error']} for name, st in final.items() if st['state'] == 'failed'],
        'refused': [{'run': name, 'error': error} for name, error in refused.items()],
        'killed': [{'run': name, 'signal': st['killed'], 'log': st['log'], 'epoch': st['epoch']}
                   for name, st in killed.items()],
        'wall_s': wall_s,
        'train_images': images,
        'aggregate_images_per_s': images / wall_s if final and wall_s > 0 else None,
        'run_images_per_s': {name: st['images_per_s'] for name, st in final.items() if st['state'] == 'done'},
    }


def _refused(launch, final: dict) -> dict:
    """Run folder name -> why, for each launched run whose folder now holds a run with other settings than the
    plan's: another invocation's, which the plan could not see (the folder was empty then)."""
    how = {'done': 'finished by another invocation', 'running': 'being trained by another invocation'}
    conflicts = {run.name: settings_conflict(run, how.get(final[run.name]['state'], final[run.name]['state']))
                 for run in launch if run.name in final}
    return {name: conflict for name, conflict in conflicts.items() if conflict}
