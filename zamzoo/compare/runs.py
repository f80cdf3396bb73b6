"""The runs of a comparison: the candidate and every baseline on every backbone and seed, planned as zoo runs in
the comparison's --out. Baseline runs are ordinary zoo run folders there (planned without the candidate's module),
so a later comparison with the same settings finds them done and trains only its own candidate's runs."""
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..bench.models import ratio_of_rounds
from ..errors import NonFiniteError, UsageError
from ..layers import get_attn
from ..models import ATTENTIONS, BACKBONES, ZOO
from ..models.plugins import check_attention_source, load_attention
from ..train.run_folder import HELD_OUT_BEFORE_WHOLE, data_across_seeds, held_out_before_whole, run_status
from ..zoo.plan import PlannedRun, plan_sweep
from .stats import DIVERGED, FAILED, MISSING, ArmResult, UnfinishedRun

DEFAULT_BASELINES = ('plain', 'se', 'eca', 'simam', 'zam')
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
COMPARE_DIR = '_compare'


@dataclass(frozen=True)
class Candidate:
    """The module under test: its zoo name, how it is built, and where it came from."""
    name: str
    factory: Callable            # the layers registry's entry: Class(channels, **options)
    slot: str
    module: str                  # 'pkg.module:Class', a file spec, or the zoo attention's name
    record: Optional[dict]       # config.json's attention_module of its runs; None for a zoo attention


def candidate_attention(attn: str, name: Optional[str] = None) -> Candidate:
    """`attn`: a zoo attention's name, or a spec ('pkg.module:Class', 'path/to/file.py:Class') registered here. A
    module registered by name (an installed package's entry point) is its spec: its runs record where it came from
    and are checked against its source as a spec's are."""
    plugin = ATTENTIONS[attn].plugin if attn in ATTENTIONS else None
    if plugin is not None:
        if name not in (None, attn):
            raise UsageError(f'--name: {attn!r} is already the name of a registered module ({plugin.spec}); pass '
                             f'--attn {plugin.spec} --name {name} to register it under another name')
        attn, name = plugin.spec, attn
    if ':' not in attn:
        if attn not in ATTENTIONS or ATTENTIONS[attn].layer is None:
            raise UsageError(f"--attn: expected pkg.module:Class, path/to/file.py:Class or a zoo attention "
                             f"({', '.join(a for a in ATTENTIONS if a != 'plain')}), got {attn!r}")
        if name not in (None, attn):
            raise UsageError('--name: names a module given as a spec; a zoo attention keeps its own name')
        return Candidate(attn, get_attn(ATTENTIONS[attn].layer), ATTENTIONS[attn].slot, attn, None)
    registered = load_attention(attn, name)
    return Candidate(registered.name, get_attn(registered.name), ATTENTIONS[registered.name].slot, registered.spec,
                     registered.record())


@dataclass(frozen=True)
class Arms:
    """Which attention runs on which backbone: the candidate and its baselines (never the candidate itself)."""
    candidate: str
    baselines: Tuple[str, ...]
    backbones: Tuple[str, ...]

    @classmethod
    def of(cls, candidate: str, baselines: Sequence[str], backbones: Sequence[str]) -> 'Arms':
        unknown = [a for a in baselines if a not in ATTENTIONS or ATTENTIONS[a].plugin is not None]
        if unknown:
            raise UsageError(f"--baselines: {unknown[0]!r} is not a zoo attention; expected some of "
                             f"{', '.join(a for a, att in ATTENTIONS.items() if att.plugin is None)}")
        bad = [b for b in backbones if b not in BACKBONES]
        if bad:
            raise UsageError(f"--backbones: unknown {bad[0]!r}; expected some of {', '.join(BACKBONES)}")
        baselines = tuple(dict.fromkeys(a for a in baselines if a != candidate))
        if not baselines or not backbones:
            raise UsageError('expected at least one baseline other than the candidate, and one backbone')
        return cls(candidate, baselines, tuple(dict.fromkeys(backbones)))

    @staticmethod
    def model(backbone: str, attention: str) -> str:
        return f'{backbone}_{attention}'


def plan_compare(arms: Arms, dataset: str, seeds: Sequence[int], data, out, **train_options) -> List[PlannedRun]:
    """Every (backbone, attention, seed) of the comparison as the zoo run it is: the candidate's runs register its
    module (plan_sweep's `worker_registration`), the baselines' runs are exactly the zoo's (so that they are
    shared)."""
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise UsageError(f'--seeds: {", ".join(map(str, repeated))} given more than once; expected distinct seeds '
                         f'(each seed is one run per arm)')
    candidates = [arms.model(b, arms.candidate) for b in arms.backbones]
    baselines = [arms.model(b, a) for b in arms.backbones for a in arms.baselines]
    return plan_sweep(candidates + baselines, [dataset], seeds, data, out, **train_options)


def check_sources(candidate: Candidate, runs: Sequence[PlannedRun]):
    """Refuse, naming the file, when a run of the candidate already in the sweep folder (finished or started) was
    made from another version of its source: its runs are never mixed."""
    if candidate.record is None:
        return
    for run in runs:
        if ZOO[run.config.model].attention.name == candidate.name:  # an entry point's runs have no config.attn
            check_attention_source(run_status(run.folder).config.get('attention_module'), candidate.record)


