"""The statistics of a comparison: for each cell (backbone x baseline), the candidate's final-epoch top-1 against the
baseline's, paired by seed (the paired test itself: zamzoo.pairing). scipy is imported inside the functions that need
it, so `import zamzoo` does not load it."""
import math
import numbers
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import NonFiniteError, UsageError
# the paired test lives below the publishing layers (the tables use it too); re-exported for report.py and users
from ..pairing import (ALPHA, CONSTANT, FLOORED_T_TEST, IDENTICAL, POWER, SEEDS_NEEDED_CAP,  # noqa: F401
                       SIGN_TEST_MIN_PAIRS, SINGLE_PAIR, T_TEST, TIED, PairedDifference, detectable_difference,
                       paired_test, scipy_stats, seeds_needed)

BETTER, WORSE, NO_DIFFERENCE = 'better', 'worse', 'no detectable difference'
# a candidate that diverged on a seed its baseline finished; a cell whose arms share no finished seed
HARMFUL, NO_VERDICT = 'harmful', 'no verdict'
# why a planned run has no top-1: NonFiniteError recorded in its folder; any other failure; not (yet) run
DIVERGED, FAILED, MISSING = 'diverged', 'failed', 'missing'
# an arm's cost against the plain backbone: `contract.arm_costs`' (latency: median and interquartile range of the
# per-round ratios) and its training speed ratio (median and interquartile range of the per-seed ratios), or why it
# has none
COST_KEYS = ('params_added', 'macs_added', 'cpu_latency_ratio', 'cpu_latency_iqr', 'train_images_per_s_ratio',
             'train_images_per_s_iqr', 'train_images_per_s_note')


@dataclass(frozen=True)
class UnfinishedRun:
    """A seed of an arm without a top-1: its state (DIVERGED, FAILED or MISSING), the failure's line or the run's
    state ('pending', 'running'), and its run folder."""
    seed: int
    state: str
    detail: str
    folder: Optional[str] = None

    def __post_init__(self):
        if self.state not in (DIVERGED, FAILED, MISSING):
            raise UsageError(f'seed {self.seed}: unknown state {self.state!r}; expected {DIVERGED}, {FAILED} or '
                             f'{MISSING}')


@dataclass(frozen=True)
class ArmResult:
    """One arm of a comparison: one attention on one backbone, its final-epoch top-1 (%) per seed, the run folders
    it came from, and its cost against the plain backbone (keys of COST_KEYS; None where unmeasured); `unfinished`:
    its seeds without a top-1 and why (an arm may have only these: its cells then say why they have no verdict)."""
    backbone: str
    attention: str
    top1_by_seed: Dict[int, float]
    runs: List[str] = field(default_factory=list)
    cost: Optional[dict] = None
    test_images: Optional[int] = None   # images each run was scored on (the binomial noise floor)
    test_loss_by_seed: Optional[Dict[int, Optional[float]]] = None  # final test loss per seed: are two runs one?
    unfinished: Tuple[UnfinishedRun, ...] = ()

    def __post_init__(self):
        if not self.top1_by_seed and not self.unfinished:
            raise UsageError(f'{self.backbone} {self.attention}: no run to compare (no top-1 for any seed, and no '
                             f'unfinished run)')
        both = sorted(set(self.top1_by_seed) & {run.seed for run in self.unfinished})
        if both:
            raise UsageError(f'{self.backbone} {self.attention}: seeds {both} have a top-1 and are unfinished')
        bad = {seed: v for seed, v in self.top1_by_seed.items() if not _is_number(v)}
        if bad:
            raise UsageError(f'{self.backbone} {self.attention}: top-1 must be a number (a percentage); got {bad}')
        bad = {seed: v for seed, v in self.top1_by_seed.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f'{self.backbone} {self.attention}: top-1 is not a finite number for seeds {bad}')
        bad = {seed: v for seed, v in self.top1_by_seed.items() if not 0 <= v <= 100}
        if bad:
            raise UsageError(f'{self.backbone} {self.attention}: top-1 must be a percentage in [0, 100]; got {bad}')
        if self.test_images is not None and not (_is_whole(self.test_images) and self.test_images > 0):
            raise UsageError(f'{self.backbone} {self.attention}: test_images must be a positive whole number of '
                             f'images (or None when unknown); got {self.test_images!r}')
        unknown = set(self.cost or {}) - set(COST_KEYS)
        if unknown:
            raise UsageError(f'{self.backbone} {self.attention}: unknown cost keys {sorted(unknown)}; '
                             f'expected some of {list(COST_KEYS)}')

    def seeds(self) -> List[int]:
        """Every seed of the arm, finished or not."""
        return sorted(set(self.top1_by_seed) | {run.seed for run in self.unfinished})

    def why_unfinished(self, seed: int) -> UnfinishedRun:
        """Why `seed` has no top-1 (MISSING, 'no run', when the arm does not know the seed)."""
        return next((run for run in self.unfinished if run.seed == seed), UnfinishedRun(seed, MISSING, 'no run'))


