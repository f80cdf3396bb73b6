"""Where a sweep stands, read from its folders only (any process, any time, no scheduler query).

A run's state is its run folder's status (`zamzoo.train.run_folder.run_status`: pending / running / done / failed,
with the failure's line or the corrupt file); a pending run with a checkpoint resumes from it (`epoch` k > 0).

The sweep's own records live in `<out>/_zoo/` (their names: `zamzoo.sweep_files`).
"""
import contextlib
import fcntl
import glob
from pathlib import Path
from typing import Optional

from .._io import read_json_object, write_json_atomic
from ..errors import ZamzooError
from ..sweep_files import JOBS_FILE, LOGS_DIR, PLAN_FILE, SLURM_DIR, SLURM_LOG, SWEEP_DIR
from ..train import CHECKPOINT_FILE, RESULTS_FILE
from ..train.run_folder import STATES, RunStatus, run_status

def sweep_dir(out) -> Path:
    return Path(out) / SWEEP_DIR


def log_dir(out) -> Path:
    return sweep_dir(out) / LOGS_DIR


def slurm_dir(out) -> Path:
    return sweep_dir(out) / SLURM_DIR


def run_log(out, name: str, job_id: Optional[str] = None) -> Optional[str]:
    """The newest log of the run's zoo attempts: the local executor's (<run>.<time>-<pid>.log) or its last SLURM
    task's (`job_id`, jobs.json's); None when there is none."""
    logs = list(log_dir(out).glob(f'{glob.escape(name)}.*.log'))
    if job_id:
        logs += [p for p in [slurm_dir(out) / job_id / SLURM_LOG.format(job_id=job_id)] if p.is_file()]
    return str(max(logs, key=lambda p: p.stat().st_mtime_ns)) if logs else None


def run_state(folder, epochs: Optional[int] = None, status: Optional[RunStatus] = None) -> dict:
    """state, epoch (completed: metrics.jsonl's epochs, which its checkpoint holds; 0 without a checkpoint to resume
    from), epochs, last test top-1, images/s and the failure line (or the corrupt file) of one
    run folder (`status`: its run_status, when the caller has read it)."""
    status = status or run_status(folder)
    results, history = status.results, status.history
    evaluated = [r for r in history if r.get('test_top1') is not None]
    recipe = status.config.get('recipe')
    return {
        'state': status.state,
        'epoch': len(history) if status.state == 'done' or (Path(folder) / CHECKPOINT_FILE).is_file() else 0,
        'epochs': recipe.get('epochs', epochs) if isinstance(recipe, dict) else epochs,
        'top1': results.get('top1', evaluated[-1]['test_top1'] if evaluated else None),
        'images_per_s': results.get('images_per_s', history[-1].get('images_per_s') if history else None),
        'error': status.error,
        'log': status.log,  # a failed run's: the log of the attempt that failed, where it had one
    }


@contextlib.contextmanager
def _sweep_lock(out):
    """Serialise read-modify-write of the sweep's records between invocations (held for milliseconds)."""
    d = sweep_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / '.lock', 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield d


PLANNED_KEYS = ('model', 'dataset', 'recipe', 'seed', 'epochs')


def read_record(out, name: str) -> tuple:
    """(the sweep record `name` of `out`, None), or ({}, why) when it is unreadable: a corrupt record never stops a
    sweep (plan.json is rebuilt from the run folders, jobs.json only names the last jobs) but a SLURM submission,
    which cannot tell the runs still queued apart without jobs.json (`slurm.still_queued`)."""
    path = sweep_dir(out) / name
    if not path.is_file():
        return {}, None
    try:
        return read_json_object(path, ZamzooError), None
    except ZamzooError as e:
        return {}, f'corrupt: {e}'


def _recorded_entry(config: dict) -> dict:
    """The plan entry's fields as a run's config.json records them (None where it does not)."""
    recipe = config.get('recipe') if isinstance(config.get('recipe'), dict) else {}
    return {'model': config.get('model'), 'dataset': config.get('dataset'), 'recipe': recipe.get('name'),
            'seed': config.get('seed'), 'epochs': recipe.get('epochs')}


def planned_from_folder(folder: Path) -> Optional[dict]:
    """A plan entry rebuilt from the run's config.json, or None when it has none."""
    entry = _recorded_entry(run_status(folder).config)
    return entry if _valid_entry(entry) else None


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and all(entry.get(k) is not None for k in PLANNED_KEYS)
            and isinstance(entry['epochs'], int) and isinstance(entry['seed'], int))


