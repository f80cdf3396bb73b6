"""The training loop, in the order it runs: `train(config)` reads as the recipe (data, model, criterion, optimizer,
lr schedule, resume, epochs, save); `train_one_epoch` and `evaluate_loader` are its two passes over the data.

The pieces are built by zamzoo.train.build, the run folder is written through zamzoo.train.run_folder.
"""
import math
import statistics
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import provenance
from .._process import raise_if_terminated
from .._paths import check_writable
from ..data.cifar_release import official_release
from ..data.sources import check_same_data
from ..dataset_table import CIFAR_DATASETS
from ..errors import NonFiniteError, UsageError
from ..models.plugins import check_attention_source
from ..recipes import Recipe
from . import distributed as D
from . import run_folder
from .build import TrainingRun, autocast, build_run
from .checkpoint import BackgroundWriter, checkpoint_state, rank_rng_state, rng_state, set_rng_state
from .config import TrainConfig
from .run_folder import lock_run_folder
from .reporting import Reporter
from .schedule import RecipeLR, recipe_lr
from .step import StepMath, TrainStep, graph_refusal, new_sums

PLOT_EVERY_S = 30.0


def train(config: TrainConfig, reporter: Optional[Reporter] = None, interruptions: tuple = ()) -> dict:
    """Train one model as `config` says, writing the run folder; returns the results (results.json's content).
    An exception while it trains marks the run failed (failed.json), except `interruptions` (a pre-empted job's: the
    run is left to resume) and those that are not an Exception (KeyboardInterrupt, SystemExit)."""
    t_session = time.perf_counter()
    config.validate()
    recipe = config.resolve_recipe()
    info = D.setup(config.device)
    out = check_writable(config.out or config.default_out(recipe), '--out')
    try:
        # One writer per run folder, for the whole run: the main rank is the one that writes it.
        with lock_run_folder(out) if info.is_main else nullcontext():
            state = run_folder.checkpoint_to_resume(out, config.resume)
            recorded = state['config'] if state is not None else None  # on --resume: the run as it started
            run = build_run(config, recipe, info, out, recorded)  # data, model, penalty, optimizer, schedule, scaler
            progress = _resume(config, out, state, run, info.rank)
            model = _wrap_model(config, info, run)
            loop = Loop(config, recipe, info, out, run, model, progress, reporter if info.is_main else None,
                        t_session, _train_step(config, recipe, info, run, model), interruptions)
            if info.is_main:
                run_folder.start_run(out, run.settings, run.split)
                if loop.reporter:
                    loop.reporter.start({'config': run.settings, 'out': str(out), 'start_epoch': progress.epoch})
            D.barrier(info)
            return _epochs(loop)
    finally:
        D.teardown(info)


def _wrap_model(config: TrainConfig, info: D.DistInfo, run: TrainingRun) -> nn.Module:
    """The model that steps: DDP across processes, torch.compile'd if asked. The pieces keep it unwrapped
    (torchvision's model_without_ddp): that one is saved and evaluated."""
    model = run.pieces.model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[info.device.index] if info.device.type == 'cuda' else None,
                    forward_sync_buffers=not run.settings['sync_bn'])  # torch 2.13's name for broadcast_buffers
    if config.compile:
        model = torch.compile(model, mode=config.compile_mode, dynamic=False)
    return model


def _train_step(config: TrainConfig, recipe: Recipe, info: D.DistInfo, run: TrainingRun,
                model: nn.Module) -> Optional[TrainStep]:
    """With --cuda-graph, the step captured as a CUDA graph on CUDA and run eagerly elsewhere; None: the eager step
    (without the option, or where capture is refused: warned with the reason). Built after a resume has loaded
    the optimizer: its lr becomes a device tensor."""
    if not config.cuda_graph:
        return None
    p = run.pieces
    refusal = graph_refusal(world_size=info.world_size, scaler=p.scaler, max_bad_steps=config.max_bad_steps)
    if refusal is not None:
        warnings.warn(f'--cuda-graph: the step is not captured, the eager step runs: {refusal}', stacklevel=2)
        return None
    if info.device.type != 'cuda':
        warnings.warn(f'--cuda-graph: no CUDA graph on {info.device.type}; the same step runs eagerly', stacklevel=2)
    step_math = StepMath(model, info.device, p.amp_dtype, info.world_size, recipe.label_smoothing, p.penalty, p.model)
    return TrainStep(step_math, p.optimizer, count_bad=True, capture=info.device.type == 'cuda')


