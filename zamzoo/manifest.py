"""The manifest of published checkpoints (weights/manifest.json): one record per model and tag.

Kept free of torch/timm imports: the model registry reads it at import time to pin Hub revisions.
"""
import json
import os
from pathlib import Path
from typing import Optional

from .errors import WeightsError

MANIFEST_ENV = 'ZAMZOO_MANIFEST'
REPO_MANIFEST = Path(__file__).resolve().parent.parent / 'weights' / 'manifest.json'


def manifest_path() -> Path:
    return Path(os.environ.get(MANIFEST_ENV, REPO_MANIFEST))


def load_manifest(path=None) -> list:
    """All checkpoint records; an absent manifest means nothing is published yet."""
    path = Path(path) if path is not None else manifest_path()
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        return list(data['checkpoints'])
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f'{path} is not a valid zamzoo manifest (expected {{"checkpoints": [...]}}): {e}') from e


def find_checkpoint(model: str, tag: str, path=None) -> Optional[dict]:
    for record in load_manifest(path):
        if record.get('model') == model and record.get('tag') == tag:
            return record
    return None
