"""The paired difference of two models' final-epoch top-1, seed by seed: a paired t-test and its 95% interval,
with the degenerate cases decided explicitly. Below the model and publishing layers so that both `zamzoo compare`
(zamzoo.compare.stats) and the generated tables (zamzoo.bench.tables: top-1 vs plain) use the same numbers. scipy is
imported inside the functions that need it (a dependency of zamzoo), so `import zamzoo` does not load it."""
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import NonFiniteError, ZamzooError

ALPHA = 0.05
POWER = 0.8
# the smallest number of pairs at which a sign or sign-flip test can reach two-sided p < ALPHA: 2 / 2**6 = 0.031
SIGN_TEST_MIN_PAIRS = 6
# beyond this many pairs a "seeds needed" count says only that the difference is too small to chase: seeds_needed
# returns SEEDS_NEEDED_CAP + 1 for any larger count (a true lower bound, shown as "> 1000")
SEEDS_NEEDED_CAP = 1000

# the kinds of test behind a cell's numbers (report.md explains each)
T_TEST, IDENTICAL, CONSTANT, SINGLE_PAIR = 'paired t-test', 'identical runs', 'sign test', 'single pair'
TIED = 'equal top-1, no noise estimate'
FLOORED_T_TEST = "paired t-test, s_d at the test set's binomial noise"


def scipy_stats():
    """scipy.stats, or an error saying how to install it (call it before the runs to fail early)."""
    try:
        from scipy import stats
    except ImportError as e:
        raise ZamzooError('paired statistics (zamzoo compare, the top-1 vs plain column) need scipy: '
                          'pip install scipy (a dependency of zamzoo)') from e
    return stats


@dataclass(frozen=True)
class PairedDifference:
    """Candidate-minus-baseline differences paired by seed, tested (before correcting for any other comparison)."""
    n: int
    diff_mean: float
    diff_ci: Optional[Tuple[float, float]]
    p_value: Optional[float]
    mde: Optional[float]
    seeds_needed: Optional[int]
    test: str


