"""Edge files found in review (s29): a truncated JPEG (or any format PIL's verify does not decode) is refused by the
up-front check, before the run folder is made; CIFAR class names pickled as bytes are read as text (or refused
naming the meta file); splits with different classes name the classes that differ."""
import io
import pickle

import numpy as np
import pytest

from conftest import write_images, write_tiny_cifar
from zamzoo.data import DataSource, check_image, open_data, open_rgb
from zamzoo.errors import DataError
from zamzoo.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures('single_thread')


def _encoded(fmt, mode='RGB', seed=0, size=(24, 20), **save):
    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ truncated files

@pytest.mark.parametrize('fraction', [0.3, 0.5, 0.8, 0.95])
def test_truncated_jpeg_is_refused_by_the_check(tmp_path, fraction):
    data = _encoded('JPEG', quality=90)
    cut = data[:int(len(data) * fraction)]
    (tmp_path / 'x.jpg').write_bytes(cut)
    with pytest.raises(DataError, match=r'cannot read .*x\.jpg as an image \(OSError: .*runcated'):
        check_image(tmp_path / 'x.jpg')
    with pytest.raises(DataError, match='row 3'):                               # a Hugging Face cell's bytes
        check_image(io.BytesIO(cut), 'row 3')


@pytest.mark.parametrize('fmt,mode,save', [('JPEG', 'RGB', {'progressive': True}), ('JPEG', 'L', {}),
                                           ('JPEG', 'CMYK', {}), ('BMP', 'RGB', {}), ('TIFF', 'RGB', {}),
                                           ('GIF', 'P', {}), ('WEBP', 'RGB', {})])
