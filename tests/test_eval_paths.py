"""Evaluation scores what it is given as it was trained or declared: every held-out image exactly once under
torch.distributed (gloo, 2 CPU processes), a run's --model-kwargs, the class count a run recorded for integer
labels, and an export folder's own preprocessing (timm's resolve_data_config + create_transform)."""
import json

import numpy as np
import pytest
import torch

from conftest import write_images
from zamzoo.train import TrainConfig, evaluate, train
from zamzoo.train import distributed as D
from zamzoo.train.build import create_model

pytestmark = pytest.mark.usefixtures('single_thread')

TINY = 'test_resnet'



# ------------------------------------------------------------------------------------------------ DDP evaluation

def _eval_sums(n: int, loader: str, rank: int = 0, world_size: int = 1) -> dict:
    """The training loop's evaluation (`evaluate_loader`, then `_reduce`: summed over ranks) of a seeded linear
    model on the first `n` of 9 seeded 8x8 images, batches of 4, with this rank's part of each batch."""
    from zamzoo.data.loaders import DataLoaderBatches, PilImages, cifar_transforms
    from zamzoo.data.tensor_loader import TensorLoader
    from zamzoo.train.loop import _reduce, evaluate_loader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8, generator=g)[:n]
    targets = torch.randint(0, 3, (9,), generator=g)[:n]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    info = D.DistInfo(rank=rank, world_size=world_size)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if loader == 'tensor':
        batches = TensorLoader(images, targets, 4, mean, std, train=False, rank=rank, world_size=world_size)
    else:
        batches = DataLoaderBatches(PilImages(images, targets), 4, cifar_transforms(None, mean, std, False),
                                    train=False, rank=rank, world_size=world_size)
    return _reduce(evaluate_loader(model, batches, device=torch.device('cpu'), amp_dtype=None, num_classes=3), info)


def _ddp_worker(rank: int, world_size: int, store: str, out: str):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world_size)
    try:
        result = {f'{loader}/{n}': _eval_sums(n, loader, rank, world_size)
                  for loader in ('tensor', 'dataloader') for n in (9, 1)}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(out, 'w') as f:
            json.dump(result, f)


def test_distributed_evaluation_scores_every_image_once_as_one_process_does(tmp_path):
    """9 images in batches of 4 over 2 ranks: the last batch of one image is scored by rank 0 alone (it was dropped:
    test_images 8 of 9); one image over 2 ranks: rank 1 has nothing and still joins the all-reduce (every rank
    failed on 0 images). Both loaders, against one process."""
    import torch.multiprocessing as mp
    out = tmp_path / 'ddp.json'
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'store'), str(out)), nprocs=2, join=True)
    ddp = json.loads(out.read_text())
    assert sorted(ddp) == ['dataloader/1', 'dataloader/9', 'tensor/1', 'tensor/9']
    for key, sums in ddp.items():
        loader, n = key.split('/')
        single = _eval_sums(int(n), loader)
        assert sums['count'] == single['count'] == int(n), key
        assert sums['top1'] == single['top1'] and sums['top5'] == single['top5'], key
        assert sums['loss_sum'] == pytest.approx(single['loss_sum'], rel=1e-6), key


# ------------------------------------------------------------------------------------------------ run folders

def test_eval_of_a_run_builds_the_model_with_its_model_kwargs(tmp_path):
    """A run trained with --model-kwargs global_pool=max (64x64 images: a 2x2 map to pool) is scored with max
    pooling, as its own evaluation was; with timm's default average pooling the same weights score otherwise."""
    data = tmp_path / 'pets'
    write_images(data / 'train', {'cat': 6, 'dog': 6}, size=(64, 64))
    write_images(data / 'val', {'cat': 3, 'dog': 3}, size=(64, 64), seed=1)
    out = tmp_path / 'run'
    result = train(TrainConfig(model=TINY, data=str(data), dataset='folder', epochs=1, batch_size=4, img_size=64,
                               seed=1, device='cpu', model_kwargs={'global_pool': 'max'}, out=str(out)))
    r = evaluate(TINY, str(data), 'folder', checkpoint=out, device='cpu')
    assert r['images'] == 6
    assert r['loss'] == pytest.approx(result['test_loss'], rel=1e-5)
    assert r['top1'] == pytest.approx(result['top1'])


