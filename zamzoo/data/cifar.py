"""CIFAR-10/100 read with torchvision's own dataset classes, from a local folder.

`torchvision.datasets.CIFAR100(root)` expects ``root/cifar-100-python/{train,test,meta}`` and checks the md5 of
every file against the official archive before unpickling it. We read the same files with the same class, but
without the md5 check unless the data is being downloaded, so that a copy re-pickled elsewhere (or the tiny one the
tests write) still reads. Without the md5 check a pickle could run any code, so local files are unpickled by
`safe_unpickle`, which builds numpy arrays, lists, dicts, str, bytes and numbers and nothing else: a file asking for
anything more (a `__reduce__` payload) is a `DataError` and runs nothing. Anything missing or malformed raises a
`DataError` that names the files expected.
"""
import hashlib
import http.client
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tvd

from ..dataset_table import CIFAR_DATASETS, DEFAULT_DATASET, NUM_CLASSES
from ..errors import DataError, UsageError


# What the official CIFAR pickles (and numpy arrays pickled by any numpy) need, and nothing else.
_SAFE_GLOBALS = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),  # pickle protocol 5
    ('_codecs', 'encode'),  # how protocol-2 pickles written by Python 2 or 3 store bytes
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: a CIFAR file holds only arrays, lists, '
                                         f'str, bytes and numbers')
        return super().find_class(module, name)


def safe_unpickle(path):
    """Unpickle a CIFAR file building only numpy arrays, containers, str, bytes and numbers (no code runs)."""
    with open(path, 'rb') as f:
        return _DataOnlyUnpickler(f, encoding='latin1').load()


