"""A sweep's plan: every (model, dataset, seed) as the `zamzoo train` run it is, in its own run folder
`<out>/<model>-<dataset>-<recipe>-s<seed>`, and what this invocation does with it given its folder's state."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..data import check_data_exists, check_same_data, open_data
from ..dataset_table import DATASETS
from ..errors import DataError, SplitMismatch, UsageError
from ..models.plugins import (attention_record, check_importable_in_new_process, from_entry_point, recorded_imports,
                              recorded_options)
from ..train import TrainConfig
from ..train.build import recipe_record
from ..train.run_folder import identity_changes, read_split, run_status, short_value
from .state import holds_a_run, read_plan, run_state

TRAIN_IMAGES = {d.name: d.train_images for d in DATASETS.values() if d.train_images}  # images per epoch


@dataclass
class PlannedRun:
    config: TrainConfig  # exactly the `zamzoo train` run; config.out is its run folder
    recipe: str
    epochs: int

    @property
    def folder(self) -> Path:
        return Path(self.config.out)

    @property
    def name(self) -> str:
        return self.folder.name

    def record(self) -> dict:
        c = self.config
        return {'model': c.model, 'dataset': c.dataset, 'recipe': self.recipe, 'seed': c.seed, 'epochs': self.epochs}

    def settings(self, recorded_loader: Optional[str] = None) -> dict:
        """What the plan knows of the run's config.json: its arguments, data set, loader and resolved recipe (as the
        run records it). With --loader auto the loader is the one a folder's run recorded (what it resumes with),
        `recorded_loader`, else not known (None: on data of one's own the recipe's crop fields are left out)."""
        c = self.config
        loader = recorded_loader if c.loader == 'auto' else c.loader
        return {'args': c.to_dict(), 'dataset': c.dataset, 'loader': loader,
                'recipe': recipe_record(c.resolve_recipe(), c.dataset, loader)}


def identity_conflict(run: PlannedRun, state: dict, world_size: int = 1) -> Optional[str]:
    """Why the run already in `run`'s folder (being trained, finished, or with a checkpoint) is not the planned one
    (on `world_size` processes: --gpus-per-run), naming the field; None when it is, or when the folder holds nothing
    to keep."""
    folder = run.folder
    if state['state'] == 'running':  # another invocation's: its plan entry must stay what it trains
        return settings_conflict(run, 'being trained')
    if not holds_a_run(folder):
        return None
    how = 'finished' if state['state'] == 'done' else f"started (epoch {state['epoch']})"
    return settings_conflict(run, how, world_size)


def settings_conflict(run: PlannedRun, how: str, world_size: Optional[int] = None) -> Optional[str]:
    """Why the run `run`'s folder records (config.json) is not the planned one (on `world_size` processes, when
    given), naming the field and saying `how` that run stands; None when it is, or when there is no readable
    config.json."""
    recorded = run_status(run.folder).config
    if not recorded:
        return None  # absent or corrupt: the state says so
    changes = _changes(recorded, run, world_size=world_size)
    if not changes:
        return None
    return f'seed {run.config.seed} of {run.config.model}-{run.config.dataset}: {how} with {_listed(changes)}'


def _changes(recorded: dict, run: PlannedRun, ignore: Sequence[str] = (), world_size: Optional[int] = None) -> list:
    """[(field, recorded, planned)] in which a run's config.json differs from the planned `run` (and from
    `world_size`, when given: each process's batch and BatchNorm statistics make another run)."""
    settings, within = run.settings(recorded.get('loader')), ('args', 'recipe')
    if world_size is not None and recorded.get('world_size') is not None:
        settings, within = dict(settings, world_size=world_size), (*within, 'world_size')
    # the data by content (data_conflict), not by path, when the run recorded its fingerprint: a copy elsewhere is the
    # same data
    moved = ('data',) if recorded.get('data_fingerprint') else ()
    changes = identity_changes(recorded, settings, within=within, ignore=(*moved, *ignore))
    module, current = recorded.get('attention_module'), attention_record(run.config.model)
    if module and current:
        changes += _module_changes(module, current)
    return changes