@dataclass
class Progress:
    """Where a run stands after its completed epochs: what its checkpoint keeps besides the training state."""
    epoch: int = 0
    history: list = field(default_factory=list)  # one record per epoch (metrics.jsonl)
    best: dict = field(default_factory=dict)  # top1, top5, epoch of the best evaluated epoch
    train_time_s: float = 0.0
    wall_time_s: float = 0.0  # of the earlier sessions
    code_commits: list = field(default_factory=list)  # each commit that trained epochs, in order

    def trained_by(self, commit: Optional[str]):
        """Record that `commit` trains the next epochs (once per session that trains any)."""
        if not self.code_commits or self.code_commits[-1] != commit:
            self.code_commits.append(commit)

    def add(self, record: dict):
        if record['test_top1'] is not None and (not self.best or record['test_top1'] > self.best['top1']):
            self.best = {'top1': record['test_top1'], 'top5': record['test_top5'], 'epoch': record['epoch']}
        _check_finite_record(record)
        self.history.append(record)
        self.epoch = record['epoch']
        self.train_time_s += record['train_time_s']


@dataclass
class Loop:
    """A run being trained: what each epoch reads (torchvision's train_one_epoch gets these as arguments)."""
    config: TrainConfig
    recipe: Recipe
    info: D.DistInfo
    out: Path
    run: TrainingRun
    model: nn.Module  # the one that steps (wrapped); run.pieces.model is the plain one
    progress: Progress
    reporter: Optional[Reporter]  # the main rank's; None elsewhere
    t_session: float  # when this session started (perf_counter)
    train_step: Optional[TrainStep] = None  # the capturable step (--cuda-graph); None: the eager one
    interruptions: tuple = ()  # exceptions that leave the run to resume, not failed

    @property
    def title(self) -> str:
        return f'{self.config.model} on {self.config.dataset} ({self.recipe.name})'


def _check_finite_record(record: dict):
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteError(f"epoch {record['epoch']}: {', '.join(bad)} not finite: the training diverged; "
                             f'the run is marked failed and its weights are not saved')


def _resume(config: TrainConfig, out: Path, state: Optional[dict], run: TrainingRun, rank: int) -> Progress:
    """A new run's progress (`state` None), or the checkpoint's training state loaded after checking it belongs to
    this run. Every rank reads the checkpoint (a multi-node resume needs the run folder on a shared file system) and
    restores its own RNG state."""
    if state is None:
        return Progress()
    check_attention_source(state['config'].get('attention_module'), run.settings['attention_module'])
    # the data: check_same_data's; the loader: build_run resumes with the recorded one or refuses another --loader
    changed = run_folder.identity_changes(state['config'], run.settings,
                                            ignore=('data_fingerprint', 'train_images', 'loader'))
    if changed:
        listed = '; '.join(f'{k}: checkpoint {run_folder.short_value(a)}, now '
                           f'{"not given" if b is None else run_folder.short_value(b)}' for k, a, b in changed)
        raise UsageError(f'--resume: this run differs from its checkpoint: {listed}; resume with the settings the '
                         f'run started with, or start a new --out')
    check_same_data(state['config'].get('data_fingerprint'), run.settings['data_fingerprint'], config.data, out)
    p = run.pieces
    p.model.load_state_dict(state['model'])
    p.optimizer.load_state_dict(state['optimizer'])
    p.scheduler.load_state_dict(state['scheduler'])
    if state['scaler'] is not None:
        p.scaler.load_state_dict(state['scaler'])
    set_rng_state(rank_rng_state(state, rank))
    extra, first_commit = state['extra'], state['config'].get('code_commit')
    # config.json keeps the commit and versions that started the run (results.json: the commits that trained it)
    run.settings.update({key: state['config'].get(key) for key in ('code_commit', 'zamzoo', 'torch')})
    return Progress(int(state['epoch']), list(state['history']), dict(extra.get('best', {})),
                    float(extra.get('train_time_s', 0.0)), float(extra.get('wall_time_s', 0.0)),
                    list(extra.get('code_commits', [first_commit])))


