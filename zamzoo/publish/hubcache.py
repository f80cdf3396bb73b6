"""An export folder laid out in a local Hugging Face cache, exactly as `hf_hub_download` leaves a repo it has
downloaded, so that `timm.create_model(..., pretrained=True)` loads it through huggingface_hub with no network.
`zamzoo quickstart` and the tests use it in place of a real `zamzoo push` followed by a download.

huggingface_hub has no public API that writes into its cache, so the layout is written here::

    <cache>/models--<org>--<name>/blobs/<etag>                the file contents, named by the Hub's ETag: the
                                                              sha256 of LFS files (*.safetensors), the git blob
                                                              sha1 of the others
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>   relative symlinks to the blobs
    <cache>/models--<org>--<name>/refs/<ref>                  the commit the branch points to (no newline)
"""
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from huggingface_hub.utils.sha import git_hash

from .._io import atomic_path, write_text_atomic
from ..pretrained import sha256_file
from .export import EXPORT_FILES, OPTIONAL_EXPORT_FILES, RESULTS_FILE

LFS_SUFFIXES = ('.safetensors', '.onnx')  # stored with git LFS on the Hub (hence named by sha256 in the cache)


def _etag(path: Path) -> str:
    return sha256_file(path) if path.suffix in LFS_SUFFIXES else git_hash(path.read_bytes())


def _export_files(folder: Path) -> list:
    """The files of an export that a push uploads: every EXPORT_FILES one, and the optional ones it has."""
    return list(EXPORT_FILES) + [name for name in OPTIONAL_EXPORT_FILES if (folder / name).is_file()]


def local_commit(folder) -> str:
    """A 40-hex id standing in for the Hub commit of an export that was never pushed: the sha1 of its files'
    names and contents, so the same export always gets the same id."""
    folder = Path(folder)
    h = hashlib.sha1()
    for name in _export_files(folder):
        h.update(f'{name}\0{_etag(folder / name)}\n'.encode())
    return h.hexdigest()


def cache_export(folder, cache_dir=None, *, repo_id: Optional[str] = None, commit: Optional[str] = None,
                 ref: str = 'main') -> Path:
    """Lay out the export `folder` in the Hugging Face cache `cache_dir` (default: huggingface_hub's) as repo
    `repo_id` (default: the repo the export was made for) at `commit` (default: `local_commit(folder)`), with
    `ref` pointing at it. Returns the snapshot folder. Every file is written atomically; the ref comes last."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    from .push import InvalidExportError

    folder = Path(folder)
    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    if missing:
        raise InvalidExportError(f'{folder} is not a complete export (missing {", ".join(missing)}); '
                                 f'make one with `zamzoo export`')
    if repo_id is None:
        repo_id = json.loads((folder / RESULTS_FILE).read_text())['repo_id']
    commit = commit or local_commit(folder)
    repo = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type='model')
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / 'blobs').mkdir(exist_ok=True)
    for name in _export_files(folder):
        src = folder / name
        blob = repo / 'blobs' / _etag(src)
        if not blob.exists():
            with atomic_path(blob) as tmp:
                tmp.write_bytes(src.read_bytes())
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    write_text_atomic(repo / 'refs' / ref, commit)
    return snapshot


@contextlib.contextmanager
def offline_hub(cache_dir=None):
    """huggingface_hub in offline mode (any request raises `OfflineModeIsEnabled`) reading the cache `cache_dir`,
    for the duration of the block: what HF_HUB_OFFLINE=1 and HF_HUB_CACHE do for a new process (huggingface_hub
    reads those variables once, at import)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE
    constants.HF_HUB_OFFLINE = True
    if cache_dir is not None:
        constants.HF_HUB_CACHE = str(cache_dir)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved
