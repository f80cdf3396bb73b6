"""Training recipes as named, versioned data.

The model registry reads a recipe's normalisation for its pretrained cfgs and the training loop reads the
rest, so the mean/std a checkpoint was trained with and the one its cfg announces are the same numbers.
"""
import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from .errors import UsageError

MIN_TRAIN_IMAGES = 2  # of a training step, in each process: BatchNorm cannot train on one image

Stats = Tuple[Tuple[float, float, float], Tuple[float, float, float]]
SCHEDULES = ('multistep', 'cosine', 'constant')

# weiaicunzai/pytorch-cifar100 (copied by the ZAM seed): CIFAR-100 train-set statistics.
CIFAR100_STATS: Stats = ((0.5070751592, 0.4865488733, 0.4409178434), (0.2673342859, 0.2564384629, 0.2761504713))
# CIFAR-10 train-set per-channel mean and std, to the digits of the NAM seed's train_cifar100.py
# (`data_transforms_cifar10`; version 1 of the recipes using them had them to 4 digits, up to 4.2e-5 off).
CIFAR10_STATS: Stats = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))
# bearpaw/pytorch-classification (SPEM's base) uses these for CIFAR-10 and CIFAR-100 alike.
BEARPAW_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = 'multistep'          # 'multistep', 'cosine' or 'constant'
    milestones: Tuple[int, ...] = ()     # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    # The number the seed's loop gives its first epoch; milestones count from it. weiaicunzai's loop (the ZAM
    # seed's) runs `for epoch in range(1, ...)` and calls `MultiStepLR.step(epoch)` before each epoch, so lr is
    # 0.1 for epochs 1..59 and 0.02 from epoch 60 (59 epochs at 0.1). bearpaw's and NAM's loops count from 0, so
    # lr changes after 60 (81) full epochs. lr at 0-based epoch t is lr * gamma ** bisect_right(milestones, t + epoch_base).
    epoch_base: int = 0
    warmup_epochs: int = 0               # linear warm-up, updated every step
    crop_padding: int = 4                # RandomCrop(32, padding); 0 disables
    hflip: bool = True
    rotation: float = 0.0                # RandomRotation(degrees); 0 disables
    normalization: Dict[str, Stats] = field(default_factory=dict)  # dataset name -> (mean, std)
    # The modules' own regularisers, part of their method: every recipe applies them to the models that have the
    # module (a model without it trains as without them). NAM's L1 was the `nam` recipe's alone until version 3 of
    # `zam` (2 of `spem`, 3 of `finetune`): a zoo NAM model, trained under its backbone's recipe, went without it.
    nam_l1: float = 1e-4                 # s in loss += s * sum |gamma| over NAM BNs (models with NAM only)
    spem_alpha: float = 0.1              # alpha in loss += alpha * SPEM penalty (models with SPEM only)
    sync_bn: bool = False
    label_smoothing: float = 0.0
    reset_head: bool = False             # re-initialise the classifier of a pretrained model before training
    drop_last: bool = False              # the seeds keep the last, partial batch (391 steps per CIFAR epoch)

    def __post_init__(self):
        """Every field checked where a Recipe is made or replaced (the API's recipes and the CLI's overrides alike):
        UsageError naming the first field that cannot train."""
        for name in ('version', 'epochs'):
            _check_number(self, name, getattr(self, name), minimum=1, integer=True)
        _check_number(self, 'batch_size', self.batch_size, minimum=MIN_TRAIN_IMAGES, integer=True)
        for name in ('warmup_epochs', 'crop_padding'):
            _check_number(self, name, getattr(self, name), minimum=0, integer=True)
        _check_number(self, 'epoch_base', self.epoch_base, minimum=0, integer=True, maximum=1)
        _check_number(self, 'lr', self.lr, minimum=0, exclusive=True)
        _check_number(self, 'gamma', self.gamma, minimum=0, exclusive=True)
        _check_number(self, 'momentum', self.momentum, minimum=0, maximum=1)
        _check_number(self, 'label_smoothing', self.label_smoothing, minimum=0, maximum=1)
        for name in ('weight_decay', 'rotation', 'nam_l1', 'spem_alpha'):
            _check_number(self, name, getattr(self, name), minimum=0)
        if self.schedule not in SCHEDULES:
            raise UsageError(f"recipe '{self.name}': schedule: expected one of {list(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        _check_milestones(self)
        for name in ('nesterov', 'hflip', 'sync_bn', 'reset_head', 'drop_last'):  # 'no' would read as True
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"recipe '{self.name}': {name}: expected True or False, got {getattr(self, name)!r}")
        if self.nesterov and self.momentum == 0:
            raise UsageError(f"recipe '{self.name}': nesterov: Nesterov momentum needs a momentum > 0, got 0")
        _check_normalization(self)

    def lr_change_epochs(self) -> Tuple[int, ...]:
        """The 1-based epochs that first train at each milestone's new lr (multistep), as the loop counts them: lr at
        0-based epoch t falls by gamma once t + epoch_base reaches a milestone m, i.e. from 1-based epoch
        m - epoch_base + 1 (zam, base 1: epoch 60; nam and spem, base 0: epochs 61 and 82)."""
        return tuple(m - self.epoch_base + 1 for m in self.milestones)

    def stats(self, dataset: str) -> Stats:
        try:
            return self.normalization[dataset]
        except KeyError:
            raise UsageError(
                f"recipe '{self.name}' has no normalisation for dataset '{dataset}'; "
                f"expected one of {sorted(self.normalization)}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> 'Recipe':
        """A copy with some fields changed (e.g. a shorter run); the name and version stay, so say so when you
        report its results."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise UsageError(f'unknown recipe field(s) {sorted(unknown)}; expected some of {sorted(self.__dataclass_fields__)}')
        return dataclasses.replace(self, **changes)


def _check_number(recipe: Recipe, name: str, value, *, minimum, maximum=None, integer=False, exclusive=False):
    """UsageError unless `value` is a finite number (an int when `integer`) >= `minimum` (> when `exclusive`) and
    <= `maximum`."""
    kind = int if integer else (int, float)
    bad = not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value)
    bad = bad or value < minimum or (exclusive and value == minimum) or (maximum is not None and value > maximum)
    if bad:
        low = f'> {minimum}' if exclusive else f'>= {minimum}'
        bounds = f'{low} and <= {maximum}' if maximum is not None else low
        raise UsageError(f"recipe '{recipe.name}': {name}: expected {'an integer' if integer else 'a number'} "
                         f"{bounds}, got {value!r}")


def _check_normalization(recipe: Recipe):
    """Each data set's statistics are (mean, std): three finite numbers each, the std's > 0."""
    stats = recipe.normalization
    if not isinstance(stats, dict):
        raise UsageError(f"recipe '{recipe.name}': normalization: expected a dict of data set -> (mean, std), "
                         f"got {stats!r}")
    for dataset, pair in stats.items():
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
            isinstance(v, (tuple, list)) and len(v) == 3 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v)
            for v in pair)
        if not ok or not all(c > 0 for c in pair[1]):
            raise UsageError(f"recipe '{recipe.name}': normalization: expected (mean, std) for {dataset!r}, three "
                             f"finite numbers each, the std's > 0; got {pair!r}")


def _check_milestones(recipe: Recipe):
    """Milestones are epochs (integers >= 0) in increasing order, each once: the schedule counts how many an epoch
    has passed (bisect on a sorted list), so an unsorted or repeated list would give another schedule than written."""
    m = recipe.milestones
    if not isinstance(m, (tuple, list)) or any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in m):
        raise UsageError(f"recipe '{recipe.name}': milestones: expected a tuple of epochs (integers >= 0), got {m!r}")
    if any(a >= b for a, b in zip(m, m[1:])):
        raise UsageError(f"recipe '{recipe.name}': milestones: expected increasing epochs, each once, got {tuple(m)} "
                         f"(e.g. {tuple(sorted(set(m)))})")


_RECIPES = {
    r.name: r for r in (
        Recipe(
            name='zam', version=3, epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
            milestones=(60, 120, 160), gamma=0.2, epoch_base=1, warmup_epochs=1, rotation=15.0,
            normalization={'cifar100': CIFAR100_STATS, 'cifar10': CIFAR10_STATS},
        ),
        Recipe(
            name='nam', version=2, epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
            milestones=(60, 120, 160), gamma=0.2,
            # NAM's script normalises CIFAR-100 with CIFAR-10 statistics; we use each data set's own.
            normalization={'cifar100': CIFAR100_STATS, 'cifar10': CIFAR10_STATS},
        ),
        Recipe(
            name='spem', version=2, epochs=164, batch_size=128, lr=0.1, weight_decay=1e-4,
            milestones=(81, 122), gamma=0.1,
            normalization={'cifar100': BEARPAW_STATS, 'cifar10': BEARPAW_STATS},
        ),
        Recipe(
            # For a pretrained model on a new data set (an image folder, or CIFAR): lower lr, cosine to zero per
            # step, classifier re-initialised. An image folder is normalised with the model's own mean/std.
            name='finetune', version=3, epochs=30, batch_size=64, lr=0.01, weight_decay=5e-4,
            schedule='cosine', reset_head=True,
            normalization={'cifar100': CIFAR100_STATS, 'cifar10': CIFAR10_STATS},
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe '{name}'; expected one of {list_recipes()}") from None


def recipe_changes(name: str, used: dict) -> dict:
    """The fields in which a run's recorded recipe `used` (config.json's `recipe`) differs from recipe `name` as
    registered, in field order, as Python values (JSON's lists as tuples). A field the record lacks (one that does
    not apply to the run's data, e.g. CIFAR statistics on an image folder) is no change."""
    registered = get_recipe(name).to_dict()
    return {key: _from_json(used[key]) for key, value in registered.items()
            if key not in ('name', 'version') and key in used and _as_json(used[key]) != _as_json(value)}


def _as_json(value):
    return json.loads(json.dumps(value))


def _from_json(value):
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def recipe_call(name: str, used: Optional[dict] = None, version: Optional[int] = None) -> str:
    """The call that gives recipe `name` as a run used it (`used`: its recorded recipe, whose differences from the
    registered one become `.replace(...)`), as a pretrained cfg's notes and a model card cite it:
    "zamzoo.recipes.get_recipe('finetune').replace(epochs=1) (version 1)". A recipe of the run's own (a name not in
    zamzoo.recipes) is named as such."""
    suffix = f' (version {version})' if version is not None else ''
    if name not in _RECIPES:
        return (f"{name!r}{suffix}, a recipe of the run's own (not in zamzoo.recipes; its fields are in the run's "
                f"config.json)")
    changes = ', '.join(f'{key}={value!r}' for key, value in recipe_changes(name, used or {}).items())
    return f'zamzoo.recipes.get_recipe({name!r})' + (f'.replace({changes})' if changes else '') + suffix


def list_recipes():
    return sorted(_RECIPES)