def _epochs(loop: Loop) -> dict:
    """The epochs after `loop.progress.epoch`, each saved to the run folder, then the weights and results.json."""
    info, progress, epochs = loop.info, loop.progress, loop.recipe.epochs
    last_plot = time.perf_counter()  # first plot after PLOT_EVERY_S, or after the last epoch
    start_epoch = progress.epoch
    writer = BackgroundWriter() if info.is_main else None
    if start_epoch < epochs:
        progress.trained_by(provenance.code_commit())
    try:
        for epoch in range(start_epoch, epochs):
            progress.add(_one_epoch(loop, epoch))
            rank_rngs = D.gather_object(rng_state(), info)
            if info.is_main:
                # the plot costs a few tenths of a second: at most every PLOT_EVERY_S seconds, and after the last epoch
                plot = time.perf_counter() - last_plot >= PLOT_EVERY_S or epoch + 1 == epochs
                run_folder.save_epoch(loop.out, writer, _checkpoint(loop, rank_rngs), loop.title if plot else None)
                last_plot = time.perf_counter() if plot else last_plot
                if loop.reporter:
                    loop.reporter.epoch_end(progress.history[-1], epochs)
            D.barrier(info)

        results = None
        if info.is_main:
            # nothing ran in this session: a completed run is left as it is; one whose last files are missing or
            # corrupt is finished again from its last checkpoint
            results = run_folder.completed_results(loop.out) if start_epoch >= epochs else None
            if results is None:
                results = _results(loop)
                if start_epoch >= epochs and progress.history:
                    run_folder.write_history(loop.out, progress.history, loop.title)
                run_folder.finish_run(loop.out, writer, loop.run.pieces.model, loop.run.settings, results)
            if loop.reporter:
                loop.reporter.finish(results)
        return D.broadcast_object(results, info)
    except Exception as e:
        raise_if_terminated()  # the failure SIGTERM made (a DataLoader worker it ended too): an interruption
        if not isinstance(e, loop.interruptions):  # every process of a run of several: the first one's stays
            run_folder.mark_failed(loop.out, e, rank=info.rank if info.distributed else None)
        raise
    finally:
        if writer is not None:
            writer.close()


def _session_wall_time(loop: Loop) -> float:
    return loop.progress.wall_time_s + time.perf_counter() - loop.t_session


def _checkpoint(loop: Loop, rank_rngs: list) -> dict:
    p, progress = loop.run.pieces, loop.progress
    return checkpoint_state(model=p.model, optimizer=p.optimizer, scheduler=p.scheduler, scaler=p.scaler,
                            epoch=progress.epoch, config=loop.run.settings, history=progress.history, extra={
                                'train_time_s': progress.train_time_s, 'best': progress.best,
                                'wall_time_s': _session_wall_time(loop), 'code_commits': progress.code_commits},
                            rank_rngs=rank_rngs)


def _one_epoch(loop: Loop, epoch: int) -> dict:
    """Train one epoch, evaluate when due; the epoch's record (metrics.jsonl's line)."""
    config, recipe, info, run = loop.config, loop.recipe, loop.info, loop.run
    p, loader, device = run.pieces, run.train_loader, info.device
    loader.set_epoch(epoch)
    if loop.reporter:
        loop.reporter.epoch_start(epoch + 1, recipe.epochs, len(loader), loader.num_samples)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    sums = train_one_epoch(loop.model, loader, p.optimizer, p.scheduler, device=device, amp_dtype=p.amp_dtype,
                           world_size=info.world_size, label_smoothing=recipe.label_smoothing, penalty=p.penalty,
                           penalty_model=p.model, scaler=p.scaler, reporter=loop.reporter,
                           progress_every=config.progress_every, max_bad_steps=config.max_bad_steps,
                           train_step=loop.train_step)
    tr = _reduce(sums, info)  # the epoch's one host sync for training
    train_time, train_end = time.perf_counter() - t0, time.time()
    ev = None
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == recipe.epochs:
        D.broadcast_buffers(p.model, info)
        ev = _reduce(evaluate_loader(p.model, run.test_loader, device=device, amp_dtype=p.amp_dtype,
                                     num_classes=run.settings['num_classes']), info)
    return {
        'epoch': epoch + 1,
        'lr': _last_step_lr(p.scheduler),  # the lr of the epoch's last step
        'train_loss': tr['loss_sum'] / tr['count'],
        'train_top1': 100.0 * tr['correct'] / tr['count'],
        'penalty': tr['penalty_sum'] / tr['steps'] if p.penalty is not None else 0.0,  # mean per step
        'test_loss': ev['loss_sum'] / ev['count'] if ev else None,
        'test_top1': 100.0 * ev['top1'] / ev['count'] if ev else None,
        'test_top5': 100.0 * ev['top5'] / ev['count'] if ev else None,
        'test_images': int(ev['count']) if ev else None,
        'epoch_time_s': time.perf_counter() - t0,
        'train_time_s': train_time,
        'train_images': int(tr['count']),
        'images_per_s': tr['count'] / train_time,  # training images per second
        'train_end_unix': train_end,  # when its training pass ended (wall clock): runs sharing a GPU line up by it
        'skipped_steps': _skipped_steps(tr, info, epoch + 1, config.max_bad_steps),
    }


