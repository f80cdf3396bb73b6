"""The garbage collector around zamzoo's imports: paused while they run (in every process), and frozen after them in
a process that zamzoo owns (the `zamzoo` command, a sweep's run)."""
import contextlib
import gc


@contextlib.contextmanager
def collections_paused():
    """No garbage collection inside the block; the collector's state before it comes back after it. Importing torch,
    torchvision (with torch._dynamo and sympy) and timm allocates millions of objects that stay alive, and the
    collections this triggers (six full ones in `import zamzoo`) walk all of them each time to free next to nothing:
    `import zamzoo` 6.0 -> 5.5 s of CPU time (medians of 6 interleaved runs on a 2-core VM), 1% more peak memory."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_imports() -> None:
    """Takes every object alive now out of the garbage collector's reach (`gc.freeze`): after `import zamzoo` these
    are the imports' objects (torch's, torchvision's, timm's, sympy's), which live until the process ends anyway, so
    no collection needs to walk them again, and the collections at interpreter exit no longer do (`zamzoo --version`:
    6.4 -> 5.3 s of CPU time, medians of 8 interleaved runs on a 2-core VM). Only where zamzoo owns the process: in a
    caller's process, objects of the caller's that later became garbage in a reference cycle would never be freed."""
    gc.freeze()
