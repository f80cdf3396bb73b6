"""What zamzoo does to the processes it runs in: the garbage collector around its imports, paused while they run (in
every process) and frozen after them in a process that zamzoo owns (the `zamzoo` command, a sweep's run); SIGTERM
taken as Ctrl-C where a command must clean up after itself."""
import contextlib
import gc
import os
import signal
import sys
import threading


@contextlib.contextmanager
def collections_paused():
    """No garbage collection inside the block, then one collection of the young and middle generations (when the
    collector was on; it stays as it was). Importing torch, torchvision (with torch._dynamo and sympy) and timm leaves
    some 400,000 objects that the collector tracks, nearly all alive to the end, and the collections the imports
    trigger walk them again and again (six full ones, 76 of the middle generation, 841 young ones in `import
    zamzoo`). The one collection at the end frees the imports' cyclic garbage and moves the rest to the oldest
    generation; it walks the imports' objects and the caller's newest ones, never the caller's whole heap (a full
    collection would: 3.86 -> 4.42 s for `import zamzoo` after 5 million lists, against 3.88 s this way).
    `import zamzoo` in a new process: 4.11 -> 3.81 s of CPU time (medians of 10 interleaved runs, 2-core VM)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.collect(1)  # before enabling: no allocation in between can start a walk of the young objects
            gc.enable()


def freeze_imports() -> None:
    """Takes every object alive now out of the garbage collector's reach (`gc.freeze`): after `import zamzoo` these
    are the imports' objects (torch's, torchvision's, timm's, sympy's), which live until the process ends anyway, so
    no collection needs to walk them again, and the collections at interpreter exit no longer do (`zamzoo --version`:
    6.4 -> 5.3 s of CPU time, medians of 8 interleaved runs on a 2-core VM). Only where zamzoo owns the process: in a
    caller's process, objects of the caller's that later became garbage in a reference cycle would never be freed."""
    gc.freeze()


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C inside `sigterm_as_interrupt`."""


# Set by SIGTERM inside a `sigterm_as_interrupt` block: Python only reports (and drops) an exception a signal handler
# raises inside an at-fork callback or a __del__, as when the signal comes while a DataLoader forks its workers
_TERMINATED = threading.Event()


def raise_if_terminated() -> None:
    """Terminated where SIGTERM came inside a `sigterm_as_interrupt` block, even where its exception was dropped
    (a loop calls it at each step)."""
    if _TERMINATED.is_set():
        raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside the block, SIGTERM (`kill`, `timeout`, a container stopping) raises KeyboardInterrupt (`Terminated`) as
    Ctrl-C does, so that the command's own clean-up runs (a sweep stops its runs and quits an MPS daemon, quickstart
    removes its half-made folder, a run finishes the checkpoint it is writing), where SIGTERM's default action would
    end the process at once. Only the main thread can take signals: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        _TERMINATED.set()
        raise Terminated
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except Exception as e:
        if _TERMINATED.is_set():  # what the signal did besides (a DataLoader worker it ended too, torch then raising)
            raise Terminated from e
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        _TERMINATED.clear()


def end_as_terminated() -> None:
    """End this process as SIGTERM's default action does, once a `Terminated` block has cleaned up: whoever waits
    for it reads the signal from its exit status (a sweep reports a run 'killed by signal 15'), not an exception."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
