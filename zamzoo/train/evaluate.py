"""`zamzoo eval`: top-1 / top-5 of a model on a test split, from pretrained weights or a checkpoint."""
import math
import time
from pathlib import Path
from typing import Optional

from .. import provenance
from ..dataset_table import CIFAR_DATASETS, DEFAULT_DATASET
from ..errors import DataError, NonFiniteError, UsageError, WeightsError, ZamzooError
from ..recipes import get_recipe
from . import distributed as D
from .build import amp_dtype, build_loaders, build_pieces, check_model_name, create_model
from .checkpoint import checkpoint_not_found, load_weights, recorded_with_weights, run_config, run_folder_of
from .init import class_rows, recorded_classes, reorder_classifier
from .loop import evaluate_loader
from .run_files import CONFIG_FILE, RESULTS_FILE
from .run_folder import read_split, run_status


def _run_config(checkpoint) -> tuple:
    """(config.json of the run folder or export a checkpoint belongs to, if any (`run_config`), else what a weights
    file outside its folder records of its run (`recorded_with_weights`); where a run folder's run has not
    completed, what it is: 'pending after epoch 2 of 6'). ZamzooError for a failed run's (an export holds no run to
    have failed: only completed runs are exported)."""
    config, folder = run_config(checkpoint), run_folder_of(checkpoint)
    if folder is not None and not (folder / CONFIG_FILE).is_file():
        recorded = recorded_with_weights(checkpoint)
        recorded.pop('data_fingerprint', None)  # away from its run, the data it is scored on is the user's word
        return recorded, None
    if folder is None or _is_export(config):
        return config, None
    status = run_status(folder)
    if status.state == 'failed':
        raise ZamzooError(f'{folder} is a failed run ({status.error}); its weights are not evaluated')
    recipe = config.get('recipe') if isinstance(config.get('recipe'), dict) else {}
    unfinished = f"{status.state} after epoch {len(status.history)} of {recipe.get('epochs', '?')}"
    return config, None if status.state == 'done' else unfinished


def _trained_dataset(checkpoint, run_cfg: dict) -> Optional[str]:
    """The kind of data set the checkpoint was trained on, as its run's config.json or its export's results.json
    records it; None where neither does."""
    if not _is_export(run_cfg):
        return run_cfg.get('dataset')
    from .._io import read_json_object
    results = run_folder_of(checkpoint) / RESULTS_FILE
    return read_json_object(results, ZamzooError).get('dataset') if results.is_file() else None


def _is_export(config: dict) -> bool:
    """Whether a checkpoint's config.json is an export folder's (timm's Hub config, with the pretrained_cfg its
    weights are preprocessed by), not a run folder's."""
    return isinstance(config.get('pretrained_cfg'), dict) and 'architecture' in config


def _the_runs_own_split(dataset, run_cfg: dict, hf_options: dict) -> bool:
    """Whether the images evaluated are those the run evaluated (its data set, split and columns)."""
    args = run_cfg.get('args') if isinstance(run_cfg.get('args'), dict) else {}
    return args.get('dataset') == dataset and all(
        hf_options.get(k) in (None, args.get(k)) for k in ('image_column', 'label_column', 'val_split'))


def _source(dataset, data, download, checkpoint, run_cfg: dict, hf_options: dict):
    """The data to evaluate on: the run's held-out split (its split file) or its HF columns and splits, unless
    given here; integer labels index the checkpoint's classes (those recorded next to its weights)."""
    from ..data import DataSource
    args = run_cfg.get('args') if isinstance(run_cfg.get('args'), dict) else {}
    same_data = args.get('dataset') == dataset
    options = {k: hf_options.get(k) or (args.get(k) if same_data else None)
               for k in ('image_column', 'label_column', 'train_split', 'val_split')}
    split = read_split(run_folder_of(checkpoint)) if checkpoint is not None and same_data else None
    classes = recorded_classes(run_cfg)  # run_cfg is {} without a checkpoint
    return DataSource(dataset, data, download, split=split, classes=classes, **options)


