"""`zamzoo verify` and `zamzoo list`: published weights checked against the manifest; the zoo's status."""
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from ..errors import UsageError, WeightsError
from ..pretrained import download_verified, how_to_get_weights, load_manifest


@dataclass
class Verified:
    model: str
    tag: str
    repo_id: str
    hub_commit: str
    path: Optional[Path]
    ok: bool
    message: str


def _select(records: List[dict], model: Optional[str]) -> List[dict]:
    if not model:
        return records
    from ..models import ZOO

    name, _, tag = model.partition('.')
    if name not in ZOO:
        raise UsageError(f'unknown zamzoo model {name!r} (`zamzoo list` lists them)')
    chosen = [r for r in records if r['model'] == name and (not tag or r['tag'] == tag)]
    if not chosen:
        others = sorted(r['tag'] for r in records if r['model'] == name)
        raise WeightsError(f'no published weights for {model} in the manifest'
                           + (f" (published: {', '.join(f'{name}.{t}' for t in others)})" if others else '')
                           + f': {how_to_get_weights(name)}')
    return chosen


def verify_published(model: Optional[str] = None, *, cache_dir=None, force_download: bool = False,
           manifest=None) -> List[Verified]:
    """Download (or read from the cache) each selected record's weights at its pinned commit; check the sha256.

    `model` is a name ('resnet18_zam', every tag) or 'name.tag'; None checks every record. A failure of one
    record (checksum mismatch, offline without cache, missing repo) is reported in its `Verified`, not raised;
    an unknown model raises WeightsError.
    """
    results = []
    for record in _select(load_manifest(manifest), model):
        base = {key: record[key] for key in ('model', 'tag', 'repo_id', 'hub_commit')}
        try:
            path = download_verified(record, cache_dir=cache_dir, force_download=force_download,
                                     what=f"{record['model']}.{record['tag']}")
        except WeightsError as e:
            results.append(Verified(**base, path=None, ok=False, message=str(e)))
        else:
            results.append(Verified(**base, path=path, ok=True, message=f"sha256 {record['sha256']} ok"))
    return results


@dataclass
class ModelStatus:
    model: str
    params: int
    macs: int
    weights: dict  # tag -> 'not yet trained' | 'published@<commit12>'


def model_status(patterns: Iterable[str] = ('*',), manifest=None) -> List[ModelStatus]:
    """Every zoo model matching `patterns`: params and MACs (100 classes, one 3x32x32 image) and weights status."""
    import timm

    from ..bench.flops import count_macs, count_params
    from ..models import TAGS, list_models

    published = {(r['model'], r['tag']): r for r in load_manifest(manifest)}
    rows = []
    for name in sorted({n for p in patterns for n in list_models(p)}):
        # on the CPU: at the zoo's 32 x 32 input the meta device, which runs its ops as Python meta kernels, gives the
        # same counts slower (`zamzoo list`, torch 2.14.1, 2 cores: 22.9-24.9 s on meta, 18.2-18.7 s on the CPU; one
        # thread 26.6 / 18.4 s); `zamzoo export` counts at the run's image size, where meta wins (224 x 224: 10x)
        net = timm.create_model(name).eval()
        weights = {tag: f"published@{published[name, tag]['hub_commit'][:12]}" if (name, tag) in published
                   else 'not yet trained' for tag in TAGS}
        rows.append(ModelStatus(name, count_params(net), count_macs(net), weights))
    return rows
