"""`zamzoo export`: turn training runs (or a bare checkpoint) into a Hub-ready folder for one model and tag.

Input
    * one or more training run folders of the same model, dataset and recipe (one per seed), each holding
      config.json, results.json, metrics.jsonl and model.safetensors (the run-folder contract of zamzoo.train);
      the results are aggregated over the runs (mean and sample std), the weights are those of ONE run: the
      run with the smallest seed (seed 0 when present) unless `weights_seed` picks another;
    * or one bare checkpoint: a .safetensors file, or a .pt/.pth/.bin file loaded with
      `torch.load(weights_only=True)` (never a full unpickle), plus `model` (and `tag`, default cifar100).

Output folder (staged in a temporary folder next to it, then renamed into place)
    model.safetensors  the weights, a plain state dict (timm's save_for_hf)
    config.json        timm's Hub config: architecture, num_classes, model_args, pretrained_cfg (save_for_hf),
                       label_names; loadable by 🤗 transformers' timm wrapper too (model_args less WRAPPER_ARGS)
    README.md          model card (zamzoo.publish.card)
    hparams.json       the training configuration of every run
    train_log.json     the per-epoch metrics of every run
    results.json       final results per run, mean/std over runs, which seed's weights, sha256 of the weights,
                       params, MACs, code commits, what the training data was (`training_data`): everything
                       `zamzoo push` needs for the manifest record
    SHA256SUMS         the sha256 of every other file, as export wrote it (`sha256sum -c SHA256SUMS` checks it;
                       `zamzoo push` refuses a folder whose files were edited since)
    model.onnx         only with ``onnx=True`` (``--onnx``): the model in ONNX, checked with ONNX Runtime
                       (zamzoo.publish.onnx); recorded under 'onnx' in results.json

Training data: a run on the CIFAR data sets is described as trained on CIFAR-10/100 (Hub dataset id, model-index)
only when every run recorded `official_data` true (zamzoo.data.cifar_release: torchvision's md5 of the release
files); otherwise as CIFAR-format data with its image counts, and `zamzoo push` refuses it (the CIFAR tags' repos
hold weights trained on the official release only). A bare checkpoint's data is the exporter's word (--tag): it is
described so, with no Hub dataset id, and `zamzoo push` refuses it under a CIFAR tag too; a
zamzoo training checkpoint, or a weights file in a run folder, is exported only from a completed run, and is
described by that run's record (`_check_completed_checkpoint`).

A model of an attention module registered at run time (zamzoo.models.plugins) is exported with the module's
record (`attention_module`: name, spec, sha256, options, and the call that registers it) in config.json and
results.json and a card section saying so; `zamzoo push` refuses such a folder (the module's code is not on the
Hub). Runs whose module source differs are refused when they are read (run_folder.read_run -> ensure_attention).
"""
import datetime
import glob
import json
import math
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .._io import dumps_strict, locked_beside
from .._paths import check_replaceable, check_writable
from ..dataset_table import DEFAULT_DATASET, OWN_DATASETS
from ..errors import ZamzooError
from ..pretrained import WEIGHTS_FILENAME, repo_id_problem, sha256_file
from ..train import run_folder
from ..train.checkpoint import check_finite_weights
from ..train.run_folder import RunRecord
from .onnx import ONNX_FILENAME

# an export folder's files (the docstring above says what each holds); the weights' name is the manifest's
CONFIG_FILE = 'config.json'  # the name timm's save_for_hf writes and timm / transformers read from the Hub
CARD_FILE = 'README.md'  # the Hub shows a repo's README.md as its model card
HPARAMS_FILE = 'hparams.json'
TRAIN_LOG_FILE = 'train_log.json'
RESULTS_FILE = 'results.json'
CHECKSUMS_FILE = 'SHA256SUMS'
EXPORT_FILES = (WEIGHTS_FILENAME, CONFIG_FILE, CARD_FILE, HPARAMS_FILE, TRAIN_LOG_FILE, RESULTS_FILE, CHECKSUMS_FILE)
OPTIONAL_EXPORT_FILES = (ONNX_FILENAME,)
# what 🤗 transformers' TimmWrapper passes to timm.create_model itself: config.json's model_args may not hold them
# ("got multiple values for keyword argument 'num_classes'"); timm takes num_classes from the config's top level
WRAPPER_ARGS = ('num_classes', 'pretrained')
DEFAULT_STAGING = Path('hub') / 'staging'