def evaluate(model: str, data, dataset: Optional[str] = None, *, pretrained: bool = False, checkpoint=None,
             batch_size: int = 500, device: Optional[str] = None, amp: str = 'auto', recipe: Optional[str] = None,
             img_size: Optional[int] = None, download: bool = False, workers: int = 0, **hf_options) -> dict:
    """Top-1 / top-5 (percent) and mean CE loss on held-out data (CIFAR's test split, a folder's val/, ...).

    Exactly one of `pretrained` (weights through timm, i.e. the Hub) and `checkpoint` (a run folder, an export
    folder, model.safetensors, or a checkpoint.pt / state-dict .pt read with weights_only=True) is required.
    The model is built as the run (its --model-kwargs) or the export (its config.json, as timm reads a 'local-dir:'
    model) built it. Preprocessing: an export's own, as timm gives it (resolve_data_config + create_transform);
    else the run folder's normalisation (config.json), else `recipe`'s for this data set, else the model's
    pretrained cfg (which is the recipe it was trained with). A run trained with --holdout is evaluated on its
    held-out images (the run folder's split file); `dataset` and `hf_options` (image_column, label_column,
    val_split) default to the run's (or the export's), else 'cifar100'. A run folder's data must be the data the run
    recorded (its fingerprint). The class names the checkpoint records must be the data's: in another order the
    classifier's rows follow the names, other names are a DataError.
    """
    if bool(pretrained) == (checkpoint is not None):
        raise UsageError('evaluate: pass exactly one of --pretrained or --checkpoint PATH')
    if checkpoint is not None and not Path(checkpoint).expanduser().exists():  # before the data it would open
        raise checkpoint_not_found(checkpoint)
    from ..data import check_dataset, check_same_data, open_data
    if batch_size < 1:
        raise UsageError(f'batch size must be >= 1, got {batch_size}')
    published, run_cfg = _published(model) if pretrained else (None, {})  # not published: refused before the data
    run_cfg, unfinished = _run_config(checkpoint) if checkpoint is not None else (run_cfg, None)
    dataset = check_dataset(dataset or _trained_dataset(checkpoint, run_cfg) or DEFAULT_DATASET)
    if recipe is not None:
        _check_recipe(recipe, dataset, run_cfg, checkpoint)
    dev = D.resolve_device(device)
    autocast_dtype = amp_dtype(amp, dev)
    opened = open_data(_source(dataset, data, download, checkpoint, run_cfg, hf_options), train=False)
    if _the_runs_own_split(dataset, run_cfg, hf_options):  # another split of the data: no record to check it by
        check_same_data(run_cfg.get('data_fingerprint'), opened.fingerprint, data, run_folder_of(checkpoint), ('val',))
    test_split, num_classes = opened.test, opened.num_classes
    check_trained_model(model, run_cfg)
    export = _is_export(run_cfg)
    order = _checked_classes(model, checkpoint, run_cfg, opened, dataset, data)

    net = published if published is not None else _model(model, num_classes, checkpoint, run_cfg)
    if order is not None:
        reorder_classifier(net, order)
    pieces = build_pieces(net, dev, autocast_dtype, channels_last=dev.type == 'cuda')
    if export:
        test, mean, std = _export_loader(test_split, net, img_size, batch_size, dev, workers)
    else:
        test, mean, std = _run_loader(dataset, test_split, net, run_cfg, recipe, img_size, batch_size, dev, workers)
    t0 = time.perf_counter()
    sums = evaluate_loader(pieces.model, test, device=dev, amp_dtype=pieces.amp_dtype, num_classes=num_classes)
    n = int(sums['count'])
    elapsed = time.perf_counter() - t0
    if not math.isfinite(float(sums['loss_sum'])):  # NaN logits: top-1 and top-5 would count arbitrary classes
        raise NonFiniteError(f"{model}: its outputs on {data} hold NaN or infinity (the loss over {n} images is "
                             f"{float(sums['loss_sum'])}); the scores would mean nothing")
    return {
        'model': model, 'dataset': dataset, 'images': n,
        'top1': 100.0 * float(sums['top1']) / n, 'top5': 100.0 * float(sums['top5']) / n,
        'loss': float(sums['loss_sum']) / n,
        'weights': 'pretrained' if pretrained else str(checkpoint), 'unfinished_run': unfinished,
        'mean': list(mean), 'std': list(std), 'images_per_s': n / elapsed if elapsed else None,
        'device': provenance.device_description(dev),
    }


def _check_recipe(recipe: str, dataset: str, run_cfg: dict, checkpoint) -> None:
    """UsageError where --recipe would be ignored: off CIFAR (a recipe's statistics are CIFAR's), or for weights
    that record their normalisation."""
    if dataset not in CIFAR_DATASETS:
        raise UsageError(f"--recipe gives CIFAR's normalisation: on --dataset {dataset} the checkpoint's run or "
                         f"export folder, else the model's cfg, gives it")
    if _is_export(run_cfg) or _run_stats(run_cfg, dataset):
        raise UsageError(f"--recipe {recipe}: {checkpoint} records the normalisation it is evaluated with; --recipe "
                         f"is for weights that record none")