def _int_label_hf(path, counts):
    """A Hugging Face dataset saved to `path`: one 'train' split of 20x24 images, integer labels (no ClassLabel),
    `counts[c]` rows of class c."""
    datasets = pytest.importorskip('datasets')
    from PIL import Image
    rng = np.random.default_rng(0)
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    images = [Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in labels]
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.Value('int64')})
    datasets.Dataset.from_dict({'image': images, 'label': labels}, features=features).save_to_disk(str(path))
    return path


def test_eval_of_int_labels_takes_the_runs_classes_not_the_held_out_rows(tmp_path, monkeypatch):
    """Integer labels, 8/8/2 rows, --holdout 0.25: no row of class 2 is held out. The run records 3 classes and
    its own held-out images are scored as the run scored them; labels beyond the run's classes are refused."""
    datasets = pytest.importorskip('datasets')
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf-cache'))
    from zamzoo.data import DataSource, open_data
    from zamzoo.errors import DataError
    data = _int_label_hf(tmp_path / 'ints', (8, 8, 2))
    out = tmp_path / 'run'
    result = train(TrainConfig(model=TINY, data=str(data), dataset='hf', holdout=0.25, epochs=1, batch_size=4,
                               img_size=32, seed=1, device='cpu', out=str(out)))
    assert json.loads((out / 'config.json').read_text())['classes'] == ['0', '1', '2']
    r = evaluate(TINY, str(data), 'hf', checkpoint=out, device='cpu')
    assert r['images'] == result['test_images'] == 4
    assert r['loss'] == pytest.approx(result['test_loss'], rel=1e-5) and r['top1'] == pytest.approx(result['top1'])

    wider = _int_label_hf(tmp_path / 'wider', (2, 2, 2, 2))
    with pytest.raises(DataError, match=r'label 3 is outside the 2 classes the checkpoint was trained on'):
        open_data(DataSource('hf', str(wider), holdout=0.5, classes=['0', '1']), train=False)
    assert open_data(DataSource('hf', str(wider), holdout=0.5, classes=list('0123456')), train=False).num_classes == 7


# ------------------------------------------------------------------------------------------------ export folders

