"""A recipe is checked where it is made, and what a run records and publishes of its recipe is what it trained with."""
import json

import pytest
import torch

import zamzoo
from zamzoo.errors import UsageError
from zamzoo.publish import export_run
from zamzoo.recipes import get_recipe, list_recipes
from zamzoo.train import TrainConfig, recipe_lr, train
from zamzoo.train.reporting import Reporter, TqdmReporter

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.parametrize('milestones', [(120, 60, 160), (60, 60, 120), (-1, 60), (60.5,)])
def test_milestones_out_of_order_repeated_or_negative_are_refused(milestones):
    with pytest.raises(UsageError, match='milestones'):
        get_recipe('nam').replace(milestones=milestones)


@pytest.mark.parametrize('field, value', [('epochs', 0), ('batch_size', 0), ('lr', 0.0), ('lr', float('inf')),
                                          ('weight_decay', -1e-4), ('momentum', 1.5), ('gamma', 0.0),
                                          ('warmup_epochs', -1), ('schedule', 'step'), ('label_smoothing', 2.0),
                                          ('epochs', 1.5), ('batch_size', True),
                                          # a string read as True: hflip='no' flipped, nesterov='no' was Nesterov
                                          ('hflip', 'no'), ('nesterov', 'no'), ('drop_last', 0), ('sync_bn', None),
                                          ('normalization', {'cifar100': (1, 2)}),
                                          ('normalization', {'cifar100': ((0.5,) * 3, (0.2, 0.0, 0.2))})])
def test_a_recipe_that_cannot_train_is_refused_where_it_is_made(field, value):
    with pytest.raises(UsageError, match=f"recipe 'zam': {field}: expected"):
        get_recipe('zam').replace(**{field: value})


def test_nesterov_without_momentum_is_refused_where_the_recipe_is_made():
    """It passed TrainConfig.validate() and failed in torch's SGD once the run had opened its data."""
    with pytest.raises(UsageError, match="recipe 'zam': nesterov: Nesterov momentum needs a momentum > 0"):
        get_recipe('zam').replace(momentum=0.0, nesterov=True)


def test_the_runs_overrides_are_checked_by_the_recipe():
    with pytest.raises(UsageError, match="recipe 'zam': epochs: expected an integer >= 1, got 0"):
        TrainConfig(model='mobilenet_zam', data='unused', epochs=0).validate()


@pytest.mark.parametrize('name', list_recipes())
def test_lr_change_epochs_are_the_first_epochs_the_loop_trains_at_the_new_lr(name):
    recipe = get_recipe(name).replace(warmup_epochs=0)
    lrs = [recipe_lr(recipe, recipe.lr, epoch, 1, recipe.epochs) for epoch in range(recipe.epochs)]
    changes = tuple(epoch + 1 for epoch in range(1, recipe.epochs) if lrs[epoch] != lrs[epoch - 1])
    assert recipe.lr_change_epochs() == (changes if recipe.schedule == 'multistep' else ())


def test_an_exports_notes_and_card_name_the_recipe_the_run_used(tiny_cifar, tmp_path):
    """A run given a Recipe object (no --epochs/--lr overrides): the export names exactly the recipe it recorded."""
    used = get_recipe('zam').replace(epochs=1, batch_size=32, rotation=0.0, warmup_epochs=0, lr=0.05)
    train(TrainConfig(model='mobilenet_plain', data=str(tiny_cifar), device='cpu', out=str(tmp_path / 'run'),
                      recipe=used), reporter=Reporter())
    export = export_run([tmp_path / 'run'], tmp_path / 'export').path
    notes = json.loads((export / 'config.json').read_text())['pretrained_cfg']['notes']
    call = ("zamzoo.recipes.get_recipe('zam').replace(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0, "
            f"rotation=0.0) (version {used.version})")
    assert notes[0] == f'recipe: {call}'
    assert f'Training recipe:** {call}' in (export / 'README.md').read_text()
    assert eval(call.split(' (')[0], {'zamzoo': zamzoo}) == used  # the call gives the recipe back


def test_cifar10_is_normalised_with_the_nam_seeds_float_statistics():
    """The NAM seed's train_cifar100.py (`data_transforms_cifar10`) normalises CIFAR-10 with these 8-digit values; as
    float32 tensors (what Normalize divides by), not the 4-digit ones version 1 used (up to 4.2e-5 off)."""
    seed = torch.tensor([[0.49139968, 0.48215827, 0.44653124], [0.24703233, 0.24348505, 0.26158768]])
    for name in ('zam', 'nam', 'finetune'):
        assert torch.equal(torch.tensor(get_recipe(name).normalization['cifar10']), seed)


def test_the_model_cards_recipe_table_states_the_loops_lr_epochs_and_statistics():
    from zamzoo.bench.tables import recipes_table

    rows = {line.split('`')[1]: line for line in recipes_table().splitlines() if line.startswith('| `')}
    assert 'x0.2 from epochs 60, 120, 160' in rows['zam'] and 'x0.2 from epochs 61, 121, 161' in rows['nam']
    assert 'x0.1 from epochs 82, 123' in rows['spem']
    spem = next(line for line in recipes_table().splitlines() if line.startswith('- `spem`'))
    assert spem == '- `spem`: cifar100 and cifar10: mean (0.4914, 0.4822, 0.4465) std (0.2023, 0.1994, 0.201)'
    assert "each data set's own" not in recipes_table()


def test_an_image_folder_run_records_and_prints_the_augmentation_and_statistics_it_used(tmp_path, capsys):
    from conftest import write_images

    from zamzoo.data import FOLDER_CROP_SCALE
    from zamzoo.zoo.plan import plan_sweep, settings_conflict

    for split in ('train', 'val'):
        write_images(tmp_path / 'd' / split, {'a': 4, 'b': 4}, size=(32, 32))
    planned, = plan_sweep(['test_resnet'], ['folder'], [0], tmp_path / 'd', tmp_path / 'sweep', epochs=1, batch_size=4,
                          img_size=32, device='cpu')
    train(planned.config, reporter=TqdmReporter())  # --loader auto: the DataLoader on CPU
    assert settings_conflict(planned, 'finished') is None  # the sweep takes the run as its own
    config = json.loads((planned.folder / 'config.json').read_text())
    recipe = config['recipe']
    assert 'normalization' not in recipe and 'crop_padding' not in recipe     # neither applies to this data
    assert recipe['random_resized_crop_scale'] == list(FOLDER_CROP_SCALE)     # what folder_transforms crops with
    printed = capsys.readouterr().out
    assert 'cifar100' not in printed and 'crop_padding' not in printed
    assert f"random_resized_crop_scale  {FOLDER_CROP_SCALE}" in printed
    assert f"normalization              mean {tuple(config['mean'])} std {tuple(config['std'])}" in printed


def test_a_cifar_run_records_its_recipe_whole(tiny_cifar, tmp_path):
    train(TrainConfig(model='test_resnet', data=str(tiny_cifar), out=str(tmp_path / 'run'), epochs=1, batch_size=32,
                      device='cpu'), reporter=Reporter())
    config = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert config['recipe'] == json.loads(json.dumps(get_recipe('zam').replace(epochs=1, batch_size=32).to_dict()))