def check_one_data(runs: Sequence[PlannedRun]):
    """Refuse, naming the runs, when the runs of the comparison recorded different data (config.json's
    `data_fingerprint`): a cell would pair runs of different data. The plan (`plan_states`) already refuses a finished
    run of other data than the data at --data; this sees what it cannot: data changed while the runs trained, or
    gone since (the plan then has nothing to compare with)."""
    folders: Dict[str, List[str]] = {}
    configs = {run.folder.name: run_status(run.folder).config for run in runs}
    for name, config in configs.items():
        recorded = data_across_seeds(config)
        if recorded:
            folders.setdefault(json.dumps(recorded, sort_keys=True), []).append(name)
    old = [name for name, config in configs.items() if held_out_before_whole(config)]
    if len(folders) > 1 and old:
        raise UsageError(f'{old[0]} and {len(old) - 1} more: {HELD_OUT_BEFORE_WHOLE}')
    if len(folders) > 1:
        listed = '; '.join(f'{len(names)} run(s) on {data} (e.g. {names[0]})' for data, names in folders.items())
        raise UsageError(f'the runs of this comparison were trained on different data: {listed}. The data at '
                         f'{runs[0].config.data} changed after some of them were trained: compare in another --out '
                         f'(or move the runs of the other data away)')


def run_outcomes(runs: Sequence[PlannedRun]) -> Tuple[Dict[str, dict], Dict[str, UnfinishedRun]]:
    """Run name -> results.json of each finished run, and run name -> why each other run has no result: DIVERGED
    when its folder records a NonFiniteError (failed.json), FAILED for any other failure, MISSING while pending or
    running."""
    results, unfinished = {}, {}
    for run in runs:
        status = run_status(run.folder)
        if status.state == 'done':
            results[run.name] = status.results
        elif status.state == 'failed':
            diverged = status.error_type == NonFiniteError.__name__
            unfinished[run.name] = UnfinishedRun(run.config.seed, DIVERGED if diverged else FAILED,
                                                 status.error or 'failed', str(run.folder))
        else:
            unfinished[run.name] = UnfinishedRun(run.config.seed, MISSING, status.state, str(run.folder))
    return results, unfinished


def arm_results(arms: Arms, runs: Sequence[PlannedRun], results: Dict[str, dict],
                costs: Dict[str, Dict[str, dict]], unfinished: Optional[Dict[str, UnfinishedRun]] = None
                ) -> Tuple[List[ArmResult], List[ArmResult]]:
    """Candidate and baseline arms of the finished runs (and of the `unfinished` ones, by run name: see
    `run_outcomes`); `costs`: backbone -> attention -> that arm's cost (`contract.arm_costs`), completed here with
    its training images/s ratio to the plain backbone's runs and its spread over seeds (`training_speed_ratio`)."""
    unfinished = unfinished or {}
    by_model: Dict[str, List[PlannedRun]] = {}
    for run in runs:
        by_model.setdefault(run.config.model, []).append(run)

    def finished_by_seed(planned: Sequence[PlannedRun]) -> Dict[int, dict]:
        return {r.config.seed: results[r.name] for r in planned if r.name in results}

    def arm(backbone: str, attention: str) -> ArmResult:
        planned = by_model.get(arms.model(backbone, attention), [])
        done = [r for r in planned if r.name in results]
        sizes = {results[r.name].get('test_images') for r in done}
        plain_runs = by_model.get(arms.model(backbone, 'plain'))
        speed, why = training_speed_ratio(finished_by_seed(planned),
                                          None if plain_runs is None else finished_by_seed(plain_runs))
        speed = speed or {'median': None, 'iqr': None}
        cost = dict(costs.get(backbone, {}).get(attention, {}), train_images_per_s_ratio=speed['median'],
                    train_images_per_s_iqr=speed['iqr'], train_images_per_s_note=why)
        return ArmResult(backbone, attention, {r.config.seed: results[r.name]['top1'] for r in done},
                         [str(r.folder) for r in done], cost, sizes.pop() if len(sizes) == 1 else None,
                         {r.config.seed: results[r.name].get('test_loss') for r in done},
                         tuple(unfinished[r.name] for r in planned if r.name in unfinished))

    return ([arm(b, arms.candidate) for b in arms.backbones],
            [arm(b, a) for b in arms.backbones for a in arms.baselines])


def training_conditions(result: dict) -> str:
    """What a run's training speed depends on besides its model, from its results.json: the device string (CPU or
    GPU name, torch threads), world size, mixed precision, torch.compile."""
    return (f"{result.get('device')}, world size {result.get('world_size')}, amp {result.get('amp')}, "
            f"compile {result.get('compile')}")


def training_speed_ratio(mine: Mapping[int, dict],
                         plain: Optional[Mapping[int, dict]]) -> Tuple[Optional[dict], Optional[str]]:
    """({'median', 'iqr'} over the seeds both sides finished of (images/s of the run `mine[seed]` / that of the
    `plain` backbone's run of the same seed), None) from their results.json (each run's median epoch rate), as
    `ratio_of_rounds` gives the latency's; or (None, why not): the plain backbone not compared (`plain` None), no
    seed both sides finished, or runs trained under different conditions (`training_conditions`), whose speeds do not
    compare."""
    if plain is None:
        return None, 'plain is not among the baselines: no plain runs to compare the training speed with'
    seeds = sorted(s for s in set(mine) & set(plain) if mine[s].get('images_per_s') and plain[s].get('images_per_s'))
    if not seeds:
        return None, 'no seed that this arm and plain both finished with a recorded images/s'
    conditions = {side: sorted({training_conditions(runs[s]) for s in seeds}) for side, runs in
                  (('this arm', mine), ('plain', plain))}
    if len(set(conditions['this arm'] + conditions['plain'])) > 1:
        return None, ('runs trained under different conditions, whose speeds do not compare: '
                      + '; '.join(f"{side}: {' | '.join(c)}" for side, c in conditions.items()))
    return ratio_of_rounds([mine[s]['images_per_s'] for s in seeds], [plain[s]['images_per_s'] for s in seeds]), None


def report_dir(out, name: str) -> Path:
    return Path(out) / COMPARE_DIR / name
