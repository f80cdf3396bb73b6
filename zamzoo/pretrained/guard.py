"""The pretrained guard: what happens between `timm.create_model(name, pretrained=True)` and timm's loader.

The model factory (zamzoo.models._zoo._create) calls `prepare_pretrained` before building, and builds inside
`weights_errors`. Together they make sure that

* a model/tag without a record in the manifest (zamzoo.pretrained.manifest) and without a source given by the
  user raises `WeightsError` naming the model and the fix (the registry's cfg of an unpublished model has no
  Hub id, so timm alone would only warn and keep the random init);
* published weights are downloaded at the commit the manifest pins and their sha256 is checked against the
  manifest before timm loads them (timm then reads the same file from the Hugging Face cache);
* a download or load failure (offline without the file in cache, repo or file missing, corrupt file, weights
  that do not fit the architecture) becomes a `WeightsError` naming the model and what to do.

User-given sources are respected and not second-guessed: `pretrained_cfg_overlay=dict(file=...)` (or
`state_dict=`, `url=`, `hf_hub_id=`), a `pretrained_cfg=` holding such a source (a Hub repo other than the
registry's), `hf-hub:org/name` and `local-dir:` model names.
"""
import contextlib
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import WeightsError
from .checksum import sha256_file
from .hub_errors import hub_error
from .manifest import WEIGHTS_FILENAME, find_checkpoint, load_manifest, manifest_path, pinned_hub_id

__all__ = ['prepare_pretrained', 'weights_errors', 'download_verified', 'user_source', 'how_to_get_weights']

_USER_SOURCE_KEYS = ('state_dict', 'file', 'url', 'hf_hub_id')


def how_to_get_weights(model: str) -> str:
    return (f"train it with `zamzoo train --model {model} ...` (then `zamzoo export` and `zamzoo push`), "
            f"or use weights of your own: on the command line --checkpoint PATH (zamzoo eval, viz) or --init PATH "
            f"(zamzoo train); in Python 'local-dir:EXPORT' for a `zamzoo export` folder (its class names and "
            f"preprocessing come with it), or pretrained_cfg_overlay=dict(file=..., num_classes=N, label_names=[...], "
            f"mean=..., std=...) for a weights file alone (N: its classes; the cfg keeps the registry's CIFAR class "
            f"names, mean and std where the overlay does not give them; a num_classes outside the overlay drops its "
            f"head)")


def user_source(cfg, overlay: Optional[dict], registry_cfg=None) -> Optional[str]:
    """The weight source the user chose explicitly, or None when the registry's default would be used. A Hub repo in
    `cfg` is the user's where it is not the registry's own (`registry_cfg`: a `pretrained_cfg=` of the user's)."""
    overlay = overlay or {}
    for key in _USER_SOURCE_KEYS:
        if overlay.get(key):
            return key
    if getattr(cfg, 'source', None) in ('hf-hub', 'local-dir'):
        return cfg.source
    for key in ('state_dict', 'file', 'url'):
        if getattr(cfg, key, None):
            return key
    if getattr(cfg, 'hf_hub_id', None) and cfg.hf_hub_id != getattr(registry_cfg, 'hf_hub_id', None):
        return 'hf_hub_id'
    return None


def _translate(e: BaseException, what: str, repo_id: Optional[str], filename: str, revision: Optional[str],
               cache_dir=None, local_file: bool = False) -> Optional[WeightsError]:
    """A WeightsError for a known download/load failure, None for anything else."""
    from huggingface_hub import constants
    from safetensors import SafetensorError

    where = f'{repo_id}' + (f'@{revision}' if revision else '')
    if local_file and isinstance(e, FileNotFoundError):
        return WeightsError(f'{what}: no weights file at {repo_id} (pretrained_cfg_overlay file=): expected a '
                            f'.safetensors / .pth file there')
    if isinstance(e, SafetensorError):
        if local_file:
            return WeightsError(f'{what}: the file {repo_id} is corrupt or truncated ({e}); write it again (an export '
                                f'folder\'s: `zamzoo export` again; its SHA256SUMS lists the files as exported).')
        return WeightsError(
            f'{what}: the weight file of {where} is corrupt or truncated ({e}). Delete it from the Hugging Face '
            f'cache ({cache_dir or constants.HF_HUB_CACHE}, `hf cache delete`) and download it again.')
    if isinstance(e, RuntimeError) and 'state_dict' in str(e):
        return WeightsError(f'{what}: the weights of {where} do not fit the model: {e}')
    return hub_error(e, what, repo_id, filename, revision, cache_dir)


