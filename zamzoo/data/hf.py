"""Hugging Face datasets (the `datasets` library, extra `hf`): a Hub name (downloaded once, then read from its
cache), a folder written by ``save_to_disk``, or a folder of parquet files. The image and label columns are found
(`img`/`image`, `fine_label`/`label`, or the only `Image` / `ClassLabel` feature) or named; class names come from
the label's `ClassLabel` feature."""
import io
from pathlib import Path
from typing import List, Optional, Sequence

from torch.utils.data import Dataset

from ..errors import DataError
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
    path = Path(str(source)).expanduser()
    try:
        if (path / 'dataset_dict.json').is_file() or (path / 'state.json').is_file():
            d = datasets.load_from_disk(str(path))
        elif path.is_dir():
            d = datasets.load_dataset(str(path))
        else:
            d = datasets.load_dataset(str(source))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        raise DataError(f"Hugging Face dataset '{source}' could not be opened ({type(e).__name__}: {e}); expected a "
                        f'Hub name (e.g. uoft-cs/cifar100), a save_to_disk folder or a folder of parquet files') from e
    return d if isinstance(d, datasets.DatasetDict) else datasets.DatasetDict({'train': d})


def pick_split(d, name: Optional[str], defaults: Sequence[str], what: str, source) -> Optional[str]:
    """`name` if the dataset has it (else a `DataError` listing the splits), else the first of `defaults` it has."""
    if name is not None:
        if name not in d:
            raise DataError(f"{source}: no split '{name}' ({what}); the dataset has {sorted(d)}")
        return name
    return next((s for s in defaults if s in d), None)


def _column(features, name, defaults, kind, what: str, source) -> str:
    if name is not None:
        if name not in features:
            raise DataError(f"{source}: no column '{name}' ({what}); columns: {list(features)}")
        return name
    typed = [c for c, f in features.items() if isinstance(f, kind)]
    name = next((c for c in defaults if c in features), None) or (typed[0] if len(typed) == 1 else None)
    if name is None:
        raise DataError(f'{source}: cannot tell the {what} column among {list(features)}; '
                        f'name it with --{what}-column')
    return name


def columns(features, image_column=None, label_column=None, source='') -> tuple:
    """(image column, label column, class names) of a dataset's features."""
    datasets = _datasets()
    image = _column(features, image_column, IMAGE_COLUMNS, datasets.Image, 'image', source)
    if not isinstance(features[image], datasets.Image):
        raise DataError(f"{source}: column '{image}' is {features[image]}, not an image (datasets.Image); "
                        f'name the image column with --image-column')
    label = _column(features, label_column, LABEL_COLUMNS, datasets.ClassLabel, 'label', source)
    feature = features[label]
    if isinstance(feature, datasets.ClassLabel):
        return image, label, list(feature.names)
    if not (isinstance(feature, datasets.Value) and feature.dtype.startswith(('int', 'uint'))):
        raise DataError(f"{source}: column '{label}' is {feature}, not a class label (ClassLabel or integer)")
    return image, label, None


class HFImages(Dataset):
    """One split of a Hugging Face dataset as (RGB PIL image, class index); images are decoded by `open_rgb`, so a
    broken one raises a `DataError` naming its row."""

    def __init__(self, split, image_column: str, label_column: str, classes: Optional[List[str]], name: str,
                 rows: Optional[Sequence[int]] = None):
        datasets = _datasets()
        split = split.select_columns([image_column, label_column])
        if rows is not None:
            split = split.select(rows)
        self.rows = list(rows) if rows is not None else None
        self.table = split.cast_column(image_column, datasets.Image(decode=False))
        self.image_column, self.name = image_column, name
        self.targets = [int(t) for t in split[label_column]]
        if classes is None:
            classes = [str(i) for i in range(max(self.targets, default=-1) + 1)]
        self.classes = list(classes)
        bad = next((i for i, t in enumerate(self.targets) if not 0 <= t < len(self.classes)), None)
        if bad is not None:
            raise DataError(f'{self.where(bad)}: label {self.targets[bad]} is outside the {len(self.classes)} '
                            f'classes (0..{len(self.classes) - 1})')

    def where(self, index: int) -> str:
        return f'{self.name} row {self.rows[index] if self.rows is not None else index}'

    def _file(self, index, cell=None):
        cell = self.table[index][self.image_column] if cell is None else cell
        if not cell or (cell.get('bytes') is None and cell.get('path') is None):
            raise DataError(f'{self.where(index)}: no image')
        return io.BytesIO(cell['bytes']) if cell.get('bytes') is not None else cell['path']

    def check(self, chunk: int = 1000):
        """Every image readable (PIL's verify), or a `DataError` naming the first broken row."""
        for start in range(0, len(self), chunk):
            cells = self.table[start:start + chunk][self.image_column]
            for i, cell in enumerate(cells, start):
                check_image(self._file(i, cell), self.where(i))
        return self

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return open_rgb(self._file(index), self.where(index)), self.targets[index]

