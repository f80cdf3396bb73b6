"""A run of data of one's own started before config.json's `recipe` left out what does not apply to its data (it held
the whole recipe: normalization, crop_padding, no random_resized_crop_scale) is the same run as one recorded now:
it resumes, a sweep plans it as its own, and its seeds export together with newer seeds. A sweep of one's own data
exports and pushes (recording nothing) without a manifest; push prints the manifest it wrote."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import write_images
from test_installed_paths import _installed, _run, exports, hub  # noqa: F401 (fixtures)
from zamzoo.cli import main
from zamzoo.errors import ZamzooError
from zamzoo.train import TrainConfig, train
from zamzoo.train.run_files import CHECKPOINT_FILE, CONFIG_FILE
from zamzoo.train.run_folder import check_same_but_seed
from zamzoo.zoo.plan import plan_sweep, settings_conflict

pytestmark = pytest.mark.usefixtures('single_thread')


def _old_style(config: dict, recipe_dict: dict) -> dict:
    """`config` as a run recorded it before: the recipe whole (`recipe_dict`: Recipe.to_dict() as JSON holds it)."""
    recipe = dict(config['recipe'])
    assert 'normalization' not in recipe and 'crop_padding' not in recipe  # the new record leaves them out
    recipe.pop('random_resized_crop_scale')
    recipe.update(normalization=recipe_dict['normalization'], crop_padding=recipe_dict['crop_padding'])
    return dict(config, recipe=recipe)


def _make_old_style(folder):
    """Rewrite the run in `folder` (config.json and its checkpoint's copy) as recorded before the change."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    whole = json.loads(json.dumps(TrainConfig(**config['args']).resolve_recipe().to_dict()))
    old = _old_style(config, whole)
    (folder / CONFIG_FILE).write_text(json.dumps(old))
    state = torch.load(folder / CHECKPOINT_FILE, map_location='cpu', weights_only=True)
    state['config'] = _old_style(state['config'], whole)
    torch.save(state, folder / CHECKPOINT_FILE)


@pytest.fixture
def planned(tmp_path):
    """Two seeds of a one-epoch image-folder run (the DataLoader, on CPU); seed 0 rewritten as an old record."""
    for split in ('train', 'val'):
        write_images(tmp_path / 'd' / split, {'a': 3, 'b': 3}, size=(32, 32))
    runs = plan_sweep(['test_resnet'], ['folder'], [0, 1], tmp_path / 'd', tmp_path / 'sweep', epochs=1, batch_size=6,
                      img_size=32, lr=1e-9, device='cpu')
    for run in runs:
        train(run.config)
    assert json.loads((runs[0].folder / CONFIG_FILE).read_text())['loader'] == 'dataloader'
    _make_old_style(runs[0].folder)
    return runs


def test_an_old_style_folder_run_is_planned_resumed_and_exported_with_newer_seeds(planned):
    old, new = planned
    assert settings_conflict(old, 'finished') is None            # the sweep takes it as its own
    check_same_but_seed([old.folder, new.folder])                 # seeds of one model
    check_same_but_seed([new.folder, old.folder])
    train(TrainConfig(**dict(old.config.to_dict(), resume=True)))  # --resume accepts its checkpoint


def test_an_old_style_run_with_another_recipe_field_still_differs(planned):
    old, new = planned
    config = json.loads((old.folder / CONFIG_FILE).read_text())
    config['recipe']['weight_decay'] = 0.5
    (old.folder / CONFIG_FILE).write_text(json.dumps(config))
    assert 'recipe.weight_decay=0.5' in settings_conflict(old, 'finished')
    with pytest.raises(ZamzooError, match='weight_decay'):
        check_same_but_seed([old.folder, new.folder])


def _own_data_sweep(monkeypatch, tmp_path, exports):
    """export_sweep's arguments for a sweep of one finished image-folder run, with copies of the table files."""
    import zamzoo.zoo.export as zoo_export

    run = _run(tmp_path / 'run', 'folder', 'shapes', ['a', 'b', 'c'])
    groups = {('mobilenet_plain', 'folder'): [{'state': 'done', 'seed': 0, 'folder': run}]}
    monkeypatch.setattr(zoo_export, 'sweep_groups', lambda out: groups)
    repo = Path(__file__).resolve().parent.parent
    for name in ('README.md', 'MODEL_CARD.md'):
        shutil.copy(repo / name, tmp_path / name)
    return dict(min_seeds=1, staging=tmp_path / 'staging', push=True, readme=tmp_path / 'README.md',
                model_card=tmp_path / 'MODEL_CARD.md')


def test_an_installed_zamzoo_pushes_a_sweep_of_own_data_without_a_manifest(exports, hub, tmp_path, monkeypatch):
    from zamzoo.zoo.export import export_sweep

    _installed(monkeypatch)  # no --manifest: nothing of this sweep would be recorded, so none is needed
    result = export_sweep(tmp_path / 'sweep', **_own_data_sweep(monkeypatch, tmp_path, exports))
    assert result['errors'] == [] and [g['model'] for g in result['exported']] == ['mobilenet_plain']
    assert [c[0] for c in hub] == ['create_repo', 'upload_folder']


def test_a_manifest_nothing_was_recorded_in_skips_the_tables_without_an_error(exports, hub, tmp_path, monkeypatch):
    from zamzoo.zoo.export import export_sweep

    manifest = tmp_path / 'new-manifest.json'
    result = export_sweep(tmp_path / 'sweep', manifest=manifest, **_own_data_sweep(monkeypatch, tmp_path, exports))
    assert result['errors'] == [] and result['exported'] and not manifest.exists()
    assert result['tables_error'] is None and f'no manifest at {manifest}' in result['tables_skipped']


def test_push_prints_the_manifest_it_recorded_into(exports, hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HOME', str(tmp_path))
    assert main(['push', str(exports['cifar10']), '--manifest', '~/manifest.json']) == 0
    assert f'recorded in {tmp_path / "manifest.json"};' in capsys.readouterr().out
    assert (tmp_path / 'manifest.json').is_file()