@dataclass(frozen=True)
class CellStats:
    """Everything report.json says about one cell. The numbers cover the n seeds
    both arms finished (None where there are none); `dropped`: each other seed of either arm and why, one row per
    arm without a top-1 (arm: 'candidate' or 'baseline'); `diverged`: the seeds where the candidate diverged and
    the baseline did not (counted against the candidate: verdict HARMFUL); `seeds`: how many seeds the cell has;
    `test`: which test made diff_ci and p_value (`zamzoo.pairing`'s names, e.g. 'paired t-test'; None without one)."""
    backbone: str
    baseline: str
    n: int
    candidate_mean: Optional[float]
    candidate_std: Optional[float]
    baseline_mean: Optional[float]
    baseline_std: Optional[float]
    diff_mean: Optional[float]
    diff_ci: Optional[Tuple[float, float]]
    p_value: Optional[float]
    p_holm: Optional[float]
    prob_improvement: Optional[float]
    mde: Optional[float]
    seeds_needed: Optional[int]
    verdict: str
    test: Optional[str]
    seeds: int = 0
    dropped: Tuple[dict, ...] = ()
    diverged: Tuple[int, ...] = ()

    def to_json(self) -> dict:
        fields = ('backbone', 'baseline', 'n', 'candidate_mean', 'candidate_std', 'baseline_mean', 'baseline_std',
                  'diff_mean', 'diff_ci', 'p_value', 'p_holm', 'prob_improvement', 'mde', 'verdict', 'seeds_needed',
                  'test', 'seeds')
        row = {k: getattr(self, k) for k in fields}
        row['diff_ci'] = list(self.diff_ci) if self.diff_ci is not None else None
        row['diverged_seeds'] = list(self.diverged)
        row['dropped'] = [dict(row) for row in self.dropped]
        return row


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def mean_interval(values: Sequence[float]) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Mean and its 95% t interval (None for a single value; [mean, mean] when all values are equal)."""
    stats = scipy_stats()
    mean, std = mean_std(values)
    if std is None:
        return mean, None
    if std == 0:
        return mean, (mean, mean)
    lo, hi = stats.t.interval(1 - ALPHA, len(values) - 1, loc=mean, scale=std / math.sqrt(len(values)))
    return mean, (float(lo), float(hi))


def holm(p_values: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm's step-down adjusted p-values over the p-values that are not None (None stays None)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: List[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def probability_of_improvement(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """The share of (candidate run, baseline run) pairs where the candidate scores higher, ties counting half."""
    signs = np.sign(np.subtract.outer(np.asarray(candidate, float), np.asarray(baseline, float)))
    return float((signs.mean() + 1) / 2)


def verdict(p_holm: Optional[float], diff: Optional[float], diverged: Sequence[int] = ()) -> str:
    """HARMFUL when the candidate diverged on a seed where its baseline did not (`diverged`), whatever the other seeds
    say; else NO_VERDICT without a common seed, else the Holm-corrected test's verdict."""
    if diverged:
        return HARMFUL
    if diff is None:
        return NO_VERDICT
    if p_holm is None or not p_holm < ALPHA:  # NaN too
        return NO_DIFFERENCE
    return BETTER if diff > 0 else WORSE


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_whole(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _dropped(candidate: ArmResult, baseline: ArmResult, seeds: Sequence[int]) -> Tuple[dict, ...]:
    """One row per arm without a top-1 on each seed of the cell that is not one of the common `seeds`."""
    rows = []
    for seed in sorted((set(candidate.seeds()) | set(baseline.seeds())) - set(seeds)):
        for role, arm in (('candidate', candidate), ('baseline', baseline)):
            if seed not in arm.top1_by_seed:
                run = arm.why_unfinished(seed)
                rows.append({'seed': seed, 'arm': role, 'attention': arm.attention, 'state': run.state,
                             'detail': run.detail, 'folder': run.folder})
    return tuple(rows)


def _harmful_seeds(dropped: Sequence[dict]) -> Tuple[int, ...]:
    """Seeds where the candidate diverged and the baseline finished: a failure of the module (when both diverged,
    the recipe is to blame as much; when the baseline failed or has no result yet, how it fares is not known: the
    seed is only dropped)."""
    states = {(row['seed'], row['arm']): row['state'] for row in dropped}
    return tuple(sorted(seed for (seed, role), state in states.items()
                        if role == 'candidate' and state == DIVERGED and (seed, 'baseline') not in states))


def _cell_test(candidate: ArmResult, baseline: ArmResult) -> Tuple[List[float], List[float],
                                                                   Optional[PairedDifference]]:
    """The arms' top-1 over the seeds both finished, and their paired test (None without such a seed)."""
    seeds = sorted(set(candidate.top1_by_seed) & set(baseline.top1_by_seed))
    a, b = [candidate.top1_by_seed[s] for s in seeds], [baseline.top1_by_seed[s] for s in seeds]
    if not seeds:
        return a, b, None
    losses = [[(arm.test_loss_by_seed or {}).get(s) for s in seeds] for arm in (candidate, baseline)]
    return a, b, paired_test(a, b, _test_images(candidate, baseline), candidate_loss=losses[0],
                             baseline_loss=losses[1])


def _test_images(candidate: ArmResult, baseline: ArmResult) -> Optional[int]:
    sizes = {arm.test_images for arm in (candidate, baseline)}
    return sizes.pop() if len(sizes) == 1 else None  # the same test set for both arms, or no floor


def _cell_pairs(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]):
    """(candidate arm, baseline arm) for each cell, candidates' order then baselines' order."""
    if not candidates or not baselines:
        raise UsageError(f'nothing to compare: {len(candidates)} candidate arms, {len(baselines)} baseline arms')
    by_backbone = {}
    for arm in candidates:
        if arm.backbone in by_backbone:
            raise UsageError(f'two candidate arms on backbone {arm.backbone}; expected one per backbone')
        by_backbone[arm.backbone] = arm
    orphans = sorted({arm.backbone for arm in baselines} - set(by_backbone))
    if orphans:
        raise UsageError(f'baseline runs on backbones {orphans} have no candidate runs to compare with')
    alone = sorted(set(by_backbone) - {arm.backbone for arm in baselines})
    if alone:
        raise UsageError(f'candidate runs on backbones {alone} have no baseline runs to compare with')
    return [(c, b) for c in candidates for b in baselines if b.backbone == c.backbone]


