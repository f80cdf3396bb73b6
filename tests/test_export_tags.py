"""An export says what its run did: a run on data of the user's own (an image folder, a Hugging Face dataset) never
takes the registry's CIFAR cfg, tag or repo, whatever its data is named; every snippet of its model card loads its
weights; its config.json names the recipe the run used."""
import json
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import zamzoo
from zamzoo.data import data_tag, folder_transforms, own_data_tag
from zamzoo.publish import export_run
from zamzoo.publish.export import ExportError
from zamzoo.recipes import get_recipe

MODEL = 'mobilenet_plain'
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def _run(folder, dataset, tag, classes, recipe='finetune', overrides=None):
    """A completed run folder as `zamzoo train` writes it (before own_data_tag, a folder named cifar10 recorded the
    tag 'cifar10')."""
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_file(timm.create_model(MODEL, num_classes=len(classes)).state_dict(), str(folder / 'model.safetensors'))
    config = dict(model=MODEL, dataset=dataset, tag=tag, seed=0, num_classes=len(classes), classes=list(classes),
                  mean=list(MEAN), std=list(STD), img_size=32, loader='dataloader', model_kwargs={},
                  recipe=get_recipe(recipe).replace(**(overrides or {})).to_dict(), recipe_name=recipe,
                  recipe_version=get_recipe(recipe).version,
                  overrides=overrides or {}, device='cpu')
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'results.json').write_text(json.dumps(dict(model=MODEL, dataset=dataset, recipe=recipe, seed=0,
                                                         epochs=1, top1=50.0, top5=90.0, code_commit='f' * 40,
                                                         official_data=dataset in ('cifar10', 'cifar100') or None)))
    (folder / 'metrics.jsonl').write_text(json.dumps(dict(epoch=1, train_loss=1.0, lr=0.1)) + '\n')
    return folder


def _pretrained_cfg(export):
    return json.loads((export / 'config.json').read_text())['pretrained_cfg']


@pytest.mark.parametrize('dataset,data,tag', [
    ('folder', 'cifar10', 'cifar10_folder'), ('folder', 'CIFAR100', 'CIFAR100_folder'),
    ('folder', 'my data', 'my_data'), ('hf', 'uoft-cs/cifar10', 'cifar10_hf'), ('hf', 'user/flowers', 'flowers'), ('cifar10', 'anywhere', 'cifar10')])
def test_own_data_never_takes_a_cifar_tag(tmp_path, dataset, data, tag):
    data = tmp_path / data if dataset == 'folder' else data
    assert data_tag(dataset, data) == tag
    assert dataset == 'cifar10' or own_data_tag(dataset, tag) == tag  # a tag made here stays as it is


@pytest.mark.parametrize('dataset,classes', [('folder', CIFAR10_CLASSES), ('folder', ['a', 'b', 'c']),
                                             ('hf', CIFAR10_CLASSES)])
def test_a_run_on_own_data_named_cifar10_exports_what_the_run_did(tmp_path, dataset, classes):
    run = _run(tmp_path / 'run', dataset, 'cifar10', classes)
    result = export_run([run], tmp_path / 'export')
    export = result.path
    cfg = _pretrained_cfg(export)
    assert result.tag == cfg['tag'] == f'cifar10_{dataset}'
    assert json.loads((export / 'results.json').read_text())['repo_id'] == f'zamzoo/{MODEL}.cifar10_{dataset}'
    assert (tuple(cfg['mean']), tuple(cfg['std'])) == (MEAN, STD) and cfg['num_classes'] == len(classes)
    assert (cfg['crop_pct'], cfg['interpolation']) == (0.875, 'bilinear')
    card = (export / 'README.md').read_text()
    assert f'**Training dataset:** cifar10_{dataset}' in card and 'CIFAR-10' not in card

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 40, 3), dtype=np.uint8))
    timm_x = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg), is_training=False)(img)
    scored = folder_transforms(get_recipe('finetune'), MEAN, STD, 32, train=False)(img)
    torch.testing.assert_close(timm_x, scored, rtol=0, atol=1e-6)


