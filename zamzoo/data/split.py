"""A held-out validation set cut from one training set: stratified (each class keeps the same share, and at least
one training image), and deterministic in the seed."""
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import DataError, UsageError


def check_fraction(holdout: float) -> float:
    if not 0.0 < float(holdout) < 1.0:
        raise UsageError(f'holdout: expected a fraction between 0 and 1 (e.g. 0.1), got {holdout!r}')
    return float(holdout)


def stratified_holdout(targets: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(train indices, validation indices), each sorted: round(fraction * n) images of each class of n images are
    held out, chosen by a permutation drawn from `seed` alone (never more than n - 1, so no class loses its
    training images)."""
    fraction = check_fraction(fraction)
    targets = np.asarray(targets, dtype=np.int64)
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x401D]).permutation(len(targets))
    val = []
    for c in np.unique(targets):
        members = order[targets[order] == c]
        val.extend(members[:min(len(members) - 1, int(round(fraction * len(members))))].tolist())
    if not val:
        raise DataError(f'--holdout {fraction}: no image is held out of {len(targets)} images; '
                        f'use a larger fraction or give a separate validation set')
    held = set(val)
    return [i for i in range(len(targets)) if i not in held], sorted(val)