class ExportError(ZamzooError):
    """The input of an export is missing, inconsistent or does not fit the model."""


# ------------------------------------------------------------------ reading the input
def read_run(path) -> RunRecord:
    """A completed run folder, read by zamzoo.train.run_folder; its errors as ExportError."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and _is_export(path):
        runs = json.loads((path / RESULTS_FILE).read_text()).get('runs') or []
        names = ', '.join(str(r.get('run')) for r in runs if isinstance(r, dict)) or 'named in its results.json'
        raise ExportError(f'{path} is an export folder (written by zamzoo export), not a run folder: export the run '
                          f'folder(s) it was made from ({names}) again, with the options you want (e.g. --onnx)')
    try:
        return run_folder.read_run(path)
    except ZamzooError as e:
        raise ExportError(str(e)) from e


def load_weights(path) -> dict:
    """The training loop's reader (safetensors, or torch.load(weights_only=True)), its errors as ExportError."""
    from ..train.checkpoint import load_weights as read_state_dict
    try:
        return read_state_dict(path)
    except (ZamzooError, FileNotFoundError) as e:
        raise ExportError(str(e)) from e


# ------------------------------------------------------------------ aggregation
def _stat(values: List[Optional[float]]) -> Optional[dict]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return dict(mean=statistics.fmean(values), std=std, n=len(values))


def _consistent(runs: Sequence[RunRecord], attr: str):
    values = {getattr(r, attr) for r in runs}
    if len(values) > 1:
        detail = ', '.join(f'{r.path.name}: {getattr(r, attr)!r}' for r in runs)
        raise ExportError(f'the runs disagree on {attr} ({detail}); export one model/dataset/recipe at a time')
    return values.pop()


# what a run's config.json records beside its recipe that the card's hyper-parameters show
CARD_RUN_KEYS = ('seed', 'amp', 'channels_last', 'compile', 'world_size', 'device')


def _hparams_summary(config: dict) -> dict:
    """The hyper-parameters a reader of the card wants, from a run's config.json (recipe fields, overrides)."""
    import dataclasses

    from ..recipes import Recipe

    recipe = config.get('recipe') if isinstance(config.get('recipe'), dict) else {}
    merged = dict(recipe, **{k: v for k, v in config.items() if not isinstance(v, (dict, list)) or k == 'milestones'})
    # its normalization: the card's preprocessing shows the mean and std
    recipe_keys = [f.name for f in dataclasses.fields(Recipe) if f.name not in ('name', 'normalization')]
    keys = ('recipe', *recipe_keys, 'random_resized_crop_scale', *CARD_RUN_KEYS)
    out = {k: recipe.get('name') if k == 'recipe' and recipe else merged.get(k) for k in keys}
    return {k: v for k, v in out.items() if v is not None and v != ''}


# ------------------------------------------------------------------ the export
@dataclass
class ExportResult:
    path: Path
    model: str
    tag: str
    weights_seed: Optional[int]
    sha256: str
    params: int
    macs: int
    has_results: bool


def _resolve_cfg(inp: '_Input', tag: Optional[str]):
    """(tag, pretrained cfg) the export is made for: for a run on the CIFAR data sets (or a bare checkpoint), the
    registry's cfg of `model.tag`; for a run on data of the user's own, the cfg of what the run did (`_own_data_cfg`),
    never the registry's CIFAR one, whatever the data's name. Its notes name the recipe the run used."""
    import dataclasses

    from ..models import ZOO, pretrained_notes
    run_config = inp.weights_run.config if inp.weights_run is not None else _recipe_stats(inp)
    if inp.weights_run is not None and inp.dataset in OWN_DATASETS:
        tag, cfg = _own_data_cfg(inp.model, inp.dataset, tag, run_config)
    else:
        tag, cfg = _registry_cfg(inp.model, tag or inp.dataset, run_config)
        from .card import dataset_names, unverified_cifar
        if unverified_cifar(tag, inp.training_data):
            cfg = dataclasses.replace(cfg, description=f'{ZOO[inp.model].description}; trained on '
                                                       f'{dataset_names(tag, inp.training_data)[0]}')
    recipe = _recipe_description(inp) or 'unknown (bare checkpoint)'
    return tag, dataclasses.replace(cfg, notes=pretrained_notes(ZOO[inp.model], recipe))


