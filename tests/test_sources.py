"""Your own data: Hugging Face datasets (save_to_disk and parquet folders made here), one-folder image sets split by
--holdout, --init from any weights, the tensor loader for any data set, and bad data (files and rows named)."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import tiny_cifar_arrays, write_images
from zamzoo.cli import main
from zamzoo.data import DataSource, open_data, open_rgb
from zamzoo.errors import DataError, ZamzooError
from zamzoo.recipes import get_recipe
from zamzoo.train import TrainConfig, evaluate, train
from zamzoo.train import distributed as D
from zamzoo.train.build import build_loaders, create_model

TINY = 'test_resnet'
datasets = pytest.importorskip('datasets')  # the `hf` extra (in `dev`)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf-cache'))
    yield
    torch.set_num_threads(threads)


def _hf_dict(dataset='cifar100', label='fine_label'):
    """tiny_cifar's images and labels as a DatasetDict (train / test) with Image and ClassLabel features."""
    from PIL import Image
    xtr, ytr, xte, yte, names = tiny_cifar_arrays(dataset)
    features = datasets.Features({'img': datasets.Image(), label: datasets.ClassLabel(names=names)})

    def split(x, y):
        return datasets.Dataset.from_dict({'img': [Image.fromarray(a) for a in x], label: y.tolist()},
                                          features=features)
    return datasets.DatasetDict({'train': split(xtr, ytr), 'test': split(xte, yte)})


@pytest.fixture(scope='module')
def hf_sources(tmp_path_factory):
    """(save_to_disk folder, parquet folder) of the CIFAR-100 tiny set."""
    root = tmp_path_factory.mktemp('hf')
    d = _hf_dict()
    d.save_to_disk(str(root / 'disk'))
    (root / 'parquet').mkdir()
    for name, part in d.items():
        part.to_parquet(str(root / 'parquet' / f'{name}-00000-of-00001.parquet'))
    return root / 'disk', root / 'parquet'


# ------------------------------------------------------------------------------------------------ same batches

def test_same_images_same_batches_from_cifar_pickles_and_hf(tiny_cifar, hf_sources):
    """The CIFAR pickles and the same images as a Hugging Face dataset (save_to_disk and parquet) give bit-equal
    batches from the tensor loader, epoch after epoch, with the same seed."""
    recipe = get_recipe('zam')
    mean, std = recipe.stats('cifar100')
    info = D.DistInfo(device=torch.device('cpu'))

    def batches(source):
        opened = open_data(source)
        assert opened.classes == tiny_cifar_arrays('cifar100')[4]
        train_loader, test_loader = build_loaders(
            source.dataset, (opened.train, opened.test), recipe, mean, std, batch_size=16, eval_batch_size=20,
            seed=5, info=info, loader='tensor', workers=0, channels_last=False, img_size=32)
        out = []
        for epoch in (0, 1):
            train_loader.set_epoch(epoch)
            out += list(train_loader)
        return out + list(test_loader)

    ref = batches(DataSource('cifar100', tiny_cifar))
    assert len(ref) == 4 + 4 + 2
    for folder in hf_sources:
        got = batches(DataSource('hf', folder))
        assert len(got) == len(ref)
        for (x, y, n), (rx, ry, rn) in zip(got, ref):
            assert torch.equal(x, rx) and torch.equal(y, ry) and n == rn


# ------------------------------------------------------------------------------------------------ HF runs

def test_hf_runs_from_disk_and_parquet_then_eval(hf_sources, tmp_path):
    disk, parquet = hf_sources
    args = dict(model=TINY, dataset='hf', epochs=1, batch_size=16, img_size=32, seed=1)
    a = train(TrainConfig(data=str(disk), loader='tensor', out=str(tmp_path / 'disk'), **args))
    b = train(TrainConfig(data=str(parquet), out=str(tmp_path / 'parquet'), **args))
    assert a['num_classes'] == b['num_classes'] == 100 and a['recipe'] == 'finetune'
    cfg = json.loads((tmp_path / 'disk' / 'config.json').read_text())
    assert cfg['classes'] == tiny_cifar_arrays('cifar100')[4] and cfg['tag'] == 'disk' and cfg['loader'] == 'tensor'
    assert cfg['train_images'] == 64 and cfg['args']['dataset'] == 'hf'
    assert json.loads((tmp_path / 'parquet' / 'config.json').read_text())['loader'] == 'dataloader'
    r = evaluate(TINY, str(disk), 'hf', checkpoint=tmp_path / 'disk')
    assert r['images'] == 32 and r['top1'] == pytest.approx(a['top1'])
    assert main(['eval', '--model', TINY, '--checkpoint', str(tmp_path / 'parquet'), '--dataset', 'hf', '--data',
                 str(parquet), '--val-split', 'test', '--json', str(tmp_path / 'e.json')]) == 0
    e = json.loads((tmp_path / 'e.json').read_text())
    assert e['images'] == 32 and e['top1'] == pytest.approx(b['top1'])