def test_eval_of_an_export_folder_uses_its_declared_preprocessing_as_timm_does(tiny_cifar, tmp_path):
    """An export folder (timm's save_for_hf: config.json with model_args and a pretrained_cfg) declaring CIFAR-10's
    normalisation, crop_pct 0.875 and bicubic resizing, and global_pool max: `zamzoo eval` scores it as timm's
    `create_model('local-dir:...')` + `create_transform(**resolve_data_config(model=...))` do (the model's default
    cfg has ImageNet's normalisation and the CIFAR path no crop)."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models import save_for_hf

    from zamzoo.data.cifar import cifar_dataset
    torch.manual_seed(0)
    net = timm.create_model(TINY, num_classes=10, global_pool='max')
    declared = {'mean': (0.4914, 0.4822, 0.4465), 'std': (0.247, 0.2435, 0.2616), 'crop_pct': 0.875,
                'interpolation': 'bicubic', 'input_size': (3, 32, 32)}
    export = tmp_path / 'export'
    save_for_hf(net, str(export), safe_serialization=True, data_config=declared)
    config = json.loads((export / 'config.json').read_text())
    assert config['model_args']['global_pool'] == 'max' and config['pretrained_cfg']['crop_pct'] == 0.875

    ref = timm.create_model(f'local-dir:{export}', pretrained=True).eval()
    data_cfg = resolve_data_config(model=ref)
    assert tuple(data_cfg['mean']) == declared['mean'] and data_cfg['crop_pct'] == 0.875
    transform = create_transform(**data_cfg)
    test = cifar_dataset(tiny_cifar, 'cifar10', train=False)
    x = torch.stack([transform(test[i][0]) for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        logits = ref(x)
    for checkpoint in (export, export / 'model.safetensors'):
        r = evaluate(TINY, tiny_cifar, 'cifar10', checkpoint=checkpoint, device='cpu', batch_size=7)
        assert r['images'] == 32 and tuple(r['mean']) == declared['mean'], checkpoint
        assert r['loss'] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
        assert r['top1'] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())


def test_eval_of_an_export_whose_config_timm_cannot_build_says_so(tiny_cifar, tmp_path):
    """An edited export config.json (a model argument the model does not take) is one clear error, not timm's
    traceback."""
    import timm
    from timm.models import save_for_hf

    from zamzoo.errors import WeightsError
    export = tmp_path / 'export'
    save_for_hf(timm.create_model(TINY, num_classes=10), str(export), safe_serialization=True)
    config = json.loads((export / 'config.json').read_text())
    config['model_args'] = dict(config.get('model_args') or {}, not_an_argument=1)
    (export / 'config.json').write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r'config.json is not an export config timm can build a model from '
                                           r'\(TypeError: .*not_an_argument.*\); export the run again'):
        evaluate(TINY, tiny_cifar, 'cifar10', checkpoint=export, device='cpu')


def test_a_runs_weights_file_away_from_its_folder_is_scored_as_its_run_and_only_as_its_model(tmp_path):
    """checkpoint.pt records its run's config and model.safetensors its model: copied out of the run folder, the
    checkpoint was built with timm's default pooling, and either file was scored as any --model whose parameters
    fit it (the zero-parameter attentions all do)."""
    import shutil

    from zamzoo.errors import UsageError

    data = tmp_path / 'pets'
    write_images(data / 'train', {'cat': 6, 'dog': 6}, size=(64, 64))
    write_images(data / 'val', {'cat': 3, 'dog': 3}, size=(64, 64), seed=1)
    out, away = tmp_path / 'run', tmp_path / 'away'
    result = train(TrainConfig(model='resnet18_zam', data=str(data), dataset='folder', epochs=1, batch_size=4,
                               img_size=64, seed=1, device='cpu', model_kwargs={'global_pool': 'max'}, out=str(out)))
    away.mkdir()
    for name in ('checkpoint.pt', 'model.safetensors'):
        shutil.copy(out / name, away / name)
    r = evaluate('resnet18_zam', str(data), checkpoint=away / 'checkpoint.pt', device='cpu')  # its data set: folder
    assert r['loss'] == pytest.approx(result['test_loss'], rel=1e-5) and r['top1'] == pytest.approx(result['top1'])
    for name in ('checkpoint.pt', 'model.safetensors'):
        with pytest.raises(UsageError, match="--model resnet18_simam but the checkpoint's run is resnet18_zam"):
            evaluate('resnet18_simam', str(data), 'folder', checkpoint=away / name, device='cpu')


def test_eval_of_zamzoos_own_export_of_a_run_scores_it_as_the_run_did(tmp_path):
    """`zamzoo export RUN` writes a results.json next to the weights but no metrics.jsonl: it is an export, not a
    run folder missing a file, and it is scored with the preprocessing it declares, which is the run's."""
    from zamzoo.publish import export_run
    data = tmp_path / 'pets'
    write_images(data / 'train', {'cat': 6, 'dog': 6})
    write_images(data / 'val', {'cat': 3, 'dog': 3}, seed=1)
    out = tmp_path / 'run'
    result = train(TrainConfig(model='mobilenet_plain', data=str(data), dataset='folder', epochs=1, batch_size=4,
                               seed=1, device='cpu', out=str(out)))
    export = export_run([out], tmp_path / 'export').path
    r = evaluate('mobilenet_plain', str(data), 'folder', checkpoint=export, device='cpu')
    assert r['images'] == 6 and r['loss'] == pytest.approx(result['test_loss'], rel=1e-4)


def test_eval_scores_each_class_by_its_name_and_refuses_other_names(tmp_path):
    """The same export with its classifier rows and class names in another order (as a Hugging Face dataset's own
    class order meets an image folder's sorted one) scores exactly as the original; data with class names the
    checkpoint was not trained on is refused, not scored against the wrong rows."""
    from safetensors.torch import load_file, save_file
    from zamzoo.errors import DataError
    from zamzoo.publish import export_run
    data = tmp_path / 'animals'
    write_images(data / 'train', {'cat': 4, 'cow': 4, 'dog': 4})
    write_images(data / 'val', {'cat': 3, 'cow': 2, 'dog': 1}, seed=1)
    out = tmp_path / 'run'
    train(TrainConfig(model='mobilenet_plain', data=str(data), dataset='folder', epochs=1, batch_size=4, seed=1,
                      device='cpu', out=str(out)))
    export = export_run([out], tmp_path / 'export').path
    turned = tmp_path / 'turned'
    turned.mkdir()
    config = json.loads((export / 'config.json').read_text())
    assert config['label_names'] == ['cat', 'cow', 'dog']
    config['label_names'] = ['dog', 'cat', 'cow']
    (turned / 'config.json').write_text(json.dumps(config))
    order = [2, 0, 1]
    weights = load_file(export / 'model.safetensors')
    save_file({k: v[order] if k.startswith('fc.') else v for k, v in weights.items()},
              turned / 'model.safetensors')
    scores = [evaluate('mobilenet_plain', str(data), 'folder', checkpoint=c, device='cpu') for c in (export, turned)]
    assert scores[0]['top1'] == scores[1]['top1'] and scores[0]['loss'] == pytest.approx(scores[1]['loss'], rel=1e-6)
    for checkpoint in (export, out):  # the data set's kind as the export and the run recorded it
        assert evaluate('mobilenet_plain', str(data), checkpoint=checkpoint, device='cpu')['loss'] == scores[0]['loss']
    other = tmp_path / 'other'
    write_images(other / 'train', {'cat': 2, 'cow': 2, 'pig': 2})
    write_images(other / 'val', {'cat': 1, 'cow': 1, 'pig': 1}, seed=2)
    with pytest.raises(DataError, match=r"only in the checkpoint: 'dog'; only in .*other: 'pig'"):
        evaluate('mobilenet_plain', str(other), 'folder', checkpoint=export, device='cpu')