def _skipped_steps(reduced: dict, info: D.DistInfo, epoch: int, max_bad_steps: int) -> int:
    """The epoch's steps skipped for a NaN/inf loss (skipped on every rank: the ranks' sum / their number), said in a
    warning where there were any."""
    skipped = round(reduced['skipped_steps'] / info.world_size)
    if skipped and info.is_main:
        warnings.warn(f'epoch {epoch}: {skipped} step{"s" if skipped > 1 else ""} with a NaN/inf loss skipped '
                      f'(--max-bad-steps {max_bad_steps} tolerates as many in each epoch)', stacklevel=2)
    return skipped


def _last_step_lr(scheduler: RecipeLR) -> float:
    step = max(0, scheduler.last_epoch - 1)
    return recipe_lr(scheduler.recipe, scheduler.base_lrs[0], step, scheduler.steps_per_epoch, scheduler.epochs)


def train_one_epoch(model, loader, optimizer, scheduler, *, device, amp_dtype: Optional[torch.dtype],
                    world_size: int = 1,
                    label_smoothing: float = 0.0, penalty=None, penalty_model=None, scaler=None,
                    reporter: Optional[Reporter] = None, progress_every: int = 25,
                    max_bad_steps: Optional[int] = None, train_step: Optional[TrainStep] = None) -> dict:
    """One pass over `loader`; returns device tensors (no host sync here): sums of CE loss, correct top-1,
    images and penalty over this rank's samples (StepMath's loss and sums).

    max_bad_steps (None: no check): steps whose loss is NaN or infinite are counted on the device and the pass
    raises NonFiniteError once more than `max_bad_steps` were seen, checked with the progress (every
    `progress_every` steps and at the end). With a tolerance (> 0) each step is checked on the host and a bad step
    is skipped: no update, and its forward's changes to the buffers (BN running statistics) undone, so the model
    stays finite; with several processes, a step bad on one rank is skipped on every rank.

    train_step: the capturable step (zamzoo.train.step) built for this model and optimizer, which then computes
    each step (the arguments above that define the step are its own); None: the eager step below.
    """
    model.train()
    if train_step is None:
        step_math = StepMath(model, device, amp_dtype, world_size, label_smoothing, penalty, penalty_model)
        sums, bad = new_sums(device), torch.zeros((), dtype=torch.int64, device=device)
    else:
        refusal = graph_refusal(world_size=world_size, scaler=scaler, max_bad_steps=max_bad_steps)
        if refusal is not None:
            raise ValueError(f'train_step: {refusal}')
        sums, bad = train_step.start_epoch()
    peek = _Peek(device) if reporter is not None else None
    images_seen = skipped = 0
    for step, (x, y, n_global) in enumerate(loader, 1):
        raise_if_terminated()
        if train_step is not None:
            train_step(x, y, n_global)
        elif not _eager_step(step_math, optimizer, scaler, (x, y, n_global), sums, bad, max_bad_steps, (step,
                             len(loader))):
            scheduler.step()  # a skipped step keeps its place in the schedule
            skipped += 1
            continue
        scheduler.step()
        images_seen += n_global
        if step % progress_every == 0 or step == len(loader):
            if max_bad_steps == 0:
                _check_bad_steps(bad, 0, step)
            if reporter is not None:
                peek.push(sums['loss_sum'], sums['count'])
                reporter.step(step, images_seen, peek.get())
    return {**{k: v.clone() for k, v in sums.items()}, 'steps': torch.tensor(len(loader), device=device),
            'skipped_steps': torch.tensor(skipped, device=device)}


def _eager_step(step_math: StepMath, optimizer, scaler, batch: tuple, sums: dict, bad: torch.Tensor,
                max_bad_steps: Optional[int], step_of: tuple) -> bool:
    """One step with the checks that need the host (fp16's GradScaler, skipping a bad step); False: skipped.
    `batch`: (x, y, n_global); `step_of`: (step, steps in the epoch)."""
    x, y, n_global = batch
    buffers = list(step_math.model.buffers()) if max_bad_steps else []
    kept = [b.clone() for b in buffers]  # a step that may be skipped: what its forward changes, to undo
    logits, ce, pen, loss = step_math.loss(x, y, n_global)
    optimizer.zero_grad(set_to_none=True)
    if max_bad_steps is not None and _skip_bad_step(loss, bad, max_bad_steps, *step_of, step_math.world_size):
        for buffer, value in zip(buffers, kept):
            buffer.copy_(value)
        return False
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    step_math.add_to_sums(sums, logits, y, ce, pen)
    return True


