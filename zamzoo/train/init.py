"""`--init SOURCE`: the weights a run starts from, from anywhere a user keeps them.

SOURCE is a zoo name with published weights (``resnet18_zam`` or ``resnet18_zam.cifar10``; what ``--pretrained``
loads), ``hf-hub:org/name`` (its ``model.safetensors``), ``local-dir:PATH``, an export folder, a run folder, or a
``.safetensors`` / ``.pt`` file. The classifier is re-initialised (kept as the model was built) when the class
count differs, or when the source records its class names (a run's ``classes``, an export's or Hub repo's
``label_names`` in the config.json next to the weights) and they are not this run's; the same names in another
order reorder its rows. Every other tensor must fit. The run records the source, the sha256 of the file read,
what became of the classifier and the normalisation the source records (a run's mean/std, an export's or a zoo
name's pretrained cfg), which a run on data of the user's own then uses, as timm's data config of loaded weights.
"""
import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn

from ..errors import WeightsError
from ..pretrained import WEIGHTS_FILENAME, find_checkpoint, hub_errors, sha256_file
from .checkpoint import WEIGHT_FILES, check_finite_weights, load_weights
from .run_files import CONFIG_FILE


def _weights_file(source: str) -> Optional[Path]:
    """The local file holding SOURCE's weights (downloaded for hf-hub:, with the repo's config.json where it has
    one), or None for a zoo name."""
    if source.startswith('hf-hub:'):
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
        repo, _, revision = source[len('hf-hub:'):].partition('@')
        with hub_errors(f'--init {source}', repo, WEIGHTS_FILENAME, revision or None):
            weights = Path(hf_hub_download(repo, WEIGHTS_FILENAME, revision=revision or None))
            try:  # its label_names (`source_record`)
                hf_hub_download(repo, constants.CONFIG_NAME, revision=revision or None)
            except EntryNotFoundError:
                pass
            return weights
    path = Path(source[len('local-dir:'):] if source.startswith('local-dir:') else source).expanduser()
    if path.is_dir():
        found = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
        if found is None:
            raise WeightsError(f'--init {source}: the folder holds none of {list(WEIGHT_FILES)}')
        return found
    if path.is_file() or source.startswith('local-dir:') or '/' in source or (path.suffix and not _zoo_name(source)):
        if not path.is_file():
            raise WeightsError(f'--init {source}: no such file or folder')
        return path
    return None


def _zoo_name(source: str) -> bool:
    """Whether SOURCE names a registered model, alone or with one of its tags ('resnet18_zam.cifar10'; not
    'resnet50.pt', a file name)."""
    import timm

    arch, _, tag = source.partition('.')
    return timm.is_model(arch) and (not tag or source in timm.models.get_arch_pretrained_cfgs(arch))


def source_record(weights: Path) -> dict:
    """What the config.json next to the weights (a run's, an export's or a Hub repo's) records of their training:
    'classes', the class names (a run's 'classes', an export's 'label_names'; None where it names none), and
    'mean', 'std' (`source_stats`) where it records them."""
    try:
        config = json.loads((weights.parent / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict):
        return {'classes': None}
    cfg = config['pretrained_cfg'] if isinstance(config.get('pretrained_cfg'), dict) else config
    return {'classes': recorded_classes(config), **source_stats(cfg)}


def recorded_classes(config: dict) -> Optional[List[str]]:
    """The class names a config.json records: a run's 'classes', an export's or Hub repo's 'label_names'; None
    where it names none."""
    names = config.get('classes') or config.get('label_names')
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None


def source_stats(cfg: dict) -> dict:
    """{'mean', 'std'}: the normalisation the weights were trained with, as `cfg` records it (a run's config.json,
    a timm pretrained cfg: an export's or Hub repo's `pretrained_cfg`, or timm's older top-level form); {} where it
    records none (or not three numbers each, with positive std)."""
    stats = {key: cfg.get(key) for key in ('mean', 'std')}
    for value in stats.values():
        if not (isinstance(value, (list, tuple)) and len(value) == 3
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in value)):
            return {}
    return {key: [float(x) for x in value] for key, value in stats.items()} if min(stats['std']) > 0 else {}


def _zoo_weights(name: str) -> Tuple[dict, dict]:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)  # the Hub repo timm would download from, for the error message
        with hub_errors(f'--init {name}', getattr(cfg, 'hf_hub_id', None), WEIGHTS_FILENAME):
            net = timm.create_model(name, pretrained=True)
    except RuntimeError as e:
        raise WeightsError(f"--init {name}: not a model with published weights, nor a file or folder ({e})") from e
    return net.state_dict(), published_record(net, name)


