"""The manifest of published checkpoints: one record per model and tag.

The manifest ships inside the package (`zamzoo/pretrained/manifest.json`, read through importlib.resources, so a
wheel, a zip or an editable checkout read the same file); `ZAMZOO_MANIFEST=<file>` replaces it. In a checkout it
is the one file a maintainer commits after `zamzoo push`.

Kept free of torch/timm/huggingface_hub imports: the model registry reads it at import time to pin Hub
revisions, so that `timm.create_model('resnet18_zam', pretrained=True)` downloads exactly the published bytes.

File layout (schema 1)::

    {"schema": 1, "checkpoints": [<record>, ...]}

A record describes a checkpoint that is ON THE HUB: `zamzoo push` writes it once the upload has returned
its commit id. `zamzoo export` only stages a folder and leaves the manifest alone, so that an exported but
unpublished folder can never be mistaken for published weights (the pretrained guard trusts the manifest).
Fields (`RECORD_FIELDS` below; required ones marked with *):

    model*, tag*            registry name and pretrained tag ('resnet18_zam', 'cifar100')
    repo_id*, hub_commit*   Hub repository and the 40-hex commit that pins it
    filename*, sha256*      weight file in the repo ('model.safetensors') and its sha256
    size_bytes              its size
    dataset*, recipe*       data set and recipe name the weights were trained with
    recipe_version
    seeds*, weights_seed    every seed that went into the results; the seed whose weights were published
    top1_mean, top1_std,    accuracy (percent) over the seeds' final epochs; null when unknown
    top1_by_seed            {"<seed>": final-epoch top-1 (percent)} of each seed (keys among `seeds`), so the
                            tables can pair a model with its plain backbone seed by seed; null when unknown
    top5_mean, top5_std
    num_classes, params, macs
    code_commit             git commit of the zamzoo source the weights were trained with (null if unknown; the
                            commits joined by ', ' when a resumed run was trained by several)
    published_at            UTC time of the push (ISO 8601)
"""
import importlib.resources
import json
import logging
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

from .._io import locked_beside, write_json_atomic
from .._paths import check_writable
from ..dataset_table import CIFAR_DATASETS
from ..errors import UsageError, WeightsError
from ..provenance import is_source_checkout

MANIFEST_ENV = 'ZAMZOO_MANIFEST'
SCHEMA_VERSION = 1
WEIGHTS_FILENAME = 'model.safetensors'

_HEX40 = re.compile(r'^[0-9a-f]{40}$')
_HEX64 = re.compile(r'^[0-9a-f]{64}$')
_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')
_PLAIN_NAME = re.compile(r'^[\w.-]+$')  # no folder, no separator: a file at the top of the repo
_num = (int, float)

# name -> (accepted types, required). None is accepted for every optional field.
RECORD_FIELDS = {
    'model': (str, True),
    'tag': (str, True),
    'repo_id': (str, True),
    'hub_commit': (str, True),
    'filename': (str, True),
    'sha256': (str, True),
    'size_bytes': (int, False),
    'dataset': (str, True),
    'recipe': (str, True),
    'recipe_version': (int, False),
    'seeds': (list, True),
    'weights_seed': (int, False),
    'top1_mean': (_num, False),
    'top1_std': (_num, False),
    'top1_by_seed': (dict, False),
    'top5_mean': (_num, False),
    'top5_std': (_num, False),
    'num_classes': (int, False),
    'params': (int, False),
    'macs': (int, False),
    'code_commit': (str, False),
    'published_at': (str, False),
}


def shipped_manifest():
    """The manifest inside the installed package (a Path, or a Traversable when zamzoo runs from a zip)."""
    return importlib.resources.files(__package__) / 'manifest.json'


def manifest_path():
    """$ZAMZOO_MANIFEST when set, else the shipped manifest."""
    env = os.environ.get(MANIFEST_ENV)
    return Path(env) if env else shipped_manifest()


def records_tag(tag: str) -> bool:
    """Whether a record of `tag` can be used: only the registry's tags (the CIFAR data sets) have names that
    `timm.create_model(name, pretrained=True)` resolves through the manifest."""
    return tag in CIFAR_DATASETS


def record_path(path=None) -> Path:
    """The manifest a push records into: `path`, else $ZAMZOO_MANIFEST, else the shipped manifest, but that one only
    when zamzoo runs from its source checkout (where it is committed with the code). An installed zamzoo's shipped
    manifest lies in site-packages: written there, it would be lost on upgrade, left behind by uninstall, and read by
    no one else, so an install needs the path said."""
    if path is not None or os.environ.get(MANIFEST_ENV):
        return _resolve(path)
    if is_source_checkout():
        return Path(shipped_manifest())
    raise UsageError(
        f'zamzoo is installed ({Path(shipped_manifest()).parent.parent}), not run from its source checkout, and the '
        f'manifest inside an install is not where a Hub commit is recorded: give --manifest PATH (or set '
        f'{MANIFEST_ENV}) to record it there, or push from a zamzoo checkout (zamzoo/pretrained/manifest.json)')