def _skip_bad_step(loss: torch.Tensor, bad: torch.Tensor, max_bad_steps: int, step: int, steps: int,
                   world_size: int) -> bool:
    """Count a non-finite loss in `bad` (on the device); with a tolerance, check it on the host: True to skip it.
    With a tolerance, a loss that is not finite on any rank counts on every rank: a rank that skipped its backward
    alone would pair its next step's gradients with the others' of this one in DDP's all-reduce."""
    finite = torch.isfinite(loss.detach())
    if max_bad_steps:
        finite = D.finite_on_every_rank(finite, world_size)
    bad += ~finite
    if not max_bad_steps or bool(finite):
        return False
    _check_bad_steps(bad, max_bad_steps, step)
    if int(bad) == steps:
        raise NonFiniteError('the training loss was NaN or infinite at every step of the epoch')
    return True


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


def _check_bad_steps(bad: torch.Tensor, max_bad_steps: int, step: int):
    """NonFiniteError once `bad` (the count of steps with a non-finite loss) exceeds `max_bad_steps`."""
    n = int(bad)  # one host sync
    if n > max_bad_steps:
        raise NonFiniteError(
            f'the training loss is NaN or infinite ({n} bad step{"s" if n > 1 else ""} by step {step} of this epoch, '
            f'{max_bad_steps} tolerated in an epoch): the training diverged (learning rate too high?); '
            f'the run is marked failed and its weights are not saved')


@torch.inference_mode()
def evaluate_loader(model, loader, *, device, amp_dtype: Optional[torch.dtype], num_classes: int) -> dict:
    """Sums of CE loss, top-1 and top-5 hits and images over this rank's part of `loader` (device tensors)."""
    model.eval()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1, top5, count = (torch.zeros((), dtype=torch.int64, device=device) for _ in range(3))
    for x, y, _ in loader:
        raise_if_terminated()
        if y.numel() == 0:
            continue
        with autocast(device, amp_dtype):
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


def _code_commits(commits: list) -> dict:
    """results.json's code_commit (the one commit that trained every epoch; when several did, all of them, so no
    reader of that one field takes the weights for one commit's) and code_commits (each, in order)."""
    one = commits[0] if len(commits) == 1 else ', '.join(str(c) for c in commits) or None
    return {'code_commit': one, 'code_commits': list(commits)}


def _results(loop: Loop) -> dict:
    """results.json of a completed run: the last evaluation, the best one, speed and provenance."""
    import timm

    config, recipe, run_config, progress = loop.config, loop.recipe, loop.run.settings, loop.progress
    best, history, train_time = progress.best, progress.history, progress.train_time_s
    last = next((r for r in reversed(history) if r.get('test_top1') is not None), {})
    throughputs = [r['images_per_s'] for r in history]
    train_images = sum(r.get('train_images', 0) for r in history)
    return {
        'status': 'completed', 'model': config.model, 'dataset': config.dataset, 'tag': run_config['tag'],
        'recipe': recipe.name, 'recipe_version': recipe.version, 'seed': config.seed, 'epochs': len(history),
        'num_classes': run_config['num_classes'], 'num_params': run_config['num_params'],
        'top1': last.get('test_top1'), 'top5': last.get('test_top5'), 'test_loss': last.get('test_loss'),
        'test_images': last.get('test_images'),
        # what publishing may call the data: the official CIFAR release, or only data in its format
        'official_data': official_release(config.data, config.dataset) if config.dataset in CIFAR_DATASETS else None,
        'best_top1': best.get('top1'), 'best_top5': best.get('top5'), 'best_epoch': best.get('epoch'),
        'images_per_s': statistics.median(throughputs) if throughputs else None,
        'mean_images_per_s': (train_images / train_time) if train_time else None,
        'train_time_s': train_time, 'wall_time_s': _session_wall_time(loop), 'device': run_config['device'],
        'world_size': loop.info.world_size, 'amp': run_config['amp'], 'compile': config.compile,
        'cuda_graph': loop.train_step is not None and loop.train_step.capture,  # the step replayed as a CUDA graph
        **_code_commits(progress.code_commits), 'zamzoo': run_config['zamzoo'], 'torch': str(torch.__version__),
        'timm': str(timm.__version__), 'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }
