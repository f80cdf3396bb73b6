"""The batches of an epoch, one rule for both loaders (tensor loader, DataLoader batch sampler): global batches,
each rank's part of them, and the per-epoch generator the order and the augmentation are drawn from."""
from typing import List, Tuple

import numpy as np
import torch

from ..recipes import MIN_TRAIN_IMAGES


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one epoch of one purpose; independent of any global RNG state."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def shard_bounds(n: int, batch_size: int, drop_last: bool) -> List[Tuple[int, int]]:
    """Global batches as (start, stop) positions in the epoch's order."""
    stop = (n // batch_size) * batch_size if drop_last else n
    return [(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]


def epoch_bounds(n: int, batch_size: int, drop_last: bool, world_size: int, train: bool) -> List[Tuple[int, int]]:
    """The global batches of an epoch. In training every process's part of a batch holds at least
    `MIN_TRAIN_IMAGES` images (BatchNorm cannot train on a single pooled value): a last batch smaller than that times
    the processes is merged into the batch before it, or dropped when it is the only one. With several processes a
    last batch of 2 to 2N - 1 images is thus merged where one process trains it alone. Evaluation keeps every image:
    a rank may have no part of a last small batch. No rule depends on anything but the sizes, so every rank draws
    the same batches."""
    bounds = shard_bounds(n, batch_size, drop_last)
    least = MIN_TRAIN_IMAGES * world_size
    if train and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < least:
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    if train and bounds and bounds[-1][1] - bounds[-1][0] < least:
        bounds.pop()
    return bounds


def rank_slice(start: int, stop: int, rank: int, world_size: int) -> Tuple[int, int]:
    """This rank's part of a global batch: contiguous, sizes differing by at most one."""
    base, extra = divmod(stop - start, world_size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
