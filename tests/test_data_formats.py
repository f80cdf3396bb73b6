"""Data in the formats users have: an HF Image feature with a mode is read as `datasets` decodes it; CIFAR pickles
with bytes keys; parquet whose image column is the Image storage struct {bytes, path} without the datasets metadata;
a column of class names (the message says how to encode it); --download without a network; --img-size with CIFAR."""
import io
import pickle
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import write_tiny_cifar
from zamzoo.cli import main
from zamzoo.data import DataSource, cifar_dataset, open_data
from zamzoo.data.tensors import dataset_tensors
from zamzoo.errors import DataError, UsageError
from zamzoo.train import TrainConfig

TINY = 'test_resnet'
datasets = pytest.importorskip('datasets')  # the `hf` extra (in `dev`)


@pytest.fixture(autouse=True)
def hf_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf-cache'))


def _colour_images(n, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)) for _ in range(n)]


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format='PNG')
    return out.getvalue()


def _hf_with_mode(path, mode):
    features = datasets.Features({'image': datasets.Image(mode=mode), 'label': datasets.ClassLabel(names=['a', 'b'])})
    part = datasets.Dataset.from_dict({'image': _colour_images(4), 'label': [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict({'train': part, 'test': part}).save_to_disk(str(path))
    return datasets.load_from_disk(str(path))['train']


def test_an_image_feature_mode_is_applied_as_datasets_decodes_it(tmp_path):
    shown = _hf_with_mode(tmp_path / 'grey', 'L')
    assert shown[0]['image'].mode == 'L'
    train = open_data(DataSource('hf', str(tmp_path / 'grey'))).train
    for i in range(len(train)):
        expected = np.asarray(shown[i]['image'].convert('RGB'))
        assert np.array_equal(np.asarray(train[i][0]), expected)
        assert expected[..., 0].tolist() == expected[..., 2].tolist()  # grey: what zamzoo trains on too
    images, _ = dataset_tensors(train, 6)  # the tensor loader decodes the same way: grey
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()


def test_a_mode_that_cannot_become_rgb_is_refused_when_the_data_is_opened(tmp_path):
    _hf_with_mode(tmp_path / 'la', 'La')  # PIL converts RGB to La, but not La back to RGB (Pillow 10.0: neither)
    with pytest.raises(DataError, match=r"la \[train\] row 0: its RGB image converted to the Image feature's "
                                        r"mode La .* cannot be read as RGB "
                                        r"\(conversion from (La to L|RGB to La) not supported"):
        open_data(DataSource('hf', str(tmp_path / 'la')))


def _bytes_keys(value):
    if isinstance(value, dict):
        return {k.encode(): _bytes_keys(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [v.encode() for v in value]
    return value.encode() if isinstance(value, str) else value


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_cifar_pickles_with_bytes_keys_read_like_str_keys(tmp_path, dataset):
    """What the CIFAR site's unpickle(encoding='bytes') gives (b'data', b'labels', b'label_names'), dumped again."""
    plain = write_tiny_cifar(tmp_path / 'str')
    folder = write_tiny_cifar(tmp_path / 'bytes') / ('cifar-10-batches-py' if dataset == 'cifar10' else
                                                    'cifar-100-python')
    for f in folder.iterdir():
        with open(f, 'rb') as fh:
            entry = pickle.load(fh)
        with open(f, 'wb') as fh:
            pickle.dump(_bytes_keys(entry), fh, protocol=4)
    for train in (True, False):
        want, got = cifar_dataset(plain, dataset, train), cifar_dataset(folder.parent, dataset, train)
        assert np.array_equal(got.data, want.data) and got.targets == want.targets and got.classes == want.classes
        assert isinstance(got.classes[0], str)


def _plain_parquet(root, column='image', paths=True):
    """Parquet written by plain pyarrow: the image column is the Image storage struct, no datasets metadata; without
    `paths` every path is None, which pyarrow types as null."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root.mkdir()
    images = _colour_images(4, seed=3)
    for split in ('train', 'test'):
        table = pa.table({column: [{'bytes': _png(im), 'path': f'{i}.png' if paths else None}
                                   for i, im in enumerate(images)],
                          'label': [0, 1, 0, 1], 'note': ['x'] * 4})
        pq.write_table(table, str(root / f'{split}.parquet'))
    return images


def test_a_saved_split_without_rows_is_named_not_a_traceback(tmp_path):
    """save_to_disk writes no file for an empty split, and load_from_disk fails on it with an IndexError."""
    from zamzoo.data.hf import load_hf
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    train = datasets.Dataset.from_dict({'image': _colour_images(2), 'label': [0, 1]}, features=features)
    empty = datasets.Dataset.from_dict({'image': [], 'label': []}, features=features)
    datasets.DatasetDict({'train': train, 'validation': empty}).save_to_disk(str(tmp_path / 'd'))
    with pytest.raises(DataError, match=r"the split 'validation' has no rows \(.*validation/state.json lists no data "
                                        r"file\); remove it or save it with its images"):
        load_hf(tmp_path / 'd')
    empty.save_to_disk(str(tmp_path / 'one'))  # a single Dataset
    with pytest.raises(DataError, match=r'the dataset has no rows'):
        load_hf(tmp_path / 'one')
    assert len(load_hf(tmp_path / 'd' / 'train')['train']) == 2


def test_parquet_image_structs_are_read_as_images(tmp_path):
    images = _plain_parquet(tmp_path / 'pq')
    for image_column in (None, 'image'):
        opened = open_data(DataSource('hf', str(tmp_path / 'pq'), image_column=image_column))
        assert len(opened.train) == 4 and opened.classes == ['0', '1']
        assert np.array_equal(np.asarray(opened.train[2][0]), np.asarray(images[2]))
    images = _plain_parquet(tmp_path / 'bytes', paths=False)  # was refused: 'path' is Value('null')
    assert np.array_equal(np.asarray(open_data(DataSource('hf', str(tmp_path / 'bytes'))).train[3][0]),
                          np.asarray(images[3]))
    images = _plain_parquet(tmp_path / 'other', column='pixels')  # not a default name: the only image column
    assert np.array_equal(np.asarray(open_data(DataSource('hf', str(tmp_path / 'other'))).test[1][0]),
                          np.asarray(images[1]))


def test_a_named_column_that_is_not_an_image_does_not_suggest_naming_it_again(tmp_path):
    _plain_parquet(tmp_path / 'pq')
    with pytest.raises(DataError, match=r"column 'note' is Value\('string'\), not an image") as e:
        open_data(DataSource('hf', str(tmp_path / 'pq'), image_column='note'))
    assert '--image-column' not in str(e.value) and '{bytes, path}' in str(e.value)


def test_a_string_label_column_says_how_to_encode_it_and_the_advice_works(tmp_path):
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.Value('string')})
    part = datasets.Dataset.from_dict({'image': _colour_images(4), 'label': ['emu', 'cat', 'emu', 'cat']},
                                      features=features)
    d = datasets.DatasetDict({'train': part, 'test': part})
    d.save_to_disk(str(tmp_path / 'names'))
    with pytest.raises(DataError, match=r"column 'label' is Value\('string'\), not a class label .*"
                                        r"class_encode_column\('label'\)\.save_to_disk\(DIR\), then --data DIR"):
        open_data(DataSource('hf', str(tmp_path / 'names')))
    d.class_encode_column('label').save_to_disk(str(tmp_path / 'encoded'))   # what the message says to do
    opened = open_data(DataSource('hf', str(tmp_path / 'encoded')))
    assert opened.classes == ['cat', 'emu'] and opened.train.targets == [1, 0, 1, 0]


def test_download_without_a_network_says_so(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, 'Name or service not known'))
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(DataError) as e:
        cifar_dataset(tmp_path / 'dl', 'cifar10', download=True)
    message = str(e.value)
    assert message.startswith('could not download cifar10 from https://www.cs.toronto.edu/')
    assert 'check the network' in message and f"{tmp_path / 'dl' / 'cifar-10-batches-py'}/{{" in message
    assert 'malformed' not in message


def test_img_size_with_cifar_is_refused_unless_32(tiny_cifar, tmp_path, capsys):
    rc = main(['train', '--model', TINY, '--data', str(tiny_cifar), '--img-size', '64', '--out', str(tmp_path / 'r')])
    err = capsys.readouterr().err
    assert rc == 2 and 'img_size: only for --dataset folder or hf (CIFAR images are 32x32' in err
    assert 'Traceback' not in err and not (tmp_path / 'r').exists()
    with pytest.raises(UsageError, match='img_size: only for'):
        TrainConfig(model=TINY, data='.', dataset='cifar10', img_size=48).validate()
    TrainConfig(model=TINY, data='.', dataset='cifar10', img_size=32).validate()
    TrainConfig(model=TINY, data='.', dataset='hf', img_size=48).validate()