def test_a_parquet_folders_fingerprint_is_its_files_content(hf_sources, tmp_path):
    """It was their paths and sizes: a label changed in a parquet file often keeps its size (51 of 72 one-row edits
    of a small test split did), and eval, --resume and the sweep took the relabelled data as the run's."""
    import shutil
    import types

    from zamzoo.data import hf
    copy, split = tmp_path / 'parquet', types.SimpleNamespace(num_rows=32)
    shutil.copytree(hf_sources[1], copy)
    before = hf.fingerprints({'val': split}, copy)['val']
    shutil.copytree(copy, tmp_path / 'elsewhere')
    assert hf.fingerprints({'val': split}, tmp_path / 'elsewhere')['val'] == before and ', content sha256 ' in before
    file = copy / 'test-00000-of-00001.parquet'
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 1  # the same size, other bytes
    file.write_bytes(bytes(data))
    now = hf.fingerprints({'val': split}, copy)['val']
    assert now != before
    # a run recorded before the content was hashed (paths and sizes) is checked as then, not refused as other data
    from zamzoo.data.sources import check_same_data
    older = before.split(', content sha256 ')[0]
    check_same_data({'val': older}, {'val': now}, copy, 'run')
    with pytest.raises(DataError, match='is not the data the run in run used'):
        check_same_data({'val': older.replace(older[-4:], '0000')}, {'val': now}, copy, 'run')
    with pytest.raises(DataError, match='is not the data the run in run used'):
        check_same_data({'val': before}, {'val': now}, copy, 'run')


def test_hf_columns_splits_and_bad_rows(tmp_path):
    d = _hf_dict('cifar10', label='label')
    d['train'] = d['train'].add_column('extra', list(range(64)))
    d.save_to_disk(str(tmp_path / 'ok'))

    def opened(path, **kw):
        return open_data(DataSource('hf', str(tmp_path / path), **kw))

    o = opened('ok')
    assert len(o.train) == 64 and len(o.test) == 32 and o.num_classes == 10
    with pytest.raises(DataError, match=r"no split 'valid' \(validation split\); the dataset has \['test', 'train'\]"):
        opened('ok', val_split='valid')
    with pytest.raises(DataError, match=r"column 'extra' is Value\('int64'\), not an image"):
        opened('ok', image_column='extra')
    with pytest.raises(DataError, match="no column 'lbl'"):
        opened('ok', label_column='lbl')
    with pytest.raises(DataError, match=re.escape("--holdout is for data without one (to hold out part of the train "
                                                  "split instead, save the data set without 'test': DatasetDict("
                                                  "{'train': d['train']}).save_to_disk(...))")):
        opened('ok', holdout=0.2)  # what that advice makes: `only_train` below

    only_train = datasets.DatasetDict({'train': d['train']})
    only_train.save_to_disk(str(tmp_path / 'train-only'))
    with pytest.raises(DataError, match='no validation split.*--holdout 0.1'):
        opened('train-only')
    held = opened('train-only', holdout=0.25)
    counts = np.bincount(d['train']['label'])                         # 7 or 6 images per class: 2 held out of each
    assert len(held.test) == sum(round(0.25 * n) for n in counts) == 20 and len(held.train) == 44
    assert np.array_equal(np.bincount([held.train.targets + held.test.targets][0]), counts)
    assert all(np.bincount(held.test.targets, minlength=10) == 2)   # stratified
    assert held.split['val'] == opened('train-only', holdout=0.25).split['val']            # deterministic in the seed
    assert held.split['val'] != opened('train-only', holdout=0.25, seed=1).split['val']

    wrong = d['train'].cast_column('label', datasets.Value('int64'))
    wrong = wrong.map(lambda r, i: {'label': 12 if i == 7 else r['label']}, with_indices=True)
    datasets.DatasetDict({'train': wrong.cast_column('label', d['train'].features['label']),
                          'test': d['test']}).save_to_disk(str(tmp_path / 'bad-label'))
    with pytest.raises(DataError, match=r'bad-label \[train\] row 7: label 12 is outside the 10 classes'):
        opened('bad-label')
    unlabelled = d['test'].cast_column('label', datasets.Value('int64')).map(lambda r: {'label': -1})
    datasets.DatasetDict({'train': d['train'], 'test': unlabelled.cast_column('label', d['train'].features['label'])}
                         ).save_to_disk(str(tmp_path / 'unlabelled-test'))  # the Hub's usual test split
    with pytest.raises(DataError, match=r'\[test\] row 0: label -1 is outside the 10 classes \(0..9\): -1 marks a row '
                                        r'without a label .* --val-split, or save the data set without this split '
                                        r'and hold out part of the train split with --holdout 0.1'):
        opened('unlabelled-test')

    cut = d['test'].cast_column('img', datasets.Image(decode=False))
    cut = cut.map(lambda r, i: {'img': {'bytes': r['img']['bytes'][:60] if i == 3 else r['img']['bytes'],
                                        'path': None}}, with_indices=True)
    datasets.DatasetDict({'train': d['train'], 'test': cut.cast_column('img', datasets.Image())}).save_to_disk(
        str(tmp_path / 'bad-image'))
    with pytest.raises(DataError, match=r'cannot read .*bad-image \[test\] row 3 as an image'):
        opened('bad-image')

    with pytest.raises(DataError, match="the local path .*missing does not exist"):
        opened('missing')


