"""The data sets `zamzoo train` and `zamzoo eval` read, in one place: their names, how each is opened into a train
and a validation split (torch datasets serving RGB PIL images and int targets), its class names, and the tag a
run on it is published under."""
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from .. import dataset_table
from ..errors import DataError, UsageError
from . import cifar, folder, hf

DATASETS = tuple(dataset_table.DATASETS)


@dataclass
class DataSource:
    """Where a run's images come from. `split`: a split file's content to reuse (a resumed run, `zamzoo eval`).
    `classes`: the class names of the weights `zamzoo eval` scores: integer labels without a ClassLabel index
    them (the rows at hand may not hold the last class)."""
    dataset: str
    data: Any
    download: bool = False
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    holdout: Optional[float] = None
    seed: int = 0
    split: Optional[dict] = None
    classes: Optional[List[str]] = None


@dataclass
class OpenedData:
    train: Any                      # None when only the validation split was asked for
    test: Any
    classes: List[str]
    split: Optional[dict] = None    # a held-out split made here: what the run folder's split file records
    # {'train', 'val'}: what each split opened is (None: not opened); with a held-out split made from the seed,
    # 'whole': the data it was made from (the same for every seed), when the train split is opened
    fingerprint: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise UsageError(f"dataset: unknown '{name}'; expected one of {list(DATASETS)}")
    return name


def data_tag(dataset: str, data) -> str:
    """The pretrained tag of a run: the CIFAR name, or the folder's / HF dataset's last name (`own_data_tag`)."""
    if dataset in cifar.CIFAR_DATASETS:
        return dataset
    name = Path(str(data)).expanduser().resolve().name if dataset == 'folder' or Path(str(data)).exists() \
        else str(data).rstrip('/').rsplit('/', 1)[-1]
    return own_data_tag(dataset, name)


def own_data_tag(dataset: str, name: str) -> str:
    """The tag a run on data of the user's own (`dataset` 'folder' or 'hf') named `name` is published under: the
    name made tag-safe, suffixed with the source ('cifar10_folder') where it spells the tag of zamzoo's CIFAR
    weights in any case: only a run on the CIFAR pickles may claim their cfg and repo (Hub ids ignore case).
    A tag made here is returned as it is."""
    tag = re.sub(r'[^A-Za-z0-9_-]+', '_', name).strip('_') or 'data'
    return f'{tag}_{dataset}' if tag.lower() in cifar.CIFAR_DATASETS else tag


def classes_only_in(first: str, first_classes: list, second: str, second_classes: list) -> str:
    """'only in FIRST: ...; only in SECOND: ...' for the class names only one of two lists has ('' for none), and
    which of those are one name in two Unicode normalisations (folders unpacked on macOS spell 'é' as 'e' + U+0301):
    they print alike."""
    differ = ((first, [c for c in first_classes if c not in second_classes]),
              (second, [c for c in second_classes if c not in first_classes]))
    said = '; '.join(f'only in {where}: {", ".join(map(repr, names))}' for where, names in differ if names)
    spelt = sorted({ascii(a) + ' vs ' + ascii(b) for a in differ[0][1] for b in differ[1][1]
                    if unicodedata.normalize('NFC', a) == unicodedata.normalize('NFC', b)})
    if spelt:
        said += (f' ({len(spelt)} of them the same name in two Unicode normalisations, {", ".join(spelt)}: rename '
                 f'the folders or labels to one spelling, e.g. NFC)')
    return said


def _check_same_classes(data, train: list, val: list):
    """A `DataError` naming the classes only one split has (or saying the order differs) unless they are the same."""
    if train == val:
        return
    only = classes_only_in('train', train, 'validation', val)
    raise DataError(f'{data}: the train and validation splits have different classes ({len(train)} vs {len(val)}; '
                    f'{only or "the same names in another order"}); expected the same class list')


