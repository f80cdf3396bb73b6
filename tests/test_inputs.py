"""What a run takes: `zoo run` takes every flag and data set `zamzoo train` takes (one argument set), and inputs a
user can get wrong are one-line errors (exit 2) before anything is built or trained."""
import json

import pytest
import torch

from test_sources import _hf_dict, _write_images
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
    data = _write_images(tmp_path / 'pets', {'cat': 8, 'dog': 8}, size=(32, 32))
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