def compare_cells(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> List[CellStats]:
    """The statistics of every cell (backbone x baseline), Holm-corrected over all of them."""
    pairs = _cell_pairs(candidates, baselines)
    tested = [_cell_test(c, b) for c, b in pairs]
    adjusted = holm([test.p_value if test else None for _, _, test in tested])
    return [_cell(cand, base, a, b, test, p_holm)
            for (cand, base), (a, b, test), p_holm in zip(pairs, tested, adjusted)]


def _cell(cand: ArmResult, base: ArmResult, a: List[float], b: List[float], test: Optional[PairedDifference],
          p_holm: Optional[float]) -> CellStats:
    dropped = _dropped(cand, base, sorted(set(cand.top1_by_seed) & set(base.top1_by_seed)))
    diverged = _harmful_seeds(dropped)
    cand_mean, cand_std = mean_std(a) if a else (None, None)
    base_mean, base_std = mean_std(b) if b else (None, None)
    seeds = len(set(cand.seeds()) | set(base.seeds()))
    if test is None:
        return CellStats(cand.backbone, base.attention, 0, None, None, None, None, None, None, None, None, None, None,
                         None, verdict(None, None, diverged), None, seeds, dropped, diverged)
    return CellStats(
        backbone=cand.backbone, baseline=base.attention, n=test.n, candidate_mean=cand_mean, candidate_std=cand_std,
        baseline_mean=base_mean, baseline_std=base_std, diff_mean=test.diff_mean, diff_ci=test.diff_ci,
        p_value=test.p_value, p_holm=p_holm, prob_improvement=probability_of_improvement(a, b), mde=test.mde,
        seeds_needed=test.seeds_needed, verdict=verdict(p_holm, test.diff_mean, diverged), test=test.test,
        seeds=seeds, dropped=dropped, diverged=diverged)