def open_data(source: DataSource, train: bool = True) -> OpenedData:
    """The source's train (unless `train` is False) and validation splits, checked: readable images, labels
    inside the class list, the same classes in both (and no empty class folder: torchvision's ImageFolder), at
    least two classes; with the fingerprint of each split opened."""
    check_dataset(source.dataset)
    if source.dataset in cifar.CIFAR_DATASETS:
        tr = cifar.cifar_dataset(source.data, source.dataset, train=True, download=source.download) if train else None
        te = cifar.cifar_dataset(source.data, source.dataset, train=False, download=source.download)
        opened = OpenedData(tr, te, list(te.classes), fingerprint={
            part: cifar.cifar_fingerprint(source.data, source.dataset, part == 'train') if ds is not None else None
            for part, ds in (('train', tr), ('val', te))})
    else:
        opened = _open_hf(source, train) if source.dataset == 'hf' else _open_folder(source, train)
    if opened.train is not None:
        _check_same_classes(source.data, list(opened.train.classes), list(opened.test.classes))
    if opened.num_classes < 2:
        raise DataError(f'{source.data}: one class ({opened.classes}); a classifier needs at least two classes')
    return opened


def check_data_exists(source: DataSource) -> None:
    """A `DataError` when the local path `source` reads is not there: a check that reads nothing, made once by a
    sweep before it starts runs that would each fail on it. CIFAR with `download` (torchvision makes the folder)
    and a Hugging Face Hub name read no local path."""
    check_dataset(source.dataset)
    if source.dataset == 'hf':
        hf.check_local_path(source.data)
    elif not (source.download or Path(str(source.data)).expanduser().exists()):
        expected = (f'{cifar.expected_files(source.data, source.dataset)} (or --download to fetch it)'
                    if source.dataset in cifar.CIFAR_DATASETS else folder.expected_layout(source.data))
        raise DataError(f'--data {source.data} does not exist; expected {expected}')


def check_same_data(recorded: Optional[dict], current: dict, data, run, parts=('train', 'val')):
    """A `DataError` unless `current` (`OpenedData.fingerprint` of `data` opened now) is the fingerprint recorded
    by the run in folder `run` (config.json's `data_fingerprint`), for each of `parts` recorded and opened (runs
    from before fingerprints pass)."""
    for part in parts:
        was, now = (recorded if isinstance(recorded, dict) else {}).get(part), current.get(part)
        # a data files folder's record from before its content was hashed: its paths and sizes, as then
        older = isinstance(was, str) and isinstance(now, str) and now.startswith(f'{was}, content sha256 ')
        if was is not None and now is not None and was != now and not older:
            raise DataError(f'{data} is not the data the run in {run} used: its {part} split is {now}, the run '
                            f'recorded {was} (config.json data_fingerprint); use the data the run was trained on')


def _open_folder(source: DataSource, train: bool) -> OpenedData:
    if source.split is not None:
        split = source.split
    elif folder.has_splits(source.data, holdout=source.holdout is not None):
        if source.holdout is not None:
            raise DataError(f'{source.data} has its own train/ and val/ folders; --holdout is for one folder of '
                            f'class sub-folders')
        tr = folder.image_folder(source.data, 'train') if train else None
        te = folder.image_folder(source.data, 'val')
        return OpenedData(tr, te, list(te.classes), fingerprint=_folder_fingerprint(tr, te, source.data))
    else:
        if source.holdout is None:
            folder.image_folder(source.data, 'train')  # raises the error that says what is expected
        split = folder.holdout_split(source.data, source.holdout, source.seed)
    tr, te = folder.split_datasets(split, source.data, train)
    whole = folder.files_fingerprint(source.data, [Path(source.data).expanduser() / p
                                                   for p in split['train'] + split['val']]) if train else None
    return OpenedData(tr, te, list(split['classes']), split if source.split is None else None,
                      dict(_folder_fingerprint(tr, te, source.data), whole=whole))


def _folder_fingerprint(tr, te, root) -> dict:
    return {'train': folder.fingerprint(tr, root) if tr is not None else None, 'val': folder.fingerprint(te, root)}