def _listed(changes: list) -> str:
    listed = ', '.join(f'{k}={short_value(a)}' for k, a, _ in changes)
    planned = ', '.join(f'{k}={short_value(b)}' for k, _, b in changes)
    flags = [f'{_FLAGS[k]}' for k, _, _ in changes if k in _FLAGS]
    return f"{listed}, the plan has {planned}" + (f" ({', '.join(flags)})" if flags else '')


_FLAGS = {'world_size': '--gpus-per-run'}  # a recorded field the arguments do not name


def _module_changes(module: dict, current: dict) -> list:
    """[(field, recorded, planned)] in which a run's attention module record differs from the one registered now."""
    changes = []
    if module.get('sha256') != current.get('sha256'):
        changes.append(('attention module', f"sha256 {str(module.get('sha256'))[:12]} of {module.get('source')}",
                        f"sha256 {str(current.get('sha256'))[:12]}"))
    for what, recorded in (('attention options', recorded_options), ('attention module imports', recorded_imports)):
        if recorded(module) != recorded(current):
            changes.append((what, recorded(module), recorded(current)))
    return changes


def check_conflicts(runs: Sequence[PlannedRun], states: Dict[str, dict]):
    """UsageError listing every run folder that holds a run with other settings than the plan's."""
    conflicts = [f"{states[run.name]['conflict']} ({run.folder})" for run in runs if states[run.name]['conflict']]
    if conflicts:
        raise UsageError(f'{len(conflicts)} run folder(s) hold runs with other settings than this plan, which are '
                         f'neither reused nor overwritten: {"; ".join(conflicts)}. Use another --out for these '
                         f'settings (or move those folders away)')


def check_queued(runs: Sequence[PlannedRun], queued: set, out) -> None:
    """UsageError when a run whose job an earlier submission left in SLURM's queue (`queued`: still_queued's) was
    planned with other settings than this plan's: the job trains what it was submitted with, and this plan would
    replace its plan.json entry (the folder holds nothing yet to compare with)."""
    planned, conflicts = read_plan(out)[0], []
    for run in (run for run in runs if run.name in queued and run.name in planned):
        entry, record = planned[run.name], run.record()
        changed = [k for k in record if entry.get(k) != record[k]]
        if changed:
            conflicts.append(f"{run.name}: queued with {', '.join(f'{k}={entry[k]!r}' for k in changed)}, the plan "
                             f"has {', '.join(f'{k}={record[k]!r}' for k in changed)}")
    if conflicts:
        raise UsageError(f'{len(conflicts)} run(s) an earlier submission left in SLURM\'s queue were submitted with '
                         f'other settings than this plan: {"; ".join(conflicts)}. Let those jobs end (or scancel '
                         f'them), or use another --out for these settings')


def expand_models(patterns: Sequence[str]) -> list:
    """zamzoo model names matching the wildcards, in order; a name without wildcards may be any timm model."""
    import zamzoo
    from ..train.build import check_model_name

    names = []
    for pattern in patterns:
        matches = zamzoo.list_models(pattern)
        if not matches:
            if any(ch in pattern for ch in '*?['):
                raise UsageError(f"no zamzoo model matches '{pattern}' (see `zamzoo list`)")
            check_model_name(pattern)
            matches = [pattern]
        names += [m for m in matches if m not in names]
    return names


