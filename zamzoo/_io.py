"""Writing files so that a crash never leaves a half-written file behind."""
import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files must be readable by others
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, obj, indent: int = 2):
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + '\n')
