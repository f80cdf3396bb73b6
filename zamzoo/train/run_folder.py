"""The run folder: written and read back here (`zamzoo export` reads runs through `read_run`), and the lock that
keeps it to one writer. Its files are named in `zamzoo.train.run_files`."""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .._io import atomic_path, loads_strict, read_json_object, write_json_atomic
from ..errors import ZamzooError
from .checkpoint import check_finite_weights, load_checkpoint, run_config, write_checkpoint
from .metrics import plot_curves, write_metrics
from .run_files import (CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, LOCK_FILE, METRICS_FILE, RESULTS_FILE, SPLIT_FILE,
                        WEIGHTS_FILE)


class RunFolderBusy(ZamzooError):
    """Another process is writing the run folder."""


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise


def lock_holder(folder) -> Optional[dict]:
    """Who holds `folder`'s lock (pid, host, since), or None when nobody does. Never disturbs a held lock."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _try_flock(fd, fcntl.LOCK_SH):
            return None
        try:
            return json.loads(os.pread(fd, 4096, 0) or b'{}')
        except ValueError:  # the holder has not written its record yet
            return {}
    finally:
        os.close(fd)


RUN_FILES = (CONFIG_FILE, METRICS_FILE, CURVES_FILE, CHECKPOINT_FILE, WEIGHTS_FILE, RESULTS_FILE)


def remove_stale_temps(folder) -> list:
    """Delete the temporary files (`.checkpoint.pt.<random>.tmp`, ...) that a writer killed mid-write left next to
    the run files; call only while holding the folder's lock, when no write of ours can be in flight."""
    removed = []
    for name in RUN_FILES:
        for tmp in Path(folder).glob(f'.{name}.*.tmp'):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def lock_run_folder(folder):
    """Hold an exclusive lock on `folder` for the block; RunFolderBusy if another process holds it.

    flock() locks belong to the open file and the kernel drops them when their process dies, however it dies, so
    the lock file a killed run leaves behind never blocks the next one (no stale locks to clean up); the
    temporary files such a run left are removed once the lock is held."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        if not _try_flock(fd, fcntl.LOCK_EX):
            holder = lock_holder(folder) or {}
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise RunFolderBusy(f'{folder} is being written by another process ({who}); wait for it to finish, '
                                f'or choose another --out')
        record = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        locked = True
        remove_stale_temps(folder)
        yield
    finally:
        if locked and created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            # a run that failed before writing anything leaves no folder behind (unlinked while still locked)
            os.unlink(folder / LOCK_FILE)
            folder.rmdir()
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# Writing: the training loop's side.

def start_run(out: Path, config: dict, split: Optional[dict]):
    """config.json (and split.json for a held-out split), before the first epoch."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, config)
    if split is not None:
        write_json_atomic(out / SPLIT_FILE, split)


def save_epoch(out: Path, writer, state: dict, plot_title: Optional[str]):
    """The checkpoint (written in the background by `writer`), metrics.jsonl and, given a title, curves.png."""
    writer.submit(write_checkpoint, out / CHECKPOINT_FILE, state)
    write_history(out, state['history'], plot_title)


def write_history(out: Path, history: list, plot_title: Optional[str] = None):
    """metrics.jsonl and, given a title, curves.png."""
    write_metrics(out / METRICS_FILE, history)
    if plot_title is not None:
        plot_curves(out / CURVES_FILE, history, title=plot_title)


def finish_run(out: Path, writer, model, config: dict, results: dict):
    """model.safetensors, then results.json once the last checkpoint is on disk: a run with results is complete."""
    save_weights(out / WEIGHTS_FILE, model, config)
    writer.wait()
    write_json_atomic(out / RESULTS_FILE, results)