def plan_sweep(models: Sequence[str], datasets: Sequence[str], seeds: Sequence[int], data, out,
               **train_options) -> list:
    """One PlannedRun per model x dataset x seed; `train_options` are the other TrainConfig fields (all of `zamzoo
    train`'s but model, dataset, seed, data and out), passed whole to each run. A model of a module registered in
    this process only is planned with what registers it in the run's process (`worker_registration`)."""
    runs = []
    for model in expand_models(models):
        options = train_options if train_options.get('attn') else dict(train_options, **worker_registration(model))
        for dataset in dict.fromkeys(datasets):
            for seed in dict.fromkeys(seeds):
                config = TrainConfig(model=model, data=str(data), dataset=dataset, seed=seed, **options)
                recipe = config.validate().resolve_recipe()
                config.out = str(Path(out) / Path(config.default_out(recipe)).name)
                runs.append(PlannedRun(config, recipe.name, recipe.epochs))
    return runs


def worker_registration(model: str) -> dict:
    """The TrainConfig fields (attn, attn_name, attn_options) with which a zoo worker registers the module of
    `model` before building it, when that module was registered in this process (zamzoo.register_attention,
    load_attention): a worker is a new process. {} for the zoo's own modules and the entry points' (every process
    registers those on `import zamzoo`)."""
    record = attention_record(model)
    if record is None or from_entry_point(record):
        return {}
    if record['spec'].split(':', 1)[0] == '__main__':
        raise UsageError(f"{model}: its attention module {record['spec']} is defined in __main__ (a notebook or the "
                         f'script that runs), which a zoo worker, a new process, cannot import; put the class in a '
                         f"file and register it with zamzoo.load_attention('path/to/file.py:Class', name=...)")
    check_importable_in_new_process(record, model)
    return {'attn': record['spec'], 'attn_name': record['name'], 'attn_options': recorded_options(record)}


def action(state: dict, retry_failed: bool) -> Optional[str]:
    """What `zoo run` does with a run in `state` (plan_states'): 'train', 'resume' or 'retry', or None to skip (a
    folder holding a run with other settings is never trained: see check_conflicts)."""
    if state.get('conflict'):
        return None
    if state['state'] == 'failed':
        return 'retry' if retry_failed else None
    if state['state'] != 'pending':
        return None
    return 'resume' if state['epoch'] else 'train'


def describe_action(state: dict, retry_failed: bool) -> str:
    act = action(state, retry_failed)
    if state.get('conflict'):
        return 'refuse (other settings: see below)'
    if act == 'resume':
        return f"resume after epoch {state['epoch']}"
    if act:
        return act
    return {'done': 'skip (done)', 'running': 'skip (being trained by another process)',
            'failed': 'skip (failed; --retry-failed runs it again)'}[state['state']]


def recipe_conflict(run: PlannedRun, planned: Dict[str, dict]) -> Optional[str]:
    """Why the sweep folder's plan (`planned`: read_plan's) cannot take the run: it holds the run's model and data set
    under another recipe (the folder's name differs, so nothing else would tell), and `zoo export` exports a
    model's seeds on a data set together; None when it does not."""
    c = run.config
    for name, entry in planned.items():
        if (entry['model'], entry['dataset']) == (c.model, c.dataset) and entry['recipe'] != run.recipe:
            return (f"seed {c.seed} of {c.model}-{c.dataset}: the sweep already plans this model on this data set under "
                    f"recipe {entry['recipe']} ({name}), this plan has recipe {run.recipe}: one recipe per model and "
                    f"data set in a sweep folder")
    return None


def group_conflict(run: PlannedRun, planned: Dict[str, dict], world_size: int = 1) -> Optional[str]:
    """Why the run cannot join the runs of its model and data set (its other seeds) that the sweep folder holds
    (`planned`: read_plan's): it differs from one that was started or finished in more than the seed, and `zoo
    export` exports a model's seeds on a data set together, as one setting; None when it does not."""
    c = run.config
    for name, entry in planned.items():
        folder = run.folder.parent / name
        if name == run.name or (entry['model'], entry['dataset'], entry['recipe']) != (c.model, c.dataset, run.recipe):
            continue
        if not holds_a_run(folder):
            continue
        recorded = run_status(folder).config
        changes = _changes(recorded, run, ignore=('seed', 'out'), world_size=world_size) if recorded else []
        if changes:
            return (f'seed {c.seed} of {c.model}-{c.dataset}: the sweep folder holds seed {recorded.get("seed")} of '
                    f'it ({name}) with {_listed(changes)}: one setting per model and data set in a sweep folder')
    return None