def _checked_classes(model: str, checkpoint, run_cfg: dict, opened, dataset: str, data):
    """`_class_order` of the data's classes, after refusing weights of another class count."""
    weights = checkpoint if checkpoint is not None else f"{model}'s published weights"
    if run_cfg.get('num_classes') not in (None, opened.num_classes):
        raise UsageError(f"{weights} score {run_cfg['num_classes']} classes, {dataset} at {data} has "
                         f"{opened.num_classes}" + ('' if checkpoint is not None else _fine_tune_first(model, dataset)))
    return _class_order(run_cfg, opened.classes, weights, data)


def _fine_tune_first(model: str, dataset: str) -> str:
    """What to do instead of scoring published weights on data of another class count."""
    import timm
    arch = model.split('.')[0]
    other = f'{arch}.{dataset}'
    tag = f', or evaluate {other}' if other != model and other in timm.models.get_arch_pretrained_cfgs(arch) else ''
    return (f'; a classifier of other classes would be scored at random: fine-tune the weights on this data first '
            f'(zamzoo train --model {model} --pretrained ...){tag}')


def _published(model: str) -> tuple:
    """(the model with the weights `pretrained=True` loads, with their own classifier; what their cfg records of
    them: the class count and names, and the CIFAR data set its tag names, the data evaluated by default)."""
    net = create_model(model, None, pretrained=True)  # an unpublished model, or one without weights: WeightsError
    cfg = net.pretrained_cfg
    return net, {'num_classes': net.num_classes, 'classes': recorded_classes(cfg),
                 'dataset': cfg.get('tag') if cfg.get('tag') in CIFAR_DATASETS else None}


def _class_order(run_cfg: dict, classes: list, checkpoint, data):
    """None where the checkpoint's recorded classes are the data's, in order (or it records none); the classifier
    rows that score the data's classes where they are the same names in another order (an image folder's sorted
    names, a Hugging Face dataset's own order); a DataError for other names, whose scores would mean nothing."""
    recorded = recorded_classes(run_cfg)
    if recorded is None or recorded == list(classes):
        return None
    order = class_rows(recorded, classes)
    if order is None:
        from ..data import classes_only_in
        only = classes_only_in('the checkpoint', recorded, str(data), list(classes)) or 'a name twice'
        raise DataError(f'{checkpoint}: trained on other classes than {data} has ({only}); expected the same '
                        f'class names, in any order')
    return order


def check_trained_model(model: str, run_cfg: dict):
    """UsageError naming both unless the checkpoint's run (or export) records `model` or nothing."""
    export = _is_export(run_cfg)
    trained = run_cfg.get('architecture' if export else 'model')
    if trained and trained != model:
        raise UsageError(f"--model {model} but the checkpoint's {'export' if export else 'run'} is {trained}")


def checkpoint_model(model: str, checkpoint) -> tuple:
    """(net, run_cfg): the checkpoint's model built as `evaluate` builds it (the run's --model-kwargs, or the
    export's config.json), with the run's classes, else as many as the weights' classifier has."""
    run_cfg, _ = _run_config(checkpoint)
    check_trained_model(model, run_cfg)
    num_classes = run_cfg.get('num_classes') or _classes_in_weights(model, checkpoint)
    return _model(model, num_classes, checkpoint, run_cfg), run_cfg


def _classes_in_weights(model: str, checkpoint) -> Optional[int]:
    """The classifier's output size in a bare weights file (None: no classifier found, the model's default)."""
    import timm
    check_model_name(model)
    head = timm.models.get_pretrained_cfg_value(model, 'classifier') or 'fc'
    weight = load_weights(checkpoint).get(f'{head}.weight')
    return None if weight is None else int(weight.shape[0])


def _model(model: str, num_classes: int, checkpoint, run_cfg: dict):
    """The model with the checkpoint's weights (which must fit it exactly), built with the run's --model-kwargs, or
    from an export's config.json as timm builds a 'local-dir:' model (its model_args and pretrained_cfg)."""
    if _is_export(run_cfg):
        net = _export_model(model, run_folder_of(checkpoint).resolve(), num_classes)
    else:
        net = create_model(model, num_classes, **(run_cfg.get('model_kwargs') or {}))
    try:
        missing, unexpected = net.load_state_dict(load_weights(checkpoint), strict=False)
    except RuntimeError as e:  # differing shapes: torch lists every one
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ZamzooError(f'{checkpoint} does not match {model} with {num_classes} classes: {first}') from e
    if missing or unexpected:
        raise ZamzooError(f'{checkpoint} does not match {model} with {num_classes} classes: '
                          f'missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}')
    return net


