"""CUDA MPS for the runs that share a GPU (`zoo run --mps`, local executor).

Without MPS a GPU time-slices between processes: K runs whose steps each keep it busy take turns and train no faster
together than one. Under MPS their kernels run side by side when each leaves SMs idle (small CIFAR batches on a
large GPU). `mps_daemon` starts a control daemon of the sweep's own (its pipe directory a fresh temporary folder,
its logs in the sweep's `_zoo/mps/`), serving the GPUs the runs use, and quits it when the runs have ended, also
after an error or Ctrl-C. The daemon renumbers the GPUs it was started with as 0, 1, ...: the runs' processes name
them by those numbers (`client_slot`; NVIDIA's MPS guide, CUDA_VISIBLE_DEVICES).

A process that cannot reach the daemon runs without MPS and says nothing, so the daemon is asked for its server
list until it answers before any run starts.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ZamzooError

__all__ = ['MPS_CONTROL', 'mps_daemon', 'client_slot']

MPS_CONTROL = 'nvidia-cuda-mps-control'
READY_S = 20.0   # for the daemon to answer after `-d`
QUIT_S = 60.0    # for `quit`: the daemon waits for its servers to end


def client_slot(slot: str, gpus: Sequence[str]) -> str:
    """A run's CUDA_VISIBLE_DEVICES under the daemon: the positions of its GPUs among those the daemon serves."""
    return ','.join(str(list(gpus).index(gpu)) for gpu in slot.split(','))


def _control(env: dict, command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([MPS_CONTROL], input=command + '\n', env=env, capture_output=True, text=True,
                          timeout=timeout)


def _wait_until_ready(env: dict, log_dir: Path) -> None:
    deadline = time.monotonic() + READY_S
    while True:
        answer = _control(env, 'get_server_list', READY_S)
        if answer.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ZamzooError(f'--mps: the MPS control daemon did not answer within {READY_S:.0f} s '
                              f'({(answer.stderr or answer.stdout).strip() or "no output"}); its log: {log_dir}')
        time.sleep(0.2)


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
    pipe = tempfile.mkdtemp(prefix='zamzoo-mps-')
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=pipe, CUDA_MPS_LOG_DIRECTORY=str(log_dir),
               CUDA_VISIBLE_DEVICES=','.join(gpus))
    stopped = True  # False: a daemon that did not quit, whose sockets stay in `pipe`
    try:
        started = subprocess.run([MPS_CONTROL, '-d'], env=env, capture_output=True, text=True, timeout=READY_S)
        if started.returncode != 0:
            raise ZamzooError(f'--mps: `{MPS_CONTROL} -d` failed (exit {started.returncode}: '
                              f'{(started.stderr or started.stdout).strip() or "no output"}); its log: {log_dir}')
        try:
            _wait_until_ready(env, log_dir)
            yield {'CUDA_MPS_PIPE_DIRECTORY': pipe}
        finally:
            stopped = _quit(env, log_dir)
    finally:
        if stopped:
            shutil.rmtree(pipe, ignore_errors=True)


def _quit(env: dict, log_dir: Path) -> bool:
    """Whether the daemon quit (`quit` waits until it and its servers have exited); one still running is left with
    a line that says how to stop it (an exception here would hide the one that ended the runs)."""
    try:
        status = _control(env, 'quit', QUIT_S).returncode
    except subprocess.TimeoutExpired:
        print(f"--mps: the MPS control daemon did not quit within {QUIT_S:.0f} s; stop it with `echo quit | "
              f"CUDA_MPS_PIPE_DIRECTORY={env['CUDA_MPS_PIPE_DIRECTORY']} {MPS_CONTROL}`", file=sys.stderr)
        return False
    if status != 0:
        print(f'--mps: `quit` ended with exit status {status} (an MPS server did not exit gracefully, or the daemon '
              f'could not be reached); its log: {log_dir}', file=sys.stderr)
    return True

