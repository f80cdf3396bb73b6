"""Where a result came from: the code commit and the device it ran on.

Used by the training loop (results.json) and by the publishing step (manifest records), so both describe a run
the same way. Nothing here raises: a fact that cannot be found is None.
"""
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Optional

SOURCE_ROOT = Path(__file__).resolve().parent.parent
_NAMES_ZAMZOO = re.compile(r'''^name\s*=\s*["']zamzoo["']''', re.MULTILINE)  # pyproject.toml's [project] name


def _git(*args, cwd=None) -> Optional[str]:
    try:
        out = subprocess.run(
            ['git', *args], cwd=cwd or SOURCE_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def is_source_checkout(root=None) -> bool:
    """Whether `root` (default: the folder zamzoo was imported from) is zamzoo's own git checkout: the top level of
    a work tree, holding a pyproject.toml that names zamzoo and the zamzoo package tracked there. An install that
    merely lies inside some git work tree (`pip install --target site` in a project, a .venv in a project) is not."""
    root = Path(root) if root is not None else SOURCE_ROOT
    top = _git('rev-parse', '--show-toplevel', cwd=root)
    if top is None or Path(top).resolve() != root.resolve():
        return False
    try:
        pyproject = (root / 'pyproject.toml').read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError):
        return False
    if not _NAMES_ZAMZOO.search(pyproject):
        return False
    return _git('ls-files', '--', 'zamzoo/__init__.py', cwd=root) is not None


def code_commit(path=None) -> Optional[str]:
    """The git commit (40 hex digits) of the source tree zamzoo was imported from, or None when zamzoo does not run
    from its own checkout (`is_source_checkout`: an install inside another project's repo has no zamzoo commit).

    A tree with uncommitted changes to tracked files gets a ``+dirty`` suffix, so a published number never claims
    a commit it was not produced by. ``ZAMZOO_CODE_COMMIT`` overrides it (e.g. for an installed wheel built from a
    known commit).
    """
    env = os.environ.get('ZAMZOO_CODE_COMMIT')
    if env:
        return env
    root = Path(path) if path is not None else SOURCE_ROOT
    if not is_source_checkout(root):
        return None
    commit = _git('rev-parse', 'HEAD', cwd=root)
    if commit is None:
        return None
    dirty = _git('status', '--porcelain', '--untracked-files=no', cwd=root)
    return commit + '+dirty' if dirty else commit


def device_description(device=None) -> str:
    """A human-readable description of the device, e.g. 'NVIDIA H100 80GB HBM3 (cuda, torch 2.5.1, CUDA 12.4)'."""
    import torch

    device = torch.device(device) if device is not None else (
        torch.device('cuda') if torch.cuda.is_available() else torch.device('cpu'))
    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        return f'{name} (cuda, torch {torch.__version__}, CUDA {torch.version.cuda})'
    cpu = platform.processor() or platform.machine() or 'cpu'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads (cpu, torch {torch.__version__})'
