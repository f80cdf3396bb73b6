"""Hugging Face datasets (the `datasets` library, extra `hf`): a Hub name (downloaded once, then read from its
cache), a folder written by ``save_to_disk``, or a folder of parquet files. The image and label columns are found
(`img`/`image`, `fine_label`/`label`, or the only `Image` / `ClassLabel` feature) or named; an image column is an
`Image` feature or its storage, a {bytes, path} struct (parquet written without the datasets metadata); class names
come from the label's `ClassLabel` feature."""
import hashlib
import io
import json
from collections import deque
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from torch.utils.data import Dataset

from ..errors import DataError, SplitMismatch
from .folder import files_fingerprint
from .images import check_image, open_rgb

IMAGE_COLUMNS = ('img', 'image', 'images', 'picture')
LABEL_COLUMNS = ('fine_label', 'label', 'labels', 'class', 'target')
VAL_SPLITS = ('validation', 'val', 'valid', 'test')


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise DataError('--dataset hf needs the `datasets` library: pip install "zamzoo[hf]"') from e
    return datasets


def load_hf(source):
    """The dataset's splits (a `datasets.DatasetDict`), from a `save_to_disk` folder, a folder of parquet files or a
    Hub name."""
    datasets = _datasets()
    check_local_path(source)
    path = Path(str(source)).expanduser()
    try:
        if _saved_to_disk(path):
            _check_no_empty_split(path, source)
            d = datasets.load_from_disk(str(path))
        elif path.is_dir():
            d = datasets.load_dataset(str(path))
        else:
            d = datasets.load_dataset(str(source))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        raise DataError(f"Hugging Face dataset '{source}' could not be opened ({type(e).__name__}: {e}); expected a "
                        f'Hub name (e.g. uoft-cs/cifar100), a save_to_disk folder or a folder of parquet files') from e
    return d if isinstance(d, datasets.DatasetDict) else datasets.DatasetDict({'train': d})


def check_local_path(source) -> None:
    """A DataError when `source` is a local path (not a Hub name) where nothing is."""
    if not Path(str(source)).expanduser().exists() and _looks_like_a_path(str(source)):
        raise DataError(f"Hugging Face dataset '{source}': the local path {source} does not exist; expected a "
                        f'save_to_disk folder, a folder of parquet files or a Hub name (owner/name)')


def _looks_like_a_path(source: str) -> bool:
    """A Hub name is `name` or `owner/name`; anything else with a slash, or starting like a path, is a path."""
    return source.startswith(('/', '.', '~')) or source.count('/') > 1 or '\\' in source


def _saved_to_disk(path: Path) -> bool:
    return (path / 'dataset_dict.json').is_file() or (path / 'state.json').is_file()


def _check_no_empty_split(path: Path, source):
    """`save_to_disk` writes no data file for a split without rows, and `load_from_disk` then fails with an
    IndexError: name the split instead."""
    for state in [path / 'state.json', *path.glob('*/state.json')]:
        try:
            files = json.loads(state.read_text()).get('_data_files')
        except (OSError, ValueError, AttributeError):
            continue  # load_from_disk says what is wrong with it
        if files == []:
            split = '' if state.parent == path else f" split '{state.parent.name}'"
            raise DataError(f"Hugging Face dataset '{source}': the{split or ' dataset'} has no rows ({state} lists "
                            f'no data file); remove it or save it with its images')


def fingerprints(splits: Dict[str, Optional[object]], source) -> Dict[str, Optional[str]]:
    """part -> '<n> rows, ...' of each split given (None: not opened): the `datasets` library's own fingerprint of
    the split (kept in a save_to_disk folder, made from the revision's files for the Hub), except for a local folder
    of data files, whose `datasets` fingerprint changes with the folder's place: there, the files' paths and contents
    (`folder.files_fingerprint`: a parquet file often keeps its size when a label in it changes), read once for
    all the splits."""
    path = Path(str(source)).expanduser()
    if path.is_dir() and not _saved_to_disk(path):
        files = [p for p in path.rglob('*') if p.is_file() and not any(
            part.startswith('.') for part in p.relative_to(path).parts)]
        what = files_fingerprint(path, files, content=True)
        return {part: None if split is None else f'{split.num_rows} rows, {what}' for part, split in splits.items()}
    return {part: None if split is None else f'{split.num_rows} rows, datasets fingerprint {split._fingerprint}'
            for part, split in splits.items()}


