"""Checkpoints that survive a kill at any moment, and load without unpickling arbitrary objects.

A checkpoint is written to a temporary file next to its destination and renamed over it (`zamzoo._io.atomic_path`),
so the file on disk is always the last complete one. It holds only tensors, numbers, strings, lists, tuples and
dicts, and is always read with ``torch.load(..., weights_only=True)``.
"""
import random
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._io import atomic_path, read_json_object
from ..errors import NonFiniteError, NotFoundError, OutputError, ZamzooError
from ..models.plugins import ensure_attention
from ..pretrained import sha256_file
from .run_files import CHECKPOINT_FILE, CONFIG_FILE, RESULTS_FILE, WEIGHTS_FILE, WEIGHTS_SHA256_KEY

CHECKPOINT_FORMAT = 'zamzoo-train-checkpoint'
CHECKPOINT_VERSION = 1
# what `checkpoint_state` writes and a resume reads
_STATE_KEYS = ('epoch', 'model', 'optimizer', 'scheduler', 'scaler', 'rng', 'config', 'history', 'extra')
WEIGHT_FILES = (WEIGHTS_FILE, CHECKPOINT_FILE)  # where a folder's weights are read from, in this order


def seed_everything(seed: int):
    """Seed Python's, numpy's and torch's RNGs (timm's `random_seed`). numpy takes only seeds below 2**32, so
    Python's and numpy's get `seed` modulo 2**32 (zamzoo draws from neither); torch gets `seed` itself."""
    from timm.utils import random_seed
    random_seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG the loop could touch: torch (CPU and each CUDA device), numpy's global, Python's."""
    np_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'numpy': {'bit_generator': np_state[0], 'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                  'pos': int(np_state[2]), 'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': random.getstate(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def rank_rng_state(state: dict, rank: int) -> dict:
    """The RNG state a checkpoint holds for `rank`: its own where every rank's was saved (`rank_rngs`), else the one
    state it holds (one process; checkpoints written before each rank's was saved)."""
    per_rank = state.get('rank_rngs') or [state['rng']]
    return per_rank[rank] if rank < len(per_rank) else state['rng']


def set_rng_state(state: dict):
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['bit_generator'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if state['cuda'] and torch.cuda.is_available():
        if len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state['cuda'])
        else:  # a different number of visible devices: restore what maps
            for i, s in enumerate(state['cuda'][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)


def _snapshot(obj):
    """A CPU copy of every tensor in a nested state (so training can go on while it is written)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def checkpoint_state(*, model, optimizer, scheduler, scaler, epoch: int, config: dict, history: list,
                     extra: dict = None, rank_rngs: Optional[list] = None) -> dict:
    """The whole training state after `epoch` completed epochs, as CPU copies. `rank_rngs`: every rank's
    `rng_state()`, rank 0's first (each rank of a run of several processes resumes with its own); default: this
    process's."""
    rank_rngs = _snapshot(rank_rngs if rank_rngs is not None else [rng_state()])
    rngs = {'rank_rngs': rank_rngs} if len(rank_rngs) > 1 else {}
    return {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'epoch': int(epoch),
        'model': _snapshot(model.state_dict()),
        'optimizer': _snapshot(optimizer.state_dict()),
        'scheduler': _snapshot(scheduler.state_dict()),
        'scaler': scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        'rng': rank_rngs[0],
        'config': config,
        'history': [dict(r) for r in history],
        'extra': dict(extra or {}),
        **rngs,
    }


def write_checkpoint(path, state: dict):
    """torch.save to a temporary file, then rename it over `path`: the file on disk is always complete."""
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer reports a full disk as "enforce fail ... file write failed"
            raise OutputError(f'cannot write {path} (is the disk full?): {str(e).splitlines()[0]}') from e
    return Path(path)


class BackgroundWriter:
    """Writes one checkpoint at a time on a worker thread, so the next epoch starts while the file is written.
    `submit` waits for the previous write first; `wait` before reading the file or exiting (the thread is not
    a daemon: an interrupted process still finishes the write in flight)."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='zamzoo-checkpoint')
        # its thread starts now: an interruption (Ctrl-C, SIGTERM) while the first `submit` started it could leave
        # that write running on a thread `close` does not know of
        self._pool.submit(int).result()
        self._pending = None

    def submit(self, fn, *args):
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write here

    def close(self):
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def check_finite_weights(state_dict: dict, where,
                         consequence: str = 'the training diverged; such weights are neither saved as final nor '
                                            'published') -> None:
    """NonFiniteError naming the tensors that hold NaN or infinity, and `consequence`."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise NonFiniteError(f'{where}: {len(bad)} of {len(state_dict)} weight tensors hold NaN or infinity '
                             f'(e.g. {", ".join(bad[:3])}): {consequence}')


def load_checkpoint(path) -> dict:
    """Read a training checkpoint written by `write_checkpoint` (weights_only: no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ZamzooError(f'no checkpoint at {path}')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never fall back to unsafe loading
        raise ZamzooError(f'{path} is not a readable zamzoo checkpoint ({type(e).__name__}: {e}); '
                          f'{start_over(path)}') from e
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise ZamzooError(f'{path} is not a zamzoo training checkpoint (expected format {CHECKPOINT_FORMAT!r}); '
                          f'{start_over(path)}')
    if state.get('version', 0) > CHECKPOINT_VERSION:
        raise ZamzooError(f'{path} was written by a newer zamzoo (checkpoint version {state["version"]}; this '
                          f'zamzoo reads versions up to {CHECKPOINT_VERSION}): upgrade zamzoo to resume it')
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ZamzooError(f'{path} is a damaged zamzoo checkpoint: it has no {", ".join(missing)}; {start_over(path)}')
    return state


def start_over(path) -> str:
    """How to train a run whose checkpoint at `path` cannot be resumed from the start again."""
    return f'to train the run from the start again, move {path} (or its whole run folder) away'


def checkpoint_problem(path) -> Optional[str]:
    """Why `path` cannot be a checkpoint torch.save wrote, or None. A cheap check: the zip archive's directory at
    the end of the file (a truncated file has none) and its pickle; no tensor is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = any(name.endswith('/data.pkl') for name in archive.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        return f'{path} is not a readable zamzoo checkpoint ({type(e).__name__}: {e}); {start_over(path)}'
    return None if pickled else f'{path} is not a torch checkpoint (no data.pkl in it); {start_over(path)}'


def run_folder_of(checkpoint) -> Optional[Path]:
    """The run folder a checkpoint is (a folder) or is in (a file); None for None."""
    if checkpoint is None:
        return None
    p = Path(checkpoint).expanduser()
    return p if p.is_dir() else p.parent


def run_config(checkpoint) -> dict:
    """config.json of the run folder a checkpoint belongs to ({} when it has none), with the run's attention module
    registered in this process (`ensure_attention`: refused when its source changed), so its model can be built.
    Every command that reads a run (eval, viz, export, compare) reads its config through this function."""
    folder = run_folder_of(checkpoint)
    if folder is None or not (folder / CONFIG_FILE).is_file():
        return {}
    config = read_json_object(folder / CONFIG_FILE, ZamzooError)
    ensure_attention(config.get('attention_module'))
    return config


def recorded_with_weights(path) -> dict:
    """What a weights file outside its run folder records of its run: a training checkpoint its whole config
    (config.json's content, its attention module registered as `run_config` does), a run's model.safetensors its
    model, data set, recipe and class count (its metadata); {} for other files (a bare state dict, an export's
    weights) and for an unreadable one (`load_weights` says why)."""
    path = Path(path)
    if not path.is_file():
        return {}
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), 'pt') as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError):
            return {}
        record = {k: meta[k] for k in ('model', 'dataset') if k in meta}
        record.update({'recipe_name': meta['recipe']} if 'model' in meta and 'recipe' in meta else {})
        return dict(record, num_classes=int(meta['num_classes'])) if meta.get('num_classes', '').isdigit() else record
    try:
        config = load_checkpoint(path)['config']
    except ZamzooError:  # not a training checkpoint (a state dict), or not readable
        return {}
    if not isinstance(config, dict):
        return {}
    ensure_attention(config.get('attention_module'))
    return config


