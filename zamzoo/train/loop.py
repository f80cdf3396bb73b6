"""The training loop: `train(TrainConfig)` -> results, writing the run folder.

Run folder (the contract `zamzoo export` and the table generator read):
    config.json       the run's settings and the full recipe (as used, overrides applied)
    checkpoint.pt     the whole training state after the last completed epoch (weights_only-loadable)
    metrics.jsonl     one JSON object per epoch (fields in zamzoo.train.metrics.METRIC_FIELDS)
    curves.png        loss / accuracy / lr per epoch
    results.json      final and best test top-1/top-5, images/s, wall time, device, code commit, versions
    model.safetensors the final weights (state dict of the timm model), written when the run completes
    split.json        with --holdout only: the train and validation images (reused by --resume and zamzoo eval)
"""
import dataclasses
import difflib
import json
import math
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import provenance
from .._io import atomic_path, write_json_atomic
from .._paths import check_free_space, check_writable
from ..errors import DataError, NonFiniteError, UsageError, ZamzooError
from . import distributed as D
from .checkpoint import (BackgroundWriter, check_finite_weights, checkpoint_state, load_checkpoint, set_rng_state,
                         write_checkpoint)
from .config import TrainConfig
from .metrics import plot_curves, write_metrics
from .run_folder import (CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, METRICS_FILE, RESULTS_FILE, SPLIT_FILE,
                         WEIGHTS_FILE, lock_run_folder)
from .schedule import RecipeLR, recipe_lr

PLOT_EVERY_S = 30.0


class Reporter:
    """What a person watches. The library calls these on the main rank only; the CLI prints (tqdm), the default
    does nothing."""

    def start(self, info: dict):
        pass

    def epoch_start(self, epoch: int, epochs: int, steps: int, images: int):
        pass

    def step(self, steps: int, images: int, loss: Optional[float]):
        pass

    def epoch_end(self, record: dict, epochs: int):
        pass

    def finish(self, results: dict):
        pass


# ---------------------------------------------------------------------------------------------------------------
# Building blocks, shared with `zamzoo eval` and `zamzoo bench train`.