def _open_hf(source: DataSource, train: bool) -> OpenedData:
    d = hf.load_hf(source.data)
    train_name = hf.pick_split(d, source.train_split, ('train',), 'train split', source.data)
    if train_name is None:
        raise DataError(f"{source.data}: no 'train' split (the dataset has {sorted(d)}); name it with --train-split")
    image, label, classes = hf.columns(d[train_name].features, source.image_column, source.label_column,
                                       f'{source.data} [{train_name}]')
    val_name = None if source.split is not None else hf.pick_split(
        d, source.val_split, [s for s in hf.VAL_SPLITS if s != train_name], 'validation split', source.data)
    if val_name is not None and val_name == train_name:
        raise DataError(f"{source.data}: --val-split '{val_name}' is the train split: the run would be validated on "
                        f'the images it trains on; name another split, or hold out part of it with --holdout 0.1')
    if val_name is None:
        if source.split is None and source.holdout is None:
            raise DataError(f'{source.data}: no validation split (the dataset has {sorted(d)}); name one with '
                            f'--val-split, or hold out part of the train split with --holdout 0.1')
        tr, te, split, fingerprint = _hf_holdout(d[train_name], image, label, classes, source, train_name, train)
    else:
        if source.holdout is not None:
            raise DataError(f"{source.data} has a validation split ('{val_name}'); --holdout is for data without one "
                            f"(to hold out part of the train split instead, save the data set without '{val_name}': "
                            f"DatasetDict({{'{train_name}': d['{train_name}']}}).save_to_disk(...))")
        _, _, val_classes = hf.columns(d[val_name].features, image, label, f'{source.data} [{val_name}]')
        te = hf.HFImages(d[val_name], image, label, classes, f'{source.data} [{val_name}]', names=val_classes)
        tr = hf.HFImages(d[train_name], image, label, classes, f'{source.data} [{train_name}]') if train else None
        split = None
        fingerprint = hf.fingerprints({'train': d[train_name] if train else None, 'val': d[val_name]}, source.data)
    for part in (tr, te):
        if part is not None:
            part.check()
    if classes is None:
        if tr is not None and len(te.classes) > len(tr.classes):  # it would add a class no image trains
            raise DataError(f'{source.data}: the validation split has label {len(te.classes) - 1}, the train split '
                            f'none above {len(tr.classes) - 1}; expected the labels of the train split')
        classes = _weights_classes(te.classes if tr is None else tr.classes, source)
        tr, te = _same_classes(tr, classes), _same_classes(te, classes)
    return OpenedData(tr, te, list(classes), split, fingerprint)


def _weights_classes(found: List[str], source: DataSource) -> List[str]:
    """The classes of integer labels: the evaluated weights' (`source.classes`) where given, else '0'..'n-1' up to
    the largest label `found`; a `DataError` for a label beyond the weights' classes."""
    if source.classes is None:
        return found
    if len(found) > len(source.classes):
        raise DataError(f'{source.data}: label {len(found) - 1} is outside the {len(source.classes)} classes the '
                        f'checkpoint was trained on (0..{len(source.classes) - 1}); expected the labels it was '
                        f'trained with')
    return list(source.classes)


def _hf_holdout(part, image: str, label: str, classes, source: DataSource, name: str, train: bool) -> tuple:
    """(train, val, the split made here or None, fingerprint) of a held-out share of the split `part`: a new
    stratified split, or the run's split file, whose rows are found by their content keys (`hf.row_keys`)."""
    where = f'{source.data} [{name}]'
    keys = hf.row_keys(part, image, label, where)
    split = source.split
    if split is None:
        from .split import stratified_holdout
        rows = stratified_holdout(hf.labels(part, label, lambda i: f'{where} row {i}'), source.holdout, source.seed)
        split = {'holdout': source.holdout, 'seed': source.seed, 'split': name,
                 'train': [keys[i] for i in rows[0]], 'val': [keys[i] for i in rows[1]]}
    rows = hf.rows_of(keys, {k: split[k] for k in (('val', 'train') if train else ('val',))}, where)
    te = hf.HFImages(part, image, label, classes, where, rows['val'])
    tr = hf.HFImages(part, image, label, classes, where, rows['train']) if train else None
    fingerprint = {'train': hf.keys_fingerprint(split['train']) if train else None,
                   'val': hf.keys_fingerprint(split['val']),
                   'whole': hf.keys_fingerprint(split['train'] + split['val']) if train else None}
    return tr, te, split if source.split is None else None, fingerprint


def _same_classes(part, classes):
    """Integer labels without a ClassLabel: both splits take the longer list ('0'..'n-1')."""
    if part is not None:
        part.classes = list(classes)
    return part
