"""CUDA MPS for the runs that share a GPU (`zoo run --mps`, local executor).

Without MPS a GPU time-slices between processes: K runs whose steps each keep it busy take turns and train no faster
together than one. Under MPS their kernels run side by side when each leaves SMs idle (small CIFAR batches on a
large GPU). `mps_daemon` starts a control daemon of the sweep's own (its pipe directory a fresh temporary folder,
its logs in the sweep's `_zoo/logs/mps/`), serving the GPUs the runs use, and quits it when the runs have ended, also
after an error, Ctrl-C or SIGTERM (the caller takes it as Ctrl-C: `zamzoo._process.sigterm_as_interrupt`). The
daemon renumbers the GPUs it was started with as 0, 1, ...: the runs' processes name them by those numbers
(`client_slot`; NVIDIA's MPS guide, CUDA_VISIBLE_DEVICES).

A process that cannot reach the daemon runs without MPS and says nothing, so the daemon is asked for its server
list until it answers before any run starts.
"""
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import ZamzooError

__all__ = ['MPS_CONTROL', 'mps_daemon', 'client_slot']

MPS_CONTROL = 'nvidia-cuda-mps-control'
READY_S = 20.0   # for the daemon to answer after `-d`
QUIT_S = 20.0    # for `quit`: the daemon waits for its servers, which end with their runs (terminated before it)
SOCKET_PATH_MAX = 107  # bytes of a Unix socket's path; the daemon's longest is <pipe>/control_privileged
PIPE_PREFIX = 'zamzoo-mps-'  # of the pipe folder's name, then 8 characters of tempfile.mkdtemp's


def client_slot(slot: str, gpus: Sequence[str]) -> str:
    """A run's CUDA_VISIBLE_DEVICES under the daemon: the positions of its GPUs among those the daemon serves."""
    return ','.join(str(list(gpus).index(gpu)) for gpu in slot.split(','))


def _run(argv: list, env: dict, timeout: float, stdin: Optional[str] = None) -> tuple:
    """(exit status, output) of the control program; (None, '') when it has not ended within `timeout` (a daemon that
    does not answer leaves it waiting)."""
    try:
        done = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ''
    return done.returncode, (done.stderr or done.stdout).strip()


def _control(env: dict, command: str, timeout: float) -> tuple:
    """One command to the daemon (the control program reads it from stdin): `_run`'s result."""
    return _run([MPS_CONTROL], env, timeout, command + '\n')


def _wait_until_ready(env: dict, log_dir: Path) -> None:
    deadline = time.monotonic() + READY_S
    while True:
        status, output = _control(env, 'get_server_list', max(deadline - time.monotonic(), 0.1))
        if status == 0:
            return
        if time.monotonic() > deadline:
            raise ZamzooError(f'--mps: the MPS control daemon did not answer within {READY_S:.0f} s '
                              f'({output or "no output"}); its log: {log_dir}')
        time.sleep(0.2)


def _pipe_parent() -> str:
    """The temporary folder, unless the daemon's socket paths in a folder made there would be too long for a Unix
    socket (a long TMPDIR): then /tmp."""
    parent = tempfile.gettempdir()
    longest = os.path.join(parent, PIPE_PREFIX + 'x' * 8, 'control_privileged')
    return parent if len(os.fsencode(longest)) <= SOCKET_PATH_MAX else '/tmp'


@contextlib.contextmanager
def mps_daemon(gpus: Sequence[str], log_dir) -> Iterator[dict]:
    """An MPS control daemon serving `gpus` (CUDA_VISIBLE_DEVICES entries) while the block runs; yields the
    environment its clients need (CUDA_MPS_PIPE_DIRECTORY)."""
    if shutil.which(MPS_CONTROL) is None:
        raise ZamzooError(f"--mps: {MPS_CONTROL} is not on PATH (it comes with the NVIDIA driver's utilities); "
                          'run without --mps, or install them')
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # the daemon's sockets live in the pipe directory: a short path (a socket's path is at most 107 bytes)
    pipe = tempfile.mkdtemp(prefix=PIPE_PREFIX, dir=_pipe_parent())
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=pipe, CUDA_MPS_LOG_DIRECTORY=str(log_dir),
               CUDA_VISIBLE_DEVICES=','.join(gpus))
    stopped = True  # False: a daemon that did not quit, whose sockets stay in `pipe`
    try:
        status, output = _run([MPS_CONTROL, '-d'], env, READY_S)
        if status != 0:
            raise ZamzooError(f'--mps: `{MPS_CONTROL} -d` failed ('
                              + (f'exit {status}: {output or "no output"}' if status is not None
                                 else f'still running after {READY_S:.0f} s') + f'); its log: {log_dir}')
        try:
            _wait_until_ready(env, log_dir)
            yield {'CUDA_MPS_PIPE_DIRECTORY': pipe}
        finally:
            stopped = _quit(env, log_dir)
    finally:
        if stopped:
            shutil.rmtree(pipe, ignore_errors=True)


def _has_exited(pipe: str) -> bool:
    """Whether the daemon has ended: while it runs it holds a POSIX lock on <pipe>/control_lock, which its exit
    releases. `quit` can return before that, and the daemon's log is written by a thread of its own, so its last
    lines are complete only then. Without the file (not NVIDIA's daemon), or where it cannot be opened, there is
    nothing to wait for (an error here would hide the one that ended the runs)."""
    try:
        fd = os.open(os.path.join(pipe, 'control_lock'), os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held; another error (no locks there): cannot tell
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # and with it the lock just taken


def _wait_until_exited(pipe: str, deadline: float) -> bool:
    """Whether the daemon has ended (`_has_exited`) by `deadline` (time.monotonic)."""
    while not _has_exited(pipe):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _quit(env: dict, log_dir: Path) -> bool:
    """Whether the daemon quit (`quit` asks it to end once its servers have exited; then its process ends); one
    still running is left with a line that says how to stop it (an exception here would hide the one that ended the
    runs)."""
    pipe = env['CUDA_MPS_PIPE_DIRECTORY']
    deadline = time.monotonic() + QUIT_S
    status, _ = _control(env, 'quit', QUIT_S)
    if status is None or not _wait_until_exited(pipe, deadline):
        print(f"--mps: the MPS control daemon did not quit within {QUIT_S:.0f} s; stop it with `echo quit | "
              f"CUDA_MPS_PIPE_DIRECTORY={pipe} {MPS_CONTROL}`", file=sys.stderr)
        return False
    if status != 0:
        print(f'--mps: `quit` ended with exit status {status} (an MPS server did not exit gracefully, or the daemon '
              f'could not be reached); its log: {log_dir}', file=sys.stderr)
    return True