def test_formats_whose_verify_reads_no_data_are_decoded(fmt, mode, save):
    data = _encoded(fmt, mode, **save)
    assert check_image(io.BytesIO(data)) and open_rgb(io.BytesIO(data)).size == (24, 20)
    with pytest.raises(DataError, match='cannot read x as an image'):
        check_image(io.BytesIO(data[:len(data) * 3 // 4]), 'x')


def test_the_check_refuses_exactly_what_the_loader_refuses():
    """Every cut of a baseline and a progressive JPEG: the 1/8-scale decode of the check fails iff the full decode
    of `open_rgb` does."""
    def refused(read, data):
        try:
            read(io.BytesIO(data), 'x')
            return False
        except DataError:
            return True

    for save in ({}, {'progressive': True}):
        data = _encoded('JPEG', size=(40, 32), quality=85, **save)
        cuts = [data[:n] for n in range(20, len(data) + 1, 5)] + [data]
        outcomes = [(refused(check_image, cut), refused(open_rgb, cut)) for cut in cuts]
        assert all(a == b for a, b in outcomes) and any(a for a, _ in outcomes) and not outcomes[-1][0]


def test_truncated_jpeg_stops_the_run_before_the_run_folder_is_made(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for cls in ('a', 'b'):
            (tmp_path / 'd' / split / cls).mkdir(parents=True)
            for k in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / 'd' / split / cls / f'{k}.jpg', quality=90)
    bad = tmp_path / 'd' / 'train' / 'a' / '0.jpg'
    bad.write_bytes(bad.read_bytes()[:int(bad.stat().st_size * 0.8)])
    out = tmp_path / 'run'
    with pytest.raises(DataError, match=rf'cannot read {bad} as an image .*runcated'):
        train(TrainConfig(model='test_resnet', dataset='folder', data=str(tmp_path / 'd'), out=str(out), epochs=1,
                          batch_size=4, img_size=32, device='cpu'))
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ CIFAR class names

def _rewrite_meta(root, dataset, names):
    meta = root / {'cifar10': 'cifar-10-batches-py/batches.meta', 'cifar100': 'cifar-100-python/meta'}[dataset]
    entry = pickle.loads(meta.read_bytes())
    key = 'label_names' if dataset == 'cifar10' else 'fine_label_names'
    original = entry[key]
    entry[key] = names(original)
    meta.write_bytes(pickle.dumps(entry, protocol=2))
    return meta, original


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_cifar_class_names_pickled_as_bytes_are_read_as_text(tmp_path, dataset):
    root = write_tiny_cifar(tmp_path / 'c')
    _, original = _rewrite_meta(root, dataset, lambda names: [n.encode() for n in names])
    opened = open_data(DataSource(dataset, root))
    assert opened.classes == original and all(type(c) is str for c in opened.classes)
    assert list(opened.train.classes) == original


@pytest.mark.parametrize('names,match', [
    (lambda names: [b'\xff\xfe'] + names[1:], r"the class name b'\\xff\\xfe' in label_names is not text"),
    (lambda names: [0] + names[1:], 'the class name 0 in label_names is not text'),
    (lambda names: 'airplane', 'label_names is a str; expected a list of class names'),
])
def test_cifar_class_names_that_are_not_text_name_the_meta_file(tmp_path, names, match):
    root = write_tiny_cifar(tmp_path / 'c')
    meta, _ = _rewrite_meta(root, 'cifar10', names)
    with pytest.raises(DataError, match=rf'^{meta}: {match}'):
        open_data(DataSource('cifar10', root))


# ------------------------------------------------------------------------------------------------ class lists

def test_splits_with_different_classes_name_them(tmp_path):
    write_images(tmp_path / 'd' / 'train', {'a': 2, 'b': 2, 'c': 2, 'unsorted': 1})
    write_images(tmp_path / 'd' / 'val', {'a': 1, 'b': 1, 'c': 1})
    with pytest.raises(DataError, match=r"different classes \(4 vs 3; only in train: 'unsorted'\)"):
        open_data(DataSource('folder', tmp_path / 'd'))
    write_images(tmp_path / 'e' / 'train', {'a': 1, 'b': 1, 'c': 1})
    write_images(tmp_path / 'e' / 'val', {'a': 1, 'b': 1, 'd': 1})
    with pytest.raises(DataError, match=r"\(3 vs 3; only in train: 'c'; only in validation: 'd'\)"):
        open_data(DataSource('folder', tmp_path / 'e'))


def test_class_names_in_two_unicode_normalisations_are_told_apart(tmp_path):
    """A val/ unpacked on macOS spells 'éclair' decomposed: the error listed the same-looking names on both sides."""
    import unicodedata
    write_images(tmp_path / 'd' / 'train', {'a': 1, 'éclair': 1})
    write_images(tmp_path / 'd' / 'val', {'a': 1, unicodedata.normalize('NFD', 'éclair'): 1})
    with pytest.raises(DataError, match=r"\(1 of them the same name in two Unicode normalisations, "
                                        r"'\\xe9clair' vs 'e\\u0301clair': rename"):
        open_data(DataSource('folder', tmp_path / 'd'))


# ------------------------------------------------------------------------------------------------ folder layouts
def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    """torchvision's ImageFolder took a `.thumbnails/` folder holding an image for a class, an empty
    `.ipynb_checkpoints/` stopped the run, and macOS's `._<name>.png` was read as an image (and refused)."""
    root = write_images(tmp_path / 'data', {'cat': 5, 'dog': 5})
    write_images(root / '.thumbnails', {'.': 1})
    (root / '.ipynb_checkpoints').mkdir()
    (root / 'cat' / '._0.png').write_bytes(b'\0\5\26\7 AppleDouble')
    write_images(root / 'dog', {'.cache': 1})
    opened = open_data(DataSource('folder', str(root), holdout=0.4))
    assert opened.classes == ['cat', 'dog']
    files = opened.split['train'] + opened.split['val']
    assert len(files) == 10 and not any('/.' in f or f.startswith('.') for f in files)


def test_files_of_extensions_not_read_are_named_in_a_warning(tmp_path):
    """torchvision's ImageFolder left out a .gif (and any other file its extensions do not list) without a word."""
    root = write_images(tmp_path / 'data', {'cat': 3, 'dog': 3})
    (root / 'cat' / 'anim.gif').write_bytes(_encoded('GIF', mode='P'))
    (root / 'dog' / 'notes.txt').write_text('taken in 2019')
    with pytest.warns(UserWarning, match=r'2 file\(s\) skipped, of extensions not read as images \(\.gif: 1, '
                                         r'\.txt: 1; first: .*cat/anim\.gif\); the extensions read: \.jpg'):
        opened = open_data(DataSource('folder', str(root), holdout=0.34))
    assert len(opened.split['train'] + opened.split['val']) == 6


def test_a_class_named_train_or_val_with_holdout_and_an_evaluation_of_val_alone(tmp_path):
    """--holdout took a folder with a class `train` for the train/ and val/ layout and refused it; an evaluation,
    which reads val/ alone, refused a folder without train/."""
    root = write_images(tmp_path / 'vehicles', {'bus': 5, 'train': 5})
    assert open_data(DataSource('folder', str(root), holdout=0.4)).classes == ['bus', 'train']
    write_images(root / 'val', {'bus': 2, 'train': 2})  # train/ and val/ both: the two splits' layout
    with pytest.raises(DataError, match=r'train/ and val/ folders; --holdout is for one folder'):
        open_data(DataSource('folder', str(root), holdout=0.4))
    evaluation = write_images(tmp_path / 'only_val' / 'val', {'a': 2, 'b': 2}).parent
    opened = open_data(DataSource('folder', str(evaluation)), train=False)
    assert (opened.classes, len(opened.test), opened.train) == (['a', 'b'], 4, None)
    with pytest.raises(DataError, match=r'only_val/train is missing'):
        open_data(DataSource('folder', str(evaluation)))


def test_a_validation_label_the_train_split_lacks_is_refused(tmp_path):
    """Integer labels without a ClassLabel: a validation label above every train label added a class no image
    trains (the model's head grew an output for it, and top-1 counted it)."""
    datasets = pytest.importorskip('datasets')
    from PIL import Image
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.Value('int64')})

    def split(labels, shade):
        images = [Image.fromarray(np.full((8, 8, 3), shade + i, np.uint8)) for i in range(len(labels))]
        return datasets.Dataset.from_dict({'image': images, 'label': labels}, features=features)
    datasets.DatasetDict({'train': split([0, 1, 2] * 3, 0), 'validation': split([0, 1, 2, 3], 100)}).save_to_disk(
        str(tmp_path / 'hf'))
    with pytest.raises(DataError, match='validation split has label 3, the train split none above 2'):
        open_data(DataSource('hf', str(tmp_path / 'hf')))
    assert open_data(DataSource('hf', str(tmp_path / 'hf')), train=False).classes == ['0', '1', '2', '3']