@contextlib.contextmanager
def weights_errors(model: str, pretrained: bool, kwargs: Optional[dict] = None):
    """Turn download/load failures inside a pretrained build into WeightsError naming `model`."""
    if not pretrained:
        yield
        return
    kwargs = kwargs or {}
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    cfg = kwargs.get('pretrained_cfg')
    def cfg_get(key):
        return overlay.get(key) or (cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None))
    hub, file = cfg_get('hf_hub_id'), cfg_get('file')
    filename = overlay.get('hf_hub_filename') or WEIGHTS_FILENAME
    if file and Path(file).is_dir() and cfg_get('source') != 'local-dir':  # timm would open the folder as a file
        raise WeightsError(f"pretrained weights for {model}: file={file} is a folder; give the weights file in it "
                           f"({Path(file) / filename}), or load the folder with 'local-dir:{file}'")
    if file:  # a user-given file takes precedence over the Hub in timm's loader ('local-dir:' gives the folder)
        repo_id, revision = str(Path(file) / filename if Path(file).is_dir() else file), None
    else:
        repo_id, revision = (hub.split('@', 1) + [None])[:2] if hub else ('the Hub repo of its pretrained cfg', None)
    try:
        yield
    except WeightsError:
        raise
    except Exception as e:
        err = _translate(e, f'pretrained weights for {model}', repo_id, filename, revision, kwargs.get('cache_dir'),
                         local_file=bool(file))
        if err is None:
            raise
        raise err from e


def download_verified(record: dict, cache_dir=None, force_download: bool = False, what: Optional[str] = None) -> Path:
    """Download (or find in the cache) the record's weight file at its pinned commit and check its sha256."""
    from huggingface_hub import constants, hf_hub_download

    what = what or f"pretrained weights for {record['model']}.{record['tag']}"
    if force_download and constants.HF_HUB_OFFLINE:  # huggingface_hub raises a bare ValueError for it
        raise WeightsError(f'{what}: downloading again needs the Hub, and offline mode is on (HF_HUB_OFFLINE); '
                           f'unset HF_HUB_OFFLINE to download it again')
    try:
        path = hf_hub_download(record['repo_id'], record['filename'], revision=record['hub_commit'],
                               cache_dir=cache_dir, force_download=force_download)
    except Exception as e:
        err = _translate(e, what, record['repo_id'], record['filename'], record['hub_commit'], cache_dir)
        if err is None:
            raise
        raise err from e
    digest = sha256_file(path)  # every time, no memo: a file changed in place (same size and mtime) is caught
    if digest != record['sha256']:
        # the snapshot folder holds only a link: its blob, found again by name, would come back from a new download
        repo_dir = next((p.parent for p in Path(path).parents if p.name == 'snapshots'), Path(path).parent)
        raise WeightsError(
            f"{what}: checksum mismatch for {record['repo_id']}@{record['hub_commit']}/{record['filename']}: "
            f"the file {path} has sha256 {digest}, the manifest expects {record['sha256']}. The cached file is "
            f"corrupt or was replaced: download it again (`zamzoo verify {record['model']}.{record['tag']} "
            f"--force-download`), or delete the repo from the cache (`hf cache delete`, or remove {repo_dir}).")
    return Path(path)


def _registry_cfg(variant: str, tag: str):
    """The registry's pretrained cfg of variant.tag; None for a tag it does not know (one of the user's data)."""
    from timm.models import get_pretrained_cfg
    try:
        return get_pretrained_cfg(f'{variant}.{tag}' if tag else variant)
    except RuntimeError:  # timm's "Invalid pretrained tag"
        return None


def prepare_pretrained(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Called by the model factory for pretrained=True; returns the kwargs to build with.

    Raises WeightsError for an unpublished model/tag (no manifest record, no user-given source). For published
    weights: pins `hf_hub_id` to the manifest's commit, downloads (or reads the cache) and checks the sha256.
    """
    from timm.models import resolve_pretrained_cfg

    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=overlay)
    tag = cfg.tag or ''
    if user_source(cfg, overlay, _registry_cfg(variant, tag)):
        return kwargs
    record = find_checkpoint(variant, tag)  # an invalid manifest, or record of this model, raises WeightsError
    if record is None:
        other = [f"{r['model']}.{r['tag']}" for r in load_manifest() if r['model'] == variant]
        published = f" (published: {', '.join(other)}, e.g. timm.create_model('{other[0]}', pretrained=True))" \
            if other else ''
        raise WeightsError(
            f'no pretrained weights are published for {variant}{"." + tag if tag else ""} (the manifest '
            f'{manifest_path()} has no record for it){published}: {how_to_get_weights(variant)}.')
    download_verified(record, cache_dir=kwargs.get('cache_dir'))
    overlay.update(hf_hub_id=pinned_hub_id(record), hf_hub_filename=record['filename'])
    return dict(kwargs, pretrained_cfg_overlay=overlay)