def published_record(net: nn.Module, source: str) -> dict:
    """What a run records of the published weights timm loaded into `net` (a zoo name's --init, --pretrained):
    'source', 'sha256' (the manifest's; None for weights it does not list, such as timm's own), 'classes' (the
    cfg's label_names, None where it names none) and the cfg's 'mean' and 'std'."""
    cfg = net.pretrained_cfg
    model, _, tag = source.partition('.')
    record = find_checkpoint(cfg.get('architecture') or model, cfg.get('tag') or tag) or {}
    return {'source': source, 'sha256': record.get('sha256'), 'classes': recorded_classes(cfg), **source_stats(cfg)}


def fit_pretrained_head(net: nn.Module, classes: Sequence[str], init_classes: Optional[Sequence[str]],
                        reset: bool = False) -> str:
    """What became of the classifier of the published weights timm loaded into `net` (`--pretrained`) for a run on
    `classes`, as for --init (`_fit_head`): 'reset' where timm loaded none (another class count) or `reset` (a
    recipe's reset_head), and where the weights' classes (`init_classes`) are others; 'reordered' (the same names in
    another order) or 'kept'. A classifier of other classes is initialised again, as the model builds one."""
    if not reset and net.num_classes != net.pretrained_cfg.get('num_classes'):
        return 'reset'  # timm kept the classifier as the model built it
    action = 'reset' if reset else apply_init(net, net.state_dict(), 'the published weights', classes, init_classes)
    if action == 'reset':
        net.reset_classifier(len(classes))
    return action


def load_init(source: str) -> Tuple[dict, dict]:
    """(state dict, record) of an --init SOURCE. The record: 'source', 'sha256', and what the source records of its
    training where it does: for a file, 'file', 'classes', 'mean' and 'std' (`source_record`); for a zoo name, its
    cfg's 'classes', 'mean' and 'std' (`published_record`)."""
    path = _weights_file(source)
    if path is None:
        return _zoo_weights(source)
    try:
        state = load_weights(path)
    except (FileNotFoundError, ValueError) as e:
        raise WeightsError(f'--init {source}: {e}') from e
    check_finite_weights(state, f'--init {path}', 'weights a run cannot start from (save finite ones, or pick '
                                                  'another file)')
    return state, {'source': source, 'file': str(path), 'sha256': sha256_file(path), **source_record(path)}


def _fit_head(state: dict, head_keys: set, own: dict, classes: Sequence[str],
              init_classes: Optional[Sequence[str]]) -> Tuple[dict, str]:
    """`state` with its classifier fitted to this run's `classes`, and what was done: 'kept'; 'reordered' (the same
    names in another order: its rows follow the names); 'reset' (another class count, or other names: the
    classifier stays as the model was built)."""
    order = None if init_classes is None else class_rows(init_classes, classes)
    if any(k in state and state[k].shape != own[k].shape for k in head_keys):
        action = 'reset'
    elif init_classes is None or list(init_classes) == list(classes):
        return state, 'kept'
    elif order is not None:
        return _head_rows(state, head_keys, order), 'reordered'
    else:
        action = 'reset'
    return {k: v for k, v in state.items() if k not in head_keys}, action


def class_rows(trained: Sequence[str], classes: Sequence[str]) -> Optional[List[int]]:
    """Item i: the row of a classifier trained on the classes `trained` that scores `classes[i]`; None unless both
    name the same classes, each once."""
    if sorted(trained) != sorted(classes) or len(set(classes)) != len(classes):
        return None
    row = {name: i for i, name in enumerate(trained)}
    return [row[name] for name in classes]


def reorder_classifier(model: nn.Module, order: List[int]) -> None:
    """Put `model`'s classifier rows in `order` (`class_rows`)."""
    state = model.state_dict()
    head = model.pretrained_cfg.get('classifier', 'fc')
    model.load_state_dict(_head_rows(state, {k for k in state if k.startswith(head + '.')}, order))


def _head_rows(state: dict, head_keys: set, order: List[int]) -> dict:
    return {k: v[order] if k in head_keys and v.dim() and v.shape[0] == len(order) else v for k, v in state.items()}


def apply_init(model: nn.Module, state: dict, source: str, classes: Sequence[str] = (),
               init_classes: Optional[Sequence[str]] = None) -> str:
    """Load `state` (whose classifier was trained on `init_classes`, where known) into `model` for a run on
    `classes`; returns what became of the classifier (`_fit_head`)."""
    own = model.state_dict()
    head = model.pretrained_cfg.get('classifier', 'fc')
    head_keys = {k for k in own if k.startswith(head + '.')}
    state, action = _fit_head(state, head_keys, own, classes, init_classes)
    reset = action == 'reset'
    missing = sorted(set(own) - set(state) - (head_keys if reset else set()))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(f'--init {source} does not fit this model: missing {missing[:5]}, unexpected '
                           f'{unexpected[:5]}, other shapes {wrong[:5]} (is it the same architecture?)')
    model.load_state_dict(state, strict=not reset)
    return action