def check_model_name(name: str):
    """ValueError with close matches unless timm knows `name` (zamzoo's models are registered by importing it)."""
    import timm

    import zamzoo  # noqa: F401  (registers the zoo with timm)

    if not timm.is_model(name.split('.', 1)[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise UsageError(f"unknown model '{name}'{hint} (zamzoo's models: zamzoo.list_models(), `zamzoo list`)")


def create_model(name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model` after `import zamzoo` (which registers the zoo)."""
    import timm

    check_model_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        if not kwargs:  # not the user's doing: keep the traceback
            raise
        raise UsageError(f'--model-kwargs {kwargs}: {name} does not accept them ({e})') from e


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == 'auto':
        if device.type == 'cuda':
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if amp == 'none':
        return None
    if amp == 'fp16' and device.type != 'cuda':
        raise UsageError('amp: fp16 needs CUDA; use --amp bf16 or none on CPU')
    return {'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        if dataset in ('folder', 'hf'):
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

    terms = []
    if recipe.nam_l1 and any(isinstance(m, NAM) for m in model.modules()):
        terms.append((recipe.nam_l1, nam_l1_penalty))
    if recipe.spem_alpha and any(isinstance(m, SPEM) for m in model.modules()):
        terms.append((recipe.spem_alpha, spem_penalty))
    if not terms:
        return None

    def penalty(m):
        total = None
        for coef, fn in terms:
            t = coef * fn(m)
            total = t if total is None else total + t
        return total
    return penalty


class _Peek:
    """Read a running device sum every few steps without waiting for the device: copy it to pinned memory with
    an event and show the value once the event has completed (on CPU the value is simply read)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.buf = torch.zeros(2, dtype=torch.float64, pin_memory=self.cuda)
        self.event = None
        self.value = None

    def push(self, loss_sum: torch.Tensor, count: torch.Tensor):
        if not self.cuda:
            c = float(count)
            self.value = float(loss_sum) / c if c else None
            return
        if self.event is not None and self.event.query():
            self._read()
        if self.event is None:
            self.buf.copy_(torch.stack([loss_sum.double(), count.double()]), non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()

    def _read(self):
        s, c = self.buf.tolist()
        self.value = s / c if c else None
        self.event = None

    def get(self):
        if self.cuda and self.event is not None and self.event.query():
            self._read()
        return self.value


def train_one_epoch(model, loader, optimizer, scheduler, *, device, amp: Optional[torch.dtype], world_size: int = 1,
                    label_smoothing: float = 0.0, penalty=None, penalty_model=None, scaler=None,
                    reporter: Optional[Reporter] = None, progress_every: int = 25,
                    max_bad_steps: Optional[int] = None) -> dict:
    """One pass over `loader`; returns device tensors (no host sync here): sums of CE loss, correct top-1,
    images and penalty over this rank's samples.

    max_bad_steps (None: no check): steps whose loss is NaN or infinite are counted on the device and the pass
    raises NonFiniteError once more than `max_bad_steps` were seen, checked with the progress (every
    `progress_every` steps and at the end). With a tolerance (> 0) each step is checked on the host and a bad step
    is skipped (no update), so the weights stay finite.

    The loss of a step is sum(CE) * world_size / global_batch (+ penalty), so that DDP's gradient average equals the
    gradient of the mean CE over the whole global batch, even when ranks hold unequal parts of it.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pen_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    peek = _Peek(device) if reporter is not None else None
    images_seen = 0
    bad = torch.zeros((), dtype=torch.int64, device=device)
    for step, (x, y, n_global) in enumerate(loader, 1):
        with autocast(device, amp):
            logits = model(x)
        ce = F.cross_entropy(logits.float(), y, reduction='sum', label_smoothing=label_smoothing)
        loss = ce * (world_size / n_global)
        if penalty is not None:
            pen = penalty(penalty_model)
            loss = loss + pen
        optimizer.zero_grad(set_to_none=True)
        if max_bad_steps is not None:
            finite = torch.isfinite(loss.detach())
            bad += ~finite
            if max_bad_steps and not bool(finite):  # with a tolerance: skip the step (no update, no statistics)
                _check_bad_steps(bad, max_bad_steps, step)
                if int(bad) == len(loader):
                    raise NonFiniteError('the training loss was NaN or infinite at every step of the epoch')
                scheduler.step()
                continue
        if penalty is not None:
            pen_sum += pen.detach()
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        loss_sum += ce.detach()
        correct += (logits.detach().argmax(-1) == y).sum()
        count += y.numel()
        images_seen += n_global
        at_progress = step % progress_every == 0 or step == len(loader)
        if max_bad_steps == 0 and at_progress:
            _check_bad_steps(bad, 0, step)
        if reporter is not None and at_progress:
            peek.push(loss_sum, count)
            reporter.step(step, images_seen, peek.get())
    return {'loss_sum': loss_sum, 'correct': correct, 'count': count, 'penalty_sum': pen_sum,
            'steps': torch.tensor(len(loader), device=device)}


def _check_bad_steps(bad: torch.Tensor, max_bad_steps: int, step: int):
    """NonFiniteError once `bad` (the count of steps with a non-finite loss) exceeds `max_bad_steps`."""
    n = int(bad)  # one host sync
    if n > max_bad_steps:
        raise NonFiniteError(
            f'the training loss is NaN or infinite ({n} bad step{"s" if n > 1 else ""} by step {step} of this epoch, '
            f'{max_bad_steps} tolerated): the training diverged (learning rate too high?); '
            f'the run is marked failed and its weights are not saved')


@torch.inference_mode()
def evaluate_loader(model, loader, *, device, amp: Optional[torch.dtype], num_classes: int) -> dict:
    """Sums of CE loss, top-1 and top-5 hits and images over this rank's part of `loader` (device tensors)."""
    model.eval()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for x, y, _ in loader:
        if y.numel() == 0:
            continue
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction='sum')
        hits = logits.topk(k, dim=-1).indices == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=-1).sum()
        count += y.numel()
    return {'loss_sum': loss_sum, 'top1': top1, 'top5': top5, 'count': count}


def _reduce(sums: dict, info: D.DistInfo) -> dict:
    """All-reduce a dict of scalar device tensors in one collective and read them on the host (one sync)."""
    keys = sorted(sums)
    packed = torch.stack([sums[k].double() for k in keys])
    D.all_reduce_sum(packed, info)
    return dict(zip(keys, packed.tolist()))


def make_optimizer(model: nn.Module, recipe, device: torch.device):
    kwargs = dict(lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if device.type == 'cuda':
        kwargs['fused'] = True  # one kernel for the whole update
    return torch.optim.SGD(model.parameters(), **kwargs)


def seed_everything(seed: int):
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------

def train(config: TrainConfig, reporter: Optional[Reporter] = None) -> dict:
    """Train one model as `config` says, writing the run folder; returns the results (results.json's content)."""
    t_session = time.perf_counter()
    config.validate()
    recipe = config.resolve_recipe()
    info = D.setup(config.device)
    out = check_writable(config.out or config.default_out(recipe), '--out')
    try:
        # One writer per run folder, for the whole run: the main rank is the one that writes it.
        with lock_run_folder(out) if info.is_main else nullcontext():
            return _train(config, recipe, out, info, reporter if info.is_main else None, t_session)
    finally:
        D.teardown(info)


def _check_run_folder(out: Path, config: TrainConfig):
    ckpt = out / CHECKPOINT_FILE
    if config.resume:
        if not ckpt.is_file():
            raise ZamzooError(f'--resume: no checkpoint to resume in {out} (expected {ckpt})')
        return load_checkpoint(ckpt)
    if ckpt.exists() or ((out / RESULTS_FILE).exists() and not _failed_at_start(out / RESULTS_FILE)):
        raise ZamzooError(f'{out} already holds a run ({CHECKPOINT_FILE} / {RESULTS_FILE}); pass --resume to '
                          f'continue it, or choose another --out')
    return None


def _failed_at_start(results: Path) -> bool:
    """results.json of a run that failed before its first checkpoint: nothing to keep, a new run may start."""
    try:
        return json.loads(results.read_text()).get('status') == 'failed'
    except (OSError, ValueError, AttributeError):
        return False


_RESUME_KEYS = ('model', 'dataset', 'tag', 'classes', 'seed', 'pretrained', 'num_classes', 'model_kwargs', 'init')


@dataclass
class _Runtime:
    """How this process runs: resolved from the config and the device."""
    dtype: Optional[torch.dtype]
    loader: str
    workers: int
    channels_last: bool


def _runtime(config: TrainConfig, info: D.DistInfo) -> _Runtime:
    device = info.device
    loader = config.loader  # 'auto' is resolved once the data set's size is known (`_pick_loader`)
    workers = config.workers
    if workers is None:
        workers = 0 if device.type == 'cpu' else min(8, max(1, (os.cpu_count() or 1) // info.world_size))
    channels_last = config.channels_last if config.channels_last is not None else device.type == 'cuda'
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return _Runtime(amp_dtype(config.amp, device), loader, workers, channels_last)


def _open_data(config: TrainConfig, info: D.DistInfo, out: Path):
    """open_data, reusing the run folder's split file on --resume; with --download under torchrun, rank 0 fetches
    the files while the others wait."""
    from ..data import open_data

    split = read_split(out) if config.resume else None
    if config.download and info.distributed:
        if info.is_main:
            open_data(config.source(split))
        D.barrier(info)
        config = dataclasses.replace(config, download=False)
    return open_data(config.source(split))


def _build_model(config: TrainConfig, recipe, num_classes: int):
    """The model (seeded, from --init's weights if any), the record of its starting weights, and the normalisation
    and input size its data gets: the recipe's for CIFAR, the model's pretrained cfg for other data."""
    from .init import apply_init, load_init

    seed_everything(config.seed)
    model = create_model(config.model, num_classes, pretrained=config.pretrained, **config.model_kwargs)
    if config.pretrained and recipe.reset_head:
        model.reset_classifier(num_classes)
    init = None
    if config.init is not None:
        state, init = load_init(config.init)
        init['head_reset'] = apply_init(model, state, config.init)
    if config.dataset in ('folder', 'hf'):
        cfg = model.pretrained_cfg
        mean, std = tuple(cfg.get('mean', (0.485, 0.456, 0.406))), tuple(cfg.get('std', (0.229, 0.224, 0.225)))
        img_size = config.img_size or int(cfg.get('input_size', (3, 224, 224))[-1])
    else:
        (mean, std), img_size = recipe.stats(config.dataset), 32
    return model, init, mean, std, img_size


def _pick_loader(rt: _Runtime, data, img_size: int, recipe, device):
    from ..data.tensors import pick_loader
    rt.loader = pick_loader(rt.loader, (len(data.train), len(data.test)), img_size, recipe.crop_padding, device)


def read_split(out: Path) -> Optional[dict]:
    """The run folder's split file (a held-out validation set), or None when the run has none."""
    path = Path(out) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ZamzooError(f'{path} is not a readable split file ({e}); it lists the train and validation images') from e


def _resume_changes(saved: dict, now: dict) -> list:
    """'field: checkpoint X, now Y' for each setting a resumed run must keep (recipe fields as recipe.NAME)."""
    def short(v):
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + '...'

    pairs = [(k, saved.get(k), now.get(k)) for k in _RESUME_KEYS]
    old, new = saved.get('recipe') or {}, now.get('recipe') or {}
    pairs += [(f'recipe.{k}', old.get(k), new.get(k)) for k in sorted(set(old) | set(new), key=str)]
    return [f'{k}: checkpoint {short(a)}, now {short(b)}' for k, a, b in pairs if a != b]


def _resume(state: dict, run_config: dict, model, optimizer, scheduler, scaler):
    """Load a checkpoint's training state after checking it belongs to this run; (history, extra, epoch)."""
    changed = _resume_changes(state['config'], run_config)
    if changed:
        raise UsageError(f'--resume: this run differs from its checkpoint: {"; ".join(changed)}; resume with the '
                         f'settings the run started with, or start a new --out')
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    if state['scaler'] is not None:
        scaler.load_state_dict(state['scaler'])
    set_rng_state(state['rng'])
    return list(state['history']), dict(state['extra']), int(state['epoch'])


def _train(config: TrainConfig, recipe, out: Path, info: D.DistInfo, reporter: Optional[Reporter],
           t_session: float) -> dict:
    import zamzoo

    device = info.device
    if recipe.batch_size % info.world_size:
        raise UsageError(f'batch size {recipe.batch_size} is not divisible by the {info.world_size} processes; '
                         f'the global batch is split evenly across ranks')
    rt = _runtime(config, info)
    data = _open_data(config, info, out)  # first: it gives the classes
    num_classes, classes = data.num_classes, data.classes
    model, init, mean, std, img_size = _build_model(config, recipe, num_classes)
    _pick_loader(rt, data, img_size, recipe, device)
    num_params = sum(p.numel() for p in model.parameters())
    if info.is_main:  # the checkpoint (weights, momentum), its temporary copy and model.safetensors must fit
        state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        check_free_space(out, 4 * state_bytes, 'the run (checkpoint, its temporary copy and model.safetensors)')
    train_loader, test_loader = build_loaders(
        config.dataset, (data.train, data.test), recipe, mean, std, batch_size=recipe.batch_size,
        eval_batch_size=config.eval_batch_size, seed=config.seed, info=info, loader=rt.loader,
        workers=rt.workers, channels_last=rt.channels_last, img_size=img_size)
    steps = len(train_loader)
    if steps == 0:
        raise DataError(f'{config.data}: the train split has fewer images than one batch of {recipe.batch_size} '
                        f'(recipe drops the last partial batch)')

    sync_bn = recipe.sync_bn and info.distributed
    if sync_bn and device.type == 'cpu':
        raise UsageError(f"recipe '{recipe.name}' asks for SyncBatchNorm, which torch supports on GPUs only")
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = make_optimizer(model, recipe, device)
    scheduler = RecipeLR(optimizer, recipe, steps, recipe.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=rt.dtype == torch.float16)
    penalty = penalty_fn(model, recipe)

    run_config = {
        'model': config.model, 'dataset': config.dataset, 'tag': _tag(config), 'data': str(config.data),
        'num_classes': num_classes, 'classes': list(classes), 'seed': config.seed, 'pretrained': config.pretrained,
        'init': init,
        'recipe': recipe.to_dict(), 'recipe_name': recipe.name, 'recipe_version': recipe.version,
        'overrides': {k: getattr(config, k) for k in ('epochs', 'batch_size', 'lr') if getattr(config, k) is not None},
        'mean': list(mean), 'std': list(std), 'img_size': img_size, 'model_kwargs': dict(config.model_kwargs),
        'amp': str(rt.dtype).replace('torch.', '') if rt.dtype else 'none', 'compile': config.compile,
        'compile_mode': config.compile_mode, 'loader': rt.loader, 'channels_last': rt.channels_last,
        'world_size': info.world_size, 'per_rank_batch_size': recipe.batch_size // info.world_size,
        'sync_bn': sync_bn, 'steps_per_epoch': steps, 'train_images': train_loader.num_samples,
        'num_params': num_params, 'device': provenance.device_description(device),
        'code_commit': provenance.code_commit(), 'zamzoo': zamzoo.__version__, 'torch': str(torch.__version__),
        'args': config.to_dict(),
    }

    # Resume, or refuse to overwrite a run. Every rank reads the checkpoint (a multi-node resume needs the run
    # folder on a shared file system).
    state = _check_run_folder(out, config)
    history, extra, start_epoch = [], {}, 0
    if state is not None:
        history, extra, start_epoch = _resume(state, run_config, model, optimizer, scheduler, scaler)
        del state

    raw_model = model
    train_model = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[device.index] if device.type == 'cuda' else None,
                          broadcast_buffers=not sync_bn)
    if config.compile:
        train_model = torch.compile(train_model, mode=config.compile_mode, dynamic=False)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CONFIG_FILE, run_config)
        if data.split is not None:
            write_json_atomic(out / SPLIT_FILE, data.split)
        if reporter:
            reporter.start({'config': run_config, 'out': str(out), 'start_epoch': start_epoch})
    D.barrier(info)

    writer = BackgroundWriter() if info.is_main else None
    try:
        return _epochs(config, recipe, info, reporter, t_session, out, run_config, history, extra, start_epoch,
                       raw_model=raw_model, train_model=train_model, optimizer=optimizer, scheduler=scheduler,
                       scaler=scaler, penalty=penalty, train_loader=train_loader, test_loader=test_loader,
                       dtype=rt.dtype, num_classes=num_classes, num_params=num_params, steps=steps, writer=writer)
    except NonFiniteError as e:
        if info.is_main:
            _mark_failed(out / RESULTS_FILE, run_config, e)
        raise
    finally:
        if writer is not None:
            writer.close()


def _epochs(config, recipe, info, reporter, t_session, out, run_config, history, extra, start_epoch, *, raw_model,
            train_model, optimizer, scheduler, scaler, penalty, train_loader, test_loader, dtype, num_classes,
            num_params, steps, writer):
    """The epochs from `start_epoch`; `train_model` is `raw_model` possibly wrapped by DDP / torch.compile."""
    device = info.device
    title = f'{config.model} on {config.dataset} ({recipe.name})'
    last_plot = time.perf_counter()  # first plot after PLOT_EVERY_S, or after the last epoch
    train_time = float(extra.get('train_time_s', 0.0))
    wall_time = float(extra.get('wall_time_s', 0.0))
    best = dict(extra.get('best', {}))
    last_eval = None
    for epoch in range(start_epoch, recipe.epochs):
        train_loader.set_epoch(epoch)
        if reporter:
            reporter.epoch_start(epoch + 1, recipe.epochs, steps, train_loader.num_samples)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        sums = train_one_epoch(train_model, train_loader, optimizer, scheduler, device=device, amp=dtype,
                               world_size=info.world_size, label_smoothing=recipe.label_smoothing,
                               penalty=penalty, penalty_model=raw_model, scaler=scaler, reporter=reporter,
                               progress_every=config.progress_every, max_bad_steps=config.max_bad_steps)
        tr = _reduce(sums, info)  # the epoch's one host sync for training
        epoch_train_time = time.perf_counter() - t0
        train_time += epoch_train_time

        do_eval = (epoch + 1) % config.eval_every == 0 or epoch + 1 == recipe.epochs
        ev = None
        if do_eval:
            D.broadcast_buffers(raw_model, info)
            ev = _reduce(evaluate_loader(raw_model, test_loader, device=device, amp=dtype,
                                         num_classes=num_classes), info)
        epoch_time = time.perf_counter() - t0
        record = {
            'epoch': epoch + 1,
            'lr': _last_step_lr(scheduler),  # the lr of the epoch's last step
            'train_loss': tr['loss_sum'] / tr['count'],
            'train_top1': 100.0 * tr['correct'] / tr['count'],
            'penalty': tr['penalty_sum'] / tr['steps'] if penalty is not None else 0.0,  # mean per step
            'test_loss': ev['loss_sum'] / ev['count'] if ev else None,
            'test_top1': 100.0 * ev['top1'] / ev['count'] if ev else None,
            'test_top5': 100.0 * ev['top5'] / ev['count'] if ev else None,
            'epoch_time_s': epoch_time,
            'train_time_s': epoch_train_time,
            'train_images': int(tr['count']),
            'images_per_s': tr['count'] / epoch_train_time,  # training images per second
        }
        if ev:
            last_eval = record
            if not best or record['test_top1'] > best['top1']:
                best = {'top1': record['test_top1'], 'top5': record['test_top5'], 'epoch': epoch + 1}
        _check_finite_record(record)
        history.append(record)
        wall_time_now = wall_time + (time.perf_counter() - t_session)
        if info.is_main:
            extra = {'train_time_s': train_time, 'wall_time_s': wall_time_now, 'best': best}
            state = checkpoint_state(model=raw_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                     epoch=epoch + 1, config=run_config, history=history, extra=extra)
            writer.submit(write_checkpoint, out / CHECKPOINT_FILE, state)
            write_metrics(out / METRICS_FILE, history)
            # the plot costs a few tenths of a second: at most every PLOT_EVERY_S seconds, and after the last epoch
            if time.perf_counter() - last_plot >= PLOT_EVERY_S or epoch + 1 == recipe.epochs:
                plot_curves(out / CURVES_FILE, history, title=title)
                last_plot = time.perf_counter()
            if reporter:
                reporter.epoch_end(record, recipe.epochs)
        D.barrier(info)

    wall_time += time.perf_counter() - t_session
    results = None
    if info.is_main:
        if last_eval is None and history:
            last_eval = next((r for r in reversed(history) if r.get('test_top1') is not None), None)
        results = _results(config, recipe, run_config, history, last_eval, best, train_time, wall_time, device,
                           info, num_params)
        _save_weights(out / WEIGHTS_FILE, raw_model, run_config)
        if start_epoch >= recipe.epochs and history:  # nothing ran in this session (resuming a finished run)
            write_metrics(out / METRICS_FILE, history)
            plot_curves(out / CURVES_FILE, history, title=title)
        writer.wait()  # the last checkpoint is on disk before the run reports completion
        write_json_atomic(out / RESULTS_FILE, results)
        if reporter:
            reporter.finish(results)
    results = D.broadcast_object(results, info)
    return results


def _check_finite_record(record: dict):
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteError(f"epoch {record['epoch']}: {', '.join(bad)} not finite: the training diverged; "
                             f'the run is marked failed and its weights are not saved')


def _mark_failed(path: Path, run_config: dict, error: Exception):
    """results.json of a run that stopped on an error: status 'failed', the error, no metrics."""
    write_json_atomic(path, {
        'status': 'failed', 'error': str(error),
        **{k: run_config[k] for k in ('model', 'dataset', 'tag', 'seed', 'recipe_name')},
        'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    })


def _tag(config: TrainConfig) -> str:
    """The pretrained tag the weights would be published under: the CIFAR data set, or the data's own name."""
    from ..data import data_tag
    return data_tag(config.dataset, config.data)


def _last_step_lr(scheduler: RecipeLR) -> float:
    step = max(0, scheduler.last_epoch - 1)
    return recipe_lr(scheduler.recipe, scheduler.base_lrs[0], step, scheduler.steps_per_epoch, scheduler.epochs)


def _results(config, recipe, run_config, history, last, best, train_time, wall_time, device, info, num_params):
    import timm

    throughputs = [r['images_per_s'] for r in history]
    train_images = sum(r.get('train_images', 0) for r in history)
    return {
        'status': 'completed',
        'model': config.model,
        'dataset': config.dataset,
        'tag': run_config['tag'],
        'recipe': recipe.name,
        'recipe_version': recipe.version,
        'seed': config.seed,
        'epochs': len(history),
        'num_classes': run_config['num_classes'],
        'num_params': num_params,
        'top1': last['test_top1'] if last else None,
        'top5': last['test_top5'] if last else None,
        'test_loss': last['test_loss'] if last else None,
        'best_top1': best.get('top1'),
        'best_top5': best.get('top5'),
        'best_epoch': best.get('epoch'),
        'images_per_s': statistics.median(throughputs) if throughputs else None,
        'mean_images_per_s': (train_images / train_time) if train_time else None,
        'train_time_s': train_time,
        'wall_time_s': wall_time,
        'device': run_config['device'],
        'world_size': info.world_size,
        'amp': run_config['amp'],
        'compile': config.compile,
        'code_commit': provenance.code_commit(),
        'zamzoo': run_config['zamzoo'],
        'torch': str(torch.__version__),
        'timm': str(timm.__version__),
        'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }


def _save_weights(path: Path, model: nn.Module, run_config: dict):
    from safetensors.torch import save_file

    tensors = {k: v.detach().to('cpu').clone().contiguous() for k, v in model.state_dict().items()}
    check_finite_weights(tensors, path)
    metadata = {'format': 'pt', 'model': run_config['model'], 'dataset': run_config['dataset'],
                'recipe': run_config['recipe_name'], 'num_classes': str(run_config['num_classes'])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
