"""The statistics of a comparison: for each cell (backbone x baseline), the candidate's final-epoch top-1 against the
baseline's, paired by seed (the paired test itself: zamzoo.pairing). scipy is imported inside the functions that need
it, so `import zamzoo` does not load it."""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import NonFiniteError, UsageError
# the paired test lives below the publishing layers (the tables use it too); re-exported for report.py and users
from ..pairing import (ALPHA, CONSTANT, IDENTICAL, POWER, SIGN_TEST_MIN_PAIRS, SINGLE_PAIR, T_TEST, TIED,  # noqa: F401
                       PairedDifference, detectable_difference, paired_test, scipy_stats, seeds_needed)

BETTER, WORSE, NO_DIFFERENCE = 'better', 'worse', 'no detectable difference'
COST_KEYS = ('params_added', 'macs_added', 'cpu_latency_ratio', 'train_images_per_s_ratio')


@dataclass(frozen=True)
class ArmResult:
    """One arm of a comparison: one attention on one backbone, its final-epoch top-1 (%) per seed, the run folders
    it came from, and its cost against the plain backbone (keys of COST_KEYS; None where unmeasured)."""
    backbone: str
    attention: str
    top1_by_seed: Dict[int, float]
    runs: List[str] = field(default_factory=list)
    cost: Optional[dict] = None
    test_images: Optional[int] = None   # images each run was scored on (the binomial noise floor)
    test_loss_by_seed: Optional[Dict[int, Optional[float]]] = None  # final test loss per seed: are two runs one?

    def __post_init__(self):
        if not self.top1_by_seed:
            raise UsageError(f'{self.backbone} {self.attention}: no finished run to compare (no top-1 for any seed)')
        bad = {seed: v for seed, v in self.top1_by_seed.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f'{self.backbone} {self.attention}: top-1 is not a finite number for seeds {bad}')
        unknown = set(self.cost or {}) - set(COST_KEYS)
        if unknown:
            raise UsageError(f'{self.backbone} {self.attention}: unknown cost keys {sorted(unknown)}; '
                             f'expected some of {list(COST_KEYS)}')


@dataclass(frozen=True)
class CellStats:
    """Everything report.json says about one cell, plus the test used (for report.md)."""
    backbone: str
    baseline: str
    n: int
    candidate_mean: float
    candidate_std: Optional[float]
    baseline_mean: float
    baseline_std: Optional[float]
    diff_mean: float
    diff_ci: Optional[Tuple[float, float]]
    p_value: Optional[float]
    p_holm: Optional[float]
    prob_improvement: float
    mde: Optional[float]
    seeds_needed: Optional[int]
    verdict: str
    test: str

    def to_json(self) -> dict:
        fields = ('backbone', 'baseline', 'n', 'candidate_mean', 'candidate_std', 'baseline_mean', 'baseline_std',
                  'diff_mean', 'diff_ci', 'p_value', 'p_holm', 'prob_improvement', 'mde', 'verdict', 'seeds_needed')
        row = {k: getattr(self, k) for k in fields}
        row['diff_ci'] = list(self.diff_ci) if self.diff_ci is not None else None
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


def verdict(p_holm: Optional[float], diff: float) -> str:
    if p_holm is None or p_holm >= ALPHA:
        return NO_DIFFERENCE
    return BETTER if diff > 0 else WORSE


def _common_seeds(candidate: ArmResult, baseline: ArmResult) -> List[int]:
    seeds = sorted(set(candidate.top1_by_seed) & set(baseline.top1_by_seed))
    if not seeds:
        raise UsageError(f'{candidate.backbone}: {candidate.attention} (seeds {sorted(candidate.top1_by_seed)}) and '
                         f'{baseline.attention} (seeds {sorted(baseline.top1_by_seed)}) have no seed in common')
    return seeds


def _cell_test(candidate: ArmResult, baseline: ArmResult) -> Tuple[List[float], List[float], PairedDifference]:
    """The arms' top-1 over their common seeds, and their paired test."""
    seeds = _common_seeds(candidate, baseline)
    a, b = [candidate.top1_by_seed[s] for s in seeds], [baseline.top1_by_seed[s] for s in seeds]
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
    return [(c, b) for c in candidates for b in baselines if b.backbone == c.backbone]


def compare_cells(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> List[CellStats]:
    """The statistics of every cell (backbone x baseline), Holm-corrected over all of them."""
    pairs = _cell_pairs(candidates, baselines)
    tested = [_cell_test(c, b) for c, b in pairs]
    adjusted = holm([test.p_value for _, _, test in tested])
    cells = []
    for (cand, base), (a, b, test), p_holm in zip(pairs, tested, adjusted):
        cand_mean, cand_std = mean_std(a)
        base_mean, base_std = mean_std(b)
        cells.append(CellStats(
            backbone=cand.backbone, baseline=base.attention, n=test.n, candidate_mean=cand_mean,
            candidate_std=cand_std, baseline_mean=base_mean, baseline_std=base_std, diff_mean=test.diff_mean,
            diff_ci=test.diff_ci, p_value=test.p_value, p_holm=p_holm,
            prob_improvement=probability_of_improvement(a, b), mde=test.mde, seeds_needed=test.seeds_needed,
            verdict=verdict(p_holm, test.diff_mean), test=test.test))
    return cells
