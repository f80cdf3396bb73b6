"""Where a sweep stands, read from its folders only (any process, any time, no scheduler query).

A run's state comes from its run folder (zamzoo.train.run_folder's files):
    done      results.json is there (train() writes it last)
    running   a live process holds the folder's lock
    failed    failed.json is there (the last attempt raised; its last error line)
    pending   anything else; with a checkpoint it resumes from it (`epoch` k > 0)

The sweep's own records live in `<out>/_zoo/`: plan.json (every run any `zoo run` planned there), jobs.json (the
last SLURM job id of each run), last-run.json (what the last `zoo run` did, with its aggregate images/s), logs/
and slurm/ (submitit's job folders).
"""
import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from .._io import write_json_atomic
from ..errors import ZamzooError
from ..train.run_files import CONFIG_FILE, FAILED_FILE, METRICS_FILE, RESULTS_FILE
from ..train.run_folder import lock_holder, read_metrics as read_run_metrics

SWEEP_DIR = '_zoo'
PLAN_FILE = 'plan.json'
JOBS_FILE = 'jobs.json'
LAST_RUN_FILE = 'last-run.json'
STATES = ('pending', 'running', 'done', 'failed')


def sweep_dir(out) -> Path:
    return Path(out) / SWEEP_DIR


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):  # never half-written (atomic writes); a foreign file reads as absent
        return default


def read_metrics(folder: Path) -> list:
    path = Path(folder) / METRICS_FILE
    return read_run_metrics(path) if path.is_file() else []


def run_state(folder, epochs: Optional[int] = None) -> dict:
    """state, epoch (completed), epochs, last test top-1, images/s and the failure line of one run folder."""
    folder = Path(folder)
    results = read_json(folder / RESULTS_FILE)
    history = read_metrics(folder)
    config = read_json(folder / CONFIG_FILE, {})
    failed = read_json(folder / FAILED_FILE)
    if results is not None:
        state = 'done'
    elif lock_holder(folder) is not None:
        state = 'running'
    elif failed is not None:
        state = 'failed'
    else:
        state = 'pending'
    evaluated = [r for r in history if r.get('test_top1') is not None]
    return {
        'state': state,
        'epoch': len(history),
        'epochs': (config.get('recipe') or {}).get('epochs', epochs),
        'top1': (results or {}).get('top1', evaluated[-1]['test_top1'] if evaluated else None),
        'images_per_s': (results or {}).get('images_per_s', history[-1]['images_per_s'] if history else None),
        'error': failed.get('error') if failed and state == 'failed' else None,
    }


def mark_failed(folder, error: BaseException, job_id: Optional[str] = None):
    """Record why a run failed: its exception's last line (the full traceback is in the run's log)."""
    lines = [line for line in f'{type(error).__name__}: {error}'.splitlines() if line.strip()]
    write_json_atomic(Path(folder) / FAILED_FILE, {
        'error': lines[-1], 'job_id': job_id, 'host': socket.gethostname(), 'pid': os.getpid(),
        'time': time.strftime('%Y-%m-%dT%H:%M:%S%z')})


def clear_failed(folder):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(folder) / FAILED_FILE)


@contextlib.contextmanager
def _sweep_lock(out):
    """Serialise read-modify-write of the sweep's records between invocations (held for milliseconds)."""
    d = sweep_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / '.lock', 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield d


def update_record(out, name: str, entries: dict) -> dict:
    """Merge `entries` (run folder name -> value) into the sweep record `name` (plan.json, jobs.json)."""
    with _sweep_lock(out) as d:
        record = read_json(d / name, {})
        record.update(entries)
        write_json_atomic(d / name, record)
    return record


def sweep_status(out) -> dict:
    """Every planned run of the sweep in `out` with its state, and the totals (`zoo status --json`)."""
    out = Path(out)
    plan = read_json(sweep_dir(out) / PLAN_FILE)
    if not plan:
        raise ZamzooError(f'{out} holds no sweep (expected {sweep_dir(out) / PLAN_FILE}, written by `zamzoo zoo run '
                          f'--out {out} ...`)')
    jobs = read_json(sweep_dir(out) / JOBS_FILE, {})
    runs = []
    for name, planned in sorted(plan.items()):
        state = run_state(out / name, planned['epochs'])
        runs.append({**planned, **state, 'job_id': jobs.get(name), 'folder': str(out / name)})
    totals = {'runs': len(runs), **{s: sum(1 for r in runs if r['state'] == s) for s in STATES},
              'epochs_done': sum(min(r['epoch'], r['epochs']) for r in runs),
              'epochs_total': sum(r['epochs'] for r in runs)}
    return {'runs': runs, 'totals': totals}