def test_eval_of_a_mistyped_checkpoint_says_so_before_opening_the_data(tmp_path):
    """Without --dataset, a checkpoint path that does not exist was reported as missing CIFAR-100 data."""
    from zamzoo.errors import NotFoundError
    with pytest.raises(NotFoundError, match=r'^checkpoint not found: .*no_such_run \(expected a run folder'):
        evaluate('test_resnet', str(tmp_path), checkpoint=tmp_path / 'no_such_run', device='cpu')


def test_eval_refuses_a_recipe_on_data_of_ones_own(tmp_path):
    """--recipe (CIFAR's statistics) was ignored on an image folder: the printed mean and std were the model's cfg's."""
    from safetensors.torch import save_file
    from zamzoo.errors import UsageError
    write_images(tmp_path / 'data' / 'val', {'a': 1, 'b': 1})
    save_file(create_model('test_resnet', 2).state_dict(), str(tmp_path / 'w.safetensors'))
    with pytest.raises(UsageError, match="--recipe gives CIFAR's normalisation: on --dataset folder"):
        evaluate('test_resnet', str(tmp_path / 'data'), 'folder', checkpoint=tmp_path / 'w.safetensors',
                 recipe='spem', device='cpu')


def test_eval_of_a_model_whose_outputs_are_nan_is_refused(tiny_cifar, tmp_path):
    """A NaN classifier bias made every logit NaN: eval still printed a top-1 and a top-5 (argmax of NaNs) and exit 0."""
    from safetensors.torch import save_file

    from zamzoo.errors import NonFiniteError

    state = create_model(TINY, 10).state_dict()
    state['fc.bias'][0] = float('nan')
    save_file(state, str(tmp_path / 'model.safetensors'))
    with pytest.raises(NonFiniteError, match=rf'{TINY}: its outputs on .* hold NaN or infinity \(the loss over \d+ '
                                             r'images is nan\); the scores would mean nothing'):
        evaluate(TINY, str(tiny_cifar), 'cifar10', checkpoint=tmp_path / 'model.safetensors', device='cpu')


def test_eval_normalises_as_the_weights_record_and_refuses_a_recipe_that_would_be_ignored(tiny_cifar, tmp_path):
    """A run trained under --recipe spem: its folder and its model.safetensors away from it (whose metadata records
    the recipe) are evaluated with spem's statistics; --recipe zam was ignored without a word for the folder, and the
    bare file was normalised with the model's cfg."""
    import shutil

    from zamzoo.errors import UsageError
    from zamzoo.recipes import get_recipe

    out, away = tmp_path / 'run', tmp_path / 'away'
    train(TrainConfig(model=TINY, data=str(tiny_cifar), dataset='cifar10', recipe='spem', epochs=1, batch_size=64,
                      seed=0, device='cpu', out=str(out)))
    away.mkdir()
    shutil.copy(out / 'model.safetensors', away / 'model.safetensors')
    spem = [list(s) for s in get_recipe('spem').stats('cifar10')]
    assert spem != [list(s) for s in get_recipe('zam').stats('cifar10')]
    for weights in (out, away / 'model.safetensors'):
        r = evaluate(TINY, str(tiny_cifar), checkpoint=weights, device='cpu')
        assert r['dataset'] == 'cifar10' and [r['mean'], r['std']] == spem
        with pytest.raises(UsageError, match=f'--recipe zam: {weights} records the normalisation it is evaluated '
                                             f'with; --recipe is for weights that record none'):
            evaluate(TINY, str(tiny_cifar), checkpoint=weights, recipe='zam', device='cpu')
