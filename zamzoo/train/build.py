"""The pieces of a run, built once: the model on its device, its data loaders, optimizer, per-step schedule, grad
scaler and penalty. `train` builds a whole `TrainingRun` from a `TrainConfig`; `zamzoo eval` and `zamzoo bench
train` build the `Pieces` they need from the same functions."""
import dataclasses
import difflib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .. import provenance
from .._paths import check_free_space
from ..dataset_table import OWN_DATASETS
from ..errors import DataError, UsageError, WeightsError
from ..recipes import MIN_TRAIN_IMAGES
from . import distributed as D
from .checkpoint import seed_everything
from .run_folder import applied_recipe, read_split
from .schedule import RecipeLR


def check_model_name(name: str):
    """ValueError with close matches unless timm knows `name` (zamzoo's models are registered by importing it)."""
    import timm

    from ..models.plugins import unregistered_models

    if not timm.is_model(name.split('.', 1)[0]):
        missing = unregistered_models(name.split('.', 1)[0])
        if missing:
            raise UsageError(f"unknown model '{name}': {missing}; fix the plugin")
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise UsageError(f"unknown model '{name}'{hint} (zamzoo's models: zamzoo.list_models(), `zamzoo list`)")


def create_model(name: str, num_classes: Optional[int], pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model` after `import zamzoo` (which registers the zoo); `num_classes` None: the model's own (timm
    passes no None keyword on)."""
    import timm

    from ..pretrained.hub_errors import hub_errors

    check_model_name(name)
    try:  # timm's own models download their weights from the Hub: its failures as one WeightsError
        with hub_errors(f'{name} pretrained weights') if pretrained else nullcontext():
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except RuntimeError as e:  # timm's "No pretrained weights exist", "Invalid pretrained tag"
        if not pretrained or 'pretrained' not in str(e):
            raise
        raise _no_such_weights(name, e) from e
    except (TypeError, ValueError) as e:
        if not kwargs:  # not the user's doing: keep the traceback
            raise
        raise UsageError(f'--model-kwargs {kwargs}: {name} does not accept them ({e})') from e


def _no_such_weights(name: str, e: RuntimeError) -> WeightsError:
    """timm's refusal of pretrained weights it has none of (an unknown tag, a model without weights), with the
    model's tags that have a pretrained cfg."""
    import timm
    known = ', '.join(timm.models.get_arch_pretrained_cfgs(name.split('.')[0])) or 'none'
    return WeightsError(f'{name}: {e} (known: {known})')


# timm.create_model keywords a training run sets itself, and why a user may not
_RUN_SETS = {
    'num_classes': 'the class count is set by the data',
    'pretrained': 'use --pretrained',
    'checkpoint_path': 'use --init PATH',
    'features_only': 'it makes a feature extractor without a classifier, and training needs the classifier',
}
# with --pretrained: they can name other weights than the published ones the run records (without it, they set the
# cfg of a model trained from scratch: its normalisation on data of the user's own)
_PRETRAINED_SETS = dict.fromkeys(('pretrained_cfg', 'pretrained_cfg_overlay'),
                                 'with --pretrained; use --init FILE, whose source and sha256 the run records')


def check_model_kwargs(name: str, kwargs: dict, img_size: Optional[int], pretrained: bool = False):
    """UsageError naming the first keyword the model cannot train with: one the run sets itself (`pretrained`: from
    the published weights), in_chans other than the images' 3 channels, or a value the model rejects when built and
    run once in training mode on the meta device (no memory, no weights) at `img_size` (None: the model's own). A
    model that fails on the meta device even without keywords is left to the real build."""
    for key, why in {**_RUN_SETS, **(_PRETRAINED_SETS if pretrained else {})}.items():
        if key in kwargs:
            raise UsageError(f'--model-kwargs {key}: not for training ({why})')
    if kwargs.get('in_chans', 3) != 3:
        raise UsageError(f"--model-kwargs in_chans={kwargs['in_chans']!r}: zamzoo loads every image as 3-channel "
                         f"RGB (grayscale and other modes converted); in_chans must be 3")
    if not kwargs or _meta_error(name, (), img_size) is not None:
        return
    for key, value in kwargs.items():
        error = _meta_error(name, ((key, value),), img_size)
        if error is not None:
            raise UsageError(f'--model-kwargs {key}={value!r}: {name} does not accept it ({error})')
    error = _meta_error(name, tuple(kwargs.items()), img_size)
    if error is not None:
        raise UsageError(f'--model-kwargs {kwargs}: {name} does not accept them together ({error})')


_META_ERRORS = {}  # a sweep validates each model's keywords once, not once per seed


def _meta_error(name: str, kwargs: tuple, img_size: Optional[int]) -> Optional[str]:
    """Why `name` built with `kwargs` fails a training-mode forward pass on the meta device, or None."""
    key = (name, repr(kwargs), img_size)
    if key not in _META_ERRORS:
        _META_ERRORS[key] = _meta_forward_error(name, kwargs, img_size)
    return _META_ERRORS[key]


def _meta_forward_error(name: str, kwargs: tuple, img_size: Optional[int]) -> Optional[str]:
    import timm

    try:
        with torch.device('meta'):
            model = timm.create_model(name, num_classes=10, **dict(kwargs)).train()
            size = img_size or int(model.pretrained_cfg.get('input_size', (3, 224, 224))[-1])
            model(torch.empty(2, 3, size, size))
    except Exception as e:  # any failure: the caller compares with the model's own (no keywords)
        return f'{type(e).__name__}: {e}'.strip()
    return None


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == 'auto' and device.type == 'cuda':
        amp = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    if amp == 'fp16' and device.type != 'cuda':
        raise UsageError('amp: fp16 needs CUDA; use --amp bf16 or none on CPU')
    return {'bf16': torch.bfloat16, 'fp16': torch.float16, 'none': None, 'auto': None}[amp]  # auto: none on CPU


def autocast(device: torch.device, dtype: Optional[torch.dtype], cache_enabled: bool = True):
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype,
                                                              cache_enabled=cache_enabled)


def build_loaders(dataset: str, splits, recipe, mean, std, *, batch_size: int, eval_batch_size: int, seed: int,
                  info: D.DistInfo, loader: str, workers: int, channels_last: bool, img_size: int = 32) -> tuple:
    """Train and test loaders for one rank from `open_data`'s splits (the train loader is None without a train
    split): the device-resident tensor loader (images decoded once at `img_size`), or a DataLoader with
    torchvision transforms."""
    from ..data import DataLoaderBatches, TensorLoader, cifar_transforms, dataset_tensors, folder_transforms

    common = dict(seed=seed, rank=info.rank, world_size=info.world_size, device=info.device,
                  channels_last=channels_last)
    train_split, test_split = splits
    train = None
    if loader == 'tensor':
        if train_split is not None:
            train = TensorLoader(*dataset_tensors(train_split, img_size, workers), batch_size, mean, std, train=True,
                                 crop_padding=recipe.crop_padding, hflip=recipe.hflip, rotation=recipe.rotation,
                                 drop_last=recipe.drop_last, **common)
        return train, TensorLoader(*dataset_tensors(test_split, img_size, workers), eval_batch_size, mean, std,
                                   train=False, **common)

    def transform(is_train):
        if dataset in OWN_DATASETS:
            return folder_transforms(recipe, mean, std, img_size, is_train)
        return cifar_transforms(recipe, mean, std, is_train)

    if train_split is not None:
        train = DataLoaderBatches(train_split, batch_size, transform(True), train=True, drop_last=recipe.drop_last,
                                  num_workers=workers, **common)
    test = DataLoaderBatches(test_split, eval_batch_size, transform(False), train=False, num_workers=workers, **common)
    return train, test


def penalty_fn(model: nn.Module, recipe):
    """The recipe's regularisers as a function of the model, or None when there are none for this model:
    NAM's L1 on the NAM BN scales (recipe.nam_l1), SPEM's p0^2 + p1^2 (recipe.spem_alpha, any model with SPEM)."""
    from ..layers import NAM, SPEM, nam_l1_penalty, spem_penalty

    terms = [(coef, fn) for coef, kind, fn in ((recipe.nam_l1, NAM, nam_l1_penalty),
                                               (recipe.spem_alpha, SPEM, spem_penalty))
             if coef and any(isinstance(m, kind) for m in model.modules())]
    if not terms:
        return None
    return lambda m: sum(coef * fn(m) for coef, fn in terms)


def make_optimizer(model: nn.Module, recipe, device: torch.device):
    kwargs = dict(lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if device.type == 'cuda':
        kwargs['fused'] = True  # one kernel for the whole update
    return torch.optim.SGD(model.parameters(), **kwargs)


def use_tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device):
    """Make each param group's lr a tensor on `device`, filled in place by the lr scheduler (torch's
    `_update_param_group_val`) and read by the optimizer on the device, so that a captured step sees every new lr.
    CUDA's fused SGD reads a float32 lr (its tensor-lr kernel); elsewhere SGD reads the tensor's value as a Python
    float, which float64 holds exactly. state_dict keeps a float lr (checkpoints as without it), load_state_dict
    fills the same tensors."""
    if any(isinstance(group['lr'], torch.Tensor) for group in optimizer.param_groups):
        return  # already (the hooks are registered once)
    dtype = torch.float32 if device.type == 'cuda' else torch.float64
    lrs = [torch.tensor(float(group['lr']), dtype=dtype, device=device) for group in optimizer.param_groups]

    def keep_tensors(opt):
        for group, lr in zip(opt.param_groups, lrs):
            group['lr'] = lr.fill_(float(group['lr']))

    def save_floats(opt, state):
        for group in state['param_groups']:
            group['lr'] = float(group['lr'])

    keep_tensors(optimizer)
    optimizer.register_load_state_dict_post_hook(keep_tensors)
    optimizer.register_state_dict_post_hook(save_floats)


def _runtime(config, info: D.DistInfo) -> tuple:
    """How this process runs: (autocast dtype, DataLoader workers, channels_last); cuDNN autotuning and TF32 on."""
    device = info.device
    workers = config.workers
    if workers is None:
        workers = 0 if device.type == 'cpu' else min(8, max(1, (os.cpu_count() or 1) // info.world_size))
    channels_last = config.channels_last if config.channels_last is not None else device.type == 'cuda'
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return amp_dtype(config.amp, device), workers, channels_last


def _open_data(config, info: D.DistInfo, out: Path):
    """(open_data's data, the run's held-out split if any): the split made now, or on --resume the run folder's
    split file, reused; with --download under torchrun, rank 0 fetches the files while the others wait."""
    from ..data import open_data

    split = read_split(out) if config.resume else None
    if config.download and info.distributed:
        if info.is_main:
            open_data(config.source(split))
        D.barrier(info)
        config = dataclasses.replace(config, download=False)
    data = open_data(config.source(split))
    return data, data.split if data.split is not None else split


def _build_model(config, recipe, classes: Sequence[str], recorded: Optional[dict] = None):
    """The model (seeded, from --init's weights if any) and what config.json records of it: its starting weights,
    and the normalisation and input size its data gets (`_data_config`). On --resume (`recorded`: the run's
    config.json as it started) the checkpoint holds the weights: --init and --pretrained are not loaded again, and
    the run's record of its starting weights stays as it was."""
    from .init import apply_init, fit_pretrained_head, load_init, published_record

    seed_everything(config.seed)
    num_classes = len(classes)
    pretrained = config.pretrained and recorded is None
    model = create_model(config.model, num_classes, pretrained=pretrained, **config.model_kwargs)
    init = recorded.get('init') if recorded is not None else None
    if pretrained:  # recorded as a zoo name's --init: the weights' name, sha256 and what became of their classifier
        init = published_record(model, f"{config.model.partition('.')[0]}.{model.pretrained_cfg.get('tag')}")
        init['head'] = fit_pretrained_head(model, classes, init['classes'], recipe.reset_head)
    if config.init is not None and recorded is None:
        state, init = load_init(config.init)
        init['head'] = apply_init(model, state, config.init, classes, init.get('classes'))
    if init is not None and recorded is None:
        init['head_reset'] = init['head'] == 'reset'
    (mean, std), img_size = _data_config(config, recipe, model, init)
    return model, {'init': init, 'mean': list(mean), 'std': list(std), 'img_size': img_size,
                   'num_params': sum(p.numel() for p in model.parameters())}


def _data_config(config, recipe, model: nn.Module, init: Optional[dict]) -> tuple:
    """((mean, std), input size) of the run's images. CIFAR: the recipe's statistics (those its tags' published cfgs
    declare), 32 pixels. Other data: timm's data config of the weights loaded, i.e. the --init source's statistics
    where it records them (the 'mean' and 'std' of `load_init`'s record), else the model's cfg; at --img-size or the
    cfg's size."""
    if config.dataset not in OWN_DATASETS:
        return recipe.stats(config.dataset), 32
    cfg = model.pretrained_cfg
    if init is not None and init.get('mean') and init.get('std'):
        mean, std = init['mean'], init['std']
    else:
        mean, std = cfg.get('mean', IMAGENET_DEFAULT_MEAN), cfg.get('std', IMAGENET_DEFAULT_STD)
    return (tuple(mean), tuple(std)), config.img_size or int(cfg.get('input_size', (3, 224, 224))[-1])


@dataclass
class Pieces:
    """A model on its device and, for training, what trains it."""
    model: nn.Module
    amp_dtype: Optional[torch.dtype]  # autocast's; None: fp32
    optimizer: Optional[torch.optim.Optimizer] = None
    scheduler: Optional[RecipeLR] = None
    scaler: Optional[torch.amp.GradScaler] = None
    penalty: Optional[Callable] = None

    amp_name = property(lambda self: str(self.amp_dtype).replace('torch.', '') if self.amp_dtype else 'none')


def build_pieces(model: nn.Module, device: torch.device, amp_dtype: Optional[torch.dtype], *, channels_last: bool,
                 recipe=None, steps_per_epoch: int = 0, sync_bn: bool = False) -> Pieces:
    """`model` moved to `device` (SyncBatchNorm, channels_last); with a recipe also its SGD, per-step schedule,
    grad scaler (enabled for fp16 only) and penalty."""
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if recipe is None:
        return Pieces(model, amp_dtype)
    optimizer = make_optimizer(model, recipe, device)
    return Pieces(model, amp_dtype, optimizer, RecipeLR(optimizer, recipe, steps_per_epoch, recipe.epochs),
                  torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16), penalty_fn(model, recipe))


@dataclass
class TrainingRun:
    """Everything `train` needs before its first epoch."""
    pieces: Pieces
    train_loader: object
    test_loader: object
    split: Optional[dict]  # the held-out validation images (split.json), if any
    settings: dict  # config.json's content: the run's resolved settings (its identity: run_folder.run_identity)


def _check_batch_size(batch_size: int, world_size: int):
    if batch_size % world_size:
        raise UsageError(f'batch size {batch_size} is not divisible by the {world_size} processes; '
                         f'the global batch is split evenly across ranks')
    if batch_size < MIN_TRAIN_IMAGES * world_size:
        raise UsageError(f'batch size {batch_size}: expected at least {MIN_TRAIN_IMAGES} images for each of the '
                         f'{world_size} process(es) (BatchNorm cannot train on one image)')


def build_run(config, recipe, info: D.DistInfo, out: Path, recorded: Optional[dict] = None) -> TrainingRun:
    """Data, model and the pieces that train it, for this rank, from a validated `TrainConfig`; on --resume
    (`recorded`: the checkpoint's config.json) as the run started: its loader, its record of its starting weights."""
    from ..data.tensors import pick_loader

    _check_batch_size(recipe.batch_size, info.world_size)
    dtype, workers, channels_last = _runtime(config, info)
    data, split = _open_data(config, info, out)  # first: it gives the classes
    model, facts = _build_model(config, recipe, data.classes, recorded)
    loader = pick_loader(_loader_request(config.loader, recorded), (len(data.train), len(data.test)),
                         facts['img_size'], recipe.crop_padding, info.device,
                         batch_size=max(recipe.batch_size // info.world_size, config.eval_batch_size), workers=workers)
    if info.is_main:  # the checkpoint (weights, momentum), its temporary copy and model.safetensors must fit
        state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        check_free_space(out, 4 * state_bytes, 'the run (checkpoint, its temporary copy and model.safetensors)')
    train_loader, test_loader = build_loaders(
        config.dataset, (data.train, data.test), recipe, facts['mean'], facts['std'], batch_size=recipe.batch_size,
        eval_batch_size=config.eval_batch_size, seed=config.seed, info=info, loader=loader, workers=workers,
        channels_last=channels_last, img_size=facts['img_size'])
    if len(train_loader) == 0:
        raise DataError(f'{config.data}: the train split has {len(data.train)} images, too few for one training step: '
                        + (f'the recipe drops the last partial batch, and one batch is {recipe.batch_size}'
                           if recipe.drop_last else f'expected at least {MIN_TRAIN_IMAGES} for each of the '
                           f'{info.world_size} process(es) (BatchNorm cannot train on one image)'))
    sync_bn = recipe.sync_bn and info.distributed
    if sync_bn and info.device.type == 'cpu':
        raise UsageError(f"recipe '{recipe.name}' asks for SyncBatchNorm, which torch supports on GPUs only")
    pieces = build_pieces(model, info.device, dtype, channels_last=channels_last, recipe=recipe,
                          steps_per_epoch=len(train_loader), sync_bn=sync_bn)
    facts.update(amp=pieces.amp_name, loader=loader, sync_bn=sync_bn, channels_last=channels_last)
    return TrainingRun(pieces, train_loader, test_loader, split,
                       _run_config(config, recipe, info, data, train_loader, facts))


def _loader_request(loader: str, recorded: Optional[dict]) -> str:
    """The --loader to build: the one asked for, or on --resume the one the run recorded (what its first session's
    choice, `auto` included, resolved to: the free memory `auto` looks at may differ now); UsageError for another."""
    resolved = recorded.get('loader') if recorded is not None else None
    if resolved is None:
        return loader
    if loader not in ('auto', resolved):
        raise UsageError(f"--resume: this run trains with the {resolved} loader, not --loader {loader}; drop --loader "
                         f"to resume it with the loader it recorded, or start a new --out")
    return resolved


def recipe_record(recipe, dataset: str, loader: Optional[str]) -> dict:
    """config.json's `recipe`: the recipe's fields as the run applies them (`run_folder.applied_recipe`)."""
    return applied_recipe(recipe.to_dict(), dataset, loader)


def _run_config(config, recipe, info, data, train_loader, facts: dict) -> dict:
    """config.json: the run's settings, the full recipe as used, and where it ran."""
    import zamzoo
    from ..data import data_tag
    from ..models.plugins import attention_record

    return {
        'model': config.model, 'dataset': config.dataset, 'tag': data_tag(config.dataset, config.data),
        'data': str(config.data), 'data_fingerprint': data.fingerprint,
        'num_classes': data.num_classes, 'classes': list(data.classes),
        'seed': config.seed, 'pretrained': config.pretrained, 'init': facts['init'],
        'recipe': recipe_record(recipe, config.dataset, facts['loader']),
        'recipe_name': recipe.name, 'recipe_version': recipe.version,
        'overrides': {k: getattr(config, k) for k in ('epochs', 'batch_size', 'lr') if getattr(config, k) is not None},
        'mean': facts['mean'], 'std': facts['std'], 'img_size': facts['img_size'],
        'model_kwargs': dict(config.model_kwargs), 'attention_module': attention_record(config.model),
        'amp': facts['amp'], 'compile': config.compile, 'compile_mode': config.compile_mode,
        'loader': facts['loader'], 'channels_last': facts['channels_last'],
        'world_size': info.world_size, 'per_rank_batch_size': recipe.batch_size // info.world_size,
        'sync_bn': facts['sync_bn'], 'steps_per_epoch': len(train_loader), 'train_images': train_loader.num_samples,
        'num_params': facts['num_params'], 'device': provenance.device_description(info.device),
        'code_commit': provenance.code_commit(), 'zamzoo': zamzoo.__version__, 'torch': str(torch.__version__),
        'args': config.to_dict(),
    }
