"""`zamzoo push`: upload a validated export folder to the Hugging Face Hub and record it in the manifest."""
import datetime
import json
from pathlib import Path
from typing import List, Optional, Tuple

from huggingface_hub import HfApi  # module attribute: tests replace it with a recorder

from .._io import read_json_object
from ..errors import NonFiniteError, WeightsError, ZamzooError
from ..pretrained import WEIGHTS_FILENAME, hub_errors, sha256_file, update_manifest, validate_record
from ..pretrained.manifest import check_recordable, record_path, records_tag
from ..train.checkpoint import check_finite_weights
from .export import (CARD_FILE, CHECKSUMS_FILE, CONFIG_FILE, EXPORT_FILES, HPARAMS_FILE, OPTIONAL_EXPORT_FILES,
                     RESULTS_FILE, TRAIN_LOG_FILE, WRAPPER_ARGS)
from .onnx import check_onnx_record


class InvalidExportError(WeightsError):
    """An export folder is incomplete, modified after export, or does not describe a registered model."""


def _check_file_set(folder: Path):
    """Exactly the export files (and optionally model.onnx), regular files, none empty."""
    problems = []
    present = {p.name for p in folder.iterdir() if not p.name.startswith('.')}
    missing = [f for f in EXPORT_FILES if f not in present]
    if missing:
        problems.append(f'missing {", ".join(missing)}')
    extra = sorted(present - set(EXPORT_FILES) - set(OPTIONAL_EXPORT_FILES))
    if extra:
        problems.append(f'unexpected files {extra} (an export holds exactly {", ".join(EXPORT_FILES)})')
    links = [f for f in EXPORT_FILES + OPTIONAL_EXPORT_FILES if (folder / f).is_symlink()]
    if links:  # a link could point anywhere (a .env, a key): only the files export wrote are uploaded
        problems.append(f'symlinks {links} (an export holds regular files only: export again)')
    empty = [f for f in EXPORT_FILES + OPTIONAL_EXPORT_FILES
             if f in present and not links and (folder / f).stat().st_size == 0]
    if empty:
        problems.append(f'empty files {empty}')
    if problems:
        raise InvalidExportError(f'{folder} is not a complete export: ' + '; '.join(problems))


def _read_records(folder: Path):
    """(results.json, config.json), after checking that every JSON file is strict JSON and results.json complete."""
    results, config = (read_json_object(folder / name, InvalidExportError) for name in (RESULTS_FILE, CONFIG_FILE))
    for name in (HPARAMS_FILE, TRAIN_LOG_FILE):  # uploaded too: they must be what export wrote, strict JSON
        read_json_object(folder / name, InvalidExportError)
    keys = ('model', 'tag', 'sha256', 'size_bytes', 'repo_id', 'num_classes')
    lacking = [f"results.json lacks '{key}'" for key in keys if results.get(key) is None]
    if lacking:
        raise InvalidExportError(f'{folder}: ' + '; '.join(lacking))
    return results, config


def _checksum_problems(folder: Path) -> List[str]:
    """The files that differ from what export wrote (SHA256SUMS): weights or records edited after export."""
    listed = {}
    for line in (folder / CHECKSUMS_FILE).read_text(encoding='utf-8', errors='replace').splitlines():
        digest, sep, name = line.partition('  ')
        if not sep:
            return [f'{CHECKSUMS_FILE} holds the line {line!r}, not "<sha256>  <file>": export again']
        listed[name] = digest
    present = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUMS_FILE and not p.name.startswith('.'))
    problems = []
    if unlisted := [name for name in present if name not in listed]:
        problems.append(f'{", ".join(unlisted)} not in {CHECKSUMS_FILE} (not written by export)')
    if absent := sorted(set(listed) - set(present)):
        problems.append(f'{CHECKSUMS_FILE} lists {", ".join(absent)}, which the folder lacks')
    if changed := [name for name in present if name in listed and sha256_file(folder / name) != listed[name]]:
        problems.append(f'{", ".join(changed)} changed after export (sha256 differs from {CHECKSUMS_FILE}): '
                        f'export again')
    return problems