def row_keys(split, image_column: str, label_column: str, name: str, chunk: int = 1000) -> List[str]:
    """One key per row from its content (the image file's bytes and the label): a row keeps its key in a shuffled,
    filtered or re-saved copy of the data set, so a held-out split stored as keys finds the same images."""
    table = split.select_columns([image_column, label_column]).cast_column(image_column, _datasets().Image(
        decode=False))
    keys = []
    for start in range(0, len(table), chunk):
        part = table[start:start + chunk]
        for i, (cell, label) in enumerate(zip(part[image_column], part[label_column]), start):
            content = (cell or {}).get('bytes')
            if content is None and (cell or {}).get('path'):
                try:
                    content = Path(cell['path']).read_bytes()
                except OSError as e:
                    raise DataError(f'{name} row {i}: cannot read its image {cell["path"]} ({e})') from None
            if content is None:
                raise DataError(f'{name} row {i}: no image')
            keys.append(hashlib.blake2b(content + f'\0{label}'.encode(), digest_size=12).hexdigest())
    return keys


def keys_fingerprint(keys: Sequence[str]) -> str:
    """'<n> rows, sha256 <hex>' of a set of row keys (whatever their order in the data set)."""
    digest = hashlib.sha256('\n'.join(sorted(keys)).encode()).hexdigest()[:16]
    return f'{len(keys)} rows, sha256 {digest}'


def rows_of(keys: Sequence[str], wanted: Dict[str, Sequence[str]], name: str) -> Dict[str, List[int]]:
    """The row numbers of each list of `wanted` keys (a row serves one entry of one list: duplicate images are
    counted), or a `DataError` when the data set lacks some (it changed since the split was made)."""
    free: Dict[str, deque] = {}
    for i, key in enumerate(keys):
        free.setdefault(key, deque()).append(i)
    rows = {}
    for part, entries in wanted.items():
        if any(not isinstance(k, str) for k in entries):
            raise DataError(f'{name}: the split file lists row numbers for {part}, not row keys (written by an older '
                            f'zamzoo, row numbers change when the data set is shuffled); start a new run')
        rows[part] = [free[k].popleft() for k in entries if free.get(k)]
        if len(rows[part]) < len(entries):
            raise SplitMismatch(f'{name}: {len(entries) - len(rows[part])} of the {len(entries)} {part} rows listed '
                                f'in the split file are not in the data set; expected the data the split was made '
                                f'from (rows are found by their image and label, in any order)')
    return rows


def class_order(names: Optional[List[str]], classes: Optional[List[str]], name: str) -> Optional[List[int]]:
    """The index in `classes` (the train split's class names) of each of a split's own class `names`: None when
    they are the same list, or a `DataError` naming the classes one split has and the other lacks."""
    if names is None or classes is None or list(names) == list(classes):
        return None
    extra, missing = sorted(set(names) - set(classes)), sorted(set(classes) - set(names))
    if extra or missing:
        raise DataError(f'{name}: its class names differ from the train split\'s: {extra} not in the train split, '
                        f'{missing} missing here; expected the same class names (in any order)')
    return [list(classes).index(n) for n in names]


def labels(split, label_column: str, where: Callable[[int], str]) -> List[int]:
    """The label column as class indices, or a `DataError` naming (`where(i)`) the first row without one."""
    values = list(split[label_column])
    bad = next((i for i, t in enumerate(values) if isinstance(t, bool) or not isinstance(t, int)), None)
    if bad is not None:
        raise DataError(f'{where(bad)}: label {values[bad]!r}; expected a class index (an integer, or a '
                        f'ClassLabel) in every row')
    return values


def pick_split(d, name: Optional[str], defaults: Sequence[str], what: str, source) -> Optional[str]:
    """`name` if the dataset has it (else a `DataError` listing the splits), else the first of `defaults` it has."""
    if name is not None:
        if name not in d:
            raise DataError(f"{source}: no split '{name}' ({what}); the dataset has {sorted(d)}")
        return name
    return next((s for s in defaults if s in d), None)


def _column(features, name, defaults, is_kind: Callable[[object], bool], what: str, source) -> str:
    if name is not None:
        if name not in features:
            raise DataError(f"{source}: no column '{name}' ({what}); columns: {list(features)}")
        return name
    typed = [c for c, f in features.items() if is_kind(f)]
    name = next((c for c in defaults if c in features), None) or (typed[0] if len(typed) == 1 else None)
    if name is None:
        raise DataError(f'{source}: cannot tell the {what} column among {list(features)}; '
                        f'name it with --{what}-column')
    return name


# a path column of None only (images given as bytes) is stored as Value('null') by pyarrow, pandas and datasets
_IMAGE_STORAGE = {'bytes': ('binary', 'large_binary'), 'path': ('string', 'large_string', 'null')}