# ------------------------------------------------------------------------------------------------ one folder

def test_one_folder_holdout_split_file_resume_and_eval(tmp_path):
    data = write_images(tmp_path / 'pets', {'cat': 8, 'dog': 4, 'eel': 2}, size=(32, 32))
    out = tmp_path / 'run'
    args = dict(model=TINY, data=str(data), dataset='folder', epochs=1, batch_size=4, img_size=32, holdout=0.25,
                seed=3, out=str(out))
    r = train(TrainConfig(**args))
    split = json.loads((out / 'split.json').read_text())
    assert split['classes'] == ['cat', 'dog', 'eel'] and split['holdout'] == 0.25 and split['seed'] == 3
    assert sorted(p.split('/')[0] for p in split['val']) == ['cat', 'cat', 'dog']      # 2 of 8, 1 of 4, 0 of 2
    assert len(split['train']) == 11 and not set(split['train']) & set(split['val'])
    assert json.loads((out / 'config.json').read_text())['train_images'] == 11

    write_images(data, {'fox': 3}, seed=9)     # the folder gains a class: a new split would differ
    finished = {name: (out / name).read_bytes() for name in ('results.json', 'model.safetensors')}
    again = train(TrainConfig(resume=True, **args))     # resuming the finished run re-reads its split file
    assert again['top1'] == r['top1'] and json.loads((out / 'split.json').read_text()) == split
    assert again == r and all((out / name).read_bytes() == b for name, b in finished.items())  # left as it was
    assert json.loads((out / 'config.json').read_text())['classes'] == ['cat', 'dog', 'eel']  # not fox: same split
    e = evaluate(TINY, str(data), 'folder', checkpoint=out)
    assert e['images'] == 3 and e['top1'] == pytest.approx(r['top1'])

    with pytest.raises(DataError, match=r'--holdout 0.1'):
        train(TrainConfig(model=TINY, data=str(data), dataset='folder', out=str(tmp_path / 'no')))
    (data / 'gnu').mkdir()
    with pytest.raises(DataError, match=r'Found no valid file for the classes gnu; expected .*/<class>/<image> with'):
        train(TrainConfig(**dict(args, out=str(tmp_path / 'no'))))
    assert not (tmp_path / 'no').exists()


# ------------------------------------------------------------------------------------------------ --init