def read_plan(out, missing_is_lost: bool = False) -> tuple:
    """(run folder name -> plan entry, problems): plan.json's valid entries; a corrupt plan.json or entry is
    replaced by what its run folder's config.json says (and reported), or dropped when that is unreadable too.
    `missing_is_lost`: a sweep folder without plan.json lost it (read what its run folders say), rather than a sweep
    not planned yet."""
    out = Path(out)
    plan, problem = read_record(out, PLAN_FILE)
    if problem is None and missing_is_lost and not (sweep_dir(out) / PLAN_FILE).is_file():
        problem = f'missing: {sweep_dir(out) / PLAN_FILE}'
    problems = [f'{problem} (runs listed from their run folders)'] if problem else []
    names = set(plan) if not problem else {p.name for p in out.iterdir() if p.is_dir() and p.name != SWEEP_DIR}
    entries = {}
    for name in sorted(names):
        entry = plan.get(name)
        if not _valid_entry(entry):
            entry = planned_from_folder(out / name)
            if name in plan:
                what = 'rebuilt from its config.json' if entry else 'not listed (no readable config.json)'
                problems.append(f'corrupt: {PLAN_FILE} entry {name!r}: {what}')
            elif entry is None:
                problems.append(f'{out / name}: not listed (no readable config.json to list it from)')
        if entry:
            entries[name] = entry
    return entries, problems


def update_record(out, name: str, entries: dict) -> dict:
    """Merge `entries` (run folder name -> value) into the sweep record `name` (plan.json, jobs.json); a corrupt
    one is replaced (plan.json by the entries its run folders give back)."""
    with _sweep_lock(out) as d:
        record = read_plan(out)[0] if name == PLAN_FILE else read_record(out, name)[0]
        record.update(entries)
        write_json_atomic(d / name, record)
    return record


def holds_a_run(folder) -> bool:
    """Whether a run folder holds a run to keep: its checkpoint or its results (a failed attempt without them is
    trained again, as planned)."""
    return any((Path(folder) / name).is_file() for name in (CHECKPOINT_FILE, RESULTS_FILE))


# a run folder holding a run of other settings than the plan's (another invocation's): neither done nor pending here
REFUSED = 'refused'
SWEEP_STATES = (*STATES, REFUSED)


def _against_plan(state: dict, planned: dict, recorded: dict, folder: Path) -> dict:
    """`state` (run_state's), or REFUSED when its folder's config.json (`recorded`: its plan fields) records another
    model, data set, recipe, seed or number of epochs than the plan (a folder copied or renamed from another run's;
    `zoo run` checks every setting and refuses such a run) and holds a run to keep: one being trained, a checkpoint or
    results (a failed attempt without them is what `zoo run --retry-failed` trains again, as planned)."""
    changes = [f'{key}={recorded[key]!r}, the plan has {planned[key]!r}' for key in PLANNED_KEYS
               if recorded[key] is not None and recorded[key] != planned[key]]
    keeps = state['state'] == 'running' or holds_a_run(folder)
    if not (changes and keeps):
        return state
    return dict(state, state=REFUSED, error=f"the folder holds a run with {'; '.join(changes)}: other settings, "
                                            f'neither counted as done nor overwritten (use another --out for these '
                                            f'settings)')


def sweep_status(out) -> dict:
    """Every planned run of the sweep in `out` with its state, the totals, and the problems met reading the sweep's
    records (`zoo status --json`)."""
    out = Path(out)
    plan, problems = read_plan(out, missing_is_lost=True) if sweep_dir(out).is_dir() else ({}, [])
    if not plan:
        raise ZamzooError(f'{out} holds no sweep (expected {sweep_dir(out) / PLAN_FILE}, written by `zamzoo zoo run '
                          f'--out {out} ...`)' + (f'; {"; ".join(problems)}' if problems else ''))
    jobs, problem = read_record(out, JOBS_FILE)
    problems += [problem] if problem else []
    runs = []
    for name, planned in plan.items():
        status = run_status(out / name)
        state = _against_plan(run_state(out / name, planned['epochs'], status), planned, _recorded_entry(status.config),
                              out / name)
        log = state['log'] if state['state'] == 'failed' else run_log(out, name, jobs.get(name))
        runs.append({**planned, **state, 'job_id': jobs.get(name), 'folder': str(out / name), 'log': log})
    totals = {'runs': len(runs), **{s: sum(1 for r in runs if r['state'] == s) for s in SWEEP_STATES},
              'epochs_done': sum(min(r['epoch'], r['epochs']) for r in runs if r['state'] != REFUSED),
              'epochs_total': sum(planned['epochs'] for planned in plan.values())}
    return {'runs': runs, 'totals': totals, 'problems': problems}