def check_recordable(path) -> Path:
    """Before anything is uploaded: the manifest at `path` is readable as a manifest (or absent) and its folder
    accepts the rewrite (OutputError / WeightsError otherwise)."""
    path = check_writable(path, 'the manifest', folder=False)
    _read(path, missing_ok=True)
    return path


def record_errors(record) -> list:
    """Everything wrong with one record (empty list when valid)."""
    if not isinstance(record, dict):
        return [f'a record must be an object, got {type(record).__name__}']
    errors = []
    for name, (types, required) in RECORD_FIELDS.items():
        value = record.get(name)
        if value is None:
            if required:
                errors.append(f"missing field '{name}'")
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            errors.append(f"field '{name}' has type {type(value).__name__}")
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        errors.append(f'unknown fields {unknown}')
    if errors:
        return errors
    if not _REPO_ID.match(record['repo_id']):
        errors.append(f"repo_id {record['repo_id']!r} is not 'org/name'")
    if not _HEX40.match(record['hub_commit']):
        errors.append(f"hub_commit {record['hub_commit']!r} is not a 40-hex commit id")
    if not _HEX64.match(record['sha256']):
        errors.append(f"sha256 {record['sha256']!r} is not 64 hex digits")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in record['seeds']):
        errors.append('seeds must be a list of integers')
    if not _PLAIN_NAME.match(record['filename']) or record['filename'].strip('.') == '':
        errors.append(f"filename {record['filename']!r} is not a plain file name in the repo")
    elif record['filename'] != WEIGHTS_FILENAME:
        # timm loads a repo's model.safetensors in place of a named .bin / .pth: the file checked must be that one
        errors.append(f"filename {record['filename']!r} is not {WEIGHTS_FILENAME!r}, the file an export holds and "
                      f"timm loads")
    infinite = [name for name, (types, _) in RECORD_FIELDS.items()
                if types is _num and record.get(name) is not None and not math.isfinite(record[name])]
    if infinite:
        errors.append(f'fields {infinite} are not finite numbers')
    errors += _top1_by_seed_errors(record)
    if not records_tag(record['tag']):
        errors.append(f"tag {record['tag']!r} is not a tag of the registry ({', '.join(CIFAR_DATASETS)}): no "
                      f'pretrained=True name would use the record (such weights load by their hf-hub: name)')
    if _REPO_ID.match(record['repo_id']):
        errors += filter(None, [repo_id_problem(record['model'], record['tag'], record['repo_id'])])
    return errors


def _top1_by_seed_errors(record: dict) -> list:
    """What is wrong with `top1_by_seed`: its keys must be seeds of the record (JSON keys: decimal strings), its
    values finite numbers."""
    by_seed = record.get('top1_by_seed')
    if by_seed is None:
        return []
    errors = []
    seeds = {str(s) for s in record['seeds']}
    strays = [k for k in by_seed if k not in seeds]
    if strays:
        errors.append(f"top1_by_seed has keys {strays} that are not seeds of the record ({sorted(seeds)})")
    bad = [k for k, v in by_seed.items()
           if isinstance(v, bool) or not isinstance(v, _num) or not math.isfinite(v)]
    if bad:
        errors.append(f'top1_by_seed values of seeds {bad} are not finite numbers')
    return errors


def top1_by_seed(record: dict) -> dict:
    """{seed (int): final-epoch top-1} of a valid record ({} when it does not say)."""
    return {int(seed): top1 for seed, top1 in (record.get('top1_by_seed') or {}).items()}


HUB_ORG = 'zamzoo'  # the organisation of the registry's own weights


def hub_id(model_name: str, tag: str) -> str:
    """The Hugging Face Hub repository of one model's weights (one repo per `arch.tag`, timm's convention)."""
    return f'{HUB_ORG}/{model_name}.{tag}'


def repo_id_problem(model: str, tag: str, repo_id: str) -> Optional[str]:
    """Why `repo_id` may not hold model.tag's weights (None when it may): a repo is named after what it holds, as
    `hub_id` names it in any organisation, so that no record can point one model at another model's repo."""
    expected = hub_id(model, tag).split('/', 1)[1]
    if repo_id.split('/', 1)[-1] != expected:
        return f"repo_id {repo_id!r} is not a repo of {model}.{tag} (expected 'ORG/{expected}')"
    return None


def validate_record(record) -> dict:
    errors = record_errors(record)
    if errors:
        name = f"{record.get('model')}.{record.get('tag')}" if isinstance(record, dict) else '?'
        raise WeightsError(f'invalid manifest record for {name}: ' + '; '.join(errors))
    return record


