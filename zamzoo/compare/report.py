"""The report of a comparison: report.md, report.json, forest.png and cost.png in one folder, from the final-epoch
top-1 of each arm (`stats.ArmResult`). Everything is computed and drawn before the first file is written, and each
file is written atomically."""
import io
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .._io import atomic_path, dumps_strict
from .contract import ArmCosts, conditions_text
from .stats import (ALPHA, BETTER, CONSTANT, COST_KEYS, DIVERGED, FLOORED_T_TEST, HARMFUL, IDENTICAL, NO_VERDICT,
                    POWER, SEEDS_NEEDED_CAP, SIGN_TEST_MIN_PAIRS, SINGLE_PAIR, TIED, WORSE, ArmResult, CellStats,
                    compare_cells, mean_interval)

REPORT_MD, REPORT_JSON, FOREST_PNG, COST_PNG = 'report.md', 'report.json', 'forest.png', 'cost.png'
_VERDICT_COLOURS = {BETTER: 'tab:green', WORSE: 'tab:red', HARMFUL: 'tab:red'}
_NO_DIFFERENCE_COLOUR = 'tab:grey'
MACS_NOTE = ('MACs added: multiply-accumulates of one forward pass as `torch.utils.flop_counter.FlopCounterMode` '
             'counts them (its FLOPs / 2), which counts matrix multiplications and convolutions only: element-wise '
             'multiplies (a gate\'s `x * sigmoid(...)`, a scale) and poolings are not counted, so a module made of '
             'them alone adds 0 MACs; its CPU latency ratio shows what it costs.')
TRAIN_SPEED_SOURCE = ("median over the seeds of (the arm's run's median epoch rate, results.json images_per_s) / (that "
                      "of the plain backbone's run of the same seed) [interquartile range of those ratios]; only "
                      "between runs trained under the same recorded conditions (device string with CPU/GPU name and "
                      "torch threads, world size, amp, compile), else none, saying why. Unlike the latency, timed in "
                      "rounds interleaved across the arms, the runs trained one after another or side by side: on a "
                      "machine shared with other work they met different loads, which this ratio shows as much as "
                      "the module's cost (an identity module can train faster than plain), so it compares arms only "
                      "on a machine that ran nothing else")


@dataclass(frozen=True)
class CompareSetup:
    """What was compared and how: the candidate module and the settings every arm's runs share."""
    name: str
    module: str
    source_sha256: Optional[str]
    dataset: str
    recipe: str
    epochs: int
    seeds: List[int]


def write_report(out_dir, setup: CompareSetup, candidates: Sequence[ArmResult], baselines: Sequence[ArmResult],
                 contract: dict, costs: Optional[ArmCosts] = None) -> Path:
    """Write the four report files into `out_dir`; returns the path of report.md. `costs`: what `arm_costs` measured
    the arms' costs with (the conditions the report states; None: nothing measured)."""
    cells = compare_cells(candidates, baselines)
    payload = report_json(setup, cells, candidates, baselines, contract, costs)
    files = {  # all rendered first: an error in any of them leaves no file behind
        FOREST_PNG: _png(forest_figure(cells)),
        COST_PNG: _png(cost_figure(candidates, baselines)),
        REPORT_JSON: (dumps_strict(payload, indent=2) + '\n').encode(),
        REPORT_MD: report_markdown(setup, cells, payload, candidates, baselines).encode(),
    }
    out = Path(out_dir)
    for name, data in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(data)
    return out / REPORT_MD


def cost_rows(arms: Sequence[ArmResult]) -> List[dict]:
    """Each arm's cost on its backbone, None where it was not measured."""
    return [{'backbone': arm.backbone, 'attention': arm.attention, **{k: (arm.cost or {}).get(k) for k in COST_KEYS}}
            for arm in arms]


def cost_conditions(costs: Optional[ArmCosts]) -> dict:
    """How the cost table was measured, once for the report: `arm_costs`' latency conditions (None where it timed
    none) and input sizes, the training speed's source."""
    measured = costs if costs is not None else ArmCosts({}, {}, {})
    return {'latency': measured.latency_conditions or None, 'input_size': measured.input_sizes,
            'train_images_per_s': TRAIN_SPEED_SOURCE}


