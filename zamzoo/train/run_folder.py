"""The run folder: written and read back here (`zamzoo export` reads runs through `read_run`), the lock that keeps it
to one writer, its status (`run_status`: pending / running / done / failed, the one answer train, eval, the zoo and
export ask) and its identity (`run_identity`: the settings that make its result). Its files are named in
`zamzoo.train.run_files`."""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .._io import atomic_path, loads_strict, read_json_object, write_json_atomic
from ..dataset_table import OWN_DATASETS
from ..errors import ZamzooError
from ..pretrained import sha256_file
from .checkpoint import check_finite_weights, checkpoint_problem, load_checkpoint, run_config, write_checkpoint
from .distributed import as_peer_loss
from .metrics import plot_curves, write_metrics
from .run_files import (CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, FAILED_FILE, LOCK_FILE, METRICS_FILE, RESULTS_FILE,
                        SPLIT_FILE, WEIGHTS_FILE, WEIGHTS_SHA256_KEY, WEIGHTS_SIZE_KEY)


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


PROBE_PATIENCE_S = 2.0  # how long a writer waits out readers' shared probes of the lock


def _lock_exclusively(fd: int, folder: Path) -> None:
    """flock(fd, LOCK_EX) without blocking; RunFolderBusy when another process holds it exclusively. A reader's
    shared probe (`lock_holder`: `zoo status` asks each run folder) is waited out: it lasts microseconds, and
    failing on it left a run untrained ("running elsewhere") while nobody ran it."""
    deadline = time.monotonic() + PROBE_PATIENCE_S
    while not _try_flock(fd, fcntl.LOCK_EX):
        holder = lock_holder(folder)
        if holder is not None or time.monotonic() > deadline:
            holder = holder or {}
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise RunFolderBusy(f'{folder} is being written by another process ({who}); wait for it to finish, '
                                f'or choose another --out')
        time.sleep(0.005)


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
        _lock_exclusively(fd, folder)
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

def start_run(out: Path, settings: dict, split: Optional[dict]):
    """config.json (and split.json for a held-out split), before the first epoch; the attempt starts, so an earlier
    attempt's failure record goes, and so does its split file when this attempt holds out nothing (eval and --resume
    would apply it to this run's data)."""
    out.mkdir(parents=True, exist_ok=True)
    clear_failed(out)
    write_json_atomic(out / CONFIG_FILE, settings)
    if split is not None:
        write_json_atomic(out / SPLIT_FILE, split)
    else:
        (out / SPLIT_FILE).unlink(missing_ok=True)


def save_epoch(out: Path, writer, state: dict, plot_title: Optional[str]):
    """The checkpoint then metrics.jsonl, both written in the background by `writer` (so metrics.jsonl never
    holds an epoch the checkpoint on disk lacks, wherever the process is killed), and, given a title, curves.png."""
    writer.submit(_write_epoch_files, out, state)
    if plot_title is not None:
        plot_curves(out / CURVES_FILE, state['history'], title=plot_title)


def _write_epoch_files(out: Path, state: dict):
    write_checkpoint(out / CHECKPOINT_FILE, state)
    write_metrics(out / METRICS_FILE, state['history'])


def write_history(out: Path, history: list, plot_title: Optional[str] = None):
    """metrics.jsonl and, given a title, curves.png."""
    write_metrics(out / METRICS_FILE, history)
    if plot_title is not None:
        plot_curves(out / CURVES_FILE, history, title=plot_title)


def finish_run(out: Path, writer, model, config: dict, results: dict):
    """model.safetensors, then results.json (with the weights' size, which run_status checks, and sha256, which
    load_weights checks) once the last checkpoint is on disk: a run with results is complete."""
    save_weights(out / WEIGHTS_FILE, model, config)
    results[WEIGHTS_SIZE_KEY] = (out / WEIGHTS_FILE).stat().st_size
    results[WEIGHTS_SHA256_KEY] = sha256_file(out / WEIGHTS_FILE)
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


