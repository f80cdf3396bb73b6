"""`--init`: the classifier follows the class names where the source records them, and a zoo name with a tag is a
zoo name, not a file."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import write_images
from zamzoo.cli import main
from zamzoo.errors import WeightsError
from zamzoo.train.build import create_model
from zamzoo.train.init import _weights_file, apply_init, load_init

TINY = 'test_resnet'


def _source(folder, classes, key='classes'):
    """A folder with a model's weights and a config.json naming its classes (a run's 'classes', an export's
    'label_names')."""
    torch.manual_seed(3)
    model = create_model(TINY, len(classes))
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps({key: list(classes)}))
    return model


def test_the_classifier_follows_the_class_names(tmp_path):
    source = _source(tmp_path / 'run', ['red', 'green', 'blue'])
    state, record = load_init(str(tmp_path / 'run'))
    assert record['classes'] == ['red', 'green', 'blue']
    head = source.get_classifier()

    same = create_model(TINY, 3)
    assert apply_init(same, state, 'run', ['red', 'green', 'blue'], record['classes']) == 'kept'
    assert torch.equal(same.get_classifier().weight, head.weight)

    reordered = create_model(TINY, 3)  # an image folder's order: sorted names
    assert apply_init(reordered, state, 'run', ['blue', 'green', 'red'], record['classes']) == 'reordered'
    assert torch.equal(reordered.get_classifier().weight, head.weight[[2, 1, 0]])
    assert torch.equal(reordered.get_classifier().bias, head.bias[[2, 1, 0]])
    x = torch.randn(2, 3, 32, 32)
    source.eval(), reordered.eval()
    torch.testing.assert_close(reordered(x), source(x)[:, [2, 1, 0]], rtol=0, atol=0)

    other = create_model(TINY, 3)
    built = other.get_classifier().weight.clone()
    assert apply_init(other, state, 'run', ['cat', 'dog', 'fox'], record['classes']) == 'reset'
    assert torch.equal(other.get_classifier().weight, built)  # the classifier as built: other classes
    assert torch.equal(other.state_dict()['conv1.0.weight'], state['conv1.0.weight'])  # the rest loaded


def test_an_export_folders_label_names_are_read(tmp_path):
    _source(tmp_path / 'export', ['a', 'b'], key='label_names')
    assert load_init(str(tmp_path / 'export'))[1]['classes'] == ['a', 'b']
    (tmp_path / 'bare').mkdir()
    save_file({'w': torch.zeros(1)}, str(tmp_path / 'bare' / 'model.safetensors'))
    assert load_init(str(tmp_path / 'bare' / 'model.safetensors'))[1]['classes'] is None


def test_a_run_started_from_other_classes_resets_the_classifier(tmp_path, capsys):
    _source(tmp_path / 'src', ['x', 'y', 'z'])
    data = write_images(tmp_path / 'abc', {'a': 3, 'b': 3, 'c': 3}, size=(32, 32))
    out = tmp_path / 'run'
    assert main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.34',
                 '--img-size', '32', '--epochs', '1', '--batch-size', '6', '--lr', '1e-9',
                 '--init', str(tmp_path / 'src'), '--out', str(out)]) == 0
    init = json.loads((out / 'config.json').read_text())['init']
    assert (init['classes'], init['head'], init['head_reset']) == (['x', 'y', 'z'], 'reset', True)
    printed = capsys.readouterr().out  # said on screen too, not only in config.json
    assert f"init from {tmp_path / 'src'} (sha256 {init['sha256'][:12]}); classifier re-initialised (other " \
           f"classes than the source's)\n" in printed


def test_a_zoo_name_with_a_tag_is_not_a_file(tmp_path, capsys):
    assert _weights_file('resnet18_zam.cifar10') is None and _weights_file('resnet18_zam') is None
    for missing in ('resnet50.pt', 'mobilenet_zam.safetensors', 'mobilenet_zam.cifar10x'):  # files, not tags
        with pytest.raises(WeightsError, match='no such file or folder'):
            load_init(missing)
    data = write_images(tmp_path / 'abc', {'a': 3, 'b': 3}, size=(32, 32))
    rc = main(['train', '--model', TINY, '--dataset', 'folder', '--data', str(data), '--holdout', '0.34',
               '--init', 'mobilenet_zam.cifar100', '--out', str(tmp_path / 'r')])
    err = capsys.readouterr().err
    assert rc == 2 and 'mobilenet_zam.cifar100' in err and 'no such file' not in err, err


def test_a_hub_repos_label_names_are_read_and_optional(tmp_path, monkeypatch):
    """hf-hub: from a hand-laid offline cache: the repo's config.json names the classes; a cache without it still
    gives the weights (no class names)."""
    import huggingface_hub.constants as hub_constants

    commit = 'a' * 40
    snapshot = tmp_path / 'cache' / 'models--local--src' / 'snapshots' / commit
    _source(snapshot, ['p', 'q'], key='label_names')
    (tmp_path / 'cache' / 'models--local--src' / 'refs').mkdir()
    (tmp_path / 'cache' / 'models--local--src' / 'refs' / 'main').write_text(commit)
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
    state, record = load_init('hf-hub:local/src')
    assert record['classes'] == ['p', 'q'] and 'fc.weight' in state
    (snapshot / 'config.json').unlink()
    assert load_init('hf-hub:local/src')[1]['classes'] is None