def save_weights(path: Path, model, config: dict):
    from safetensors.torch import save_file

    tensors = {k: v.detach().to('cpu').clone().contiguous() for k, v in model.state_dict().items()}
    check_finite_weights(tensors, path)
    metadata = {'format': 'pt', 'model': config['model'], 'dataset': config['dataset'],
                'recipe': config['recipe_name'], 'num_classes': str(config['num_classes'])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def mark_failed(out: Path, config: dict, error: Exception):
    """results.json of a run that stopped on an error: status 'failed', the error, no metrics."""
    write_json_atomic(out / RESULTS_FILE, {
        'status': 'failed', 'error': str(error),
        **{k: config[k] for k in ('model', 'dataset', 'tag', 'seed', 'recipe_name')},
        'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    })


def checkpoint_to_resume(out: Path, resume: bool) -> Optional[dict]:
    """The checkpoint's state with `resume`; otherwise None, after checking `out` holds no run to overwrite."""
    ckpt = out / CHECKPOINT_FILE
    if resume:
        if not ckpt.is_file():
            raise ZamzooError(f'--resume: no checkpoint to resume in {out} (expected {ckpt})')
        return load_checkpoint(ckpt)
    if ckpt.exists() or ((out / RESULTS_FILE).exists() and not _failed_at_start(out / RESULTS_FILE)):
        raise ZamzooError(f'{out} already holds a run ({CHECKPOINT_FILE} / {RESULTS_FILE}); pass --resume to '
                          f'continue it, or choose another --out')
    return None


def _failed_at_start(results: Path) -> bool:
    """results.json of a run that failed before its first checkpoint: nothing to keep, a new run may start."""
    try:
        return json.loads(results.read_text()).get('status') == 'failed'
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------------------------
# Reading: `zamzoo eval`, `zamzoo export`, --resume.

def read_split(out: Path) -> Optional[dict]:
    """The run folder's split file (a held-out validation set), or None when the run has none."""
    path = Path(out) / SPLIT_FILE
    return read_json_object(path, ZamzooError) if path.is_file() else None


def read_metrics(path: Path) -> list:
    """metrics.jsonl: one record per epoch."""
    try:
        return [loads_strict(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise ZamzooError(f'{path} is not valid JSON lines: {e}') from e


COMPLETE_RUN_FILES = (CONFIG_FILE, RESULTS_FILE, METRICS_FILE, WEIGHTS_FILE)


@dataclass
class RunRecord:
    """A completed run as its folder holds it; the facts `zamzoo export` needs, read by the names the loop writes."""
    path: Path
    config: dict    # config.json
    results: dict   # results.json
    metrics: list   # metrics.jsonl

    weights = property(lambda self: self.path / WEIGHTS_FILE)
    model = property(lambda self: self.config['model'])
    dataset = property(lambda self: self.config.get('dataset'))
    recipe = property(lambda self: self.config['recipe']['name'])
    recipe_version = property(lambda self: self.config['recipe']['version'])
    seed = property(lambda self: self.config.get('seed'))
    num_classes = property(lambda self: self.config.get('num_classes'))
    model_kwargs = property(lambda self: dict(self.config.get('model_kwargs') or {}))

    def summary(self) -> dict:
        """Final-epoch top-1/top-5 and the best top-1 over epochs, in percent (None when unknown)."""
        r = self.results
        return dict(seed=self.seed, run=self.path.name, top1=r.get('top1'), top5=r.get('top5'),
                    best_top1=r.get('best_top1'), best_epoch=r.get('best_epoch'),
                    epochs=r.get('epochs', len(self.metrics) or None), code_commit=r.get('code_commit'))


def read_run(path) -> RunRecord:
    """A completed run's folder; ZamzooError when a file is missing or unreadable, or the run failed."""
    path = Path(path)
    missing = [f for f in COMPLETE_RUN_FILES if not (path / f).is_file()]
    if missing:
        raise ZamzooError(
            f'{path} is not a complete training run folder: missing {", ".join(missing)} '
            f'(expected {", ".join(COMPLETE_RUN_FILES)}, as written by `zamzoo train`)')
    run = RunRecord(path, run_config(path),
                    read_json_object(path / RESULTS_FILE, ZamzooError),
                    read_metrics(path / METRICS_FILE))
    if not run.config.get('model'):
        raise ZamzooError(f"{path / CONFIG_FILE} does not name the model (no 'model' field)")
    if run.results.get('status') == 'failed':
        raise ZamzooError(f"{path} is a failed run ({run.results.get('error', 'see its results.json')}); "
                          f'nothing in it can be exported')
    if run.seed is not None and (isinstance(run.seed, bool) or not isinstance(run.seed, int)):
        raise ZamzooError(f"{path / CONFIG_FILE}: 'seed' must be an integer, got {run.seed!r}")
    return run