def _str_keys(entry):
    """A CIFAR file's dict with its keys as str: bytes keys (b'data', b'labels', what the CIFAR site's own
    ``unpickle(encoding='bytes')`` gives, dumped again) decoded."""
    if not isinstance(entry, dict):
        return entry
    return {(_text(k) or k) if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _text(name):
    """A class name as str: str as it is, bytes decoded as UTF-8; None for anything else."""
    if isinstance(name, bytes):
        try:
            return name.decode('utf-8')
        except UnicodeDecodeError:
            return None
    return str(name) if isinstance(name, str) else None


def _class_names(names, meta, key):
    """The meta file's class names as str (what a run folder records as JSON): bytes decoded as UTF-8 (what a
    Python 3 pickle of bytes names holds), or a `DataError` naming the meta file."""
    if not isinstance(names, (list, tuple, np.ndarray)):
        raise DataError(f'{meta}: {key} is a {type(names).__name__}; expected a list of class names')
    decoded = [_text(name) for name in names]
    if None in decoded:
        raise DataError(f'{meta}: the class name {names[decoded.index(None)]!r} in {key} is not text; expected '
                        f'str or UTF-8 bytes')
    return decoded


# What a malformed or truncated pickle raises while it is read, or a wrong entry when it is indexed.
_MALFORMED = (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError)


def _read_entry(path: Path):
    """One CIFAR file's dict (str keys), or a `DataError` that names the file (a truncated batch, not all seven)."""
    try:
        return _str_keys(safe_unpickle(path))
    except _MALFORMED as e:
        raise DataError(f'{path}: unreadable or malformed ({type(e).__name__}: {e}); expected a pickle of '
                        f"torchvision's CIFAR python format") from e


class _LocalMixin:
    """torchvision's CIFAR reader for local files: no md5 comparison, every file read with `safe_unpickle`.
    Shapes and labels are validated by `cifar_dataset`."""

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        tvd.VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        names = [name for name, _ in (self.train_list if train else self.test_list)]
        entries = [_read_entry(Path(self.root) / self.base_folder / name) for name in names]
        for name, entry in zip(names, entries):  # an (N, 32, 32, 3) array would reshape, scrambled, without an error
            shape = np.shape(entry['data'])
            if len(shape) != 2 or shape[1] != 3072:
                raise ValueError(f"{name}: 'data' has shape {shape}, expected (N, 3072): a row of 3072 bytes per "
                                 f"image, its red, green then blue 32 x 32 plane")
        self.data = np.vstack([e['data'] for e in entries]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = [t for e in entries for t in (e['labels'] if 'labels' in e else e['fine_labels'])]
        meta = Path(self.root) / self.base_folder / self.meta['filename']
        self.classes = _class_names(_read_entry(meta)[self.meta['key']], meta, self.meta['key'])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class LocalCIFAR10(_LocalMixin, tvd.CIFAR10):
    pass


class LocalCIFAR100(_LocalMixin, tvd.CIFAR100):
    pass


_CLASSES = {
    ('cifar10', False): LocalCIFAR10, ('cifar100', False): LocalCIFAR100,
    ('cifar10', True): tvd.CIFAR10, ('cifar100', True): tvd.CIFAR100,
}


# What torchvision's download raises when the network fails (urllib wraps DNS and connection errors in URLError; a
# connection dropped mid-file is a ConnectionError, TimeoutError or http.client's IncompleteRead).
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


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
    return root.parent if root.name == base and not (root / base).exists() else root


def cifar_dataset(root, dataset=DEFAULT_DATASET, train=True, download=False, transform=None):
    """The torchvision dataset object (PIL images, int targets) for the DataLoader path."""
    _check_name(dataset)
    root = resolve_root(root, dataset)
    cls = _CLASSES[dataset, bool(download)]
    if not download:
        missing = [n for n, _ in cls.train_list + cls.test_list + [[cls.meta['filename'], None]]
                   if not (root / cls.base_folder / n).is_file()]
        if missing:
            hint = '' if root.is_dir() else f' ({root} does not exist)' if not root.is_file() else (
                f' ({root} is a file, not a folder: unpack an archive first, e.g. tar -xzf, and point --data at the '
                f'folder it unpacks into)')
            raise DataError(
                f'{dataset} not found{hint}: expected {expected_files(root, dataset)}, missing {missing}. '
                f'Pass --download to fetch it with torchvision, or point --data at the folder that holds '
                f'{cls.base_folder}/.')
    try:
        ds = cls(str(root), train=train, download=download, transform=transform)
    except (RuntimeError, OSError, http.client.HTTPException, *_MALFORMED) as e:
        if download and isinstance(e, _NETWORK_ERRORS):
            raise DataError(
                f'could not download {dataset} from {cls.url} ({type(e).__name__}: {e}); check the network, or fetch '
                f'that archive elsewhere and unpack it so that {expected_files(root, dataset)} exist, then run '
                f'without --download') from e
        raise DataError(
            f'{dataset} at {root} is unreadable or malformed ({type(e).__name__}: {e}); '
            f'expected torchvision\'s CIFAR python format: {expected_files(root, dataset)}') from e
    n = len(ds.targets)
    if ds.data.shape != (n, 32, 32, 3) or ds.data.dtype != np.uint8:
        raise DataError(f'{dataset} at {root}: images have shape {ds.data.shape} {ds.data.dtype}, expected '
                        f'({n}, 32, 32, 3) uint8 (rows of 3072 bytes in {expected_files(root, dataset)})')
    if n == 0:
        raise DataError(f'{dataset} at {root}: the {"train" if train else "test"} split is empty')
    _check_labels(ds, dataset, root)
    return ds


def _check_labels(ds, dataset: str, root) -> None:
    """DataError unless the meta file names `dataset`'s classes once each and every label is an integer class index
    (a float label would be truncated to another class, a string one fail mid-run)."""
    nc = NUM_CLASSES[dataset]
    if len(ds.classes) != nc or len(set(ds.classes)) != nc:
        raise DataError(f'{dataset} at {root}: the meta file lists {len(ds.classes)} class names '
                        f'({len(set(ds.classes))} distinct), expected {nc} distinct ones '
                        f'({expected_files(root, dataset)})')
    bad = next((t for t in ds.targets if isinstance(t, bool) or not isinstance(t, (int, np.integer))), None)
    if bad is not None:
        raise DataError(f'{dataset} at {root}: a label {bad!r} of type {type(bad).__name__}, expected integer class '
                        f'indices 0..{nc - 1}')
    targets = np.asarray(ds.targets)
    if targets.min() < 0 or targets.max() >= nc:
        raise DataError(f'{dataset} at {root}: labels outside 0..{nc - 1} ({targets.min()}..{targets.max()})')


def cifar_fingerprint(root, dataset, train: bool) -> str:
    """'<n> files, sha256 <hex>' of the content of a split's pickles and the meta file (what a run read)."""
    cls = _CLASSES[dataset, True]
    folder = resolve_root(root, dataset) / cls.base_folder
    names = [n for n, _ in (cls.train_list if train else cls.test_list)] + [cls.meta['filename']]
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b'\0' + hashlib.sha256((folder / name).read_bytes()).digest())
    return f'{len(names)} files, sha256 {digest.hexdigest()[:16]}'


def cifar_tensors(ds):
    """A torchvision CIFAR dataset's images (N, 3, 32, 32) uint8 and targets (N,) int64 as tensors."""
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def load_cifar(root, dataset=DEFAULT_DATASET, train=True, download=False):
    """The whole split as tensors: images (N, 3, 32, 32) uint8, targets (N,) int64, class names."""
    ds = cifar_dataset(root, dataset, train=train, download=download)
    return (*cifar_tensors(ds), list(ds.classes))