def _save(model, path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_init_from_safetensors_and_export_folder(tmp_path, capsys):
    import timm
    from safetensors.torch import load_file

    from zamzoo.train.init import apply_init, load_init
    torch.manual_seed(11)
    source = create_model(TINY, 10)
    path = _save(source, tmp_path / 'ten.safetensors')
    timm.models.save_for_hf(source, tmp_path / 'export', safe_serialization=True)

    for where in (path, tmp_path / 'export', f'local-dir:{tmp_path / "export"}'):
        state, record = load_init(str(where))
        model = create_model(TINY, 3)
        head = model.get_classifier().weight.clone()
        assert apply_init(model, state, str(where)) == 'reset'             # 10 -> 3 classes: head kept as built
        assert torch.equal(model.get_classifier().weight, head)
        for k, v in model.state_dict().items():
            if not k.startswith('fc.'):
                assert torch.equal(v, source.state_dict()[k]), k
    import hashlib
    assert record['sha256'] == hashlib.sha256((tmp_path / 'export' / 'model.safetensors').read_bytes()).hexdigest()
    same = create_model(TINY, 10)
    assert apply_init(same, load_init(str(path))[0], str(path)) == 'kept'
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    with pytest.raises(ZamzooError, match='does not fit this model'):
        apply_init(create_model('test_efficientnet', 3), load_init(str(path))[0], str(path))

    data = write_images(tmp_path / 'abc', {'a': 3, 'b': 3, 'c': 3}, size=(32, 32))
    out = tmp_path / 'run'
    assert main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.34',
                 '--img-size', '32', '--epochs', '1', '--batch-size', '6', '--lr', '1e-9', '--init', str(path),
                 '--out', str(out)]) == 0
    init = json.loads((out / 'config.json').read_text())['init']
    assert init == {'source': str(path), 'file': str(path), 'sha256': hashlib.sha256(path.read_bytes()).hexdigest(),
                    'classes': None, 'head': 'reset', 'head_reset': True}
    trained = load_file(str(out / 'model.safetensors'))
    convs = [k for k, v in trained.items() if v.dim() == 4]                 # lr 1e-9: still the --init weights
    assert convs and all(torch.allclose(trained[k], source.state_dict()[k], rtol=0, atol=1e-6) for k in convs)
    assert not torch.allclose(trained[convs[0]], create_model(TINY, 3).state_dict()[convs[0]], atol=1e-3)
    rc = main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.34',
               '--init', str(tmp_path / 'nothing.safetensors'), '--out', str(tmp_path / 'r2')])
    assert rc == 2 and 'no such file or folder' in capsys.readouterr().err and not (tmp_path / 'r2').exists()


# ------------------------------------------------------------------------------------------------ images

def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    from PIL import Image

    import zamzoo.viz as viz
    wide = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)   # 0..65535 in steps of 257
    (tmp_path / 'set' / 'x').mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / 'set' / 'x' / 'deep.png')
    assert Image.open(tmp_path / 'set' / 'x' / 'deep.png').mode.startswith('I')
    rgb = np.asarray(open_rgb(tmp_path / 'set' / 'x' / 'deep.png'))
    assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], np.arange(256).reshape(16, 16))
    from zamzoo.data import image_folder
    (tmp_path / 'set2' / 'train').mkdir(parents=True)
    (tmp_path / 'set' / 'x').rename(tmp_path / 'set2' / 'train' / 'x')
    img, _ = image_folder(tmp_path / 'set2', 'train')[0]
    assert np.array_equal(np.asarray(img), rgb)
    model = create_model('resnet18_zam', 10).eval()
    _, seen = viz.load_image(tmp_path / 'set2' / 'train' / 'x' / 'deep.png', model)
    assert seen.shape == (32, 32, 3) and 0.4 < seen.mean() < 0.6                # clipped, it would be ~1.0


@pytest.mark.parametrize('case', ['zero', 'truncated', 'garbage'])
def test_broken_image_named_when_the_folder_is_indexed(tmp_path, case):
    data = write_images(tmp_path / 'd' / 'train', {'a': 4, 'b': 4})
    write_images(tmp_path / 'd' / 'val', {'a': 2, 'b': 2})
    bad = tmp_path / 'd' / 'val' / 'b' / '1.png'
    bad.write_bytes({'zero': b'', 'truncated': bad.read_bytes()[:100], 'garbage': b'not a png at all'}[case])
    out = tmp_path / 'run'
    with pytest.raises(DataError, match=f'cannot read {bad} as an image'):
        train(TrainConfig(model=TINY, data=str(data.parent), dataset='folder', epochs=1, img_size=32,
                          out=str(out)))
    assert not out.exists()                                                   # before any training or writing


