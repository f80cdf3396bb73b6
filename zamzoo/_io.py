"""Writing files so that a crash never leaves a half-written file behind."""
import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import NonFiniteError, OutputError


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def output_errors(path):
    """Turn the OS saying a write cannot happen (disk full, quota, read-only, permission) into an OutputError."""
    try:
        yield
    except OSError as e:
        if e.errno not in _NO_ROOM:
            raise
        raise OutputError(f'cannot write {path}: {e.strerror}') from e


@contextlib.contextmanager
def atomic_path(path, replace: bool = True):
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds. With `replace`
    False, only where nothing is at ``path`` yet: of writers racing, the first one's file stays."""
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            # mkstemp creates 0600, and some writers (safetensors) replace the file with a 0600 one: outputs are
            # shared
            os.chmod(tmp, 0o644)
            # the bytes on disk before the name points at them, and the rename itself: after a machine crash the
            # path holds the old file or the new one, never an empty one (a killed process needs only the rename)
            _fsync(tmp)
            if replace:
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)  # atomic, and never over an existing file
            with contextlib.suppress(OSError):  # some file systems cannot sync a folder
                _fsync(path.parent)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path, text: str, replace: bool = True):
    with atomic_path(path, replace) as tmp:
        tmp.write_text(text)


def dumps_strict(obj, **kwargs) -> str:
    """json.dumps that refuses NaN and infinities (which json.dumps would write as bare NaN / Infinity, not JSON)."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as e:
        raise NonFiniteError(f'refusing to write non-finite numbers (NaN or infinity) as JSON: {e}') from None


def _refuse_constant(name):
    raise ValueError(f'{name} is not a JSON number (non-finite values are not allowed)')


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f'{text} overflows to {value} (non-finite values are not allowed)')
    return value


def loads_strict(text):
    """json.loads that refuses what Python's json module lets through: bare NaN / Infinity, and numbers like 1e400
    that overflow to infinity."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def read_json_object(path, error_type) -> dict:
    """The strict JSON object (see `loads_strict`) in the file `path`; invalid JSON, or JSON that is not an object,
    raises `error_type` with a one-line message."""
    path = Path(path)
    try:
        obj = loads_strict(path.read_text())
    except ValueError as e:
        raise error_type(f'{path} is not valid JSON: {e}') from e
    if not isinstance(obj, dict):
        raise error_type(f'{path} holds a JSON {type(obj).__name__}; expected an object')
    return obj


def write_json_atomic(path, obj, replace: bool = True):
    write_text_atomic(path, dumps_strict(obj, indent=2, sort_keys=False) + '\n', replace)


@contextlib.contextmanager
def locked_beside(path: Path):
    """Serialise the writers of `path` between processes (a POSIX advisory lock on `.<name>.lock` next to it,
    removed after use: nothing is left beside the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f'.{path.name}.lock')
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic rename only
        yield
        return
    while True:
        with output_errors(lock):
            fh = open(lock, 'a')
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:  # the holder before us may have removed the file we waited on: lock the one at the path then
                if lock.exists() and os.path.samestat(os.fstat(fh.fileno()), lock.stat()):
                    try:
                        yield
                        return
                    finally:
                        lock.unlink(missing_ok=True)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
