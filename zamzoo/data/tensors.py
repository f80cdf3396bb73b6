"""Any data set as the tensor loader's input: every image decoded once to uint8 (N, 3, S, S) at the model's input
size (resized so its shorter side is S, then centre-cropped; CIFAR's 32x32 arrays are taken as they are), after
checking that the device and the host have the memory for it."""
import os
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ZamzooError
from .cifar import cifar_tensors
from .loaders import EVAL_CROP_PCT, EVAL_INTERPOLATION, eval_resize


def tensor_bytes(n_train: int, n_test: int, size: int, padding: int) -> int:
    """Bytes the tensor loader holds: the train split stored padded for its crops, the test split as it is."""
    return 3 * (n_train * (size + 2 * padding) ** 2 + n_test * size ** 2)


def _host_available() -> int:
    """The kernel's MemAvailable (free memory plus what the page cache would give back); MemFree elsewhere."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def free_bytes(device) -> Tuple[int, int]:
    """(free bytes on `device`, available host bytes)."""
    host, device = _host_available(), torch.device(device)
    return (torch.cuda.mem_get_info(device)[0] if device.type == 'cuda' else host), host


def fits(needed: int, device, share: float = 0.5) -> bool:
    """Whether `needed` bytes take at most `share` of the device's free memory (and of the host's)."""
    dev, host = free_bytes(device)
    return needed <= share * dev and needed <= share * host


def _human(n: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.1f} {unit}' if unit != 'B' else f'{int(n)} B'
        n /= 1024


def dataloader_bytes(batch_size: int, size: int, workers: int) -> int:
    """Bytes the DataLoader path holds at once at least: float32 batches, the one on the device and, with workers,
    the 2 each prefetches (torch's prefetch_factor) on the host."""
    return 4 * 3 * size * size * batch_size * max(1, 2 * workers)


def check_memory(needed: int, device, n_images: int, size: int, loader: str = 'tensor'):
    """A clear error unless the data fits in the free memory of `device` (and of the host, where it is decoded):
    the whole data set for the tensor loader, the batches in flight for the DataLoader."""
    dev, host = free_bytes(device)
    if needed > dev or needed > host:
        where, free = (f'{device}', dev) if needed > dev else ('host', host)
        what, advice = {'tensor': ('the tensor loader', 'use --loader dataloader (or a smaller --img-size)'),
                        'dataloader': ('the DataLoader', 'use a smaller --img-size, or a smaller --batch-size and '
                                       '--eval-batch-size (its batches hold the larger of the two)')}[loader]
        raise ZamzooError(
            f'{what} needs {_human(needed)} for {"batches of " if loader == "dataloader" else ""}{n_images:,} images '
            f'at {size}x{size}, but {where} memory has {_human(free)} free; {advice}')


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, dataset, size: int):
        from torchvision.transforms import InterpolationMode, v2
        self.dataset = dataset
        resize = eval_resize(size, EVAL_CROP_PCT['tensor'])
        self.transform = v2.Compose([  # on the PIL image: PIL's resampling, as `folder_transforms` and timm
            v2.Resize(resize, interpolation=InterpolationMode(EVAL_INTERPOLATION), antialias=True),
            v2.CenterCrop(size),
            v2.PILToTensor()])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        return self.transform(image), target


def dataset_tensors(dataset, size: int, workers: int = 0, batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, size, size) uint8, targets (N,) int64) of a dataset serving (RGB PIL image, int target): the
    shorter side resized to size (`EVAL_CROP_PCT`), then centre-cropped."""
    if getattr(dataset, 'data', None) is not None and isinstance(dataset.data, np.ndarray) and size == 32:
        return cifar_tensors(dataset)  # torchvision's CIFAR: the arrays are the images
    loader = DataLoader(_Decoded(dataset, size), batch_size=batch_size, num_workers=workers, shuffle=False)
    images = torch.empty((len(dataset), 3, size, size), dtype=torch.uint8)
    targets = torch.empty(len(dataset), dtype=torch.int64)
    start = 0
    for x, y in loader:
        images[start:start + len(x)], targets[start:start + len(x)] = x, y
        start += len(x)
    return images, targets


def pick_loader(loader: str, sizes: Tuple[int, int], size: int, padding: int, device, batch_size: int = 1,
                workers: int = 0) -> str:
    """'tensor' or 'dataloader' for a data set of `sizes` (train, test) images at `size`: `auto` takes the tensor
    loader on CUDA when the data takes at most half the free memory; an explicit 'tensor' is checked, and so is the
    DataLoader's memory for batches of `batch_size` with `workers`."""
    device = torch.device(device)
    needed = tensor_bytes(sizes[0], sizes[1], size, padding)
    if loader == 'tensor':
        check_memory(needed, device, sum(sizes), size)
        return 'tensor'
    if loader == 'auto' and device.type == 'cuda' and fits(needed, device):
        return 'tensor'
    check_memory(dataloader_bytes(batch_size, size, workers), device, batch_size, size, loader='dataloader')
    return 'dataloader'