def _record_problems(folder: Path, results: dict, config: dict) -> List[str]:
    """The files disagreeing with results.json: weights (sha256, size), model.onnx, config.json's architecture."""
    import timm

    from ..models import ZOO
    problems = []
    weights = folder / WEIGHTS_FILENAME
    digest = sha256_file(weights)
    if digest != results['sha256'] or weights.stat().st_size != results['size_bytes']:
        problems.append(f'{WEIGHTS_FILENAME} has sha256 {digest} but results.json records {results["sha256"]} '
                        f'(the weights changed after export: export again)')
    if onnx_problem := check_onnx_record(folder, results):
        problems.append(onnx_problem)
    arch = config.get('architecture')
    if arch != results['model']:
        problems.append(f"config.json architecture {arch!r} differs from results.json model {results['model']!r}")
    elif arch not in ZOO or not timm.is_model(arch):
        problems.append(f"config.json architecture {arch!r} is not a registered zamzoo model")
    if config.get('num_classes') != results['num_classes']:
        problems.append(f"config.json num_classes {config.get('num_classes')} != results.json {results['num_classes']}")
    return problems + _wrapper_problems(config)


def _wrapper_problems(config: dict) -> List[str]:
    """What would stop 🤗 transformers' TimmWrapper from loading the export (the Hub's "Use this model" path)."""
    problems = []
    passed = sorted(set(config.get('model_args') or {}) & set(WRAPPER_ARGS))
    if passed:
        problems.append(f"config.json model_args holds {passed}, which transformers' timm wrapper passes itself "
                        f'(it would fail with "got multiple values for keyword argument"): export again')
    labels = config.get('label_names')
    if labels is not None and (not isinstance(labels, list) or len(labels) != config.get('num_classes')
                               or not all(isinstance(name, str) for name in labels)):
        problems.append(f"config.json label_names must be a list of {config.get('num_classes')} class names")
    return problems


def _model_args_problems(config: dict) -> List[str]:
    """The manifest record will promise that timm.create_model(arch, pretrained=True) builds the network these weights
    were trained in: a run's model_args other than the registry's own build another one, even where every tensor
    has the same shape (an attention slot, a pooling option)."""
    from ..models import ZOO
    arch = config['architecture']
    defaults = json.loads(json.dumps(ZOO[arch].model_args)) if arch in ZOO else {}
    other = {k: v for k, v in (config.get('model_args') or {}).items()
             if k not in ('num_classes', 'in_chans', 'global_pool') and (k not in defaults or defaults[k] != v)}
    if not other:
        return []
    return [f"config.json's model_args {other} build another network than timm.create_model('{arch}') does: weights "
            f"trained with them cannot be published under the registry name {arch} (pretrained=True would load them "
            f'into the default network)']


def _shape_problems(weights: Path, config: dict) -> List[str]:
    """The manifest record will promise that timm.create_model(arch, pretrained=True) loads these weights, so they
    must fit the registry's architecture as built by default (shapes only: built on the meta device, and read from
    the safetensors header without loading)."""
    import timm
    from safetensors import SafetensorError, safe_open
    arch, num_classes = config['architecture'], config['num_classes']
    try:
        net = timm.create_model(arch, num_classes=num_classes, device='meta')
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    except Exception as e:  # noqa: BLE001 - any construction failure means the export is unusable
        return [f'{arch} cannot be built with num_classes={num_classes}: {e}']
    try:
        with safe_open(str(weights), framework='pt') as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        return [f'{WEIGHTS_FILENAME} is not a readable safetensors file: {e}']
    if found == expected:
        return []
    miss = sorted(set(expected) - set(found))[:5]
    unexp = sorted(set(found) - set(expected))[:5]
    shape = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])[:5]
    return [f"{WEIGHTS_FILENAME} does not match {arch} as timm.create_model('{arch}', num_classes="
            f"{num_classes}) builds it: missing {miss}, unexpected {unexp}, wrong shapes {shape}"]


def _finite_problems(weights: Path) -> List[str]:
    from safetensors.torch import load_file
    try:
        check_finite_weights(load_file(str(weights)), weights)
    except NonFiniteError as e:
        return [str(e)]
    return []


def _card_problems(folder: Path) -> List[str]:
    card = (folder / CARD_FILE).read_text(encoding='utf-8')
    if not card.startswith('---\n') or 'library_name: timm' not in card.split('\n---\n', 1)[0]:
        return ["README.md lacks timm's YAML header (library_name: timm)"]
    return []


def _refuse_run_time_module(folder: Path, results: dict):
    """A model of a module that is not the zoo's is built by code outside zamzoo (a file on its author's disk, or
    a package's entry point): the Hub cannot give others that code, so push publishes the zoo's own modules only."""
    from ..models.plugins import from_entry_point
    module = results.get('attention_module')
    if module:
        where = ('of an installed package (entry-point group zamzoo.attention)' if from_entry_point(module) else
                 'registered at run time')
        raise InvalidExportError(
            f"{folder} is a model of the attention module {module.get('name')!r} {where} (from {module.get('spec')}), "
            f"whose code is not part of zamzoo: others could not build it from the Hub, so it is not pushed (push "
            f"publishes models of the zoo's own modules); the export loads from its folder (timm.create_model("
            f"'local-dir:PATH', pretrained=True) where the module is registered), or add the module to the zoo")