def test_a_run_on_own_data_cannot_be_given_a_cifar_tag(tmp_path):
    run = _run(tmp_path / 'run', 'folder', 'mine', CIFAR10_CLASSES)
    with pytest.raises(ExportError, match="--tag cifar10: .*CIFAR weights.*e.g. --tag cifar10_folder"):
        export_run([run], tmp_path / 'export', tag='cifar10')
    assert not (tmp_path / 'export').exists()
    assert export_run([run], tmp_path / 'export', tag='flowers').tag == 'flowers'


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache, offline, with no endpoint that answers."""
    from huggingface_hub import constants
    cache = tmp_path / 'hf-cache'
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    monkeypatch.delenv('HF_TOKEN', raising=False)
    return cache


def test_every_snippet_of_an_own_data_card_loads_its_weights(tmp_path, offline_hub, monkeypatch):
    from zamzoo.publish.hubcache import cache_export
    from zamzoo.train.init import load_init
    export = export_run([_run(tmp_path / 'run', 'folder', 'mixed', ['a', 'b', 'c'])], tmp_path / 'export').path
    repo_id = json.loads((export / 'results.json').read_text())['repo_id']
    cache_export(export, offline_hub, repo_id=repo_id)
    card = (export / 'README.md').read_text()
    usage = card[card.index('### Image Classification'):card.index('### With 🤗 transformers')]
    usage += card[card.index('### Feature Map Extraction'):card.index('## Results')]
    blocks = re.findall(r'```python\n(.*?)```', usage, re.S)
    assert len(blocks) == 4 and f"create_model('{MODEL}.mixed'" not in card
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / 'image.png')
    monkeypatch.chdir(tmp_path)
    scope = {}
    for code in blocks:  # each as the card shows it, in order (the later ones use `transforms` and `img`)
        exec(code, scope)
    assert "timm.create_model('local-dir:PATH', pretrained=True)" in card
    from_disk = timm.create_model(f'local-dir:{export}', pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(scope['output'], from_disk(scope['transforms'](scope['img']).unsqueeze(0)))
    assert scope['embedding'].shape == (1, from_disk.num_features)

    command = re.search(r'`zamzoo train --model (\S+) --init (\S+) --dataset folder --data DIR`', card)
    assert command and command.groups() == (MODEL, f'hf-hub:{repo_id}') and '--pretrained' not in card
    state, record = load_init(command.group(2))
    torch.testing.assert_close(state['fc.weight'], timm.create_model(f'hf-hub:{repo_id}', pretrained=True).fc.weight)
    assert record['classes'] == ['a', 'b', 'c']


def test_a_pretrained_cfg_naming_a_repo_of_its_own_loads_that_repo(tmp_path, offline_hub, monkeypatch):
    """timm's `pretrained_cfg=` holding a Hub repo other than the registry's is the user's source, as the same repo in
    `pretrained_cfg_overlay` is: loaded, where the guard refused it as unpublished (or, published, loaded the
    registry's weights instead)."""
    from safetensors.torch import load_file
    from zamzoo.publish.hubcache import cache_export

    export = export_run([_run(tmp_path / 'run', 'cifar10', 'cifar10', CIFAR10_CLASSES, recipe='zam')],
                        tmp_path / 'export').path
    cache_export(export, offline_hub, repo_id='me/my-weights')
    (tmp_path / 'manifest.json').write_text('{"schema": 1, "checkpoints": []}')  # nothing published
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(tmp_path / 'manifest.json'))
    cfg = timm.models.get_pretrained_cfg(f'{MODEL}.cifar10').to_dict()
    model = timm.create_model(MODEL, pretrained=True, pretrained_cfg=dict(cfg, hf_hub_id='me/my-weights'))
    weights = load_file(export / 'model.safetensors')
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(zamzoo.errors.WeightsError, match=f'no pretrained weights are published for {MODEL}.cifar10'):
        timm.create_model(MODEL, pretrained=True, pretrained_cfg=cfg)  # the registry's own cfg: its own weights


def test_a_cifar_card_names_its_registered_weights(tmp_path):
    export = export_run([_run(tmp_path / 'run', 'cifar10', 'cifar10', CIFAR10_CLASSES, recipe='zam')],
                        tmp_path / 'export').path
    card = (export / 'README.md').read_text()
    assert f"timm.create_model('{MODEL}.cifar10', pretrained=True)" in card
    assert f'zamzoo train --model {MODEL} --init {MODEL}.cifar10 ' in card and '--pretrained' not in card