def _recipe_stats(inp: '_Input') -> dict:
    """{'mean', 'std'} a bare checkpoint's recipe normalises its CIFAR data set with ({} without a recipe)."""
    from ..recipes import get_recipe
    if inp.recorded.get('mean') and inp.recorded.get('std'):  # a training checkpoint's config: as its run used
        return {key: inp.recorded[key] for key in ('mean', 'std')}
    if inp.recipe is None or inp.dataset in OWN_DATASETS:
        return {}
    mean, std = get_recipe(inp.recipe).stats(inp.dataset)
    return {'mean': list(mean), 'std': list(std)}


def _recipe_description(inp: '_Input') -> Optional[str]:
    """The recipe the weights were trained with, as the cfg's notes and the card name it: the run's recorded recipe
    as a call on the registered one (`recipe_call`), a bare checkpoint's --recipe, or None when unknown."""
    from ..recipes import recipe_call
    if inp.recipe is None:
        return None
    used = (inp.weights_run.config if inp.weights_run is not None else inp.recorded).get('recipe')
    call = recipe_call(inp.recipe, used if isinstance(used, dict) else None, inp.recipe_version)
    if inp.weights_run is None and inp.recorded.get('recipe_name') and not isinstance(used, dict):
        call += " (the name the weights file records; its run's changes to the recipe, if any, are not there)"
    return call


def _arch_cfgs(model: str) -> dict:
    """The registry's pretrained cfgs of `model`, by tag (the default tag first)."""
    from timm.models import get_arch_pretrained_cfgs
    return {name.split('.', 1)[1]: cfg for name, cfg in get_arch_pretrained_cfgs(model).items()}


def _registry_cfg(model: str, tag: str, run_config: dict):
    """The registry's cfg of `model.tag`, carrying the run's class names (a pipeline's labels) where they fit, and
    the normalisation it trained with (another recipe's than the model's own: `zamzoo push` refuses such weights
    for the registry name, whose cfg is the registry's)."""
    import dataclasses

    from ..models import TAGS
    cfgs = _arch_cfgs(model)
    if tag not in cfgs:
        raise ExportError(
            f"'{model}.{tag}' has no pretrained cfg: zamzoo models have the tags {', '.join(TAGS)} "
            f'(only a run on an image folder or a Hugging Face dataset is published under a tag of its own)')
    cfg, classes = cfgs[tag], run_config.get('classes')  # the names the run trained with; none: a checkpoint
    if isinstance(classes, list) and len(classes) == cfg.num_classes:
        cfg = dataclasses.replace(cfg, label_names=tuple(classes))
    if run_config.get('mean') and run_config.get('std'):
        cfg = dataclasses.replace(cfg, mean=tuple(run_config['mean']), std=tuple(run_config['std']))
    return tag, cfg


def _own_data_tag(dataset: str, tag: Optional[str], run_config: dict) -> str:
    """The tag of a run on data of the user's own: --tag, or the one the run recorded as `own_data_tag` makes it
    now (a run made before it may have recorded 'cifar10' for a folder named so)."""
    from ..data import own_data_tag
    source = 'a Hugging Face dataset' if dataset == 'hf' else 'an image folder'
    if tag is not None:
        if own_data_tag(dataset, tag) != tag:
            raise ExportError(
                f"--tag {tag}: a run on {source} cannot take that tag (letters, digits, '_' and '-', and not the "
                f"tag of zamzoo's CIFAR weights, which only runs on the CIFAR data sets take); "
                f'e.g. --tag {own_data_tag(dataset, tag)}')
        return tag
    if not run_config.get('tag'):
        raise ExportError(f"cannot tell the tag of this run on {source} (its config.json records none): pass --tag")
    return own_data_tag(dataset, run_config['tag'])


def _own_data_cfg(model: str, dataset: str, tag: Optional[str], run_config: dict):
    """The model's default cfg re-described for a run on data of the user's own: its tag, its class names, the
    normalisation and input size the run trained with, and the evaluation transform its top-1 was measured with."""
    import dataclasses

    from ..data import EVAL_CROP_PCT, EVAL_INTERPOLATION
    from ..models import ZOO
    tag = _own_data_tag(dataset, tag, run_config)
    size = int(run_config.get('img_size') or 32)
    input_size = (3, size, size)
    default = next(iter(_arch_cfgs(model).values()))
    return tag, dataclasses.replace(
        default, tag=tag, hf_hub_id=None, num_classes=int(run_config['num_classes']),
        label_names=tuple(run_config['classes']), mean=tuple(run_config['mean']), std=tuple(run_config['std']),
        input_size=input_size, pool_size=ZOO[model].backbone.pool_size_at(input_size),
        interpolation=EVAL_INTERPOLATION, crop_mode='center',
        crop_pct=EVAL_CROP_PCT[run_config.get('loader') or 'dataloader'],
        description=f"{ZOO[model].description}; trained on "
        f"{'the Hugging Face dataset' if dataset == 'hf' else 'the image folder'} '{tag}'")


