"""A resume continues the run as it started: with the loader its `--loader auto` resolved to, its weights from the
checkpoint (not the --init source again), its data under another folder name; and a run started from --init
weights that record their normalisation trains (and exports) with it, as timm's data config of loaded weights."""
import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import save_file

import zamzoo.data.tensors as tensors
from conftest import write_images
from zamzoo.errors import UsageError
from zamzoo.publish import export_run
from zamzoo.train import TrainConfig, train
from zamzoo.train.init import load_init
from zamzoo.train.run_folder import identity_changes

TINY = 'test_resnet'
CLASSES = ['a', 'b', 'c']
C10_MEAN, C10_STD = [0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]  # a CIFAR-10 run's (the recipe's)


def _data(root):
    return write_images(root, {name: 3 for name in CLASSES}, size=(32, 32))


def _train(data, out, model=TINY, **options):
    """One epoch of one step on CPU: 6 training images, 3 held out."""
    return train(TrainConfig(model=model, dataset='folder', data=str(data), holdout=0.34, img_size=32, epochs=1,
                             batch_size=6, lr=1e-9, device='cpu', out=str(out), **options))


def _config(out):
    return json.loads((out / 'config.json').read_text())


def _source(folder, model=TINY, **config):
    """Weights of `model` for CLASSES, with the config.json a run (or an export) keeps next to them."""
    torch.manual_seed(3)
    folder.mkdir(parents=True)
    net = timm.create_model(model, num_classes=len(CLASSES))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps({'classes': CLASSES, **config}))
    return folder


def test_a_resume_keeps_the_loader_auto_resolved_to(tmp_path, monkeypatch):
    data, out = _data(tmp_path / 'data'), tmp_path / 'run'
    pick = tensors.pick_loader
    # the first session on a GPU with room: auto takes the tensor loader
    monkeypatch.setattr(tensors, 'pick_loader', lambda loader, *a, **k: pick(
        'tensor' if loader == 'auto' else loader, *a, **k))
    _train(data, out)
    assert _config(out)['loader'] == 'tensor'
    monkeypatch.setattr(tensors, 'pick_loader', pick)  # now auto would take the DataLoader
    for loader in ('auto', 'tensor'):  # the default, and an explicit --loader naming the recorded one
        _train(data, out, resume=True, loader=loader)
        assert _config(out)['loader'] == 'tensor'
    with pytest.raises(UsageError, match='trains with the tensor loader, not --loader dataloader; drop --loader'):
        _train(data, out, resume=True, loader='dataloader')


def test_a_resume_takes_its_weights_from_the_checkpoint_not_the_init_source(tmp_path):
    data, out = _data(tmp_path / 'data'), tmp_path / 'run'
    source = _source(tmp_path / 'source')
    _train(data, out, init=str(source))
    recorded = _config(out)['init']
    assert recorded['sha256'] and recorded['head'] == 'kept'
    shutil.rmtree(source)  # gone (deleted, offline, re-exported): the checkpoint holds every weight
    _train(data, out, resume=True, init=str(source))
    assert _config(out)['init'] == recorded
    with pytest.raises(UsageError, match='differs from its checkpoint: init: checkpoint'):
        _train(data, out, resume=True, init=str(tmp_path / 'elsewhere'))  # refused by name, never read
    with pytest.raises(UsageError, match=r"init: checkpoint '.*, now not given; resume with"):
        _train(data, out, resume=True)


def test_a_resume_does_not_load_the_pretrained_weights_again(tmp_path, monkeypatch):
    import zamzoo.train.build as build
    asked, create = [], build.create_model

    def offline_create_model(name, num_classes, pretrained=False, **kwargs):  # records the ask, downloads nothing
        asked.append(pretrained)
        return create(name, num_classes, **kwargs)

    monkeypatch.setattr(build, 'create_model', offline_create_model)
    data, out = _data(tmp_path / 'data'), tmp_path / 'run'
    _train(data, out, pretrained=True)
    _train(data, out, resume=True, pretrained=True)
    assert asked == [True, False] and _config(out)['pretrained'] is True


def test_a_run_from_init_weights_normalises_with_their_statistics(tmp_path):
    model = 'mobilenet_plain'  # a zoo model: its run exports
    data, out = _data(tmp_path / 'data'), tmp_path / 'run'
    source = _source(tmp_path / 'cifar10_run', model, mean=C10_MEAN, std=C10_STD)  # a CIFAR-10 run's config.json
    assert timm.create_model(model).pretrained_cfg['mean'] != tuple(C10_MEAN)  # not the model's own cfg
    _train(data, out, model, init=str(source), loader='tensor')
    config = _config(out)
    assert (config['mean'], config['std']) == (C10_MEAN, C10_STD)
    assert (config['init']['mean'], config['init']['std']) == (C10_MEAN, C10_STD)

    export = export_run([out], tmp_path / 'export').path  # declares what the run used
    cfg = json.loads((export / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['mean'], cfg['std']) == (C10_MEAN, C10_STD)
    record = load_init(str(export))[1]  # an export's statistics: in its pretrained_cfg
    assert (record['mean'], record['std']) == (C10_MEAN, C10_STD)

    (source / 'config.json').unlink()  # bare weights record none: the model's cfg, as before
    assert 'mean' not in load_init(str(source / 'model.safetensors'))[1]


def test_a_copy_of_the_data_under_another_name_resumes(tmp_path):
    data, out = _data(tmp_path / 'mixed'), tmp_path / 'run'
    _train(data, out)
    copy = shutil.copytree(data, tmp_path / 'mixed_copy')
    _train(copy, out, resume=True)
    assert _config(out)['data'] == str(copy)
    # the tag is made of the folder's name: identity only where no fingerprint says which data it is
    fingerprint = _config(out)['data_fingerprint']
    assert identity_changes({'tag': 'mixed'}, {'tag': 'mixed_copy'}) == [('tag', 'mixed', 'mixed_copy')]
    assert identity_changes({'tag': 'mixed', 'data_fingerprint': fingerprint},
                            {'tag': 'mixed_copy', 'data_fingerprint': fingerprint}) == []