def _export_model(model: str, folder, num_classes: int):
    """The export folder's model as timm builds a 'local-dir:' model; a config.json timm cannot build from (edited,
    or written by something else) is a WeightsError naming it."""
    import timm
    check_model_name(model)
    try:
        return timm.create_model(f'local-dir:{folder}', num_classes=num_classes)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise WeightsError(f'{folder / CONFIG_FILE} is not an export config timm can build a model from '
                           f'({type(e).__name__}: {e}); export the run again (zamzoo export RUN_FOLDER), or evaluate '
                           f'the run folder') from e


def _run_stats(run_cfg: dict, dataset: Optional[str]) -> Optional[tuple]:
    """(mean, std) the checkpoint's run normalised its images with: its config's, else (a run's model.safetensors
    away from its folder, which records its recipe) its recipe's for its CIFAR data set; None where it records none."""
    if run_cfg.get('mean'):
        return tuple(run_cfg['mean']), tuple(run_cfg['std'])
    if run_cfg.get('recipe_name') and dataset in CIFAR_DATASETS and dataset == run_cfg.get('dataset'):
        return get_recipe(run_cfg['recipe_name']).stats(dataset)
    return None


def eval_data_config(net, run_cfg: dict) -> dict:
    """timm's data config (`resolve_data_config`) of the transform a checkpoint's model is evaluated with: an
    export's own (the model built from it carries it), a run's normalisation and input size with, on data of one's
    own, the evaluation crop of its loader (`EVAL_CROP_PCT`), on CIFAR the model's cfg (crop_pct 1: CIFAR's images
    are fed whole, as its export declares), else the model's pretrained cfg."""
    from timm.data import resolve_data_config

    from ..data import EVAL_CROP_PCT, EVAL_INTERPOLATION
    cfg = resolve_data_config(model=net)
    stats = None if _is_export(run_cfg) else _run_stats(run_cfg, run_cfg.get('dataset'))
    if stats is None:
        return cfg
    size = int(run_cfg.get('img_size') or cfg['input_size'][-1])
    cfg = {**cfg, 'input_size': (3, size, size), 'mean': stats[0], 'std': stats[1]}
    if run_cfg.get('dataset') in CIFAR_DATASETS:
        return cfg
    return {**cfg, 'interpolation': EVAL_INTERPOLATION, 'crop_mode': 'center',
            'crop_pct': EVAL_CROP_PCT[run_cfg.get('loader') or 'dataloader']}


def _export_loader(test_split, net, img_size: Optional[int], batch_size: int, device, workers: int) -> tuple:
    """(loader, mean, std) of an export folder's own preprocessing: timm's eval transform for the data config it
    declares (`resolve_data_config` of the model built from it, `img_size` overriding its input size)."""
    from timm.data import create_transform, resolve_data_config

    from ..data import DataLoaderBatches
    data_cfg = resolve_data_config({'img_size': img_size} if img_size else {}, model=net)
    test = DataLoaderBatches(test_split, batch_size, create_transform(**data_cfg), train=False, num_workers=workers,
                             device=device, channels_last=device.type == 'cuda')
    return test, data_cfg['mean'], data_cfg['std']


def _run_loader(dataset: str, test_split, net, run_cfg: dict, recipe: Optional[str], img_size: Optional[int],
                batch_size: int, device, workers: int) -> tuple:
    """(loader, mean, std) as the run evaluated: its normalisation, input size and loader (see `evaluate`)."""
    stats = _run_stats(run_cfg, dataset)
    if stats is not None:
        mean, std = stats
    elif recipe is not None and dataset in CIFAR_DATASETS:
        mean, std = get_recipe(recipe).stats(dataset)
    else:
        mean, std = tuple(net.pretrained_cfg['mean']), tuple(net.pretrained_cfg['std'])
    size = img_size or run_cfg.get('img_size') or int(net.pretrained_cfg.get('input_size', (3, 32, 32))[-1])
    _, test = build_loaders(dataset, (None, test_split), get_recipe('zam'), mean, std, batch_size=batch_size,
                            eval_batch_size=batch_size, seed=0, info=D.DistInfo(device=device),
                            loader=_loader(dataset, run_cfg, test_split, size, device), workers=workers,
                            channels_last=device.type == 'cuda', img_size=size)
    return test, mean, std


def _loader(dataset: str, run_cfg: dict, test_split, size: int, device) -> str:
    """The run's loader (their evaluation transforms differ for non-CIFAR data), the tensor loader for CIFAR."""
    from ..data.tensors import pick_loader
    if dataset in CIFAR_DATASETS:
        return 'tensor'
    return pick_loader(run_cfg.get('loader', 'dataloader'), (0, len(test_split)), size, 0, device)