@dataclass
class _Input:
    """What an export is made from: the runs (none for a bare checkpoint) and the weights chosen among them."""
    runs: List[RunRecord]
    weights_run: Optional[RunRecord]
    weights_file: Path
    state_dict: dict
    model: str
    dataset: Optional[str]
    recipe: Optional[str]
    recipe_version: Optional[int]
    model_kwargs: dict
    seeds: List[int]
    weights_seed: Optional[int]
    training_data: dict  # official (the CIFAR release: True/False; None: not known), train_images, test_images
    recorded: dict = field(default_factory=dict)  # a bare weights file's record of its run (`recorded_with_weights`)


def _source_paths(sources) -> List[Path]:
    sources = [Path(s) for s in (sources if isinstance(sources, (list, tuple)) else [sources])]
    if not sources:
        raise ExportError('nothing to export: give a run folder or a checkpoint file')
    for s in sources:
        if not s.exists():
            raise ExportError(f'{s} does not exist: expected a run folder or a checkpoint file')
    return sources


def _pick_weights_run(runs: List[RunRecord], weights_seed: Optional[int]) -> RunRecord:
    """The run with the smallest seed, or the one with `weights_seed`."""
    if weights_seed is None:
        return runs[0]
    matching = [r for r in runs if r.seed == weights_seed]
    if not matching:
        raise ExportError(f'no run has seed {weights_seed} (seeds: {[r.seed for r in runs]})')
    return matching[0]


def _input_from_runs(folders: List[Path], model: Optional[str], weights_seed: Optional[int]) -> _Input:
    runs = [read_run(s) for s in folders]
    run_model = _consistent(runs, 'model')
    if model and model != run_model:
        raise ExportError(f'--model {model} disagrees with the run(s), which trained {run_model}')
    dataset, recipe = _consistent(runs, 'dataset'), _consistent(runs, 'recipe')
    recipe_version = _consistent(runs, 'recipe_version')
    _consistent(runs, 'num_classes')
    if len(runs) > 1:
        seeds = [r.seed for r in runs]
        if None in seeds or len(set(seeds)) != len(seeds):
            raise ExportError(f'several runs need distinct seeds in their config.json, got {seeds}')
        run_folder.check_same_but_seed(folders)
    runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
    weights_run = _pick_weights_run(runs, weights_seed)
    return _Input(
        runs=runs, weights_run=weights_run, weights_file=weights_run.weights,
        state_dict=load_weights(weights_run.weights), model=run_model, dataset=dataset,
        recipe=recipe, recipe_version=recipe_version,
        model_kwargs=dict(weights_run.model_kwargs), seeds=[r.seed for r in runs if r.seed is not None],
        weights_seed=weights_run.seed,
        training_data=_training_data(dataset, [(r.results, r.config) for r in runs]))


def _training_data(dataset: str, runs: List[tuple]) -> dict:
    """What runs on `dataset` ((results.json, config.json) of each, the weights' first) trained on: the official
    CIFAR release only when each run's results.json records `official_data` true (for a run from before that
    record: when its data is still there, with the recorded fingerprint, and official), and the image counts."""
    from ..data.cifar_release import recorded_data_is_official
    official = None if dataset in OWN_DATASETS else all(
        results['official_data'] is True if 'official_data' in results else recorded_data_is_official(config)
        for results, config in runs)
    results, config = runs[0]
    return dict(official=official, train_images=config.get('train_images'), test_images=results.get('test_images'))