def detectable_difference(s_d: float, n: int) -> Optional[float]:
    """The smallest mean difference n pairs with difference std s_d detect (two-sided ALPHA, POWER), in the usual
    approximation (t_{1-ALPHA/2, n-1} + t_{POWER, n-1}) s_d / sqrt(n); None below two pairs."""
    stats = scipy_stats()
    if n < 2:
        return None
    return float((stats.t.ppf(1 - ALPHA / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * s_d / math.sqrt(n))


def seeds_needed(diff: float, s_d: float) -> Optional[int]:
    """The fewest pairs whose detectable difference (same formula) is at most |diff|; None when diff is 0;
    SEEDS_NEEDED_CAP + 1 when more than SEEDS_NEEDED_CAP pairs are needed (a count that large is no plan, and a
    difference that is float noise would otherwise ask for 1e31 seeds)."""
    if diff == 0:
        return None
    # the normal approximation is a lower bound (t quantiles exceed normal ones): start there, walk up
    stats = scipy_stats()
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    lower = (z * s_d / abs(diff)) ** 2
    if lower > SEEDS_NEEDED_CAP:
        return SEEDS_NEEDED_CAP + 1
    n = max(2, math.floor(lower))
    while n <= SEEDS_NEEDED_CAP and detectable_difference(s_d, n) > abs(diff):
        n += 1
    return n


def paired_test(candidate: Sequence[float], baseline: Sequence[float], test_images: Optional[int] = None, *,
                candidate_loss: Optional[Sequence[Optional[float]]] = None,
                baseline_loss: Optional[Sequence[Optional[float]]] = None) -> PairedDifference:
    """Paired t-test of candidate - baseline (scipy.stats.ttest_rel), with the degenerate cases scipy answers with
    NaN (or with p = 0 from two seeds) decided explicitly; `test_images`: how many images each top-1 was scored on
    (for equal differences, see `_constant_difference`); `candidate_loss`, `baseline_loss`: each run's final test
    loss, in the same seed order (the evidence that two runs are one, see `same_runs`)."""
    a, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # NaN passed every test below as a difference of 0
        raise NonFiniteError(f'paired test: top-1 must be finite numbers; got {a.tolist()} against {b.tolist()}')
    d = a - b
    n = len(d)
    # differences equal up to float rounding (77.31 - 76.2 and 78.41 - 77.3 differ in the last bits) count as equal
    tolerance = 1e-9 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    # a mean difference within that rounding is 0 (top-1 = 100 * correct / N: +2 and -2 images leave -7e-15)
    diff = float(d.mean()) if abs(d.mean()) > tolerance else 0.0
    constant = np.ptp(d) <= tolerance
    identical = constant and diff == 0.0 and same_runs(candidate_loss, baseline_loss, n)
    if n == 1 and not identical:
        return PairedDifference(1, float(d[0]), None, None, None, None, SINGLE_PAIR)
    if constant:
        return _constant_difference(diff, n, identical, _binomial_noise(a, b, test_images))
    stats = scipy_stats()
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(1 - ALPHA)
    s_d = float(d.std(ddof=1))
    return PairedDifference(n, diff, (float(ci.low), float(ci.high)), float(result.pvalue),
                            detectable_difference(s_d, n), seeds_needed(diff, s_d), T_TEST)


def same_runs(candidate_loss: Optional[Sequence[Optional[float]]], baseline_loss: Optional[Sequence[Optional[float]]],
              pairs: int) -> bool:
    """Whether each of the `pairs` pairs' two runs (equal in top-1) are the same computation: the same final test loss
    to the last bit, a sum over every test image's logits that two different networks do not share by chance
    (an identity module trains exactly the plain network). Equal top-1 alone is no such evidence: two networks
    both at chance, or both at 100%, score alike and differ."""
    if candidate_loss is None or baseline_loss is None or not len(candidate_loss) == len(baseline_loss) == pairs:
        return False
    return all(x is not None and x == y for x, y in zip(candidate_loss, baseline_loss))


def _binomial_noise(a, b, test_images: Optional[int]) -> float:
    """The standard deviation (points) of the difference of two runs' top-1 from the test set alone, at the arms'
    mean accuracies: sqrt(p_a (1 - p_a) / N + p_b (1 - p_b) / N) (reference/statistics.md); 0 when N is unknown."""
    if not test_images:
        return 0.0
    p_a, p_b = float(np.mean(a)) / 100, float(np.mean(b)) / 100
    return 100 * math.sqrt(max(p_a * (1 - p_a), 0.0) / test_images + max(p_b * (1 - p_b), 0.0) / test_images)


def _constant_difference(diff: float, n: int, identical: bool, noise: float) -> PairedDifference:
    """Every pair differs by the same `diff` (n >= 2, or one pair of identical runs), so s_d = 0 and the t statistic
    is 0/0 or infinite."""
    if identical:
        # the same runs twice: the difference is 0, exactly known; nothing to detect, and nothing NaN
        return PairedDifference(n, 0.0, (0.0, 0.0), 1.0, 0.0, None, IDENTICAL)
    # All equal (0 included, from runs that differ): the t-test would say p = 0 from two seeds, or [0, 0], a
    # certainty bought by having no estimate of the noise (such ties also happen by chance with coarse accuracies
    # and few seeds). The noise of a run's top-1 is at least that of its finite test set (binomial, `noise`): with
    # it as s_d, the t-test has a noise estimate again. Without it (test set size unknown, or both arms at 0% /
    # 100%) a difference of 0 has no interval, and a non-zero one gets the sign test, which needs none:
    # p = 2 / 2**n (scipy.stats.binomtest), and the distribution-free interval of the median, [min, max] =
    # [diff, diff], whose coverage 1 - 2 / 2**n reaches 95% only from SIGN_TEST_MIN_PAIRS pairs on.
    stats = scipy_stats()
    if noise > 0:
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * noise / math.sqrt(n)
        p = float(2 * stats.t.sf(abs(diff) / (noise / math.sqrt(n)), n - 1))
        return PairedDifference(n, diff, (diff - half, diff + half), p, detectable_difference(noise, n),
                                seeds_needed(diff, noise), FLOORED_T_TEST)
    if diff == 0:
        # every pair tied: the sign test has no untied pair, so no evidence of a difference (p = 1) and no interval
        return PairedDifference(n, 0.0, None, 1.0, None, None, TIED)
    p = float(stats.binomtest(n, n, 0.5).pvalue)
    enough = n >= SIGN_TEST_MIN_PAIRS
    return PairedDifference(n, diff, (diff, diff) if enough else None, p, 0.0 if enough else None,
                            SIGN_TEST_MIN_PAIRS, CONSTANT)


def paired_by_seed(candidate: Mapping[int, float], baseline: Mapping[int, float]) -> Optional[PairedDifference]:
    """paired_test over the seeds both have (top-1 by seed); None when they share fewer than two seeds."""
    seeds = sorted(set(candidate) & set(baseline))
    if len(seeds) < 2:
        return None
    return paired_test([candidate[s] for s in seeds], [baseline[s] for s in seeds])
