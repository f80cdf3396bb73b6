"""`zamzoo compare` (thin: parse, call zamzoo.compare, print)."""
from collections import Counter

from ..dataset_table import DEFAULT_DATASET
from ..errors import UsageError
from ..train.commands import RUN_ARGUMENTS, add_run_arguments, train_config_values
from ..train.config import DATASET_CHOICES
from .runs import DEFAULT_BASELINES, DEFAULT_SEEDS


def add_commands(subparsers):
    from ..models import BACKBONES
    from ..zoo.commands import add_executor_arguments

    p = subparsers.add_parser(
        'compare', help='does an attention module help, at what cost? it against baselines x backbones x seeds',
        description=run_compare.__doc__)
    p.add_argument('--attn', required=True, metavar='MODULE',
                   help="the candidate: pkg.module:Class, path/to/file.py:Class, or a zoo attention's name (zam)")
    p.add_argument('--name', dest='attn_name', metavar='NAME',
                   help="the candidate's name in the zoo (default: the class name in lower case)")
    p.add_argument('--baselines', nargs='+', default=list(DEFAULT_BASELINES), metavar='ATTENTION',
                   help=f"zoo attentions to compare it with (default: {' '.join(DEFAULT_BASELINES)})")
    p.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=list(BACKBONES), metavar='BACKBONE',
                   help=f"default: all of {' '.join(BACKBONES)}")
    p.add_argument('--seeds', nargs='+', type=int, default=list(DEFAULT_SEEDS), help='default: 0 1 2 3 4')
    p.add_argument('--dataset', choices=DATASET_CHOICES, default=DEFAULT_DATASET)
    p.add_argument('--out', default='runs', help='sweep folder (as for `zoo run`): runs already done there are '
                   'reused; the report goes to <out>/_compare/<name>/ (default runs/)')
    p.add_argument('--check-only', action='store_true', help='only the contract check; train nothing')
    p.add_argument('--timm-tests', action='store_true', help="the contract check also runs timm's generic model "
                   'tests (forward, backward, cfgs, features, TorchScript, fx) on the first backbone')
    # every arm trains from its own random initialisation, which its seed draws (statistics.md): no --pretrained or
    # --init, which would start each arm's seeds from one set of weights (and a new module has none published)
    add_run_arguments(p, leave_out=('--device', '--data', '--pretrained', '--init'))
    p.add_argument('--data', **{**RUN_ARGUMENTS['--data'], 'required': False,
                                'help': RUN_ARGUMENTS['--data']['help'] + ' (not needed with --check-only)'})
    add_executor_arguments(p)
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    """The candidate module first passes the contract check (shapes and dtypes kept at odd sizes, channels_last and
    bf16 autocast; finite outputs and gradients; parameters, MACs and CPU latency added per backbone; both ONNX
    exporters). A module that breaks it stops here, nothing trained. Then every backbone x (candidate and
    baselines) x seed trains as a zoo run in --out (runs already done there are reused), and the report compares
    the candidate with each baseline on each backbone, paired by seed: final-epoch top-1, the difference's 95%
    interval, Holm-corrected p-value, probability of improvement, smallest detectable difference, verdict, cost."""
    from ..data import open_data
    from ..zoo.commands import check_executor_arguments
    from ..zoo.plan import plan_states
    from ..zoo.sweep import runs_to_launch
    from .runs import Arms, candidate_attention, check_sources, plan_compare
    from .stats import scipy_stats

    check_executor_arguments(args)
    scipy_stats()  # the compare extra, before anything runs
    candidate = candidate_attention(args.attn, args.attn_name)
    arms = Arms.of(candidate.name, args.baselines, args.backbones)
    if args.check_only:  # the candidate alone, timed where it is all there is
        _check(args, candidate, arms, latency=True)
        return 0
    if args.data is None:
        raise UsageError('--data is required to train the runs (expected the data folder, as for `zamzoo train`); '
                         '--check-only trains nothing and needs none')
    options = {k: v for k, v in train_config_values(args).items()
               if k not in ('data', 'dataset', 'out', 'attn', 'attn_name')}  # what plan_compare sets itself
    runs = plan_compare(arms, args.dataset, args.seeds, args.data, args.out, **options)
    check_sources(candidate, runs)
    states = plan_states(runs)
    if runs_to_launch(runs, states, args.retry_failed) and not runs[0].config.download:  # before the contract check
        open_data(runs[0].config.source(), train=False)  # (a download happens in the runs)
    # a report times every arm in shared rounds once the runs have ended (`arm_costs`)
    contract = _check(args, candidate, arms, latency=False)
    return _train_and_report(args, candidate, arms, runs, states, contract)


def _check(args, candidate, arms, latency: bool):
    """The contract check of the candidate on each backbone, printed; a ContractError stops the command."""
    from .contract import LATENCY_AFTER_RUNS, check_contract

    contract = check_contract(candidate.factory, arms.backbones, slot=candidate.slot, timm_tests=args.timm_tests,
                              latency=latency, module=candidate.module, progress=lambda msg: print(msg, flush=True))
    print(contract.summary(untimed=LATENCY_AFTER_RUNS))
    return contract


def _train_and_report(args, candidate, arms, runs, states, contract) -> int:
    from ..zoo.commands import launch
    from ..zoo.plan import check_conflicts
    from ..zoo.sweep import runs_to_launch
    from .contract import arm_costs
    from .report import CompareSetup, write_report
    from .runs import arm_results, check_one_data, check_sources, report_dir, run_outcomes

    check_conflicts(runs, states)
    launch_runs = runs_to_launch(runs, states, args.retry_failed)
    kept = Counter(states[run.name]['state'] for run in runs if run not in launch_runs)
    print(f"{len(runs)} run(s) in {args.out}: {len(launch_runs)} to train, {kept.pop('done', 0)} reused"
          + (f", {kept.pop('failed')} failed earlier (not run again without --retry-failed)" if 'failed' in kept else '')
          + ''.join(f', {n} {state}' for state, n in sorted(kept.items())))
    summary = launch(runs, launch_runs, args, states)
    if not summary['finished']:
        print(f"submitted {summary['launched']} run(s); run this command again once they have ended for the report")
        return 0
    check_sources(candidate, runs)  # again: a source edited while the runs trained would mix two modules
    check_one_data(runs)
    results, unfinished = run_outcomes(runs)
    costs = arm_costs(candidate.factory, candidate.name, arms.backbones, arms.baselines, slot=candidate.slot,
                      image_size=args.img_size, progress=lambda msg: print(msg, flush=True))  # as the runs saw
    candidates, baselines = arm_results(arms, runs, results, costs, unfinished)
    recipes = sorted({run.recipe for run in runs})
    epochs = sorted({run.epochs for run in runs})
    setup = CompareSetup(candidate.name, candidate.module, (candidate.record or {}).get('sha256'), args.dataset,
                         ', '.join(recipes), epochs[0] if len(epochs) == 1 else epochs, list(args.seeds))
    path = write_report(report_dir(args.out, candidate.name), setup, candidates, baselines, contract.to_dict(),
                        costs)
    print(path.read_text())
    print(f'report: {path}')
    failed = summary['ended']['failed'] + summary['skipped']['failed']
    return 1 if failed else 0
