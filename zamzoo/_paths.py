"""Where zamzoo may write. Output paths are checked before the work starts (a read-only folder or a file where a
folder should be is an error at once, not after an hour of training), and an existing folder is replaced only when
it is recognisably one that zamzoo wrote, never a folder holding the inputs or the working directory."""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import OutputError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path, what: str = '--out', folder: bool = True) -> Path:
    """`path` (a folder, or a file when `folder` is False) can be created or rewritten: it is of the right kind and
    its nearest existing folder accepts a new file (tried for real: permissions, read-only mounts). Leaves nothing."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f'{what} {path} is a file; expected a folder (or a path that does not exist yet)')
    if not folder and path.is_dir():
        raise OutputError(f'{what} {path} is a folder; expected a file name')
    where = _nearest_existing(path if folder else path.parent)
    if not where.is_dir():
        raise OutputError(f'{what} {path} cannot be created: {where} is a file, not a folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.zamzoo-write-test.', dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f'{what} {path} is not writable ({where}: {e.strerror or e})') from None
    return path


def check_free_space(path, need_bytes: int, what: str) -> None:
    """OutputError unless the file system of `path` has `need_bytes` free."""
    free = shutil.disk_usage(_nearest_existing(Path(path).expanduser())).free
    if free < need_bytes:
        raise OutputError(f'{path}: only {free / 2**20:,.1f} MiB free, {what} needs about '
                          f'{need_bytes / 2**20:,.1f} MiB; free some space or choose another --out')


def check_file_replaceable(path, *, is_ours: Callable[[Path], bool], what: str) -> None:
    """Refuse to overwrite an existing file (or any symlink) at `path` unless `is_ours` recognises it as `what`."""
    path = Path(path).expanduser()
    if path.is_symlink() or (path.is_file() and not is_ours(path)):
        raise OutputError(f'{path} exists and is not {what}; refusing to overwrite it: remove it yourself or '
                          f'choose another path')


def check_replaceable(out, sources: Iterable = (), *, is_ours: Callable[[Path], bool], what: str) -> None:
    """Refuse to replace an existing `out` unless it is a real folder (no file, no symlink) that `is_ours` recognises,
    that holds none of `sources` and is not the working directory or one of its parents."""
    out = Path(out).expanduser()
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        kind = 'a symlink' if out.is_symlink() else 'a file'
        raise OutputError(f'{out} is {kind}, not {what}; refusing to replace it: choose another --out')
    real = out.resolve()
    for source in sources:
        source = Path(source).expanduser().resolve()
        if source == real or real in source.parents:
            raise OutputError(f'{out} holds the input {source}; refusing to replace it: choose another --out')
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f'{out} is the working directory or a parent of it; refusing to replace it')
    if not is_ours(out):
        raise OutputError(f'{out} exists and is not {what} (it holds files zamzoo did not write there); '
                          f'refusing to replace it: remove it yourself or choose another --out')