@pytest.mark.parametrize('dataset,tag', [('folder', 'mine'), ('cifar10', 'cifar10')])
def test_the_exports_notes_name_the_runs_recipe(tmp_path, dataset, tag):
    run = _run(tmp_path / 'run', dataset, tag, CIFAR10_CLASSES, overrides=dict(epochs=1, batch_size=32))
    notes = _pretrained_cfg(export_run([run], tmp_path / 'export').path)['notes']
    assert notes[0] == ("recipe: zamzoo.recipes.get_recipe('finetune').replace(epochs=1, batch_size=32) "
                        f"(version {get_recipe('finetune').version})")
    assert eval(notes[0][len('recipe: '):].split(' (')[0], {'zamzoo': __import__('zamzoo')}).epochs == 1


def test_a_bare_checkpoints_notes_do_not_claim_a_recipe(tmp_path):
    torch.manual_seed(0)
    save_file(timm.create_model(MODEL, num_classes=10).state_dict(), str(tmp_path / 'w.safetensors'))
    export = export_run([tmp_path / 'w.safetensors'], tmp_path / 'export', model=MODEL, tag='cifar10').path
    assert _pretrained_cfg(export)['notes'][0] == 'recipe: unknown (bare checkpoint)'


@pytest.mark.parametrize('tag', ['cifar10', 'cifar100'])
def test_a_bare_cifar_checkpoints_export_names_the_cifar_classes(tmp_path, tag):
    """No run records the class names, but the tag says which data set's labels the rows are: a pipeline shows
    'cat', not 'LABEL_3'."""
    classes = CIFAR10_CLASSES if tag == 'cifar10' else None
    save_file(timm.create_model(MODEL, num_classes=10 if classes else 100).state_dict(), str(tmp_path / 'w.safetensors'))
    export = export_run([tmp_path / 'w.safetensors'], tmp_path / 'export', model=MODEL, tag=tag).path
    names = json.loads((export / 'config.json').read_text())['label_names']
    if classes:
        assert names == classes
    else:  # CIFAR-100's meta lists its fine labels in alphabetical order
        assert len(set(names)) == 100 and names == sorted(names) and names[:2] == ['apple', 'aquarium_fish']
        assert names[30] == 'dolphin' and names[-1] == 'worm'
    assert list(timm.models.get_pretrained_cfg(f'{MODEL}.{tag}').label_names) == names


def test_a_sweep_leaves_out_two_groups_whose_exports_would_share_a_folder(tmp_path, monkeypatch):
    """An image folder and a Hugging Face data set of one name, swept for one model, have one export folder: the
    second export replaced the first, and both were listed as exported. Both are refused, with the way out."""
    import zamzoo.zoo.export as zoo_export

    groups = {(MODEL, kind): [{'seed': 0, 'state': 'done', 'folder': str(_run(tmp_path / kind, kind, 'mine', 'ab'))}]
              for kind in ('folder', 'hf')}
    monkeypatch.setattr(zoo_export, 'sweep_groups', lambda out: groups)
    monkeypatch.setattr(zoo_export, 'table_destinations', lambda *args: None)
    result = zoo_export.export_sweep(tmp_path, min_seeds=1, staging=tmp_path / 'staging')
    assert [(g['model'], g['dataset']) for g in result['errors']] == [(MODEL, 'folder'), (MODEL, 'hf')]
    assert all(g['error'] == f"{MODEL} on folder and {MODEL} on hf would all be exported to "
               f"{tmp_path / 'staging' / (MODEL + '.mine')}, each replacing the other: export each with "
               "`zamzoo export RUN... --out FOLDER`" for g in result['errors'])
    assert result['exported'] == [] and not any((tmp_path / 'staging').glob(f'{MODEL}*'))
    del groups[(MODEL, 'hf')]  # alone, the group is exported
    assert [g['folder'] for g in zoo_export.export_sweep(tmp_path, min_seeds=1, staging=tmp_path / 'staging')[
        'exported']] == [str(tmp_path / 'staging' / f'{MODEL}.mine')]
