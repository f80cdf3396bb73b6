"""What a run takes: `zoo run` takes every flag and data set `zamzoo train` takes (one argument set), and inputs a
user can get wrong are one-line errors (exit 2) before anything is built or trained."""
import json

import pytest
import torch

from conftest import write_images
from test_sources import _hf_dict
from zamzoo.cli import build_parser, main

TINY = 'test_resnet'


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, tmp_path):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')   # the sweep's worker processes inherit it
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path / 'hf-cache'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _subcommand(*names):
    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if a.dest in ('command', 'zoo_command')).choices[name]
    return parser


def _flags(parser) -> set:
    return {s for a in parser._actions for s in a.option_strings if s.startswith('--')}


# ------------------------------------------------------------------------------------------------ one argument set

def test_zoo_run_takes_every_flag_of_train_but_what_names_a_run():
    train_flags, zoo_flags = _flags(_subcommand('train')), _flags(_subcommand('zoo', 'run'))
    naming = {'--model', '--dataset', '--seed', '--resume', '--help'}
    assert train_flags - naming <= zoo_flags
    assert {'--holdout', '--image-column', '--model-kwargs', '--init', '--img-size', '--eval-every',
            '--max-bad-steps', '--compile-mode', '--channels-last', '--workers'} <= zoo_flags


def _zoo_run(tmp_path, *flags):
    out = tmp_path / 'sweep'
    rc = main(['zoo', 'run', '--models', TINY, '--seeds', '0', '--out', str(out), '--device', 'cpu',
               '--epochs', '1', '--batch-size', '4', '--img-size', '32', '--eval-batch-size', '8',
               '--model-kwargs', 'drop_rate=0.1', *flags])
    runs = [p for p in out.iterdir() if not p.name.startswith('_')]
    assert rc == 0 and len(runs) == 1
    return json.loads((runs[0] / 'config.json').read_text()), json.loads((runs[0] / 'results.json').read_text())


def test_zoo_run_trains_an_image_folder_with_holdout(tmp_path, capsys):
    data = write_images(tmp_path / 'pets', {'cat': 8, 'dog': 8}, size=(32, 32))
    flags = ['--datasets', 'folder', '--data', str(data), '--holdout', '0.25']
    assert main(['zoo', 'run', '--models', TINY, '--out', str(tmp_path / 'plan'), *flags, '--dry-run',
                 '--images-per-second', '100']) == 0
    assert 'cost: unknown' in capsys.readouterr().out   # a folder's size is known once it is opened
    config, results = _zoo_run(tmp_path, *flags)
    assert results['status'] == 'completed' and results['dataset'] == 'folder'
    assert config['classes'] == ['cat', 'dog'] and config['train_images'] == 12
    assert config['args']['holdout'] == 0.25 and config['model_kwargs'] == {'drop_rate': 0.1}   # the whole config
    assert config['img_size'] == 32 and config['recipe']['epochs'] == 1


def test_zoo_run_trains_a_hugging_face_dataset_saved_to_disk(tmp_path, capsys):
    d = _hf_dict('cifar10', label='label')
    d.save_to_disk(str(tmp_path / 'disk'))
    config, results = _zoo_run(tmp_path, '--datasets', 'hf', '--data', str(tmp_path / 'disk'),
                               '--label-column', 'label', '--val-split', 'test')
    assert results['status'] == 'completed' and results['dataset'] == 'hf'
    assert config['args']['label_column'] == 'label' and config['num_classes'] == 10
    assert config['train_images'] == len(d['train'])


# ------------------------------------------------------------------------------------------------ inputs

@pytest.mark.parametrize('kwarg, expected', [
    ('drop_rate=abc', "drop_rate='abc': test_resnet does not accept it (ValueError: could not convert string"),
    ('drop_rate=2', 'drop_rate=2: test_resnet does not accept it (ValueError: dropout probability has to be'),
    ('in_chans=1', 'in_chans=1: zamzoo loads every image as 3-channel RGB (grayscale and other modes converted); '
                   'in_chans must be 3'),
    ('features_only=True', 'features_only: not for training (it makes a feature extractor without a classifier'),
    ('global_pool=bogus', "global_pool='bogus': test_resnet does not accept it (AssertionError: Invalid pool type"),
    ('num_classes=5', 'num_classes: not for training (the class count is set by the data)'),
    ('bogus=1', "bogus=1: test_resnet does not accept it (TypeError: ResNet.__init__() got an unexpected keyword"),
])
def test_model_kwargs_are_checked_before_anything_is_built(tiny_cifar, tmp_path, capsys, kwarg, expected):
    rc = main(['train', '--model', TINY, '--data', str(tiny_cifar), '--device', 'cpu', '--out', str(tmp_path / 'run'),
               '--model-kwargs', kwarg])
    err = capsys.readouterr().err
    assert rc == 2 and f'zamzoo train: error: --model-kwargs {expected}' in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()


