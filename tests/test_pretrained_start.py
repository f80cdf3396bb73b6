"""Published weights meet a user's data (`train --pretrained`, `--init ZOO_NAME`, `eval --pretrained`): their
classifier scores the classes their cfg names, so on other classes it is re-initialised (train) or refused (eval),
never scored as if it knew them; and a run records which published weights it started from, as `--init` does."""
import json

import pytest
import timm
import torch

from conftest import write_images
from test_publish import MODEL, TAG, exported, hub, published, runs  # noqa: F401  (fixtures)
from zamzoo.cli import main
from zamzoo.pretrained import find_checkpoint
from zamzoo.train.init import apply_init, fit_pretrained_head, load_init

CIFAR100_NAMES = list(timm.models.get_pretrained_cfg(f'{MODEL}.{TAG}').label_names)


def _head(model):
    return model.get_classifier().weight.detach().clone()


def test_eval_of_published_weights_on_other_classes_is_refused(published, tmp_path, capsys):
    """The 100-class classifier was replaced by a random 3-class one and scored: a new top-1 at every call."""
    data = tmp_path / 'abc'
    for side in ('train', 'val'):
        write_images(data / side, {'a': 2, 'b': 2, 'c': 2}, size=(32, 32))
    args = ['eval', '--model', MODEL, '--pretrained', '--dataset', 'folder', '--data', str(data)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{MODEL}'s published weights score 100 classes, folder at {data} has 3" in err
    assert f'zamzoo train --model {MODEL} --pretrained' in err


def test_eval_of_published_weights_on_their_own_classes_scores_their_classifier(published, tmp_path, capsys):
    data = tmp_path / 'c100'
    for side in ('train', 'val'):
        write_images(data / side, {name: 1 for name in CIFAR100_NAMES}, size=(32, 32))
    args = ['eval', '--model', MODEL, '--pretrained', '--dataset', 'folder', '--data', str(data)]
    assert main(args) == 0 and main(args) == 0
    first, second = (line for line in capsys.readouterr().out.splitlines() if 'top-1' in line)
    assert first == second and '(100 images evaluated' in first


def test_the_classifier_of_published_weights_follows_the_class_names(published):
    _, _, _, weights = published
    names = CIFAR100_NAMES
    for classes, action, head in ((names, 'kept', weights['fc.weight']),
                                  (names[::-1], 'reordered', weights['fc.weight'].flip(0)),
                                  ([f'my_class_{i}' for i in range(100)], 'reset', None)):
        torch.manual_seed(0)
        net = timm.create_model(MODEL, pretrained=True)
        assert fit_pretrained_head(net, classes, names) == action
        assert torch.equal(_head(net), head) if head is not None else not torch.equal(_head(net), weights['fc.weight'])
        assert torch.equal(net.state_dict()['stem.conv.weight'], weights['stem.conv.weight'])  # the rest as published
    net = timm.create_model(MODEL, pretrained=True)
    assert fit_pretrained_head(net, names, names, reset=True) == 'reset'  # a recipe's reset_head
    assert not torch.equal(_head(net), weights['fc.weight'])
    net = timm.create_model(MODEL, pretrained=True, num_classes=3)
    built = _head(net)  # timm loaded no classifier: it stays as built
    assert fit_pretrained_head(net, ['a', 'b', 'c'], names) == 'reset' and torch.equal(_head(net), built)


def test_init_from_a_zoo_name_resets_a_classifier_of_other_classes(published):
    """A zoo name's record named no classes: its CIFAR-100 rows were kept for any 100 classes of the user's."""
    _, _, _, weights = published
    state, record = load_init(MODEL)
    assert record['classes'] == CIFAR100_NAMES
    net = timm.create_model(MODEL)
    assert apply_init(net, state, MODEL, [f'my_class_{i}' for i in range(100)], record['classes']) == 'reset'
    assert not torch.equal(_head(net), weights['fc.weight'])


def test_a_pretrained_run_records_the_weights_it_started_from(published, tmp_path, capsys):
    """config.json said `"pretrained": true, "init": null`: no name, no sha256, nothing on the card."""
    _, manifest, _, _ = published
    data = write_images(tmp_path / 'abc', {'a': 3, 'b': 3, 'c': 3}, size=(32, 32))
    out = tmp_path / 'run'
    assert main(['train', '--model', MODEL, '--pretrained', '--dataset', 'folder', '--data', str(data),
                 '--holdout', '0.34', '--epochs', '1', '--batch-size', '6', '--out', str(out)]) == 0
    init = json.loads((out / 'config.json').read_text())['init']
    sha256 = find_checkpoint(MODEL, TAG, manifest)['sha256']
    assert (init['source'], init['sha256'], init['head']) == (f'{MODEL}.{TAG}', sha256, 'reset')
    assert f'init from {MODEL}.{TAG} (sha256 {sha256[:12]}); classifier' in capsys.readouterr().out
    assert main(['export', str(out), '--out', str(tmp_path / 'export')]) == 0
    card = (tmp_path / 'export' / 'README.md').read_text()
    assert f'**Initial weights:** {MODEL}.{TAG} (sha256 {sha256})' in card


def test_a_start_from_weights_no_manifest_lists_is_said_without_a_checksum():
    """timm's own weights (`--pretrained` on a timm model) have no manifest record: the line raised a TypeError."""
    from zamzoo.train.reporting import format_init
    assert format_init({'source': 'resnet18.a1_in1k', 'sha256': None, 'head': 'kept'}).startswith(
        'init from resnet18.a1_in1k (sha256 unknown); classifier')


def test_pretrained_names_without_weights_are_one_line(tmp_path, capsys):
    """timm's RuntimeErrors ("No pretrained weights exist", "Invalid pretrained tag") ended in tracebacks."""
    data = tmp_path / 'ab'
    for side in ('train', 'val'):
        write_images(data / side, {'a': 1, 'b': 1}, size=(32, 32))
    for model, said in (('mobilenetv2_035', 'No pretrained weights exist for mobilenetv2_035'),
                        (f'{MODEL}.badtag', f'Invalid pretrained tag (badtag) for {MODEL}. (known: {MODEL}.cifar100')):
        for command in (['eval'], ['train', '--out', str(tmp_path / 'run')]):
            assert main([*command, '--model', model, '--pretrained', '--dataset', 'folder', '--data', str(data)]) == 2
            err = capsys.readouterr().err
            assert said in err and 'Traceback' not in err, err
    assert not (tmp_path / 'run').exists()


def test_seeds_of_a_pretrained_run_from_before_its_init_record_are_one_model(tmp_path):
    """A --pretrained run recorded `init: null` before; the seeds trained before and after were refused together."""
    from conftest import write_cifar_run
    from zamzoo.train.run_folder import check_same_but_seed
    folders = [tmp_path / f's{seed}' for seed in (0, 1)]
    for seed, folder in enumerate(folders):
        write_cifar_run(folder, MODEL, seed, 60.0, 80.0)
        config = json.loads((folder / 'config.json').read_text())
        init = None if seed == 0 else {'source': f'{MODEL}.{TAG}', 'sha256': 'a' * 64, 'head': 'kept'}
        (folder / 'config.json').write_text(json.dumps(dict(config, pretrained=True, init=init)))
    check_same_but_seed(folders)
    config = json.loads((folders[0] / 'config.json').read_text())  # not --pretrained: another start, refused
    (folders[0] / 'config.json').write_text(json.dumps(dict(config, pretrained=False)))
    with pytest.raises(Exception, match='the runs differ in more than the seed'):
        check_same_but_seed(folders)


def test_eval_of_weights_not_published_says_so_before_anything_about_classes(hub, tmp_path, capsys):
    """On other classes, unpublished weights were refused as published ones: 'fine-tune the weights first'."""
    data = tmp_path / 'abc'
    for side in ('train', 'val'):
        write_images(data / side, {'a': 1, 'b': 1, 'c': 1}, size=(32, 32))
    assert main(['eval', '--model', MODEL, '--pretrained', '--dataset', 'folder', '--data', str(data)]) == 2
    err = capsys.readouterr().err
    assert f'no pretrained weights are published for {MODEL}.{TAG}' in err and 'fine-tune' not in err, err