def _input_from_checkpoint(file: Path, model: Optional[str], tag: Optional[str], recipe: Optional[str],
                           seed: Optional[int]) -> _Input:
    if not model:
        raise ExportError(f'exporting the bare checkpoint {file} needs --model (e.g. resnet18_zam)')
    from ..train.checkpoint import recorded_with_weights
    from ..train.config import check_seed
    if seed is not None:
        check_seed(seed)
    training = _check_completed_checkpoint(file)
    recorded = training[0][1] if training else recorded_with_weights(file)  # a run's safetensors: its metadata
    if str(recorded.get('model') or model).split('.')[0] != model.split('.')[0]:  # the same keys: it would load
        raise ExportError(f"{file} records its run's model, {recorded['model']}, not {model}: give --model "
                          f"{recorded['model']}")
    dataset = _checkpoint_dataset(file, tag, recorded.get('dataset'))
    return _Input(
        runs=[], weights_run=None, weights_file=file, state_dict=load_weights(file), model=model,
        dataset=dataset, recipe=_checkpoint_recipe(file, recipe, recorded.get('recipe_name')),
        recipe_version=recorded.get('recipe_version'), model_kwargs={}, recorded=recorded,
        seeds=[seed] if seed is not None else [], weights_seed=seed,
        training_data=dict(official=None) if training is None else _training_data(dataset, training))


def _checkpoint_dataset(file: Path, tag: Optional[str], recorded: Optional[str]) -> str:
    """The data set a weights file is exported for: the one its run records (a --tag naming another is refused;
    a run on data of the user's own is exported from its folder, which holds its classes and preprocessing), else
    --tag (default cifar100): a file from elsewhere is described by the exporter's word."""
    from ..train.checkpoint import run_folder_of
    from ..train.run_files import CONFIG_FILE
    if recorded is None:
        return tag or DEFAULT_DATASET
    if recorded in OWN_DATASETS or tag not in (None, recorded):
        folder = run_folder_of(file)
        where = (f'`zamzoo export {folder}`' if (folder / CONFIG_FILE).is_file() else
                 f'the run folder it was copied from ({folder} holds no run)')
        raise ExportError(f"{file} is from a run on {recorded}{f', not {tag}' if tag not in (None, recorded) else ''}: "
                          f'export its run folder, which describes what the run did: {where}')
    return recorded


def _checkpoint_recipe(file: Path, recipe: Optional[str], recorded: Optional[str]) -> Optional[str]:
    """The recipe a weights file was trained with: the one its run records (a --recipe naming another is refused),
    else --recipe, a registered recipe's name (its normalisation goes into the export's cfg)."""
    from ..recipes import list_recipes
    if recipe is not None and recipe not in list_recipes():
        raise ExportError(f"--recipe '{recipe}': expected one of {', '.join(list_recipes())}")
    if recorded is not None and recipe not in (None, recorded):
        raise ExportError(f'{file} records its run\'s recipe, {recorded}, not {recipe}: drop --recipe')
    return recorded or recipe


