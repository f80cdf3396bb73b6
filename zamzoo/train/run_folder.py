"""The run folder: the names of the files a training run writes there, and the lock that keeps it to one writer.

    <out>/config.json       the full recipe and arguments as used        CONFIG_FILE
    <out>/metrics.jsonl     one line per epoch                           METRICS_FILE
    <out>/curves.png        loss and accuracy curves                     CURVES_FILE
    <out>/checkpoint.pt     everything --resume needs, every epoch       CHECKPOINT_FILE
    <out>/model.safetensors the final weights                            WEIGHTS_FILE
    <out>/results.json      final metrics and provenance                 RESULTS_FILE
    <out>/split.json        the held-out split made by --holdout         SPLIT_FILE
    <out>/.lock             held by the one process writing the folder   LOCK_FILE
    <out>/failed.json       why the last attempt failed (zamzoo zoo)     FAILED_FILE
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from ..errors import ZamzooError

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
CURVES_FILE = 'curves.png'
CHECKPOINT_FILE = 'checkpoint.pt'
WEIGHTS_FILE = 'model.safetensors'
RESULTS_FILE = 'results.json'
SPLIT_FILE = 'split.json'
LOCK_FILE = '.lock'
FAILED_FILE = 'failed.json'


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
