"""The zoo's local runs as processes forked from a server that has imported zamzoo already, for test files whose
subject is what the runs leave on disk (status, plans, retries, compare reports), not how a run's process starts.

`python -m zamzoo.zoo.worker` spends about 5 s of CPU time importing torch, torchvision and timm before it trains a
tiny run for about 1 s; a fork of the server starts the same `zamzoo.zoo.worker.main` at once. What the local
executor sees is Popen's part it uses (poll, returncode, terminate, wait), the run's log file holds the worker's
output, and the worker gets the run's environment (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS). tests/test_zoo.py,
tests/test_plugins.py, tests/test_inputs.py and the SLURM tests keep starting real `python -m zamzoo.zoo.worker`
processes. (A server reads what huggingface_hub takes from the environment at import once: not for tests that set
it.)"""
import multiprocessing
import os
import subprocess
import sys
from multiprocessing import forkserver

WORKER = ['-m', 'zamzoo.zoo.worker']


def start_server() -> None:
    """Starts the server (importing zamzoo, and matplotlib for the run's curves) now, in the environment of this
    moment, not in a test's."""
    forkserver.set_forkserver_preload(['zamzoo.zoo.worker', 'matplotlib.figure', 'matplotlib.backends.backend_agg',
                                       __name__])
    forkserver.ensure_running()


def _worker_main(argv, env, log) -> None:
    import torch
    from zamzoo.zoo import worker

    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    for stream, number in ((sys.stdout, 1), (sys.stderr, 2)):
        stream.flush()
        os.dup2(fd, number)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    sys.exit(worker.main(argv))


class ForkedWorker:
    """subprocess.Popen for `[python, -m, zamzoo.zoo.worker, CONFIG]` with stdout a log file and stderr to it; any
    other command is a real Popen."""

    def __new__(cls, argv, env, stdout, stderr):
        if list(argv[1:3]) != WORKER or stderr != subprocess.STDOUT:
            return subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
        return super().__new__(cls)

    def __init__(self, argv, env, stdout, stderr):
        self.args, self.returncode = argv, None
        self._process = multiprocessing.get_context('forkserver').Process(
            target=_worker_main, args=(argv[3:], dict(env), stdout.name))
        self._process.start()
        self.pid = self._process.pid

    def poll(self):
        if self.returncode is None:
            self.returncode = self._process.exitcode
        return self.returncode

    def terminate(self):
        self._process.terminate()

    def wait(self):
        self._process.join()
        return self.poll()
