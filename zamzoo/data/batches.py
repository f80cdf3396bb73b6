"""The batches of an epoch, one rule for both loaders (tensor loader, DataLoader batch sampler): global batches,
each rank's part of them, and the per-epoch generator the order and the augmentation are drawn from."""
from typing import List, Tuple

import numpy as np
import torch


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one epoch of one purpose; independent of any global RNG state."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def shard_bounds(n: int, batch_size: int, drop_last: bool) -> List[Tuple[int, int]]:
    """Global batches as (start, stop) positions in the epoch's order."""
    stop = (n // batch_size) * batch_size if drop_last else n
    return [(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]


def epoch_bounds(n: int, batch_size: int, drop_last: bool, world_size: int, train: bool) -> List[Tuple[int, int]]:
    """The global batches of an epoch. In training, a last batch of one image is merged into the batch before it
    (BatchNorm cannot train on a single pooled value); then a last batch too small to give every rank an image is
    dropped (a training step needs an image on every rank). Evaluation keeps every image: a rank may have no part
    of a last small batch. Neither rule depends on anything but the sizes, so every rank draws the same batches."""
    bounds = shard_bounds(n, batch_size, drop_last)
    if train and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    if train and bounds and bounds[-1][1] - bounds[-1][0] < world_size:
        bounds.pop()
    return bounds


def rank_slice(start: int, stop: int, rank: int, world_size: int) -> Tuple[int, int]:
    """This rank's part of a global batch: contiguous, sizes differing by at most one."""
    base, extra = divmod(stop - start, world_size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