def _check_run_weights(path: Path):
    """ZamzooError when `path` is a run folder's model.safetensors other than the file its run wrote: damaged in place
    (its size unchanged) or replaced. results.json records its sha256 (a run from before that record is not checked;
    an export folder's results.json records its own)."""
    results = path.parent / RESULTS_FILE
    if path.name != WEIGHTS_FILE or not results.is_file():
        return
    recorded = read_json_object(results, ZamzooError).get(WEIGHTS_SHA256_KEY)
    now = sha256_file(path) if recorded is not None else None
    if now != recorded:
        raise ZamzooError(f'{path} is not the weights file its run wrote (sha256 {now[:12]}..., {results} records '
                          f'{recorded[:12]}...): it was damaged or replaced; restore it, or train the run again')


def checkpoint_not_found(path) -> NotFoundError:
    return NotFoundError(f'checkpoint not found: {path} (expected a run folder, a .safetensors or a .pt file)')


def _check_weights_format(path: Path) -> None:
    """A ZamzooError for a file that is neither safetensors (an 8-byte header length, then its JSON header) nor a
    torch.save file (a zip archive, or a pickle of protocol 2 or later): torch's error for such a file is about
    pickles, and suggests loading it unsafely."""
    with open(path, 'rb') as f:
        head = f.read(9)
    size = path.stat().st_size
    safetensors = len(head) == 9 and head[8:] == b'{' and int.from_bytes(head[:8], 'little') <= size - 8
    if not (safetensors or head.startswith(b'PK\x03\x04') or head[:1] == b'\x80'):
        raise ZamzooError(f'{path} is not a weights file (neither safetensors nor a torch.save file; it begins with '
                          f'{head[:8]!r}): expected a model.safetensors, a checkpoint.pt, a .pt/.pth state dict, or '
                          f'a run or export folder')


def load_weights(path) -> dict:
    """A model state dict from model.safetensors, a training checkpoint, a run folder, or a .pt/.pth state dict:
    timm's reader (``weights_only=True``; a checkpoint's 'state_dict' or 'model'; DDP and torch.compile key
    prefixes removed), its errors as ZamzooError. Every zamzoo command reads weights through this function."""
    from timm.models import load_state_dict

    path = Path(path).expanduser()
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return load_weights(path / name)
        raise ZamzooError(f'{path} holds no weights: expected {" or ".join(f"{path}/{n}" for n in WEIGHT_FILES)}')
    if not path.is_file():
        raise checkpoint_not_found(path)
    _check_run_weights(path)
    _check_weights_format(path)
    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as e:  # a truncated or foreign file: say which, never fall back to unsafe loading
        raise ZamzooError(f'{path} is not a readable safetensors file or torch.load(weights_only=True) state dict '
                          f'({type(e).__name__}: {e}); zamzoo never unpickles arbitrary objects') from e
    others = sorted({type(v).__name__ for v in state.values() if not isinstance(v, torch.Tensor)})
    if others:
        raise ZamzooError(f'{path} does not hold a model state dict: expected a dict of parameter name -> tensor, '
                          f'found values of type {", ".join(others)}')
    return state
