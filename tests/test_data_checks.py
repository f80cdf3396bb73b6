"""Data checked by what it is (issue 19): a run records its data's fingerprint and refuses other data on --resume
and eval; a held-out HF split is stored as row keys; HF splits are matched by class name; every image mode is read
from its real range or refused; bad labels, a one-class set and a missing path are clear errors."""
import json
import pickle

import numpy as np
import pytest
import torch

from conftest import write_images, write_tiny_cifar
from zamzoo.data import DataSource, image_folder, open_data, open_rgb
from zamzoo.data.tensors import dataset_tensors
from zamzoo.errors import DataError
from zamzoo.train import TrainConfig, evaluate, train

TINY = 'test_resnet'
datasets = pytest.importorskip('datasets')  # the `hf` extra (in `dev`)
pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(autouse=True)
def hf_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf-cache'))


def _write_images_32(root, counts, seed=0):
    """32x32 images: what TINY takes without resizing."""
    return write_images(root, counts, (32, 32), seed)


def _hf_split(labels, names, seed=0):
    """A split of 8x8 images, each its own colour, with a ClassLabel of `names` (or plain values if names is None)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in labels]
    label = datasets.ClassLabel(names=names) if names else datasets.Value('int64')
    return datasets.Dataset.from_dict({'img': images, 'label': list(labels)},
                                      features=datasets.Features({'img': datasets.Image(), 'label': label}))


def _pixels(dataset):
    return [np.asarray(dataset[i][0]).tobytes() for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------------ fingerprint

def test_resume_and_eval_refuse_other_data(tmp_path):
    big = tmp_path / 'big' / 'shapes'                               # the same name: the same tag
    _write_images_32(big / 'train', {'a': 4, 'b': 4})
    _write_images_32(big / 'val', {'a': 2, 'b': 2}, seed=1)
    mid = tmp_path / 'mid' / 'shapes'
    _write_images_32(mid / 'train', {'a': 4, 'b': 3})                 # one image fewer
    _write_images_32(mid / 'val', {'a': 2, 'b': 2}, seed=1)
    out = tmp_path / 'run'
    args = dict(model=TINY, dataset='folder', epochs=1, batch_size=4, img_size=32, out=str(out))
    train(TrainConfig(data=str(big), **args))
    recorded = json.loads((out / 'config.json').read_text())['data_fingerprint']
    assert recorded['train'].startswith('8 files, sha256 ') and recorded['val'].startswith('4 files, sha256 ')

    with pytest.raises(DataError, match=rf"{mid} is not the data the run in {out} used: its train split is 7 files"):
        train(TrainConfig(data=str(mid), resume=True, **args))
    assert json.loads((out / 'config.json').read_text())['data'] == str(big)       # nothing rewritten
    assert train(TrainConfig(data=str(big), resume=True, **args))['epochs'] == 1  # the same data resumes

    assert evaluate(TINY, str(mid), 'folder', checkpoint=out)['images'] == 4      # same val images: evaluates
    (mid / 'val' / 'b' / '1.png').write_bytes((mid / 'val' / 'a' / '0.png').read_bytes() + b'\0')
    with pytest.raises(DataError, match=rf'{mid} is not the data the run in {out} used: its val split .*recorded'):
        evaluate(TINY, str(mid), 'folder', checkpoint=out)


def test_cifar_fingerprint_is_the_pickles_content(tmp_path):
    root = write_tiny_cifar(tmp_path / 'c')
    fp = open_data(DataSource('cifar10', root)).fingerprint
    assert fp['train'].startswith('6 files, sha256 ') and fp['val'].startswith('2 files, sha256 ')
    assert open_data(DataSource('cifar10', root), train=False).fingerprint == {'train': None, 'val': fp['val']}
    batch = root / 'cifar-10-batches-py' / 'data_batch_2'
    entry = pickle.loads(batch.read_bytes())
    entry['labels'][0] = (entry['labels'][0] + 1) % 10
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    changed = open_data(DataSource('cifar10', root)).fingerprint
    assert changed['train'] != fp['train'] and changed['val'] == fp['val']


# ------------------------------------------------------------------------------------------------ holdout keys

def test_hf_holdout_is_stored_as_row_keys_and_found_in_a_shuffled_copy(tmp_path):
    part = _hf_split([i % 3 for i in range(24)], ['cat', 'dog', 'eel'])
    datasets.DatasetDict({'train': part}).save_to_disk(str(tmp_path / 'orig'))
    datasets.DatasetDict({'train': part.shuffle(seed=5).flatten_indices()}).save_to_disk(str(tmp_path / 'shuffled'))
    datasets.DatasetDict({'train': part.select(range(20))}).save_to_disk(str(tmp_path / 'short'))
    out = tmp_path / 'run'
    r = train(TrainConfig(model=TINY, data=str(tmp_path / 'orig'), dataset='hf', holdout=0.25, epochs=1,
                          batch_size=4, img_size=32, out=str(out)))
    split = json.loads((out / 'split.json').read_text())
    assert len(split['val']) == 6 and all(isinstance(k, str) and len(k) == 24 for k in split['train'] + split['val'])

    held = open_data(DataSource('hf', str(tmp_path / 'orig'), split=split), train=False).test
    moved = open_data(DataSource('hf', str(tmp_path / 'shuffled'), split=split), train=False).test
    assert _pixels(moved) == _pixels(held) and moved.targets == held.targets and moved.rows != held.rows
    e = evaluate(TINY, str(tmp_path / 'shuffled'), 'hf', checkpoint=out)
    assert e['images'] == 6 and e['top1'] == pytest.approx(r['top1'])

    shorter = [k for k in split['val'] if k not in set(_keys(tmp_path / 'short'))]
    assert shorter                                                       # the cut removed held-out rows
    with pytest.raises(DataError, match=rf'short \[train\]: {len(shorter)} of the 6 val rows listed in the split'):
        evaluate(TINY, str(tmp_path / 'short'), 'hf', checkpoint=out)
    with pytest.raises(DataError, match='row numbers for val, not row keys'):
        open_data(DataSource('hf', str(tmp_path / 'orig'), split=dict(split, val=[0, 1])), train=False)


def _keys(path):
    from zamzoo.data import hf
    return hf.row_keys(hf.load_hf(str(path))['train'], 'img', 'label', str(path))


def test_split_file_entry_outside_the_data_folder_is_refused(tmp_path):
    data = _write_images_32(tmp_path / 'pets', {'cat': 3, 'dog': 3})
    _write_images_32(tmp_path / 'secret', {'x': 1})
    split = {'root': str(data), 'holdout': 0.3, 'seed': 0, 'classes': ['cat', 'dog'],
             'train': ['cat/0.png', 'cat/1.png', 'dog/0.png', 'dog/1.png'], 'val': ['cat/../../secret/x/0.png']}
    with pytest.raises(DataError, match=r"split file entry 'cat/../../secret/x/0.png': expected a path inside"):
        open_data(DataSource('folder', str(data), split=split), train=False)
    with pytest.raises(DataError, match='expected a path inside'):
        open_data(DataSource('folder', str(data), split=dict(split, val=[str(data / 'cat' / '2.png')])), train=False)


# ------------------------------------------------------------------------------------------------ HF class names

def test_hf_val_labels_are_mapped_by_class_name(tmp_path):
    train_names, val_names = ['cat', 'dog', 'eel'], ['eel', 'dog', 'cat']
    d = datasets.DatasetDict({'train': _hf_split([0, 1, 2, 0, 1, 2], train_names),
                              'test': _hf_split([0, 0, 1, 2], val_names, seed=1)})   # eel, eel, dog, cat
    d.save_to_disk(str(tmp_path / 'd'))
    o = open_data(DataSource('hf', str(tmp_path / 'd')))
    assert o.classes == train_names and o.test.targets == [2, 2, 1, 0]

    d['test'] = _hf_split([0, 1], ['cat', 'dog', 'fox'], seed=1)
    d.save_to_disk(str(tmp_path / 'other'))
    with pytest.raises(DataError, match=r"other \[test\]: its class names differ from the train split's: \['fox'\] "
                                        r"not in the train split, \['eel'\] missing here"):
        open_data(DataSource('hf', str(tmp_path / 'other')))


# ------------------------------------------------------------------------------------------------ image modes

def _save_grey(path, array):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_float_and_32_bit_images_are_read_from_their_range_in_both_loaders(tmp_path):
    from PIL import Image
    ramp = np.arange(64, dtype=np.float32).reshape(8, 8) * 4                   # 0..252
    unit = _save_grey(tmp_path / 'set' / 'train' / 'a' / 'unit.tif', ramp / 255)
    full = _save_grey(tmp_path / 'set' / 'train' / 'b' / 'full.tif', ramp)
    assert Image.open(unit).mode == Image.open(full).mode == 'F'
    expected = np.rint(ramp).astype(np.uint8)
    assert np.array_equal(np.asarray(open_rgb(unit))[..., 0], expected)        # 0..1: scaled, not all black
    assert np.array_equal(np.asarray(open_rgb(full))[..., 0], expected)        # 0..255 as it is
    folder = image_folder(tmp_path / 'set', 'train')
    images, _ = dataset_tensors(folder, 8)                                   # the tensor loader's decoding
    assert torch.equal(images[:, 0], torch.from_numpy(np.stack([expected, expected])))

    wide = _save_grey(tmp_path / 'set' / 'train' / 'b' / 'wide.tif', np.full((8, 8), 70000, dtype=np.int32))
    assert Image.open(wide).mode == 'I'
    with pytest.raises(DataError, match=rf'cannot read {wide} as an image .*range 70000..70000; expected 0..65535'):
        image_folder(tmp_path / 'set', 'train')                              # refused when indexed, not mid-epoch
    wide.unlink()
    hot = _save_grey(tmp_path / 'set' / 'train' / 'b' / 'hot.tif', ramp * 4)   # 0..1008: neither 0..1 nor 0..255
    with pytest.raises(DataError, match=rf'{hot} .*float pixels range 0..1008; expected 0..1 or 0..255'):
        image_folder(tmp_path / 'set', 'train')


def test_a_palette_png_with_alpha_bytes_reads_as_pil_converts_it_without_its_warning(tmp_path):
    """PIL warned on stderr ('Palette images with Transparency expressed in bytes...') for every such image read."""
    import warnings
    from PIL import Image
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).convert('P')
    image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.info['transparency'] = bytes(range(0, 256))
    image.save(tmp_path / 'p.png', transparency=bytes(range(0, 256)))
    with Image.open(tmp_path / 'p.png') as reopened:
        assert isinstance(reopened.info['transparency'], bytes)
        with pytest.warns(UserWarning, match='Palette images with Transparency'):
            expected = np.asarray(reopened.convert('RGB'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert np.array_equal(np.asarray(open_rgb(tmp_path / 'p.png')), expected)
        assert expected[0, 1].tolist() == [1, 254, 0]


# ------------------------------------------------------------------------------------------------ bad labels, etc.

_BAD_LABELS = {
    'none': (lambda names: {'train': _hf_split([0, 1, None, 1], names), 'test': _hf_split([0, 1], names)},
             r"none \[train\] row 2: label None; expected a class index"),
    'no-label': (lambda names: {'train': _hf_split([0, 1, 0, 1], names),
                                'test': _hf_split([0, 1], names).remove_columns('label')},
                 r"no-label \[test\]: no column 'label' \(label\)"),
    'string': (lambda names: {'train': _hf_split([0, 1, 0, 1], names),
                              'test': _hf_split([0, 1], names).cast_column('label', datasets.Value('string'))},
               r"string \[test\]: column 'label' is Value\('string'\), not a class label"),
}


@pytest.mark.parametrize('case', sorted(_BAD_LABELS))
def test_bad_labels_are_clear_errors(tmp_path, case):
    splits, message = _BAD_LABELS[case]
    datasets.DatasetDict(splits(['cat', 'dog'])).save_to_disk(str(tmp_path / case))
    with pytest.raises(DataError, match=message):
        open_data(DataSource('hf', str(tmp_path / case)))


def test_a_validation_split_naming_the_train_split_is_refused(tmp_path):
    """--val-split train validated the run on its own training rows, both fingerprints alike, without a word."""
    datasets.DatasetDict({'train': _hf_split([0, 1, 0, 1], ['cat', 'dog'])}).save_to_disk(str(tmp_path / 'd'))
    with pytest.raises(DataError, match="--val-split 'train' is the train split: the run would be validated on the "
                                        'images it trains on'):
        open_data(DataSource('hf', str(tmp_path / 'd'), val_split='train'))


def test_cifar_meta_with_fewer_class_names_is_refused_up_front(tmp_path):
    root = write_tiny_cifar(tmp_path / 'c')
    meta = root / 'cifar-10-batches-py' / 'batches.meta'
    meta.write_bytes(pickle.dumps({'label_names': ['a', 'b', 'c']}, protocol=2))
    with pytest.raises(DataError, match=r'the meta file lists 3 class names \(3 distinct\), expected 10 distinct'):
        open_data(DataSource('cifar10', root))
    names = [f'c{i}' for i in range(9)] + ['c3']  # ten names, one twice: two classes would print alike
    meta.write_bytes(pickle.dumps({'label_names': names}, protocol=2))
    with pytest.raises(DataError, match=r'lists 10 class names \(9 distinct\), expected 10 distinct'):
        open_data(DataSource('cifar10', root))


@pytest.mark.parametrize('labels, kind', [([0.7, 1.7, 9.7], "0.7 of type float"), (['1', '2', '3'], "'1' of type str")])
def test_cifar_labels_that_are_not_class_indices_are_refused_up_front(tmp_path, labels, kind):
    """A float label was truncated to another class (9.7 -> 9) without a word; a string one raised numpy's
    UFuncTypeError."""
    root = write_tiny_cifar(tmp_path / 'c')
    batch = root / 'cifar-10-batches-py' / 'data_batch_1'
    content = pickle.loads(batch.read_bytes())
    content['labels'][:3] = labels
    batch.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=rf'a label {kind}, expected integer class indices 0..9'):
        open_data(DataSource('cifar10', root))


def test_one_class_and_missing_hf_path(tmp_path):
    data = _write_images_32(tmp_path / 'one', {'only': 4})
    with pytest.raises(DataError, match=r"one class \(\['only'\]\); a classifier needs at least two classes"):
        open_data(DataSource('folder', str(data), holdout=0.25))
    missing = tmp_path / 'nowhere' / 'set'
    with pytest.raises(DataError, match=rf'the local path {missing} does not exist'):
        open_data(DataSource('hf', str(missing)))
    with pytest.raises(DataError, match=r'the local path \./set does not exist'):
        open_data(DataSource('hf', './set'))


def test_hf_fingerprint_is_the_datasets_own_and_survives_a_copy(tmp_path):
    import shutil
    d = datasets.DatasetDict({'train': _hf_split([0, 1] * 4, ['cat', 'dog']),
                              'test': _hf_split([0, 1], ['cat', 'dog'], seed=1)})
    d.save_to_disk(str(tmp_path / 'disk'))
    (tmp_path / 'pq').mkdir()
    for name, part in d.items():
        part.to_parquet(str(tmp_path / 'pq' / f'{name}-00000-of-00001.parquet'))
    for kind in ('disk', 'pq'):
        shutil.copytree(tmp_path / kind, tmp_path / 'copy' / kind)
        fp = open_data(DataSource('hf', str(tmp_path / kind))).fingerprint
        assert fp == open_data(DataSource('hf', str(tmp_path / 'copy' / kind))).fingerprint
        assert fp['train'].startswith('8 rows, ') and fp['val'].startswith('2 rows, ')
    saved = open_data(DataSource('hf', str(tmp_path / 'disk'))).fingerprint
    own = datasets.load_from_disk(str(tmp_path / 'disk'))['test']._fingerprint
    assert saved['val'] == f'2 rows, datasets fingerprint {own}'