def mark_failed(folder, error: BaseException, job_id: Optional[str] = None, log: Optional[str] = None,
                rank: Optional[int] = None):
    """failed.json: why the run's last attempt failed (its exception's last line; the full traceback is in `log`,
    that attempt's log where it has one: a zoo run's) and where. results.json stays the record of a completed run
    only. With `rank` (each process of a run of several records its failure), the first record of the attempt stays:
    the process that raised first is the one that failed; the others raise because it left (gloo's "Connection closed
    by peer"), and where it left without a word (killed), theirs is recorded as the lost connection it is
    (`distributed.as_peer_loss`)."""
    error = error if rank is None else as_peer_loss(error)
    lines = [line for line in f'{type(error).__name__}: {error}'.splitlines() if line.strip()]
    write_json_atomic(Path(folder) / FAILED_FILE, {
        'status': 'failed', 'error': lines[-1] if rank is None else f'rank {rank}: {lines[-1]}',
        'error_type': type(error).__name__, 'rank': rank, 'job_id': job_id, 'log': log, 'host': socket.gethostname(),
        'pid': os.getpid(), 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z')}, replace=rank is None)


def read_failure(folder) -> Optional[dict]:
    """failed.json's record; None where there is none (or it cannot be read)."""
    with contextlib.suppress(OSError, ZamzooError):
        return read_json_object(Path(folder) / FAILED_FILE, ZamzooError)
    return None


def mark_attempt_failed(folder, error: BaseException, job_id: Optional[str], log: Optional[str],
                        before: Optional[dict], rank: int = 0):
    """failed.json with the job id and log of the attempt that failed, from process `rank` of it (a zoo worker's):
    the record one of its processes wrote (`mark_failed` with a rank; `before` is the record from before the
    attempt) keeps its error and takes that process's log (a SLURM task's own; rank 0's where that process added
    none); without such a record, rank 0 records `error`. The failing process adds its log before it exits, which
    is before the others lose their connection to it."""
    recorded = read_failure(folder)
    by_a_process = recorded is not None and recorded != before and recorded.get('rank') is not None
    if by_a_process and rank in (recorded['rank'], 0):
        own = recorded['rank'] == rank
        write_json_atomic(Path(folder) / FAILED_FILE, {**recorded, 'job_id': job_id,
                                                       'log': log if own else recorded['log'] or log})
    elif rank == 0:
        mark_failed(folder, error, job_id, log)


def clear_failed(folder):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(folder) / FAILED_FILE)


def checkpoint_to_resume(out: Path, resume: bool) -> Optional[dict]:
    """The checkpoint's state with `resume`; otherwise None, after checking `out` holds no run to overwrite (a run
    that failed before its first checkpoint has nothing to keep: a new attempt may start)."""
    ckpt = out / CHECKPOINT_FILE
    if resume:
        if not ckpt.is_file():
            started = (': the run there finished no epoch; the same command without --resume starts it'
                       if (out / CONFIG_FILE).is_file() else '')
            raise ZamzooError(f'--resume: no checkpoint to resume in {out} (expected {ckpt}){started}')
        return load_checkpoint(ckpt)
    if ckpt.exists():
        raise ZamzooError(f'{out} already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it, or choose '
                          f'another --out')
    if (out / RESULTS_FILE).exists():
        raise ZamzooError(f'{out} holds a run ({RESULTS_FILE}) but {_no_checkpoint(out)}, or choose another --out')
    return None


def _no_checkpoint(folder) -> str:
    """What can be done with a run folder that holds results.json but not the checkpoint.pt a resume or a repair
    (`zoo run --retry-failed` of a completed run that lost a file) starts from."""
    return (f'no {CHECKPOINT_FILE}, so it can be neither resumed nor repaired: to train it from the start again, '
            f'move {folder} away')


# ---------------------------------------------------------------------------------------------------------------
# Reading: `zamzoo eval`, `zamzoo export`, --resume.

def read_split(out: Path) -> Optional[dict]:
    """The run folder's split file (a held-out validation set), or None when the run has none."""
    path = Path(out) / SPLIT_FILE
    return read_json_object(path, ZamzooError) if path.is_file() else None


def read_metrics(path: Path) -> list:
    """metrics.jsonl: one record (a JSON object) per epoch."""
    records = []
    for number, line in enumerate(Path(path).read_text(errors='replace').splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(loads_strict(line))
        except ValueError as e:
            raise ZamzooError(f'{path} line {number} is not JSON ({e})') from e
        if not isinstance(records[-1], dict):
            raise ZamzooError(f'{path} line {number} is not a JSON object')
    return records


# ---------------------------------------------------------------------------------------------------------------
# Status: the one answer to "where does this run stand?".

STATES = ('pending', 'running', 'done', 'failed')


@dataclass
class RunStatus:
    """A run folder's state and the files it was read from (empty when absent or unreadable).

    running  a live process holds the folder's lock
    failed   the last attempt failed (failed.json), results.json records no completed run, or a run file is
             unreadable or missing (error 'corrupt: ...', a checkpoint to resume from too); `zamzoo zoo run
             --retry-failed` runs it again (a completed run that lost a file is repaired from its checkpoint;
             without one, the error says so: the folder must be moved away to train the run again)
    done     results.json records a completed run (status 'completed', or none: written by hand) and its files
             are there, model.safetensors of the size results.json records with a header safetensors reads
    pending  anything else; with a checkpoint it resumes from it"""
    state: str
    error: Optional[str] = None  # the failure's line, for a failed run
    config: dict = field(default_factory=dict)    # config.json
    results: dict = field(default_factory=dict)   # results.json
    history: list = field(default_factory=list)   # metrics.jsonl
    error_type: Optional[str] = None  # the failure's exception class (failed.json), e.g. 'NonFiniteError'
    log: Optional[str] = None  # the log of the attempt that failed (failed.json), where it had one


def _read_run_file(path: Path, read, problems: list):
    """`read(path)` of a run file; None when it is absent, and when it is corrupt (what is wrong: in `problems`)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except ZamzooError as e:
        problems.append(f'corrupt: {e}')
        return None


def run_status(folder) -> RunStatus:
    """Where the run in `folder` stands (see RunStatus); never raises for a corrupt file, it reports it."""
    folder = Path(folder)
    problems = []
    config, results, failure = (_read_run_file(folder / name, lambda f: read_json_object(f, ZamzooError), problems)
                                or {} for name in (CONFIG_FILE, RESULTS_FILE, FAILED_FILE))
    history = _read_run_file(folder / METRICS_FILE, read_metrics, problems) or []
    completed = _records_completion(results)
    if not (results and completed) and (folder / CHECKPOINT_FILE).is_file():  # a run to resume from it
        problem = checkpoint_problem(folder / CHECKPOINT_FILE)
        problems += [f'corrupt: {problem}'] if problem else []
    error_type = None
    if lock_holder(folder) is not None:
        state, error = 'running', None
    elif problems:
        state, error = 'failed', problems[0]
    elif results and completed:
        error = _completed_run_problem(folder, results, history)
        state = 'failed' if error else 'done'
    elif failure or results:
        state = 'failed'
        error = (failure or results).get('error') or f'{folder / RESULTS_FILE} records no completed run'
        # a failed.json from before 'error_type' names the class only at the start of its line
        error_type = failure.get('error_type') or (error.split(':', 1)[0] if failure and ':' in error else None)
    else:
        state, error = 'pending', None
    if state == 'failed' and error.startswith('corrupt: ') and _unrepairable(folder):
        error = f'{error}; it has {_no_checkpoint(folder)}'
    log = failure.get('log') if state == 'failed' and failure else None
    return RunStatus(state, error, config, results, history, error_type, log)


def _unrepairable(folder: Path) -> bool:
    """Whether a retry cannot repair the run: it holds results.json (a new attempt would overwrite a run) but no
    checkpoint.pt to repair it from."""
    return (folder / RESULTS_FILE).exists() and not (folder / CHECKPOINT_FILE).exists()


def _records_completion(results: dict) -> bool:
    return results.get('status', 'completed') == 'completed'  # results.json from before 'status' are completed runs


def completed_results(folder) -> Optional[dict]:
    """results.json of the run completed in `folder`, with whole files (as `run_status` checks them); else None."""
    folder, problems = Path(folder), []
    results = _read_run_file(folder / RESULTS_FILE, lambda f: read_json_object(f, ZamzooError), problems) or {}
    history = _read_run_file(folder / METRICS_FILE, read_metrics, problems) or []
    whole = results and _records_completion(results) and not problems
    return results if whole and _completed_run_problem(folder, results, history) is None else None


def _completed_run_problem(folder: Path, results: dict, history: list) -> Optional[str]:
    """'corrupt: ...' when a run results.json records as completed lacks a file, has fewer or more epochs in its
    metrics.jsonl than results.json records, or its model.safetensors is not the one the run wrote (another size) or
    not readable (its header: a cheap check, no tensor is read)."""
    from safetensors import safe_open

    missing = [name for name in COMPLETE_RUN_FILES if not (folder / name).is_file()]
    if missing:
        return f'corrupt: {" and ".join(missing)} missing from {folder}, whose {RESULTS_FILE} records a completed run'
    epochs = results.get('epochs')
    if isinstance(epochs, int) and len(history) != epochs:
        return f'corrupt: {folder / METRICS_FILE} has {len(history)} epoch(s), {RESULTS_FILE} records {epochs}'
    weights, size = folder / WEIGHTS_FILE, results.get(WEIGHTS_SIZE_KEY)
    if size is not None and weights.stat().st_size != size:
        return f'corrupt: {weights} has {weights.stat().st_size} bytes, {RESULTS_FILE} records {size}'
    try:
        with safe_open(str(weights), framework='pt'):
            pass
    except Exception as e:  # safetensors' own error type for a bad header or a truncated file; OSError
        return f'corrupt: {weights} is not a readable safetensors file ({type(e).__name__}: {e})'
    return None


# ---------------------------------------------------------------------------------------------------------------
# Identity: every setting that changes a run's result.
#
# A run's identity is its config.json (train's record of the resolved run: model, data, recipe name, version and
# every field, overrides, model_kwargs, init, pretrained, holdout, img_size, amp, loader, channels_last, compile,
# world size, seed, the data's fingerprint and an attention module's source hash when present) less the keys below,
# which cannot change the numbers. It is an exclude-list: a key a later version records is identity by default.
#   device, args.device       the device's name or index (its effect is recorded as amp, channels_last, loader,
#                             world_size, which are identity)
#   code_commit, zamzoo, torch provenance: a new version may change the numbers, but a run must stay resumable
#                             after an update; each run's versions are kept in its config.json and results.json
#   args.out, args.resume     where the run folder is, and whether this attempt resumes
#   args.workers              DataLoader workers (augmentation is seeded per sample, whatever the workers)
#   args.download, args.progress_every, args.eval_batch_size   fetching, progress display, evaluation batching
#   args.recipe               the name asked for; the recipe used is recorded whole under `recipe`
#   data, args.data, tag      the data's path and the tag made of its name (a copy of the data under another
#                             name is the same data), when config.json has a `data_fingerprint` (the data itself)
#   args.epochs, args.batch_size, args.lr, overrides
#                             what --epochs, --batch-size and --lr asked for, when config.json has the recipe as used
#                             (which holds their values: `--lr 0.1` with a recipe of lr 0.1 is the recipe's run); a
#                             change of recipe.epochs, recipe.batch_size or recipe.lr is named after the argument
NOT_IDENTITY = frozenset({'device', 'code_commit', 'zamzoo', 'torch', 'args.device', 'args.out', 'args.resume',
                          'args.workers', 'args.download', 'args.progress_every', 'args.eval_batch_size',
                          'args.recipe'})
FINGERPRINTED_PATHS = frozenset({'data', 'args.data', 'tag'})
_RECIPE_ARGUMENTS = ('epochs', 'batch_size', 'lr')
_RECIPE_FIELDS = frozenset(f'recipe.{name}' for name in _RECIPE_ARGUMENTS)


def _flatten(record: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):  # an empty dict adds nothing: as if absent
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def run_identity(record: dict) -> dict:
    """The identity of the run `record` (config.json's content) describes: its flattened keys ('recipe.epochs',
    'args.holdout') that can change the result, with their values."""
    skip = NOT_IDENTITY | (FINGERPRINTED_PATHS if 'data_fingerprint' in record else frozenset())
    return {k: v for k, v in _flatten(record).items() if k not in skip and k.split('.', 1)[0] not in skip}


def applied_recipe(recipe: dict, dataset: Optional[str], loader: Optional[str]) -> dict:
    """A recipe's fields (`Recipe.to_dict()`) as a run on `dataset` with `loader` applies them. An image folder or a
    Hugging Face data set is normalised with the model's mean/std (config.json's `mean`, `std`), not the recipe's
    CIFAR statistics, and is cropped as its loader crops it: padded crops on the tensor loader (`crop_padding`),
    random-resized crops on the DataLoader (`random_resized_crop_scale`). A field that does not apply is left out;
    with `loader` None (not known yet) both crop fields are."""
    from ..data import FOLDER_CROP_SCALE

    record = dict(recipe)
    if dataset in OWN_DATASETS:
        record.pop('normalization', None)
        if loader != 'tensor':
            record.pop('crop_padding', None)
        if loader == 'dataloader':
            record.setdefault('random_resized_crop_scale', list(FOLDER_CROP_SCALE))  # as recorded, if it was
    return record


def _as_applied(record: dict) -> dict:
    """`record` (config.json's content, or a plan's) with its `recipe` as `applied_recipe` keeps it for the record's
    own dataset and loader: a run of data of one's own recorded before config.json left out what does not apply
    (normalization, crop_padding) compares equal to one recorded after. The recipe holds the values of the arguments
    that override its fields, so the arguments and `overrides` are left out."""
    if not isinstance(record.get('recipe'), dict):
        return record
    applied = dict(record, recipe=applied_recipe(record['recipe'], record.get('dataset'), record.get('loader')))
    applied.pop('overrides', None)
    if isinstance(record.get('args'), dict):
        applied['args'] = {k: v for k, v in record['args'].items() if k not in _RECIPE_ARGUMENTS}
    return applied


def identity_changes(old: dict, new: dict, *, ignore: Sequence[str] = (), within: Sequence[str] = ()) -> list:
    """[(field, old value, new value)] for each identity field in which two config.json records differ (a field
    absent from one is None there). The arguments come first, named without 'args.'; a recorded field of the same
    name (seed) is not repeated, and recipe.epochs, recipe.batch_size and recipe.lr are named as their arguments.
    `ignore`: fields (or top-level keys) checked elsewhere; `within`: compare only these top-level keys, as recorded
    (a plan knows its arguments and recipe, not its data's fingerprint)."""
    old, new = (json.loads(json.dumps(_as_applied(r), default=str)) for r in (old, new))  # as config.json has them
    if within:
        a, b = ({k: v for k, v in _flatten(r).items() if k.split('.', 1)[0] in within and k not in NOT_IDENTITY}
                for r in (old, new))
    else:
        a, b = run_identity(old), run_identity(new)
    keys = sorted(set(a) | set(b), key=lambda k: (not k.startswith('args.'), k))
    changes, named = [], set()
    for key in keys:
        name = key.split('.', 1)[1] if key.startswith('args.') or key in _RECIPE_FIELDS else key
        if a.get(key) == b.get(key) or name in named or name in ignore or name.split('.', 1)[0] in ignore:
            continue
        changes.append((name, a.get(key), b.get(key)))
        named.add(name)
    return changes


def check_same_but_seed(folders) -> None:
    """ZamzooError naming the field when the runs in `folders` differ in anything but the seed (their mean over
    seeds would mix settings)."""
    first = Path(folders[0])
    base = run_status(first).config
    for folder in map(Path, folders[1:]):
        config = run_status(folder).config
        changes = identity_changes(base, config, ignore=('seed', *_differ_by_seed(base, config)))
        if changes and any(held_out_before_whole(c) for c in (base, config)):
            raise ZamzooError(f'{first.name} and {folder.name}: {HELD_OUT_BEFORE_WHOLE}')
        if changes:
            what = '; '.join(f'{k}={short_value(b)} in {folder.name}, {k}={short_value(a)} in {first.name}'
                             for k, a, b in changes[:3])
            more = f' (and {len(changes) - 3} more)' if len(changes) > 3 else ''
            raise ZamzooError(f'the runs differ in more than the seed, so they are not seeds of one model: {what}'
                              f'{more}; train them with the same settings (another --out for other settings)')


def _differ_by_seed(a: dict, b: dict) -> tuple:
    """The fields two seeds of one model's runs may differ in besides the seed: the sides of a split held out by
    seed (when the data it was made from is the same); the `init` record of a --pretrained run from before it
    (None: it started from the same published weights)."""
    shared = data_across_seeds(a)
    held_out = shared == data_across_seeds(b) and 'whole' in (shared or {})
    unrecorded = all(c.get('pretrained') for c in (a, b)) and None in (a.get('init'), b.get('init'))
    return (('data_fingerprint.train', 'data_fingerprint.val') if held_out else ()) + (('init',) if unrecorded else ())


def data_across_seeds(config: dict) -> Optional[dict]:
    """What the runs of every seed of one model share of their data: config.json's `data_fingerprint`, or where
    their validation images were held out by seed (whose train and val sides differ from seed to seed) the
    fingerprint of the data the split was made from."""
    recorded = config.get('data_fingerprint')
    return {'whole': recorded['whole']} if isinstance(recorded, dict) and recorded.get('whole') else recorded


HELD_OUT_BEFORE_WHOLE = ('runs that hold out their validation images by seed (--holdout), trained before zamzoo '
                         'recorded the data such a split is made from (data_fingerprint.whole): nothing tells that '
                         'their seeds split one data set; train them again in another --out')


def held_out_before_whole(config: dict) -> bool:
    """Whether a run's validation images were held out by seed and its record lacks the data the split was made
    from (a run from before `data_fingerprint.whole`)."""
    args = config.get('args') if isinstance(config.get('args'), dict) else {}
    recorded = config.get('data_fingerprint')
    return args.get('holdout') is not None and isinstance(recorded, dict) and not recorded.get('whole')


def short_value(value) -> str:
    """A value as a message shows it (repr, cut at 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


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
    status = run_status(path)
    if status.state in ('failed', 'running'):
        raise ZamzooError(f"{path} is a {status.state} run ({status.error or 'being written'}); "
                          f'nothing in it can be exported')
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
    if run.seed is not None and (isinstance(run.seed, bool) or not isinstance(run.seed, int)):
        raise ZamzooError(f"{path / CONFIG_FILE}: 'seed' must be an integer, got {run.seed!r}")
    return run
