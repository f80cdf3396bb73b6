"""CIFAR-10/100 read with torchvision's own dataset classes, from a local folder.

`torchvision.datasets.CIFAR100(root)` expects ``root/cifar-100-python/{train,test,meta}`` and checks the md5 of
every file against the official archive. We read the same files with the same class, but without the md5 check
unless the data is being downloaded: a copy re-pickled elsewhere (or the tiny one the tests write) still reads,
and anything missing or malformed raises a `DataError` that names the files expected.
"""
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tvd

from ..errors import DataError, UsageError

CIFAR_DATASETS = ('cifar100', 'cifar10')
NUM_CLASSES = {'cifar100': 100, 'cifar10': 10}


class _NoMd5Mixin:
    """torchvision's reader with the md5 comparison switched off: `check_integrity(path, None)` only checks that
    the file exists. Parsing, shapes and labels are left to torchvision (then validated by `load_cifar`)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.train_list = [[name, None] for name, _ in cls.train_list]
        cls.test_list = [[name, None] for name, _ in cls.test_list]
        cls.meta = {**cls.meta, 'md5': None}


class LocalCIFAR10(_NoMd5Mixin, tvd.CIFAR10):
    pass


class LocalCIFAR100(_NoMd5Mixin, tvd.CIFAR100):
    pass


_CLASSES = {
    ('cifar10', False): LocalCIFAR10, ('cifar100', False): LocalCIFAR100,
    ('cifar10', True): tvd.CIFAR10, ('cifar100', True): tvd.CIFAR100,
}


def _check_name(dataset):
    if dataset not in CIFAR_DATASETS:
        raise UsageError(f"unknown CIFAR data set '{dataset}'; expected one of {list(CIFAR_DATASETS)}")


def expected_files(root, dataset) -> str:
    """'<root>/cifar-100-python/{meta,test,train}': what the reader needs, for error messages."""
    _check_name(dataset)
    cls = _CLASSES[dataset, True]
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta['filename']]
    return f"{Path(root) / cls.base_folder}/{{{','.join(names)}}}"


def resolve_root(root, dataset) -> Path:
    """Accept the folder holding ``cifar-100-python/`` or that folder itself."""
    _check_name(dataset)
    root = Path(root).expanduser()
    base = _CLASSES[dataset, True].base_folder
    if root.name == base and not (root / base).exists():
        return root.parent
    return root


def cifar_dataset(root, dataset='cifar100', train=True, download=False, transform=None):
    """The torchvision dataset object (PIL images, int targets) for the DataLoader path."""
    _check_name(dataset)
    root = resolve_root(root, dataset)
    cls = _CLASSES[dataset, bool(download)]
    if not download:
        missing = [n for n, _ in cls.train_list + cls.test_list + [[cls.meta['filename'], None]]
                   if not (root / cls.base_folder / n).is_file()]
        if missing:
            hint = '' if root.is_dir() else f' ({root} does not exist)'
            raise DataError(
                f'{dataset} not found{hint}: expected {expected_files(root, dataset)}, missing {missing}. '
                f'Pass --download to fetch it with torchvision, or point --data at the folder that holds '
                f'{cls.base_folder}/.')
    try:
        ds = cls(str(root), train=train, download=download, transform=transform)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as e:
        raise DataError(
            f'{dataset} at {root} is unreadable or malformed ({type(e).__name__}: {e}); '
            f'expected torchvision\'s CIFAR python format: {expected_files(root, dataset)}') from e
    n = len(ds.targets)
    if ds.data.shape != (n, 32, 32, 3) or ds.data.dtype != np.uint8:
        raise DataError(f'{dataset} at {root}: images have shape {ds.data.shape} {ds.data.dtype}, expected '
                        f'({n}, 32, 32, 3) uint8 (rows of 3072 bytes in {expected_files(root, dataset)})')
    if n == 0:
        raise DataError(f'{dataset} at {root}: the {"train" if train else "test"} split is empty')
    nc = NUM_CLASSES[dataset]
    targets = np.asarray(ds.targets)
    if targets.min() < 0 or targets.max() >= nc:
        raise DataError(f'{dataset} at {root}: labels outside 0..{nc - 1} ({targets.min()}..{targets.max()})')
    return ds


def cifar_tensors(ds):
    """A torchvision CIFAR dataset's images (N, 3, 32, 32) uint8 and targets (N,) int64 as tensors."""
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def load_cifar(root, dataset='cifar100', train=True, download=False):
    """The whole split as tensors: images (N, 3, 32, 32) uint8, targets (N,) int64, class names."""
    ds = cifar_dataset(root, dataset, train=train, download=download)
    return (*cifar_tensors(ds), list(ds.classes))