def unfinished_rows(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> List[dict]:
    """Every run of the comparison without a top-1, and why (stats.UnfinishedRun)."""
    return [{'backbone': arm.backbone, 'attention': arm.attention, 'arm': role, 'seed': run.seed, 'state': run.state,
             'detail': run.detail, 'folder': run.folder}
            for role, arms in (('candidate', candidates), ('baseline', baselines)) for arm in arms
            for run in arm.unfinished]


def report_json(setup: CompareSetup, cells: Sequence[CellStats], candidates: Sequence[ArmResult],
                baselines: Sequence[ArmResult], contract: dict, costs: Optional[ArmCosts] = None) -> dict:
    return {'name': setup.name, 'module': setup.module, 'source_sha256': setup.source_sha256,
            'dataset': setup.dataset, 'recipe': setup.recipe, 'epochs': setup.epochs, 'seeds': list(setup.seeds),
            'method': {'interval_level': 1 - ALPHA, 'alpha': ALPHA,
                       'correction': 'holm over the cells of this report that have a p-value'},
            'cells': [cell.to_json() for cell in cells], 'unfinished_runs': unfinished_rows(candidates, baselines),
            'cost': cost_rows(candidates), 'baseline_cost': cost_rows(baselines),
            'cost_conditions': cost_conditions(costs), 'contract': contract}


# ------------------------------------------------------------------ report.md
def _fmt(value, spec: str = '.2f', missing: str = '–') -> str:
    return missing if value is None else format(value, spec)


def _fmt_p(p: Optional[float]) -> str:
    return '–' if p is None else ('<0.001' if p < 0.001 else f'{p:.3f}')


def _fmt_arm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return '–'
    return f'{mean:.2f}' if std is None else f'{mean:.2f} ± {std:.2f}'


def _fmt_seeds_needed(n: Optional[int]) -> str:
    return f'> {SEEDS_NEEDED_CAP}' if n is not None and n > SEEDS_NEEDED_CAP else _fmt(n, 'd')


def _fmt_diff(cell: CellStats) -> str:
    if cell.diff_mean is None:
        return '–'
    if cell.diff_ci is None:
        return f'{cell.diff_mean:+.2f} (no 95% interval)'
    return f'{cell.diff_mean:+.2f} [{cell.diff_ci[0]:+.2f}, {cell.diff_ci[1]:+.2f}]'


def _seed_list(seeds) -> str:
    seeds = list(seeds)
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def dropped_text(cell: CellStats, rows: Optional[Sequence[dict]] = None) -> str:
    """Which arm lacks a top-1 on which seeds, and why: 'candidate diverged on seed 2; baseline se failed on seed 1'
    (`rows`: those of cell.dropped to name, default all)."""
    groups = {}
    for row in cell.dropped if rows is None else rows:
        who = 'candidate' if row['arm'] == 'candidate' else f"baseline {row['attention']}"
        groups.setdefault((who, row['state']), []).append(row['seed'])
    return '; '.join(f'{who} {state} on {_seed_list(seeds)}' for (who, state), seeds in groups.items())


def verdict_text(cell: CellStats) -> str:
    """The verdict with why there is none, when there is none, and the seeds the cell dropped."""
    dropped = f'n = {cell.n} of {cell.seeds} seeds: {dropped_text(cell)}' if cell.dropped else ''
    if cell.verdict == HARMFUL:
        others = [row for row in cell.dropped if not (row['arm'] == 'candidate' and row['seed'] in cell.diverged)]
        return (f'**{HARMFUL}**: the candidate diverged on {len(cell.diverged)} of {cell.seeds} seeds '
                f'({", ".join(map(str, cell.diverged))}) where the baseline finished; no improvement claimed'
                + (f'; the numbers cover the {cell.n} seeds both arms finished' if cell.n else '')
                + (f' ({dropped_text(cell, others)})' if others else ''))
    if cell.verdict == NO_VERDICT:
        return f'{NO_VERDICT}: no seed both arms finished ({dropped_text(cell)})'
    # every pair differed by the same amount: the numbers are not ttest_rel's (the method says how they are made)
    how = {FLOORED_T_TEST: "all differences equal: t-test at the test set's binomial noise",
           CONSTANT: 'all differences equal: sign test'}.get(cell.test)
    if cell.verdict in (BETTER, WORSE):
        notes = [note for note in (how, dropped) if note]
        return f'**{cell.verdict}**' + (f" ({'; '.join(notes)})" if notes else '')
    if cell.test == SINGLE_PAIR:
        why = 'insufficient seeds: 1 pair'
    elif cell.test == IDENTICAL:
        why = 'identical runs'
    elif cell.test == TIED and cell.candidate_mean in (0.0, 100.0):
        why = (f'equal top-1 in all {cell.n} pairs, both arms at {cell.candidate_mean:.0f}%: the test set\'s binomial '
               f'noise is 0 there, so no interval')
    elif cell.test == TIED:
        why = f'equal top-1 in all {cell.n} pairs from runs that differ; test set size unknown: no interval'
    elif cell.mde is None:
        why = f'all {cell.n} differences equal: the sign test needs {SIGN_TEST_MIN_PAIRS} pairs'
    elif cell.p_value is not None and cell.p_value < ALPHA:
        why = (f'p {_fmt_p(cell.p_value)} alone, {_fmt_p(cell.p_holm)} after Holm\'s correction for the report\'s '
               f'other comparisons')
    else:
        why = f'smallest detectable difference {cell.mde:.2f} points'
    if how and cell.mde is not None:
        why += f'; {how}'
    return f'{cell.verdict} ({why}' + (f'; {dropped})' if dropped else ')')


def verdict_table(cells: Sequence[CellStats]) -> List[str]:
    lines = ['| backbone | baseline | n | candidate top-1 | baseline top-1 | difference [95% interval] | p | p (Holm) '
             '| P(improvement) | seeds needed | verdict |',
             '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|']
    for c in cells:
        lines.append(f'| {c.backbone} | {c.baseline} | {c.n} | {_fmt_arm(c.candidate_mean, c.candidate_std)} '
                     f'| {_fmt_arm(c.baseline_mean, c.baseline_std)} | {_fmt_diff(c)} | {_fmt_p(c.p_value)} '
                     f'| {_fmt_p(c.p_holm)} | {_fmt(c.prob_improvement)} | {_fmt_seeds_needed(c.seeds_needed)} '
                     f'| {verdict_text(c)} |')
    return lines


def _fmt_ratio(ratio: Optional[float], iqr: Optional[Sequence[float]]) -> str:
    if ratio is None or not iqr:
        return _fmt(ratio, '.3f')
    return f'{ratio:.3f} [{iqr[0]:.3f}, {iqr[1]:.3f}]'


def cost_table(rows: Sequence[dict], baseline_rows: Sequence[dict] = ()) -> List[str]:
    """One row per backbone and arm (the candidate first), then why a training images/s ratio is missing."""
    lines = ['| backbone | arm | parameters added | MACs added | CPU latency ratio [IQR] '
             '| training images/s ratio [IQR] |', '|---|---|--:|--:|--:|--:|']
    ordered = [r for row in rows for r in (row, *(b for b in baseline_rows if b['backbone'] == row['backbone']))]
    for r in ordered:
        lines.append(f"| {r['backbone']} | {r['attention']} | {_fmt(r['params_added'], ',')} "
                     f"| {_fmt(r['macs_added'], ',')} | {_fmt_ratio(r['cpu_latency_ratio'], r['cpu_latency_iqr'])} "
                     f"| {_fmt_ratio(r['train_images_per_s_ratio'], r['train_images_per_s_iqr'])} |")
    notes = [f"- {r['backbone']} · {r['attention']}: no training images/s ratio: {r['train_images_per_s_note']}"
             for r in ordered if r['train_images_per_s_ratio'] is None and r['train_images_per_s_note']]
    return lines + ([''] + notes if notes else [])


def conditions_note(conditions: dict) -> str:
    """How the cost table was measured, in a sentence or two."""
    sizes = list((conditions.get('input_size') or {}).values())
    return (f"Measured: {conditions_text(conditions.get('latency') or {}, sizes)}. Training images/s ratio: "
            f"{conditions['train_images_per_s']}.")


def method_note() -> List[str]:
    level, power = f'{1 - ALPHA:.0%}', f'{POWER:.0%}'
    return [
        '- **Score**: the top-1 (%) of the **final epoch** of each run, not its best epoch: choosing the best test '
        'epoch selects on the test set and biases every arm upward.',
        '- **Pairing by seed**: a seed gives both arms the same data order and augmentation draws, so the test is on '
        'the per-seed differences candidate − baseline. Only seeds both arms finished are used (n), for every number '
        'of the cell, the arms\' means and standard deviations included.',
        f'- **Test**: the paired t-test (`scipy.stats.ttest_rel`), its {level} interval of the mean difference from '
        f'`confidence_interval`. It assumes roughly normal differences and can reach p < {ALPHA} with three seeds; '
        f'rank and sign-flip tests (Wilcoxon, permutation) make no such assumption but their smallest two-sided p '
        f'with n pairs is 2 / 2^n (0.25 at 3 pairs, 0.0625 at 5), so they cannot call anything below '
        f'{SIGN_TEST_MIN_PAIRS} pairs.',
        f'- **Several cells**: p-values are Holm-corrected over all cells of this report; a verdict is `better` or '
        f'`worse` when the Holm p is below {ALPHA} (the sign of the mean difference), otherwise '
        f'`no detectable difference`.',
        f'- **Smallest detectable difference**: (t({1 - ALPHA / 2}, n−1) + t({POWER}, n−1)) · s_d / √n, the mean '
        f'difference these n pairs detect with {power} power (two-sided {ALPHA:.0%}), s_d the standard deviation '
        'of the differences. **Seeds needed**: the fewest pairs for which that formula, at the observed s_d, '
        'reaches the observed mean difference (no Holm correction; none when the difference is 0, a mean within float '
        f'rounding of 0 included; "> {SEEDS_NEEDED_CAP}" beyond {SEEDS_NEEDED_CAP}).',
        '- **Probability of improvement**: the share of (candidate run, baseline run) pairs, over the cell\'s seeds, '
        'where the candidate scores higher, ties counting half.',
        '- **Degenerate cells**: identical runs for every seed (the same top-1 and the same final test loss to the '
        'last bit, as an identity module and the plain backbone give) have a difference of 0, interval [0, 0], '
        'p = 1. When all differences are equal otherwise (0 included: two different networks can score alike, e.g. '
        'both at chance), the t-test has no estimate of the noise (it would give p = 0 from two seeds, or [0, 0]); '
        'such a cell takes as s_d the noise of the test set alone, sqrt(p_c (1 - p_c) / N + p_b (1 - p_b) '
        '/ N) at the arms\' mean top-1 over the N test images (the floor of any run-to-run noise), and runs the t-test '
        'with it. Where N is unknown (or both arms score 0% or 100%), a difference of 0 has no interval (p = 1), '
        'and another uses the sign test (p = 2 / 2^n, '
        f'`scipy.stats.binomtest`) with the interval [d, d], a 95% interval only from {SIGN_TEST_MIN_PAIRS} pairs '
        'on (none below). A single pair has '
        'no interval and no p-value: no detectable difference (insufficient seeds).',
        f'- **Runs without a result**: a run is *{DIVERGED}* when its folder records a NonFiniteError (a NaN or '
        'infinite loss or weights), *failed* for any other recorded failure, *missing* while pending or running. A '
        'seed either arm lacks is dropped from its cell and named there. A seed where the candidate diverged and the '
        f'baseline finished is a failure of the module: the cell\'s verdict is `{HARMFUL}` whatever the other seeds '
        'say (no improvement is claimed on the survivors); where the baseline diverged too, failed or has no result '
        'yet, the seed is only dropped. A cell '
        f'without a seed both arms finished has `{NO_VERDICT}`, saying why.',
    ]


def _unfinished_section(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> List[str]:
    rows = unfinished_rows(candidates, baselines)
    if not rows:
        return []
    return ['## Runs without a result', '',
            *(f"- {r['backbone']} · {r['attention']} ({r['arm']}) seed {r['seed']}: **{r['state']}**, {r['detail']}"
              + (f" (`{r['folder']}`)" if r['folder'] else '') for r in rows), '']


def _runs_section(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> List[str]:
    lines = []
    for role, arms in (('candidate', candidates), ('baseline', baselines)):
        for arm in arms:
            lines.append(f'- {arm.backbone} · {arm.attention} ({role}): '
                         + (', '.join(f'`{run}`' for run in arm.runs) or 'no run folder given'))
    return lines


def report_markdown(setup: CompareSetup, cells: Sequence[CellStats], payload: dict,
                    candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]) -> str:
    seeds = ', '.join(str(s) for s in setup.seeds)
    unfinished = len(unfinished_rows(candidates, baselines))
    missing = (f' {unfinished} run(s) have no result (see Runs without a result): a cell uses only the seeds both its '
               'arms finished (n).') if unfinished else ''
    lines = [f'# zamzoo compare: {setup.name}', '',
             f'Module `{setup.module}` (source sha256 `{setup.source_sha256 or "–"}`), data set {setup.dataset}, '
             f'recipe {setup.recipe}, {setup.epochs} epochs, seeds {seeds}.{missing}', '',
             '## Verdict', '', 'Top-1 in %, differences in points (candidate − baseline).', '',
             *verdict_table(cells), '', f'![differences]({FOREST_PNG})', '',
             *_unfinished_section(candidates, baselines),
             '## Cost', '', 'Added to each backbone by each arm, measured against the plain backbone (plain: 1 by '
             'definition).', '', conditions_note(payload['cost_conditions']), '',
             *cost_table(payload['cost'], payload['baseline_cost']), '', MACS_NOTE, '',
             f'![top-1 against cost]({COST_PNG})', '',
             f'The contract check\'s results are in {REPORT_JSON} (`contract`).', '',
             '## Method', '', *method_note(), '',
             '## Run folders', '', *_runs_section(candidates, baselines), '']
    return '\n'.join(lines)


# ------------------------------------------------------------------ figures
def _figure(width: float, height: float):
    import matplotlib
    matplotlib.use('Agg', force=False)
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    return buffer.getvalue()


def forest_figure(cells: Sequence[CellStats]):
    """One row per cell: the mean difference with its 95% interval (a hollow dot where there is none), a zero line."""
    fig = _figure(7.5, 1.2 + 0.4 * len(cells))
    ax = fig.subplots()
    for row, cell in enumerate(cells):
        colour = _VERDICT_COLOURS.get(cell.verdict, _NO_DIFFERENCE_COLOUR)
        if cell.diff_mean is None:
            ax.annotate(f'{cell.verdict}: no seed both arms finished', (0, row), xytext=(5, 0),
                        textcoords='offset points', va='center', fontsize=8, color=colour)
        elif cell.diff_ci is None:
            ax.plot(cell.diff_mean, row, 'o', mfc='none', color=colour)
        else:
            lo, hi = cell.diff_ci
            ax.errorbar(cell.diff_mean, row, xerr=[[cell.diff_mean - lo], [hi - cell.diff_mean]], fmt='o',
                        color=colour, capsize=3)
    ax.axvline(0, color='black', linewidth=0.8, linestyle='--')
    ax.set_yticks(range(len(cells)), labels=[f'{c.backbone} vs {c.baseline}' for c in cells])
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_xlabel('candidate − baseline, final-epoch top-1 (points), 95% interval')
    ax.set_title('green: better, red: worse or harmful, grey: no detectable difference; hollow: no interval',
                 fontsize=8)
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    return fig


def cost_figure(candidates: Sequence[ArmResult], baselines: Sequence[ArmResult]):
    """Per backbone: each arm's mean top-1 (95% interval over its seeds) against its CPU latency ratio (its
    interquartile range over rounds), the baselines next to the candidate."""
    ncols = min(3, len(candidates))
    nrows = -(-len(candidates) // ncols)
    fig = _figure(4.2 * ncols, 3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, candidate in zip(axes, candidates):
        arms = [candidate] + [b for b in baselines if b.backbone == candidate.backbone]
        unmeasured = [arm.attention for arm in arms if (arm.cost or {}).get('cpu_latency_ratio') is None]
        for arm in arms:
            latency = (arm.cost or {}).get('cpu_latency_ratio')
            if latency is None or not arm.top1_by_seed:
                continue
            mean, interval = mean_interval(list(arm.top1_by_seed.values()))
            yerr = None if interval is None else [[mean - interval[0]], [interval[1] - mean]]
            iqr = (arm.cost or {}).get('cpu_latency_iqr')
            xerr = None if not iqr else [[latency - iqr[0]], [iqr[1] - latency]]
            ax.errorbar(latency, mean, xerr=xerr, yerr=yerr, fmt='s' if arm is candidate else 'o', capsize=3,
                        color='tab:blue' if arm is candidate else 'tab:grey')
            ax.annotate(arm.attention, (latency, mean), textcoords='offset points', xytext=(5, 3), fontsize=8)
        no_result = [arm.attention for arm in arms if not arm.top1_by_seed]
        missing = [f'{what}: ' + ', '.join(names) for what, names in (('no latency', unmeasured),
                                                                     ('no finished run', no_result)) if names]
        if missing:
            ax.text(0.02, 0.02, '; '.join(missing), transform=ax.transAxes, fontsize=7)
        ax.set_title(candidate.backbone)
        ax.set_xlabel('CPU latency / plain backbone (median, IQR)')
        ax.set_ylabel('final-epoch top-1 (%)')
        ax.grid(alpha=0.3)
    for ax in axes[len(candidates):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