def plan_states(runs: Sequence[PlannedRun], world_size: int = 1) -> Dict[str, dict]:
    """Each run's state (run_state's) and `conflict`: identity_conflict's (runs on `world_size` processes),
    recipe_conflict's, group_conflict's or data_conflict's message, or None."""
    states, opened, plans = {}, {}, {}
    for run in runs:
        state = run_state(run.folder, run.epochs)
        planned = plans.setdefault(run.folder.parent, read_plan(run.folder.parent)[0])
        conflict = identity_conflict(run, state, world_size) or recipe_conflict(run, planned) or (
            group_conflict(run, planned, world_size) if state['state'] in ('pending', 'failed') else None)  # to train
        if conflict is None and state['state'] != 'running' and holds_a_run(run.folder):  # to resume: its data too
            conflict = data_conflict(run, opened)
        states[run.name] = dict(state, conflict=conflict)
    return states


def data_conflict(run: PlannedRun, opened: dict) -> Optional[str]:
    """Why the run in `run`'s folder (finished, or to resume) was trained on other data than the data at its --data
    now (config.json's `data_fingerprint` against the data opened as the run opens it, each source once through
    `opened`): a plan names its data by path, and data replaced at that path is other data, as is data that lacks
    images the run's split file lists. None when they agree, when the run recorded no fingerprint, or when the data
    cannot be opened now (a finished run does not need it; a run to resume then fails as it opens it)."""
    recorded = run_status(run.folder).config.get('data_fingerprint')
    if not recorded:
        return None
    source = dataclasses.replace(run.config.source(read_split(run.folder)), download=False)
    key = repr(source)
    if key not in opened:
        opened[key] = _fingerprint_now(source)
    try:
        if isinstance(opened[key], SplitMismatch):
            raise opened[key]
        if opened[key] is not None:
            check_same_data(recorded, opened[key], run.config.data, run.folder)
    except DataError as e:
        return f'seed {run.config.seed} of {run.config.model}-{run.config.dataset}: {e}'
    return None


def _fingerprint_now(source):
    """The fingerprint of the data `source` opens; the SplitMismatch where the data is there but lacks images its
    split file lists; None where it cannot be opened now."""
    try:
        check_data_exists(source)
        return open_data(source).fingerprint
    except SplitMismatch as e:
        return e
    except DataError:
        return None


def check_data(runs: Sequence[PlannedRun]) -> None:
    """A DataError when the data of `runs` is not where their --data says (each source once; nothing is read): made
    before any of them starts, where each would fail on it."""
    sources = {(r.config.dataset, r.config.data, r.config.download): r.config.source() for r in runs}
    for source in sources.values():
        check_data_exists(source)


def gpu_hours(runs: Sequence[PlannedRun], states: Dict[str, dict], images_per_second,
              gpus_per_run: int = 1) -> Optional[float]:
    """GPU-hours of the epochs still to train (training images only; evaluation not counted), at
    `images_per_second` per run on its `gpus_per_run` GPUs (a number, or a function of the run); None when a run's
    data set has no known size (folder, hf: known once opened)."""
    if any(run.config.dataset not in TRAIN_IMAGES for run in runs):
        return None
    rate = images_per_second if callable(images_per_second) else (lambda run: images_per_second)
    seconds = sum((run.epochs - min(states[run.name]['epoch'], run.epochs)) * TRAIN_IMAGES[run.config.dataset]
                  / rate(run) for run in runs)
    return seconds / 3600 * gpus_per_run
