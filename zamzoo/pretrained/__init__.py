"""What `pretrained=True` needs, below the model factory: the manifest of published checkpoints (shipped in this
package as `manifest.json`), the guard that pins the Hub commit and checks the sha256, the sha256 helper, and the one
translation of the Hub client's failures into WeightsError (hub_errors), which every hub call of zamzoo goes through.

Imports nothing from zamzoo.publish, zamzoo.bench or zamzoo.train: zamzoo.models builds on it, publishing builds on
both.
"""
from .checksum import sha256_file
from .guard import download_verified, how_to_get_weights, prepare_pretrained, weights_errors
from .hub_errors import hub_error, hub_errors
from .manifest import (
    HUB_ORG, WEIGHTS_FILENAME, find_checkpoint, hub_id, load_manifest, manifest_path, manifest_problems, pinned_hub_id,
    published_hub_ids, repo_id_problem, shipped_manifest, top1_by_seed, update_manifest,
    validate_record,
)

__all__ = [
    'sha256_file', 'download_verified', 'hub_error', 'hub_errors', 'how_to_get_weights', 'prepare_pretrained',
    'weights_errors', 'HUB_ORG', 'WEIGHTS_FILENAME', 'find_checkpoint', 'hub_id', 'load_manifest', 'manifest_path',
    'manifest_problems', 'pinned_hub_id', 'published_hub_ids', 'repo_id_problem', 'shipped_manifest',
    'top1_by_seed', 'update_manifest', 'validate_record',
]