def _is_image(feature) -> bool:
    """A `datasets.Image` feature, or a struct of its storage ({bytes, path}: parquet written by pyarrow or pandas
    without the datasets feature metadata), which `datasets` casts to an Image."""
    datasets = _datasets()
    if isinstance(feature, datasets.Image):
        return True
    return isinstance(feature, dict) and bool(feature) and all(
        isinstance(f, datasets.Value) and f.dtype in _IMAGE_STORAGE.get(k, ()) for k, f in feature.items())


def columns(features, image_column=None, label_column=None, source='') -> tuple:
    """(image column, label column, class names) of a dataset's features."""
    datasets = _datasets()
    image = _column(features, image_column, IMAGE_COLUMNS, _is_image, 'image', source)
    if not _is_image(features[image]):
        hint = ('expected an Image feature or its {bytes, path} storage' if image_column is not None else
                'name the image column with --image-column')
        raise DataError(f"{source}: column '{image}' is {features[image]}, not an image (datasets.Image); {hint}")
    label = _column(features, label_column, LABEL_COLUMNS, lambda f: isinstance(f, datasets.ClassLabel), 'label',
                    source)
    feature = features[label]
    if isinstance(feature, datasets.ClassLabel):
        return image, label, list(feature.names)
    if not (isinstance(feature, datasets.Value) and feature.dtype.startswith(('int', 'uint'))):
        raise DataError(f"{source}: column '{label}' is {feature}, not a class label (ClassLabel or integer)"
                        f"{_encode_hint(feature, label)}")
    return image, label, None


def _encode_hint(feature, label: str) -> str:
    """How to make a column of class names a ClassLabel: once, with `datasets`, so every split and run share it."""
    if not (isinstance(feature, _datasets().Value) and feature.dtype in ('string', 'large_string')):
        return ''
    return (f"; make its names the classes once with datasets: d.class_encode_column('{label}').save_to_disk(DIR), "
            f'then --data DIR')


class HFImages(Dataset):
    """One split of a Hugging Face dataset as (RGB PIL image, class index); images are decoded by `open_rgb`, so a
    broken one raises a `DataError` naming its row, first as `datasets` decodes them (turned by their EXIF orientation,
    converted to the Image feature's mode), then to RGB."""

    def __init__(self, split, image_column: str, label_column: str, classes: Optional[List[str]], name: str,
                 rows: Optional[Sequence[int]] = None, names: Optional[List[str]] = None):
        """`names`: the split's own class names (its ClassLabel), mapped by name onto `classes`, the train split's."""
        datasets = _datasets()
        split = split.select_columns([image_column, label_column])
        if rows is not None:
            split = split.select(rows)
        self.rows = list(rows) if rows is not None else None
        self.mode = getattr(split.features[image_column], 'mode', None)  # Image(mode='L'): what ds[i] shows
        self.table = split.cast_column(image_column, datasets.Image(decode=False))
        self.image_column, self.name = image_column, name
        self.targets = labels(split, label_column, self.where)
        order = class_order(names, classes, name)
        if order is not None:
            self._check_range(len(order))
            self.targets = [order[t] for t in self.targets]
        if classes is None:
            classes = [str(i) for i in range(max(self.targets, default=-1) + 1)]
        self.classes = list(classes)
        self._check_range(len(self.classes))

    def _check_range(self, n: int):
        bad = next((i for i, t in enumerate(self.targets) if not 0 <= t < n), None)
        if bad is not None:
            unlabelled = (': -1 marks a row without a label (a Hub test split often has none); for the validation split '
                          'name a labelled one with --val-split, or save the data set without this split and hold out '
                          'part of the train split with --holdout 0.1'
                          if self.targets[bad] == -1 else '')
            raise DataError(f'{self.where(bad)}: label {self.targets[bad]} is outside the {n} classes (0..{n - 1})'
                            + unlabelled)

    def where(self, index: int) -> str:
        return f'{self.name} row {self.rows[index] if self.rows is not None else index}'

    def _file(self, index, cell=None):
        cell = self.table[index][self.image_column] if cell is None else cell
        if not cell or (cell.get('bytes') is None and cell.get('path') is None):
            raise DataError(f'{self.where(index)}: no image')
        return io.BytesIO(cell['bytes']) if cell.get('bytes') is not None else cell['path']

    def check(self, chunk: int = 1000):
        """Every image readable (`check_image`), or a `DataError` naming the first broken row."""
        for start in range(0, len(self), chunk):
            cells = self.table[start:start + chunk][self.image_column]
            for i, cell in enumerate(cells, start):
                check_image(self._file(i, cell), self.where(i))
                if self.mode:  # the conversion to the feature's mode may be one PIL lacks
                    open_rgb(self._file(i, cell), self.where(i), exif=True, mode=self.mode)
        return self

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return open_rgb(self._file(index), self.where(index), exif=True, mode=self.mode), self.targets[index]

