"""Image folders: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``, or one folder
``root/<class>/<image>`` split by `stratified_holdout`. Every image is checked when the folder is indexed (so a
broken file stops the run before training, naming the file) and decoded by `open_rgb`."""
import hashlib
import warnings
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence

from torch.utils.data import Dataset
from torchvision import datasets as tvd

from ..errors import DataError, SplitMismatch
from ..pretrained.checksum import sha256_file
from .images import check_image, open_rgb
from .split import stratified_holdout

IMAGE_EXTENSIONS = tvd.folder.IMG_EXTENSIONS


class _VisibleImageFolder(tvd.ImageFolder):
    """torchvision's ImageFolder without hidden entries: a `.ipynb_checkpoints/` or `.thumbnails/` folder is not a
    class, and macOS's `._<name>.png` is not an image (torchvision takes both)."""

    def find_classes(self, directory):
        classes = [name for name in super().find_classes(directory)[0] if not name.startswith('.')]
        if not classes:  # only hidden folders: torchvision's message for none
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}


def _index(path: Path) -> tvd.ImageFolder:
    skipped = []

    def valid(file: str) -> bool:
        if any(part.startswith('.') for part in Path(file).relative_to(path).parts):
            return False
        if not tvd.folder.has_file_allowed_extension(file, IMAGE_EXTENSIONS):
            skipped.append(file)
            return False
        return check_image(file)

    try:
        folder = _VisibleImageFolder(str(path), loader=open_rgb, is_valid_file=valid)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f'image folder {path}: {str(e).rstrip(". ")}; expected {path}/<class>/<image> with one '
                        f'sub-folder per class (extensions {", ".join(IMAGE_EXTENSIONS)})') from e
    _warn_skipped(path, skipped)
    return folder


def _warn_skipped(path: Path, skipped: List[str]) -> None:
    """Say which files the folder's classes hold that are not read (a .gif, a notes.txt): torchvision's ImageFolder
    leaves them out without a word."""
    if skipped:
        counts = Counter(Path(file).suffix.lower() or '(none)' for file in skipped)
        warnings.warn(f'image folder {path}: {len(skipped)} file(s) skipped, of extensions not read as images '
                      f'({", ".join(f"{ext}: {n}" for ext, n in sorted(counts.items()))}; first: {skipped[0]}); '
                      f'the extensions read: {", ".join(IMAGE_EXTENSIONS)}', stacklevel=3)


def has_splits(root, holdout: bool = False) -> bool:
    """Whether `root` is laid out as train/ and val/ folders: either one is there (an evaluation reads val/ alone),
    or both with --holdout, for which a folder of classes may have a class named `train` or `val`."""
    found = [(Path(root).expanduser() / split).is_dir() for split in ('train', 'val')]
    return all(found) if holdout else any(found)


def image_folder(root, split: str):
    """`root/<split>/<class>/<image>` as a torchvision ImageFolder (untransformed: RGB PIL images, int targets)."""
    root = Path(root).expanduser()
    path = root / split
    if not path.is_dir():
        what = f'{root} does not exist' if not root.exists() else f'{path} is missing'
        raise DataError(f'image folder data set: {what}; expected {expected_layout(root)}')
    return _index(path)


def expected_layout(root) -> str:
    """What an image folder data set at `root` holds, for error messages."""
    return (f'{root}/train/<class>/<image> and {root}/val/<class>/<image> (extensions {", ".join(IMAGE_EXTENSIONS)}), '
            f'or {root}/<class>/<image> with --holdout 0.1')


def _check_relative(rel):
    """A split file entry must name a file under the data folder: `<class>/<file>`, no `..`, not absolute."""
    if not isinstance(rel, str) or PurePosixPath(rel).is_absolute() or '..' in PurePosixPath(rel).parts:
        raise DataError(f'split file entry {rel!r}: expected a path inside the data folder (<class>/<file>, '
                        f'no ".." and not absolute)')


def files_fingerprint(root, paths, content: bool = False) -> str:
    """'<n> files, sha256 <hex>' of files' paths relative to `root` and their sizes. Sizes, not modification times:
    a copy of the folder is the same data, a re-encoded or replaced image almost never keeps its size, and hashing
    every image's content would cost a full read of the data set at each start. `content`: followed by ', content
    sha256 <hex>' of their bytes, for files whose edits keep their size (a label changed in a parquet file); a
    record of the first part alone (made before) is checked as it was (`sources.check_same_data`)."""
    root = Path(root).expanduser()
    sizes, contents = hashlib.sha256(), hashlib.sha256()
    for rel, path in sorted((Path(p).relative_to(root).as_posix(), Path(p)) for p in paths):
        sizes.update(f'{rel}\0{path.stat().st_size}\n'.encode())
        if content:
            contents.update(f'{rel}\0{sha256_file(path)}\n'.encode())
    return (f'{len(paths)} files, sha256 {sizes.hexdigest()[:16]}'
            + (f', content sha256 {contents.hexdigest()[:16]}' if content else ''))


def fingerprint(part, root) -> str:
    """The `files_fingerprint` of the images a split (an ImageFolder or a FileList) reads."""
    return files_fingerprint(root, [p for p, _ in part.samples])


class FileList(Dataset):
    """Images listed by their path relative to `root` (``<class>/<file>``), served as (RGB PIL image, class index)."""

    def __init__(self, root, files: Sequence[str], classes: Sequence[str]):
        self.root, self.classes = Path(root).expanduser(), list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for rel in files:
            _check_relative(rel)
            path = self.root / rel
            if rel.split('/', 1)[0] not in index or not path.is_file():
                raise SplitMismatch(f'{path}: listed in the run\'s split file but missing (or outside the classes '
                                    f'{classes}): {self.root} is not the folder the run held its images out of, or '
                                    f'it changed since; use the data the run was trained on')
            check_image(path)
            self.samples.append((str(path), index[rel.split('/', 1)[0]]))
        self.targets = [t for _, t in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        return open_rgb(path), target


def holdout_split(root, fraction: float, seed: int) -> dict:
    """The split of one folder of class sub-folders: {'root', 'holdout', 'seed', 'classes', 'train', 'val'}, the
    last two as paths relative to `root` (what the run folder's split file holds)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f'image folder data set: {root} does not exist; expected {root}/<class>/<image>')
    whole = _index(root)
    train, val = stratified_holdout(whole.targets, fraction, seed)
    rel = [Path(p).relative_to(root).as_posix() for p, _ in whole.samples]
    return {'root': str(root), 'holdout': fraction, 'seed': seed, 'classes': list(whole.classes),
            'train': [rel[i] for i in train], 'val': [rel[i] for i in val]}


def split_datasets(split: dict, root=None, train: bool = True) -> List[Optional[FileList]]:
    """[train, val] FileLists of a split made by `holdout_split` (train None unless `train`)."""
    root = root or split['root']
    return [FileList(root, split['train'], split['classes']) if train else None,
            FileList(root, split['val'], split['classes'])]