def _read(path, missing_ok: bool = False) -> dict:
    """The manifest file as stored (records unchecked); WeightsError when the file as a whole is unusable, or absent
    unless `missing_ok` (a push creates it: a reader given a mistyped path must not take it for "nothing
    published")."""
    if path.is_dir():
        raise WeightsError(f'the manifest {path} is a folder; expected a JSON file ({MANIFEST_ENV} must name a file)')
    if not path.is_file():
        if missing_ok:
            return {'schema': SCHEMA_VERSION, 'checkpoints': []}
        raise WeightsError(f'the manifest {path} does not exist (check --manifest / {MANIFEST_ENV}; '
                           f'`zamzoo push --manifest {path}` creates it)')
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise WeightsError(f'cannot read the manifest {path}: {e.strerror or e}') from e
    except ValueError as e:
        raise WeightsError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(data, dict) or not isinstance(data.get('checkpoints'), list):
        raise WeightsError(f'{path} is not a zamzoo manifest (expected {{"schema": 1, "checkpoints": [...]}})')
    if data.get('schema', SCHEMA_VERSION) != SCHEMA_VERSION:
        raise WeightsError(
            f"{path} has manifest schema {data.get('schema')!r}; this zamzoo reads schema {SCHEMA_VERSION} "
            f'(upgrade zamzoo)')
    return data


def _key(record) -> tuple:
    """(model, tag) of a record; (None, None) when it has no string model and tag."""
    key = (record.get('model'), record.get('tag')) if isinstance(record, dict) else (None, None)
    return key if all(isinstance(k, str) for k in key) else (None, None)


def _checked(records: list, path) -> Tuple[list, List[Tuple[tuple, str]]]:
    """(valid records, [((model, tag), what is wrong)] for the invalid ones). Each record is judged on its own;
    two records for one model and tag are both invalid (neither can be trusted over the other)."""
    counts = Counter(_key(r) for r in records)
    valid, problems = [], []
    for i, record in enumerate(records):
        key = _key(record)
        errors = record_errors(record)
        if key != (None, None) and counts[key] > 1:
            errors.append(f'{counts[key]} records for {key[0]}.{key[1]}')
        if errors:
            name = f' ({key[0]}.{key[1]})' if key != (None, None) else ''
            problems.append((key, f'{path}: checkpoint #{i}{name} is invalid: ' + '; '.join(errors)))
        else:
            valid.append(record)
    return valid, problems


_reported = set()


def _report(problem: str, consequence: str = 'the record is ignored'):
    """A warning on the 'zamzoo' logger, once per process per problem."""
    if problem not in _reported:
        _reported.add(problem)
        logging.getLogger('zamzoo').warning('%s (%s)', problem, consequence)


def _resolve(path):
    return Path(path) if path is not None else manifest_path()


def _load(path=None) -> Tuple[list, List[Tuple[tuple, str]]]:
    path = _resolve(path)
    valid, problems = _checked(_read(path)['checkpoints'], path)
    for _, problem in problems:
        _report(problem)
    return valid, problems


def load_manifest(path=None) -> list:
    """The valid checkpoint records (each invalid one is reported on the 'zamzoo' logger and left out). WeightsError
    when the file as a whole is unusable or does not exist (a mistyped path is not "nothing published")."""
    return _load(path)[0]


def manifest_problems(path=None) -> List[str]:
    """What is wrong with each invalid record (empty when every record is valid)."""
    return [problem for _, problem in _load(path)[1]]


def find_checkpoint(model: str, tag: str, path=None) -> Optional[dict]:
    """The record of `model`.`tag`, None when there is none; WeightsError when its record is invalid."""
    valid, problems = _load(path)
    invalid = [problem for key, problem in problems if key == (model, tag)]
    if invalid:
        raise WeightsError(' '.join(invalid))
    return next((r for r in valid if (r['model'], r['tag']) == (model, tag)), None)


def pinned_hub_id(record: dict) -> str:
    """`org/name@commit`: the form timm's hf_split understands, pinning the download to one commit."""
    return f"{record['repo_id']}@{record['hub_commit']}"


def published_hub_ids(path=None) -> dict:
    """{(model, tag): 'org/name@commit'} for every valid record; {} when the manifest is unreadable.

    Used at import time by the model registry: a broken manifest must not make `import zamzoo` fail (it is
    reported on the 'zamzoo' logger; the pretrained guard re-reads it when weights are actually requested).
    """
    try:
        return {(r['model'], r['tag']): pinned_hub_id(r) for r in load_manifest(path)}
    except WeightsError as e:
        _report(str(e), 'no weights are listed as published')
        return {}


def update_manifest(record: dict, path=None) -> Path:
    """Insert or replace the record of (model, tag), atomically; returns the manifest path."""
    validate_record(record)
    path = record_path(path)
    ordered = {name: record.get(name) for name in RECORD_FIELDS}
    with locked_beside(path):
        # other records, even invalid ones, are kept as they are: not this push's to judge
        data = _read(path, missing_ok=True)
        records = [r for r in data['checkpoints'] if _key(r) != (record['model'], record['tag'])]
        records.append(ordered)
        records.sort(key=lambda r: tuple(map(str, _key(r))))
        write_json_atomic(path, {'schema': SCHEMA_VERSION, 'checkpoints': records})
    return path
