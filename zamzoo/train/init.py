"""`--init SOURCE`: the weights a run starts from, from anywhere a user keeps them.

SOURCE is a zoo name with published weights (``resnet18_zam`` or ``resnet18_zam.cifar10``; what ``--pretrained``
loads), ``hf-hub:org/name`` (its ``model.safetensors``), ``local-dir:PATH``, an export folder, a run folder, or a
``.safetensors`` / ``.pt`` file. The classifier is re-initialised (kept as the model was built) when the class
count differs; every other tensor must fit. The run records the source and the sha256 of the file read.
"""
from pathlib import Path
from typing import Tuple

import torch.nn as nn

from ..errors import WeightsError
from ..pretrained import find_checkpoint, hub_errors, sha256_file
from .checkpoint import WEIGHT_FILES, check_finite_weights, load_weights


def _weights_file(source: str) -> Path:
    """The local file holding SOURCE's weights (downloaded for hf-hub:), or None for a zoo name."""
    if source.startswith('hf-hub:'):
        from huggingface_hub import hf_hub_download
        repo, _, revision = source[len('hf-hub:'):].partition('@')
        with hub_errors(f'--init {source}', repo, 'model.safetensors', revision or None):
            return Path(hf_hub_download(repo, 'model.safetensors', revision=revision or None))
    path = Path(source[len('local-dir:'):] if source.startswith('local-dir:') else source).expanduser()
    if path.is_dir():
        found = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
        if found is None:
            raise WeightsError(f'--init {source}: the folder holds none of {list(WEIGHT_FILES)}')
        return found
    if path.is_file() or source.startswith('local-dir:') or '/' in source or path.suffix:
        if not path.is_file():
            raise WeightsError(f'--init {source}: no such file or folder')
        return path
    return None


def _zoo_weights(name: str) -> Tuple[dict, dict]:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)  # the Hub repo timm would download from, for the error message
    try:
        with hub_errors(f'--init {name}', getattr(cfg, 'hf_hub_id', None), 'model.safetensors'):
            net = timm.create_model(name, pretrained=True)
    except RuntimeError as e:
        raise WeightsError(f"--init {name}: not a model with published weights, nor a file or folder ({e})") from e
    model, _, tag = name.partition('.')
    record = find_checkpoint(model, tag or net.pretrained_cfg.get('tag') or '') or {}
    return net.state_dict(), {'source': name, 'sha256': record.get('sha256')}


def load_init(source: str) -> Tuple[dict, dict]:
    """(state dict, record {'source', 'sha256'}) of an --init SOURCE."""
    path = _weights_file(source)
    if path is None:
        return _zoo_weights(source)
    try:
        state = load_weights(path)
    except (FileNotFoundError, ValueError) as e:
        raise WeightsError(f'--init {source}: {e}') from e
    check_finite_weights(state, f'--init {path}', 'weights a run cannot start from (save finite ones, or pick '
                                                  'another file)')
    return state, {'source': source, 'file': str(path), 'sha256': sha256_file(path)}


def apply_init(model: nn.Module, state: dict, source: str) -> bool:
    """Load `state` into `model`; True when the classifier was left as built because its shape differs."""
    own = model.state_dict()
    head = model.pretrained_cfg.get('classifier', 'fc')
    head_keys = {k for k in own if k.startswith(head + '.')}
    reset = any(k in state and state[k].shape != own[k].shape for k in head_keys)
    if reset:
        state = {k: v for k, v in state.items() if k not in head_keys}
    missing = sorted(set(own) - set(state) - (head_keys if reset else set()))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(f'--init {source} does not fit this model: missing {missing[:5]}, unexpected '
                           f'{unexpected[:5]}, other shapes {wrong[:5]} (is it the same architecture?)')
    model.load_state_dict(state, strict=not reset)
    return reset