def validate_export(folder) -> dict:
    """Check an export folder end to end; returns its results.json. Raises InvalidExportError with every problem.

    Checks: not a model of an attention module registered at run time; exactly the export files (and optionally
    model.onnx, whose sha256 results.json records), none empty; every file as export wrote it (SHA256SUMS);
    results.json / config.json readable; the sha256 and size of model.safetensors match results.json;
    config.json's architecture is a registered zamzoo model and matches results.json, and its model_args are the
    registry's (the network pretrained=True builds); the safetensors header holds
    exactly the architecture's tensors with the right shapes (read without loading, and without any pickle); the
    weights are finite; the card has timm's YAML header; config.json loads in transformers' timm wrapper.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidExportError(f'{folder} is not a folder (make one with `zamzoo export`)')
    _check_file_set(folder)
    results, config = _read_records(folder)
    _refuse_run_time_module(folder, results)
    problems = _checksum_problems(folder) + _record_problems(folder, results, config)
    if not problems:
        problems = _model_args_problems(config) or _shape_problems(folder / WEIGHTS_FILENAME, config)
    if not problems:
        problems = _finite_problems(folder / WEIGHTS_FILENAME)
    problems += _card_problems(folder)
    if problems:
        raise InvalidExportError(f'{folder} is not a valid export: ' + '; '.join(problems))
    return results


def _refuse_unofficial_data(folder: Path, results: dict):
    """The CIFAR tags' repos (which the manifest pins `timm.create_model(..., pretrained=True)` to) hold weights
    trained on the official CIFAR releases only: a run on other data, or a bare checkpoint, is not pushed there."""
    from .card import dataset_names, unverified_cifar
    data = results.get('training_data')
    if unverified_cifar(results['tag'], data):
        raise InvalidExportError(
            f"{folder} was trained on {dataset_names(results['tag'], data)[0]}, so it is not pushed as "
            f"{results['model']}.{results['tag']}: that name's weights are trained on the official "
            f"{dataset_names(results['tag'])[0]} release (train on it, e.g. `zamzoo train --data DIR --download`, "
            f'then export and push that run); the export itself stays usable from disk')


def _refuse_other_normalisation(folder: Path, results: dict, config: dict):
    """`timm.create_model(name, pretrained=True)` preprocesses as the registry's cfg of the name says, not as the
    export's config.json: weights trained with other statistics (under another recipe than the model's) would be fed
    other inputs than they learnt from."""
    import timm
    registry = timm.models.get_pretrained_cfg(f"{results['model']}.{results['tag']}") \
        if records_tag(results['tag']) else None
    trained = config.get('pretrained_cfg') or {}
    if registry is None or [list(trained.get(k) or ()) for k in ('mean', 'std')] == [list(registry.mean),
                                                                                     list(registry.std)]:
        return
    raise InvalidExportError(
        f"{folder} was trained with mean {trained.get('mean')} and std {trained.get('std')}, and the registry's cfg of "
        f"{results['model']}.{results['tag']}, which `timm.create_model('{results['model']}', pretrained=True)` "
        f'preprocesses with, has mean {list(registry.mean)} and std {list(registry.std)}: train with the model\'s '
        f'own recipe to publish under that name; the export itself (its config.json) stays usable from disk')


def push_refusal(folder) -> Optional[str]:
    """Why `push_folder` would refuse a fresh export for what it holds (a module registered at run time, CIFAR
    weights trained on other data or normalised otherwise), before any check of the Hub; None where it would go on."""
    folder = Path(folder)
    results, config = _read_records(folder)
    try:
        _refuse_run_time_module(folder, results)
        _refuse_unofficial_data(folder, results)
        _refuse_other_normalisation(folder, results, config)
    except InvalidExportError as e:
        return str(e)
    return None


def get_hf_token(token: Optional[str] = None) -> str:
    """The token to push with: the argument, else HF_TOKEN / the stored `hf auth login` token."""
    if token:
        return token
    from huggingface_hub import constants, get_token
    token = get_token()
    offline = ('the Hub, and offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE; it also needs '
               if constants.HF_HUB_OFFLINE else '')  # logging in alone cannot help offline
    if not token:
        raise WeightsError(
            f'pushing to the Hugging Face Hub needs {offline}a token with write access: run `hf auth login` '
            f'(or `huggingface-cli login`), or set the HF_TOKEN environment variable')
    return token


def _top1_by_seed(results: dict) -> Optional[dict]:
    """{"<seed>": final-epoch top-1} of the runs results.json lists with both (None when none has both)."""
    by_seed = {str(run['seed']): run['top1'] for run in results.get('runs') or []
               if run.get('seed') is not None and run.get('top1') is not None}
    return by_seed or None


def manifest_record(results: dict, repo_id: str, hub_commit: str) -> dict:
    return validate_record(_record_fields(results, repo_id, hub_commit))


def _record_fields(results: dict, repo_id: str, hub_commit: str) -> dict:
    top1, top5 = results.get('top1') or {}, results.get('top5') or {}
    return dict(
        model=results['model'], tag=results['tag'], repo_id=repo_id, hub_commit=hub_commit,
        filename=WEIGHTS_FILENAME, sha256=results['sha256'], size_bytes=results['size_bytes'],
        dataset=results.get('dataset') or results['tag'], recipe=results.get('recipe') or 'unknown',
        recipe_version=results.get('recipe_version'),
        seeds=list(results.get('seeds') or []), weights_seed=results.get('weights_seed'),
        top1_mean=top1.get('mean'), top1_std=top1.get('std'), top1_by_seed=_top1_by_seed(results),
        top5_mean=top5.get('mean'), top5_std=top5.get('std'),
        num_classes=results.get('num_classes'), params=results.get('params'), macs=results.get('macs'),
        code_commit=results.get('code_commit'),
        published_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    )


def push_folder(folder, repo_id: Optional[str] = None, *, token: Optional[str] = None, private: bool = False,
         commit_message: Optional[str] = None, manifest=None) -> Tuple[dict, Optional[Path]]:
    """Validate `folder`, create the Hub repo if needed, upload the export files, record the commit.

    Returns the manifest record and the manifest it was written into (`record_path(manifest)`), None when it was not:
    only the registry's tags (`records_tag`) are recorded, weights of other data sets load by their hf-hub: name,
    which no manifest pins. Nothing is uploaded when validation fails, no token is found, or the manifest cannot be
    written.
    """
    folder = Path(folder)
    results = validate_export(folder)
    _refuse_unofficial_data(folder, results)
    _refuse_other_normalisation(folder, results, _read_records(folder)[1])
    if repo_id and repo_id != results['repo_id']:
        raise InvalidExportError(
            f"{folder} was exported for {results['repo_id']} (its model card and results name that repo); to publish "
            f"it in another organisation's repo, export again with --repo-id ORG/{results['model']}.{results['tag']} "
            f"(a repo is named after its model and tag)")
    repo_id = results['repo_id']
    recorded = records_tag(results['tag'])
    if recorded:  # a record or manifest that would be refused must not be uploaded first
        manifest = check_recordable(record_path(manifest))
        manifest_record(results, repo_id, '0' * 40)
    repo_id, hub_commit = _upload(folder, results, repo_id, HfApi(token=get_hf_token(token)), private,
                                  commit_message)
    if not recorded:
        return _record_fields(results, repo_id, hub_commit), None
    record = manifest_record(results, repo_id, hub_commit)
    try:
        update_manifest(record, manifest)
    except (ZamzooError, OSError) as e:
        raise WeightsError(f'{repo_id} was uploaded at commit {hub_commit}, but recording it in {manifest} failed '
                           f'({e}): add this record to the "checkpoints" of a manifest by hand: '
                           f'{json.dumps(record)}') from e
    return record, manifest


def _upload(folder: Path, results: dict, repo_id: str, api, private: bool, commit_message: Optional[str]):
    """Create the repo if needed and upload the export files; (repo id as the Hub names it, commit id). An export file
    the repo holds from an earlier push and this export lacks (model.onnx) is deleted in the same commit: the pinned
    commit holds no export file but this export's (files no export makes stay)."""
    files = list(EXPORT_FILES + OPTIONAL_EXPORT_FILES)
    with hub_errors(f'pushing {folder} to {repo_id}', repo_id):
        repo_url = api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
        repo_id = getattr(repo_url, 'repo_id', None) or repo_id
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type='model', allow_patterns=files, delete_patterns=files,
            commit_message=commit_message or f"zamzoo: {results['model']}.{results['tag']} "
                                             f"(sha256 {results['sha256'][:12]})")
    hub_commit = getattr(commit, 'oid', None)
    if not hub_commit:
        raise WeightsError(f'the Hub did not return a commit id for the upload to {repo_id}; nothing recorded')
    return repo_id, hub_commit