def _training_checkpoint(file: Path) -> Optional[dict]:
    """The state of a zamzoo training checkpoint (format zamzoo-train-checkpoint); None for any other file (a
    state dict, a safetensors file; an unreadable one is `load_weights`' to report)."""
    import torch

    from ..train.checkpoint import CHECKPOINT_FORMAT
    if file.suffix == '.safetensors':
        return None
    try:
        state = torch.load(file, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001 - not a checkpoint of ours: load_weights reads it or says why not
        return None
    return state if isinstance(state, dict) and state.get('format') == CHECKPOINT_FORMAT else None


def _check_completed_checkpoint(file: Path):
    """[(results.json, config)] of the run a weights file comes from, once that run completed: a zamzoo training
    checkpoint must hold the epochs its config asks for, and a file in a run folder (config.json and metrics.jsonl
    beside it) needs that folder done (a failed or unfinished run is never exported, whichever of its files is
    given); ExportError otherwise. None for a checkpoint from elsewhere (its data is the exporter's word)."""
    from ..train.checkpoint import run_folder_of
    from ..train.run_files import CONFIG_FILE, METRICS_FILE
    folder, state = run_folder_of(file), _training_checkpoint(file)
    in_run = (folder / CONFIG_FILE).is_file() and (state is not None or (folder / METRICS_FILE).is_file())
    if state is None and not in_run:
        return None
    status = run_folder.run_status(folder) if in_run else None
    config = (state.get('config') or {}) if state is not None else status.config
    epoch, epochs = (state or {}).get('epoch'), (config.get('recipe') or {}).get('epochs')
    unfinished = state is not None and not (isinstance(epoch, int) and isinstance(epochs, int) and epoch >= epochs)
    if unfinished or (status is not None and status.state != 'done'):
        detail = ([f'epoch {epoch} of {epochs}'] if state is not None else []) + [
            f'its run folder {folder} is {status.state}' if status is not None else 'no run folder holds it']
        raise ExportError(
            f'{file} is from an unfinished run ({"; ".join(detail)}): nothing in it can be exported; finish the '
            f"run (`zamzoo train ... --out {folder} --resume`, or `zamzoo zoo run` for a sweep's run), then export "
            f'the run folder: `zamzoo export {folder}`')
    return [(status.results if status is not None else {}, config)]


def _read_input(sources: List[Path], model, tag, recipe, seed, weights_seed) -> _Input:
    if all(s.is_dir() for s in sources):
        return _input_from_runs(sources, model, weights_seed)
    if len(sources) == 1 and sources[0].is_file():
        return _input_from_checkpoint(sources[0], model, tag, recipe, seed)
    raise ExportError('give either training run folders or exactly one checkpoint file, not a mix')


def _build_model(inp: _Input, tag: str, cfg):
    """The architecture with the weights loaded strictly (an export only ever holds weights that fit), in eval
    mode, with its parameter and MAC counts."""
    import timm

    from ..bench.flops import count_macs, count_params
    classifier = f'{cfg.classifier}.weight'
    state_dict, model, model_kwargs = inp.state_dict, inp.model, inp.model_kwargs
    num_classes = int(state_dict[classifier].shape[0]) if classifier in state_dict else cfg.num_classes
    if num_classes != cfg.num_classes:
        raise ExportError(
            f'the checkpoint has {num_classes} classes but {model}.{tag} is a {cfg.num_classes}-class model; '
            f'pick the right --tag, or, for weights trained on data of your own (an image folder, a Hugging Face '
            f'dataset), export the run folder they were trained in: its tag is its data\'s own')
    for key in ('num_classes', 'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'features_only'):
        model_kwargs.pop(key, None)
    net = timm.create_model(model, pretrained_cfg=cfg, num_classes=num_classes, **model_kwargs)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ExportError(f'the weights do not fit {model}{" " + str(model_kwargs) if model_kwargs else ""}: {e}') from e
    check_finite_weights(state_dict, inp.weights_file)
    net.eval()
    try:  # MACs count shapes only: on a meta-device twin no arithmetic runs (the same count, much faster on a CPU)
        macs = count_macs(timm.create_model(model, pretrained_cfg=cfg, num_classes=num_classes, device='meta',
                                            **model_kwargs).eval(), input_size=cfg.input_size)
    except Exception:  # an attention module of a user's that reads values (`.item()`, a branch on them) needs data
        macs = count_macs(net, input_size=cfg.input_size)
    return net, num_classes, count_params(net), macs


def _run_summaries(runs: List[RunRecord]) -> List[dict]:
    summaries = [r.summary() for r in runs]
    for s in summaries:
        for key in ('top1', 'top5', 'best_top1'):
            if s[key] is not None and not (isinstance(s[key], (int, float)) and math.isfinite(s[key])):
                raise ExportError(f"{s['run']}: results.json has a non-numeric {key}: {s[key]!r}")
    return summaries


def _results(inp: _Input, summaries: List[dict], tag: str, num_classes: int, repo_id: str, params: int,
             macs: int) -> dict:
    """results.json without the facts of the written weights (sha256, size, onnx)."""
    from ..provenance import code_commit
    weights_run = inp.weights_run
    return dict(
        model=inp.model, tag=tag, dataset=tag if weights_run is None else inp.dataset, recipe=inp.recipe,
        recipe_version=inp.recipe_version, num_classes=num_classes, repo_id=repo_id,
        seeds=inp.seeds, weights_seed=inp.weights_seed,
        weights_from=str(weights_run.path.name) if weights_run is not None else inp.weights_file.name,
        runs=[dict(s, raw=r.results) for s, r in zip(summaries, inp.runs)],
        top1=_stat([s['top1'] for s in summaries]),
        top5=_stat([s['top5'] for s in summaries]),
        best_top1=_stat([s['best_top1'] for s in summaries]),
        metric_note='top1/top5: accuracy (%) on the test split after the final epoch; mean and sample std over runs',
        params=params, macs=macs,
        code_commit=(weights_run.summary()['code_commit'] if weights_run is not None else None),
        export_code_commit=code_commit(),
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        training_data=inp.training_data,
        **_attention_module(inp.model),
    )


def _attention_module(model: str) -> dict:
    """{'attention_module': ...} for a model of a module registered at run time: where it came from and how to
    register it before `timm.create_model`; {} for the zoo's own models."""
    from ..models.plugins import attention_record
    record = attention_record(model)
    if record is None:
        return {}
    options = f", options={record['options']!r}" if record['options'] else ''
    load = f"import zamzoo; zamzoo.load_attention({record['spec']!r}, name={record['name']!r}{options})"
    return {'attention_module': dict(record, register_before_create_model=load)}


def _card_info(inp: _Input, net, cfg, results: dict, has_results: bool) -> dict:
    import zamzoo
    from ..models import WEIGHTS_LICENSE
    weights_run = inp.weights_run
    return dict(
        model=inp.model, tag=results['tag'], model_name=f"{inp.model}.{results['tag']}", repo_id=results['repo_id'],
        params=results['params'], macs=results['macs'], input_size=cfg.input_size,
        num_classes=results['num_classes'], num_features=net.num_features, mean=cfg.mean, std=cfg.std,
        crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
        recipe=_recipe_description(inp),
        results=results if has_results else None,
        hparams_summary=_hparams_summary(weights_run.config) if weights_run is not None else None,
        code_commit=results['code_commit'], zamzoo_version=zamzoo.__version__, license=cfg.license or WEIGHTS_LICENSE,
        init=weights_run.config.get('init') if weights_run is not None else None, onnx=results.get('onnx'),
        attention_module=results.get('attention_module'), training_data=inp.training_data,
    )


def _write_export(out: Path, net, cfg, inp: _Input, results: dict, has_results: bool, onnx: bool):
    """Write the export folder: staged next to `out`, then renamed into place, one writer at a time (the folders an
    export killed mid-write left next to `out` are removed first). Adds the facts of the written weights to
    `results`."""
    with locked_beside(out):
        for stale in (*out.parent.glob(f'{glob.escape(f".{out.name}.")}*.tmp'),
                      *out.parent.glob(f'{glob.escape(f".{out.name}.")}*.old')):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
        try:
            _fill_staging(staging, net, cfg, inp, results, has_results, onnx)
            os.chmod(staging, 0o755)  # mkdtemp / safetensors create private files; an export is meant to be shared
            for f in staging.iterdir():
                os.chmod(f, 0o644)
            _replace_dir(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _fill_staging(staging: Path, net, cfg, inp: _Input, results: dict, has_results: bool, onnx: bool):
    """The export's files in the folder `staging`."""
    import timm

    import zamzoo
    from .card import render_model_card
    hparams = dict(
        zamzoo_version=zamzoo.__version__,  # a wheel install has no git commit to record
        weights_seed=inp.weights_seed,
        runs=[dict(seed=r.seed, run=r.path.name, config=r.config) for r in inp.runs],
    )
    train_log = dict(runs=[dict(seed=r.seed, run=r.path.name, epochs=r.metrics) for r in inp.runs])
    labels = {'label_names': list(cfg.label_names)} if cfg.label_names else {}  # top level: timm's Hub field
    model_config = dict(labels, **_attention_module(inp.model))
    timm.models.save_for_hf(net, staging, model_config=model_config or None, safe_serialization=True)
    _drop_wrapper_args(staging / CONFIG_FILE)
    results['sha256'] = sha256_file(staging / WEIGHTS_FILENAME)
    results['size_bytes'] = (staging / WEIGHTS_FILENAME).stat().st_size
    if onnx:
        from .onnx import add_onnx
        results['onnx'] = add_onnx(net, staging, cfg.input_size)
    card = render_model_card(_card_info(inp, net, cfg, results, has_results))
    (staging / CARD_FILE).write_text(card, encoding='utf-8')
    for name, obj in ((HPARAMS_FILE, hparams), (TRAIN_LOG_FILE, train_log), (RESULTS_FILE, results)):
        (staging / name).write_text(dumps_strict(obj, indent=2) + '\n')
    write_checksums(staging)


def write_checksums(folder: Path):
    """SHA256SUMS: the sha256 of every other file of the export, in `sha256sum` format."""
    lines = [f'{sha256_file(f)}  {f.name}' for f in sorted(folder.iterdir()) if f.name != CHECKSUMS_FILE]
    (folder / CHECKSUMS_FILE).write_text('\n'.join(lines) + '\n')


def _drop_wrapper_args(config_file: Path):
    """timm's config.json, less the model_args transformers' TimmWrapper passes itself (see WRAPPER_ARGS)."""
    config = json.loads(config_file.read_text())
    model_args = {k: v for k, v in (config.get('model_args') or {}).items() if k not in WRAPPER_ARGS}
    config.pop('model_args', None)
    if model_args:
        config['model_args'] = model_args
    config_file.write_text(dumps_strict(config, indent=2) + '\n')


def export_run(
        sources: Sequence,
        out=None,
        *,
        model: Optional[str] = None,
        tag: Optional[str] = None,
        recipe: Optional[str] = None,
        seed: Optional[int] = None,
        weights_seed: Optional[int] = None,
        repo_id: Optional[str] = None,
        overwrite: bool = False,
        onnx: bool = False,
        staging=DEFAULT_STAGING,
        seeds_left_out: Sequence[dict] = (),
) -> ExportResult:
    """Write the Hub folder for `sources` (run folders, or one checkpoint file) to `out` (default:
    `staging`/<model>.<tag>); see the module doc. `seeds_left_out`: the {'seed', 'state'} of the runs of a sweep's
    group that are not among `sources` (not done), which results.json and the card name next to the figures."""
    from ..models import ZOO, hub_id

    sources = _source_paths(sources)
    inp = _read_input(sources, model, tag, recipe, seed, weights_seed)
    inp.model = inp.model.split('.', 1)[0]
    if inp.model not in ZOO:
        raise ExportError(f"'{inp.model}' is not a zamzoo model; see `zamzoo list`")
    tag, cfg = _resolve_cfg(inp, tag)
    repo_id = repo_id or hub_id(inp.model, tag)
    if problem := repo_id_problem(inp.model, tag, repo_id):
        raise ExportError(f'--repo-id: {problem}')
    out = Path(out) if out is not None else Path(staging) / f'{inp.model}.{tag}'
    _check_out(out, sources, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)

    net, num_classes, params, macs = _build_model(inp, tag, cfg)
    summaries = _run_summaries(inp.runs)
    has_results = any(s['top1'] is not None for s in summaries)
    results = _results(inp, summaries, tag, num_classes, repo_id, params, macs)
    if seeds_left_out:
        results['seeds_left_out'] = [{'seed': r['seed'], 'state': r['state']} for r in seeds_left_out]
    _write_export(out, net, cfg, inp, results, has_results, onnx)
    return ExportResult(out, inp.model, tag, inp.weights_seed, results['sha256'], params, macs, has_results)


def default_export_folder(folders: Sequence, staging=DEFAULT_STAGING) -> Path:
    """Where `export_run(folders, staging=staging)` writes the export of run folders: staging/<model>.<tag>, the tag
    as `_resolve_cfg` gives it, from the first run's config.json alone (an export's runs share the model, data set and
    tag; no weights are read). ExportError when the run records no tag of its own data."""
    config = run_folder.run_status(Path(folders[0])).config
    model, dataset = str(config.get('model')).split('.', 1)[0], config.get('dataset')
    tag = _own_data_tag(dataset, None, config) if dataset in OWN_DATASETS else dataset
    return Path(staging) / f'{model}.{tag}'


def _is_export(folder: Path) -> bool:
    """An empty folder, or one holding only export files (its optional ones too), with the results.json `export_run`
    writes."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        return True
    if not names <= set(EXPORT_FILES + OPTIONAL_EXPORT_FILES) or RESULTS_FILE not in names:
        return False
    try:
        results = json.loads((folder / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and 'sha256' in results and 'repo_id' in results


def _check_out(out: Path, sources, overwrite: bool):
    """`out` may be written: new, or an earlier export (never a run, a file, a folder holding the inputs) with
    --force, in a writable folder."""
    check_replaceable(out, sources, is_ours=_is_export,
                      what=f'an earlier export (only {", ".join(EXPORT_FILES + OPTIONAL_EXPORT_FILES)})')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f'{out} already exists (an earlier export); pass --force to replace it')
    check_writable(out.parent, '--out')


def _replace_dir(src: Path, dst: Path):
    """Rename `src` to `dst`; an existing `dst` is moved aside first and removed only once `src` is in place."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f'.{dst.name}.', suffix='.old', dir=dst.parent))
    os.rmdir(old)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