def test_model_kwargs_a_model_accepts_pass_and_a_sweep_checks_them_before_planning(tiny_cifar, tmp_path, capsys):
    from zamzoo.cli import build_parser
    from zamzoo.train import TrainConfig
    args = build_parser().parse_args(['train', '--model', TINY, '--data', '.', '--model-kwargs', 'drop_rate=0.1',
                                      '--model-kwargs', 'drop_path_rate=0.1'])
    assert args.model_kwargs == [('drop_rate', 0.1), ('drop_path_rate', 0.1)]  # both flags, not the last
    # a run started with --compile-mode and no --compile before that was refused still resumes
    TrainConfig(model=TINY, data='.', compile_mode='max-autotune', resume=True).validate()
    TrainConfig(model=TINY, data='.', model_kwargs={'drop_rate': 0.2, 'in_chans': 3}).validate()
    TrainConfig(model=TINY, data='.', dataset='folder', img_size=48, model_kwargs={'drop_rate': 0.2}).validate()
    # the normalisation of a model trained from scratch on data of the user's own, as timm users set it
    TrainConfig(model=TINY, data='.', dataset='folder', model_kwargs={'pretrained_cfg_overlay': {
        'mean': [0.1, 0.2, 0.3], 'std': [0.5, 0.5, 0.5]}}).validate()
    rc = main(['zoo', 'run', '--models', TINY, '--data', str(tiny_cifar), '--out', str(tmp_path / 'sweep'),
               '--model-kwargs', 'drop_rate=2', '--dry-run'])
    assert rc == 2 and 'drop_rate=2: test_resnet does not accept it' in capsys.readouterr().err


@pytest.mark.parametrize('flags, expected', [
    (['--device', 'mps'], "device 'mps' is not available here; this machine has cpu"),
    (['--device', 'cuda:7'], "device 'cuda:7' is not available here; this machine has cpu"),
    (['--device', 'gpu'], "device: unknown 'gpu'; this machine has cpu"),
    (['--seed', '99999999999999999999'], 'seed: expected an integer from 0 to 4294967295 (2**32 - 1'),
    (['--seed', '-1'], 'seed: expected an integer from 0 to 4294967295'),
    (['--img-size', '100000'], 'img_size: expected 8 to 4096 pixels, got 100000'),
    # accepted and recorded in the run's identity, though nothing was compiled; the second value kept in silence
    (['--compile-mode', 'max-autotune'], 'compile_mode: --compile-mode max-autotune is a mode of torch.compile; add '
                                         '--compile, or drop it'),
    (['--model-kwargs', 'drop_rate=0.1', 'drop_rate=0.2'], '--model-kwargs: drop_rate given twice; expected each '
                                                           'key once'),
    (['--model-kwargs', 'drop_rate=0.1', '--model-kwargs', 'drop_rate=0.2'],  # the first flag was dropped
     '--model-kwargs: drop_rate given twice'),
    (['--pretrained', '--model-kwargs', "pretrained_cfg_overlay={'file': 'w.safetensors'}"],  # recorded as published
     '--model-kwargs pretrained_cfg_overlay: not for training (with --pretrained; use --init FILE, whose source and '
     'sha256 the run records)'),
])
def test_device_seed_and_image_size_are_bounded(tiny_cifar, tmp_path, capsys, flags, expected):
    rc = main(['train', '--model', TINY, '--data', str(tiny_cifar), '--out', str(tmp_path / 'run'), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and 'Traceback' not in err and not (tmp_path / 'run').exists()


def test_the_dataloader_path_checks_its_memory_first(tmp_path, monkeypatch, capsys):
    import zamzoo.data.tensors as T
    data = write_images(tmp_path / 'd', {'a': 3, 'b': 3}, size=(32, 32))
    monkeypatch.setattr(T, 'free_bytes', lambda device: (10 ** 12, 100_000))   # 97.7 KiB free on the host
    rc = main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.4',
               '--img-size', '64', '--batch-size', '4', '--eval-batch-size', '8', '--loader', 'dataloader',
               '--device', 'cpu', '--out', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    # 8 float32 images of 3 x 64 x 64 (the eval batch, the larger) = 384 KiB
    assert rc == 2 and 'the DataLoader needs 384.0 KiB for batches of 8 images at 64x64, but host memory has ' \
        '97.7 KiB' in err
    assert '--eval-batch-size' in err and not (tmp_path / 'run').exists()
    assert T.dataloader_bytes(8, 64, workers=2) == 4 * 8 * 3 * 64 * 64 * 4


# ------------------------------------------------------------------------------------------------ quickstart's check

def test_quickstart_stops_when_the_reloaded_model_predicts_differently(tmp_path, monkeypatch):
    import zamzoo.quickstart as Q
    from zamzoo.errors import ZamzooError
    compare = Q._compare

    def other_classes(*args):   # the reloaded model's logits with every class moved by one
        loaded, trained, targets = compare(*args)
        return loaded.roll(1, dims=1), trained, targets

    monkeypatch.setattr(Q, '_compare', other_classes)
    with pytest.raises(ZamzooError, match='predicts differently from the trained model'):
        Q.quickstart(out=str(tmp_path / 'qs'), model='mobilenet_zam', train_images=20, val_images=10, epochs=1,
                     batch_size=8, attention_images=1, device='cpu')
    assert not (tmp_path / 'qs' / 'summary.json').exists()