def test_decompression_bomb_in_viz_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from PIL import Image
    Image.new('RGB', (100, 100)).save(tmp_path / 'big.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)                     # 10,000 pixels > 2 x the limit
    rc = main(['viz', '--model', 'mobilenet_zam', '--image', str(tmp_path / 'big.png'), '--out',
               str(tmp_path / 'maps.png')])
    err = capsys.readouterr().err
    assert rc == 2 and 'decompression bomb' in err and 'big.png' in err and 'Traceback' not in err


def test_last_batch_of_one_image_is_merged_not_fatal(tmp_path):
    """mobilenet_bam has BatchNorm on pooled features: a training batch of one image raises in torch."""
    data = write_images(tmp_path / 'd' / 'train', {'a': 4, 'b': 4}, size=(32, 32)).parent
    write_images(data / 'val', {'a': 1, 'b': 1}, size=(32, 32))
    r = train(TrainConfig(model='mobilenet_bam', data=str(data), dataset='folder', epochs=1, batch_size=7,
                          out=str(tmp_path / 'run')))
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert r['epochs'] == 1 and cfg['steps_per_epoch'] == 1 and cfg['train_images'] == 8


def test_a_batch_size_or_a_train_split_too_small_to_train_is_a_clear_error(tmp_path, capsys):
    """Batch size 1 trained every step on one image and a train split of one image was one such step: BatchNorm's
    ValueError with a traceback, and a run folder left behind."""
    d = _hf_dict('cifar10', label='label')
    d['train'] = d['train'].select([0])
    d.save_to_disk(str(tmp_path / 'one'))
    with pytest.raises(DataError, match=r'has 1 images, too few for one training step: expected at least 2 for each '
                                        r'of the 1 process\(es\) \(BatchNorm cannot train on one image\)'):
        train(TrainConfig(model=TINY, data=str(tmp_path / 'one'), dataset='hf', epochs=1, val_split='test',
                          out=str(tmp_path / 'run')))
    rc = main(['train', '--model', TINY, '--dataset', 'hf', '--data', str(tmp_path / 'one'), '--batch-size', '1',
               '--out', str(tmp_path / 'run1')])
    err = capsys.readouterr().err
    assert rc == 2 and "batch_size: expected an integer >= 2, got 1" in err and 'Traceback' not in err
    assert not (tmp_path / 'run1').exists()


def test_eval_of_a_run_on_another_split_of_its_data_is_not_refused(tmp_path):
    """A run trained with --val-split test, evaluated on the data's validation split: that split was compared with the
    run's record of its test split and refused as other data. Its own split, changed, is still refused."""
    d = _hf_dict('cifar10', label='label')
    d['validation'] = d['test'].select(range(9))
    d.save_to_disk(str(tmp_path / 'data'))
    run = tmp_path / 'run'
    train(TrainConfig(model=TINY, data=str(tmp_path / 'data'), dataset='hf', epochs=1, val_split='test', out=str(run)))
    r = evaluate(TINY, str(tmp_path / 'data'), 'hf', checkpoint=run, device='cpu', val_split='validation')
    assert r['images'] == 9
    d['test'] = d['test'].select(range(1, len(d['test'])))
    d.save_to_disk(str(tmp_path / 'changed'))
    with pytest.raises(DataError, match='its val split'):
        evaluate(TINY, str(tmp_path / 'changed'), 'hf', checkpoint=run, device='cpu')


def test_tensor_loader_memory_is_checked_first(tmp_path, monkeypatch, capsys):
    import zamzoo.data.tensors as T
    data = write_images(tmp_path / 'd', {'a': 3, 'b': 3}, size=(32, 32))
    monkeypatch.setattr(T, 'free_bytes', lambda device: (10_000, 10 ** 12))
    rc = main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.4',
               '--img-size', '32', '--loader', 'tensor', '--out', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert rc == 2 and 'needs 24.' in err and '9.8 KiB free' in err and '--loader dataloader' in err and 'cpu memory has' in err
    assert T.tensor_bytes(4, 2, 32, 4) == 3 * (4 * 40 * 40 + 2 * 32 * 32)
    assert T.pick_loader('auto', (4, 2), 16, 4, 'cpu') == 'dataloader'   # its one 3 KiB batch fits
    assert not (tmp_path / 'run').exists()


def test_export_of_an_hf_run_records_label_names_and_init(tmp_path):
    import hashlib

    from zamzoo.publish import export_run
    d = _hf_dict('cifar10', label='label')
    d.save_to_disk(str(tmp_path / 'tencls'))
    torch.manual_seed(0)
    start = _save(create_model('mobilenet_zam', 100), tmp_path / 'start.safetensors')   # 100 -> 10 classes
    out = tmp_path / 'run'
    train(TrainConfig(model='mobilenet_zam', data=str(tmp_path / 'tencls'), dataset='hf', epochs=1, batch_size=32,
                      init=str(start), out=str(out)))
    res = export_run([out], tmp_path / 'export')
    assert res.tag == 'tencls'
    config = json.loads((tmp_path / 'export' / 'config.json').read_text())
    assert config['num_classes'] == 10 and config['label_names'] == tiny_cifar_arrays('cifar10')[4]
    card = (tmp_path / 'export' / 'README.md').read_text()
    sha = hashlib.sha256(start.read_bytes()).hexdigest()
    assert f'- **Initial weights:** {start} (sha256 {sha})\n' in card and '- **Training dataset:** tencls' in card
    from safetensors.torch import load_file

    from zamzoo.errors import WeightsError
    from zamzoo.publish.hubcache import cache_export, offline_hub
    from zamzoo.train.init import load_init
    cache_export(tmp_path / 'export', tmp_path / 'hub')
    with offline_hub(tmp_path / 'hub'):                                       # --init hf-hub:org/name, offline
        state, record = load_init(f"hf-hub:{json.loads((tmp_path / 'export' / 'results.json').read_text())['repo_id']}")
    exported = load_file(str(tmp_path / 'export' / 'model.safetensors'))
    assert state.keys() == exported.keys() and all(torch.equal(state[k], exported[k]) for k in state)
    assert record['sha256'] == res.sha256
    with pytest.raises(WeightsError, match='no pretrained weights are published for mobilenet_zam'):
        load_init('mobilenet_zam')                                            # a zoo name: the published weights


class _StopAt:
    """A reporter that interrupts the run (as Ctrl-C) at the start of epoch `epoch`."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __getattr__(self, name):
        return lambda *args: None

    def epoch_start(self, epoch, *args):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_split_file_is_the_runs_own_across_attempts(tmp_path):
    """An attempt with --holdout interrupted, then one on train/ and val/ folders in the same --out: the first
    attempt's split.json stayed, and eval and --resume applied it to the second's data ('listed in the split file
    but missing'). A --holdout run interrupted and resumed keeps its split file."""
    flat = write_images(tmp_path / 'flat', {'cat': 6, 'dog': 6}, size=(32, 32))
    two = tmp_path / 'two'
    for part, n in (('train', 5), ('val', 2)):
        write_images(two / part, {'bird': n, 'cat': n}, size=(32, 32), seed=n)
    out = tmp_path / 'run'
    args = dict(model=TINY, dataset='folder', epochs=2, batch_size=4, img_size=32, seed=1, out=str(out))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(flat), holdout=0.25, **args), reporter=_StopAt(1))
    assert (out / 'split.json').is_file()
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(two), **args), reporter=_StopAt(2))
    assert not (out / 'split.json').exists()
    r = train(TrainConfig(data=str(two), resume=True, **args))
    assert r['test_images'] == 4 and evaluate(TINY, str(two), 'folder', checkpoint=out)['images'] == 4

    held = tmp_path / 'held'
    args.update(out=str(held))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(flat), holdout=0.25, **args), reporter=_StopAt(2))
    split = (held / 'split.json').read_text()
    r = train(TrainConfig(data=str(flat), holdout=0.25, resume=True, **args))
    assert (held / 'split.json').read_text() == split and r['test_images'] == 4
    assert evaluate(TINY, str(flat), 'folder', checkpoint=held)['images'] == 4
