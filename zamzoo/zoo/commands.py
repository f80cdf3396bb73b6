"""`zamzoo zoo run | status | export` (thin: parse, call zamzoo.zoo, print)."""
import json
import sys

from .._argtypes import positive_float, positive_int
from ..dataset_table import DEFAULT_DATASET
from ..errors import UsageError, ZamzooError
from ..train.commands import add_attention_arguments, add_run_arguments, train_config_values
from ..train.config import DATASET_CHOICES


def add_commands(subparsers):
    zoo = subparsers.add_parser(
        'zoo', help='train, follow and export a whole sweep (models x datasets x seeds), locally or on SLURM',
        description='The whole zoo in one command: `zoo run` trains every run (skipping finished ones, resuming '
                    'interrupted ones), `zoo status` shows where the sweep stands, `zoo export` makes the Hub '
                    'folders of every group with enough seeds.')
    sub = zoo.add_subparsers(dest='zoo_command', required=True, metavar='COMMAND')
    _add_run(sub)
    p = sub.add_parser('status', help='one row per run: pending / running / done / failed, epoch, top-1, images/s')
    p.add_argument('--out', default='runs', help='the sweep folder given to `zoo run` (default runs/)')
    p.add_argument('--json', action='store_true', help='print {"runs": [...], "totals": {...}} for scripts')
    p.set_defaults(func=_status)
    _add_export(sub)


def _add_run(sub):
    p = sub.add_parser('run', help='train every model x dataset x seed that is not done yet', description=_run.__doc__)
    p.add_argument('--models', nargs='+', required=True, metavar='PATTERN',
                   help="zamzoo models, with wildcards ('resnet18_*'); a plain name may be any timm model")
    p.add_argument('--datasets', nargs='+', choices=DATASET_CHOICES, default=[DEFAULT_DATASET],
                   help='data sets of --data (folder and hf: one data set, the one --data names)')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--out', default='runs', help='sweep folder: one run folder per run, and _zoo/ (default runs/)')
    add_run_arguments(p, leave_out=('--device',))  # every other flag of `zamzoo train` but what names a run
    add_attention_arguments(p)  # a module of your own: --models '*_<name>' after --attn SPEC
    add_executor_arguments(p)
    p.add_argument('--dry-run', action='store_true', help='print the plan and its cost; train nothing')
    p.add_argument('--images-per-second', type=positive_float,
                   help='training images/s of one run on its GPU(s), as `zamzoo bench train` measures it on the '
                        'target GPU: --dry-run then gives the cost in GPU-hours')
    p.set_defaults(func=_run)


def add_executor_arguments(p):
    """Where and how a sweep's runs train: the flags of `zoo run` and `compare` (see `launch`)."""
    p.add_argument('--device', choices=('cuda', 'cpu'), default=None,
                   help='local: default cuda when a GPU is visible; slurm: default cuda (GPUs are requested), '
                        'cpu for a CPU partition')
    p.add_argument('--executor', choices=('local', 'slurm'), default='local')
    p.add_argument('--gpus-per-run', type=positive_int, default=1,
                   help='processes (GPUs) per run, joined by torch.distributed (on CPU: gloo processes)')
    p.add_argument('--runs-per-gpu', type=_runs_per_gpu, default=1, metavar='K|auto',
                   help='local: runs sharing one GPU at once (on a CPU-only machine: runs at once); auto: as many as '
                        "the first GPU's free memory holds by the peak memory of a few training steps of the first "
                        'run, at most one per CPU core and, without --mps, at most as many as fill the GPU\'s time '
                        '(1 / the share of a step in which one run keeps it busy); auto is 1 on a CPU-only machine')
    p.add_argument('--mps', action='store_true',
                   help="local: the runs as clients of CUDA MPS (a control daemon started for them and quit after "
                        "them, needs the NVIDIA driver's nvidia-cuda-mps-control), so that runs sharing a GPU run "
                        'their kernels side by side instead of taking turns')
    p.add_argument('--retry-failed', action='store_true', help='run failed runs again (resuming when they can)')
    p.add_argument('--slurm-partition', help='slurm: partition to submit to (default: the cluster default)')
    p.add_argument('--timeout-min', type=positive_int, default=1440,
                   help='slurm: time limit of each job; a run that needs longer is requeued and resumes')
    p.add_argument('--array-parallelism', type=positive_int, default=256, help='slurm: array tasks running at once')
    p.add_argument('--wait', action='store_true',
                   help='slurm: wait for every job; exit non-zero if a run failed or did not finish')


def _runs_per_gpu(text):
    return text if text == 'auto' else positive_int(text)


def _add_export(sub):
    from ..publish.export import DEFAULT_STAGING

    p = sub.add_parser('export', help='export every (model, dataset) group with enough finished seeds; optionally push',
                       description=_export.__doc__)
    p.add_argument('--out', default='runs', help='the sweep folder given to `zoo run` (default runs/)')
    p.add_argument('--min-seeds', type=positive_int, default=3)
    p.add_argument('--staging', default=str(DEFAULT_STAGING), help='where the export folders go (<model>.<tag>: the data set\'s name, cifar100 or cifar10 for CIFAR)')
    p.add_argument('--push', action='store_true', help='push each export to the Hub (token: `hf auth login`)')
    p.add_argument('--manifest', default=None,
                   help="weights manifest (default: $ZAMZOO_MANIFEST, else the package's "
                        'zamzoo/pretrained/manifest.json; with --push from an installed zamzoo, required)')
    tables = ("; default: the checkout's when zamzoo runs from its checkout, else the current folder's README.md, "
              "MODEL_CARD.md and docs/bench when all three are there (their zamzoo table markers say where), "
              "otherwise the tables are skipped")
    p.add_argument('--readme', help='README whose model table is regenerated' + tables)
    p.add_argument('--model-card', help='MODEL_CARD whose tables are regenerated' + tables)
    p.add_argument('--bench-results', nargs='+', metavar='PATH',
                   help='`zamzoo bench models` reports (files or folders) the tables are made from' + tables)
    p.set_defaults(func=_export)


# ------------------------------------------------------------------------------------------------ zoo run

def _fmt(value, spec, missing='-'):
    return missing if value is None else format(value, spec)


def _progress(st: dict) -> str:
    return (f"epoch {st['epoch']}/{_fmt(st['epochs'], 'd', '?')}, top-1 {_fmt(st['top1'], '.2f')}%, "
            f"{_fmt(st['images_per_s'], ',.0f')} img/s")


def _still_queued(args, runs) -> set:
    """For a dry run on SLURM: the names of `runs` whose job an earlier submission left in the queue, which `zoo run`
    does not submit again; none, said so, where SLURM cannot be asked."""
    if args.executor != 'slurm':
        return set()
    from .slurm import still_queued
    try:
        return still_queued(args.out, runs)
    except ZamzooError as e:
        print(f'which runs an earlier submission left in the queue is unknown, so they count as to train: {e}')
        return set()


def _print_plan(runs, states, retry_failed, queued=frozenset()):
    from .plan import describe_action

    def act(r):
        return 'skip (still queued)' if r.name in queued else describe_action(states[r.name], retry_failed)
    rows = [(r.config.model, r.config.dataset, r.recipe, str(r.config.seed), states[r.name]['state'],
             f"{states[r.name]['epoch']}/{r.epochs}", act(r), str(r.folder)) for r in runs]
    head = ('model', 'dataset', 'recipe', 'seed', 'state', 'epoch', 'action', 'run folder')
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print('  '.join(x.ljust(w) for x, w in zip(row, widths)).rstrip())


def _print_cost(launch, states, args):
    from .plan import TRAIN_IMAGES, gpu_hours

    unit, per = ('CPU process-hours', 'process(es)') if args.device == 'cpu' else ('GPU-hours', 'GPU(s)')
    if any(run.config.dataset not in TRAIN_IMAGES for run in launch):
        print('cost: unknown; the size of --datasets folder / hf is known once the data is opened')
    elif args.images_per_second:
        hours = gpu_hours(launch, states, args.images_per_second, args.gpus_per_run)
        print(f'cost: {hours:,.2f} {unit} for {len(launch)} run(s) at {args.images_per_second:,.0f} training '
              f'images/s per run on {args.gpus_per_run} {per} ({TRAIN_IMAGES["cifar100"]:,} images per epoch; '
              f'evaluation and start-up not counted)')
    elif args.device == 'cpu':
        print('cost: unknown; the measured training images/s (`zamzoo bench gpu`) are GPU figures, not a --device cpu '
              "run's: give --images-per-second (one CPU run's training images/s) for its hours")
    elif not _print_measured_cost(launch, states, args):
        print('cost: unknown; give --images-per-second (training images/s of one run, as `zamzoo bench train` '
              'measures it on the target GPU) for GPU-hours, or measure every backbone with `zamzoo bench gpu`')


NODE_GPUS = 8


def _print_measured_cost(launch, states, args) -> bool:
    """The cost from the images/s `zamzoo bench gpu` measured per backbone (docs/bench/gpu_*.json), if it covers
    every run's backbone; False if not. The wall time of an 8-GPU node is a lower bound (a makespan's): no less
    than its longest run, nor than the GPU-hours over its 8 GPUs."""
    from ..bench.gpu import measured_train_throughput
    from ..models import ZOO
    from .plan import gpu_hours

    mode = _bench_mode(args)
    measured = measured_train_throughput(mode=mode)
    backbones = {run.config.model: ZOO[run.config.model].backbone.name if run.config.model in ZOO else run.config.model
                 for run in launch}  # a timm model outside the zoo is its own backbone (never measured)
    missing = sorted({b for b in backbones.values() if measured is None or b not in measured['rates']})
    if measured is None or missing:
        if measured is not None:
            print(f"cost: {measured['path']} has no {mode} figure for backbone(s) {', '.join(missing)}")
        return False
    def rate(run):
        return measured['by_model'].get(run.config.model) or measured['rates'][backbones[run.config.model]]
    hours = gpu_hours(launch, states, rate)
    longest = max((gpu_hours([run], states, rate) for run in launch), default=0)
    node_hours = max(longest / args.gpus_per_run, hours / NODE_GPUS)
    rates = ', '.join(f"{m} {r:,.0f}" for m, r in sorted(measured['by_model'].items()))
    print(f"cost: {hours:,.2f} GPU-hours for {len(launch)} run(s), at least {node_hours:,.2f} h on one {NODE_GPUS}-GPU "
          f"node (its longest run, or the GPU-hours over {NODE_GPUS} GPUs), at the training images/s per GPU measured "
          f"({mode}) in {measured['path']} on {measured['device']}: {rates} (a model not measured at the rate of the "
          'slowest model measured on its backbone; several GPUs per run taken to scale linearly; evaluation and '
          'start-up not counted)')
    return True


def _bench_mode(args) -> str:
    """The `zamzoo bench gpu` mode whose images/s a sweep with these flags trains at ('cuda-graph + default' for a
    compiled model in a graph, a combination it does not measure: no figure, cost unknown)."""
    compile_mode = (args.compile_mode or 'default') if args.compile else None
    if args.cuda_graph:
        return 'cuda-graph' if compile_mode is None else f'cuda-graph + {compile_mode}'
    return compile_mode or 'eager'


def print_event(kind, run, detail):
    if kind == 'start':
        print(f"start     {run.name} on {'GPU ' + detail if detail is not None else 'CPU'}", flush=True)
    elif kind == 'submitted':
        print(f'submitted {run.name}: SLURM job {detail}', flush=True)
    else:
        from .worker import REFUSED
        skipped = detail.get('skipped')  # the worker's outcome where it left the run alone
        line = f"{'refused' if skipped == REFUSED else detail['state']:<9} {run.name}: {_progress(detail)}"
        if skipped:
            line += f' ({skipped})' if skipped == REFUSED else ' (left to another process)'
        ended_it = detail['state'] == 'failed' or detail.get('killed')  # the attempt whose log tells why
        log = f"log: {detail['log']}" if ended_it and detail['log'] else None
        killed = f"killed by {detail['killed']}" if detail.get('killed') else None
        for extra in (detail['error'], detail.get('note'), killed, log):
            if extra:
                line += f"\n          {extra}"
        print(line, flush=True)


def _run(args) -> int:
    """Each run is exactly `zamzoo train` in <out>/<model>-<dataset>-<recipe>-s<seed>. Running the same command
    again skips finished runs, resumes interrupted ones from their checkpoint, and runs failed ones again only with
    --retry-failed. A run folder that holds a run with other settings (another --epochs, --lr, recipe version...)
    is neither counted as done nor overwritten: the command names the field, trains nothing and exits 2; use
    another --out for other settings. --data that is not there, where runs are to train, is refused before any
    starts (exit 2)."""
    from .plan import check_conflicts, check_data, check_queued, plan_sweep, plan_states
    from ..sweep_files import LAST_RUN_FILE
    from .state import sweep_dir
    from .sweep import runs_to_launch

    check_executor_arguments(args)
    if args.attn:  # its models exist once it is registered, so that --models can name them
        from ..models.plugins import load_attention
        load_attention(args.attn, args.attn_name)
    options = {k: v for k, v in train_config_values(args).items() if k not in ('data', 'out')}
    runs = plan_sweep(args.models, args.datasets, args.seeds, args.data, args.out, **options)
    states = plan_states(runs, args.gpus_per_run)
    if not args.dry_run:
        check_conflicts(runs, states)
    launch_runs = runs_to_launch(runs, states, args.retry_failed)
    queued = _still_queued(args, launch_runs) if args.dry_run else set()  # a real run asks when it submits
    launch_runs = [run for run in launch_runs if run.name not in queued]
    check_data(launch_runs)  # once, not by each run (a finished run needs no data)
    unasked = args.executor == 'slurm' and not args.dry_run  # which are still queued is asked when submitting
    print(f"{len(runs)} run(s) planned in {args.out}: {len(launch_runs)} to train{' or still queued' * unasked}, "
          f'{len(runs) - len(launch_runs) - len(queued)} skipped'
          + (f', {len(queued)} still queued from an earlier submission (not submitted again)' if queued else ''))
    if args.dry_run:
        _print_plan(runs, states, args.retry_failed, queued)
        _print_cost(launch_runs, states, args)
        check_conflicts(runs, states)
        check_queued(runs, queued, args.out)
        return 0
    summary = launch(runs, launch_runs, args, states)
    return _print_summary(summary, args, sweep_dir(args.out) / LAST_RUN_FILE)


def check_executor_arguments(args):
    if args.executor == 'slurm' and args.runs_per_gpu != 1:
        raise UsageError('--runs-per-gpu is for --executor local (each SLURM task gets its own GPUs)')
    if args.executor == 'slurm' and args.mps:
        raise UsageError("--mps is for --executor local (on SLURM, MPS is the cluster's: its gres 'mps')")
    if args.mps:
        from .local import MPS_NEEDS_A_GPU, visible_gpus
        if args.device == 'cpu' or not visible_gpus():
            raise UsageError(MPS_NEEDS_A_GPU)
    if args.executor == 'slurm' and not (getattr(args, 'dry_run', False) or getattr(args, 'check_only', False)):
        from .slurm import require_slurm
        require_slurm()  # before any planning or checking: `compare` checks its module for a minute first


def launch(runs, launch_runs, args, states: dict) -> dict:
    """Train `launch_runs` (those of `runs` that need it, by `states`: plan_states') with the executor flags of
    `add_executor_arguments`; run_sweep's summary."""
    from .sweep import run_sweep

    runs_per_gpu = args.runs_per_gpu
    if runs_per_gpu == 'auto':
        from .local import auto_runs_per_gpu
        runs_per_gpu = (auto_runs_per_gpu(launch_runs[0], args.device, args.gpus_per_run, args.mps)
                        if launch_runs else 1)
        print(f'--runs-per-gpu auto: {runs_per_gpu}')
    return run_sweep(runs, args.out, states=states, executor=args.executor, retry_failed=args.retry_failed,
                     gpus_per_run=args.gpus_per_run, runs_per_gpu=runs_per_gpu, device=args.device,
                     mps=args.mps, wait=args.wait, on_event=print_event,
                     slurm_options=dict(partition=args.slurm_partition, timeout_min=args.timeout_min,
                                        array_parallelism=args.array_parallelism))


def _print_summary(summary, args, path) -> int:
    if summary['skipped'].get('queued'):
        print(f"{summary['skipped']['queued']} run(s) still queued from an earlier submission: not submitted again")
    if not summary['finished']:
        print(f"submitted {summary['launched']} run(s); follow them with `zamzoo zoo status --out {args.out}`, "
              f"run this command again to resubmit what did not finish")
        return 0
    ended = summary['ended']
    elsewhere = f", {ended['elsewhere']} running elsewhere (left to another process)" if ended['elsewhere'] else ''
    refused = f", {ended['refused']} refused (another invocation's, other settings)" if ended['refused'] else ''
    killed = f", {ended['killed']} killed by a signal this command did not send" if ended['killed'] else ''
    print(f"ended: {ended['done']} done, {ended['failed']} failed, {ended['pending']} interrupted{killed}{elsewhere}"
          f"{refused}, in {summary['wall_s']:.0f} s")
    for record in summary['refused']:
        print(f"refused {record['run']}: {record['error']}")
    for record in summary['killed']:
        again = f"resumes it after epoch {record['epoch']}" if record['epoch'] else 'trains it again from the start'
        print(f"killed  {record['run']} by {record['signal']}; log: {record['log']}; the same command {again}")
    if summary['aggregate_images_per_s'] is not None:
        print(f"aggregate: {summary['aggregate_images_per_s']:,.1f} training images/s "
              f"({summary['train_images']:,} images over {summary['wall_s']:.1f} s wall, "
              f"--runs-per-gpu {summary['runs_per_gpu']})")
    if summary['skipped']['failed']:
        print(f"{summary['skipped']['failed']} failed run(s) skipped: --retry-failed runs them again")
    if summary.get('mps'):
        from ..sweep_files import MPS_LOGS
        from .state import log_dir
        print(f"the MPS control daemon's log: {log_dir(args.out) / MPS_LOGS}")
    print(f'summary: {path}')
    finished = ended['done'] + ended['elsewhere'] == summary['launched']  # another process's runs are its own to report
    return 0 if finished and not summary['skipped']['failed'] else 1


# ------------------------------------------------------------------------------------------------ status / export

_QUEUE = {True: ' (queued)', False: " (not in SLURM's queue: cancelled, or ended without starting; `zoo run` "
                                     "submits it again)", None: ''}


def _status(args) -> int:
    from .slurm import mark_queued
    from .state import sweep_status

    status = sweep_status(args.out)
    mark_queued(status['runs'])
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for problem in status['problems']:
        print(problem)
    for r in status['runs']:
        queue = ' (its retry is queued)' if r['state'] == 'failed' and r['queued'] else _QUEUE[r['queued']]
        job = f", job {r['job_id']}{queue}" if r['job_id'] else ''
        print(f"{r['state']:<8} {r['model']} {r['dataset']} {r['recipe']} seed {r['seed']}: {_progress(r)}{job}")
        if r['error']:
            print(f"         {r['error']}")
        if r['state'] == 'failed' and r['log']:
            print(f"         log: {r['log']}")
    t = status['totals']
    refused = f", {t['refused']} refused (other settings)" if t['refused'] else ''
    print(f"{t['runs']} runs: {t['done']} done, {t['running']} running, {t['pending']} pending, {t['failed']} failed"
          f"{refused}; epochs {t['epochs_done']:,}/{t['epochs_total']:,}")
    return 0


def _export(args) -> int:
    """One Hub-ready folder per group (mean +- std over its seeds, as `zamzoo export` with several runs), pushed
    with --push (which records the manifest, as `zamzoo push`), then the README and MODEL_CARD tables are regenerated.
    Groups with too few finished seeds are listed only; a group whose runs differ in anything but the seed is refused
    (naming the field). Every destination is checked before the first write; what was done is printed before any
    later failure."""
    from .._process import sigterm_as_interrupt
    from .export import export_sweep

    with sigterm_as_interrupt():  # killed (`timeout`, `kill`): nothing half-written is left, as after Ctrl-C
        r = export_sweep(args.out, min_seeds=args.min_seeds, staging=args.staging, push=args.push,
                         manifest=args.manifest, readme=args.readme, model_card=args.model_card,
                         bench_results=args.bench_results)
    for g in r['exported']:
        top1 = g['top1'] or {}
        left_out = ''.join(f"; seed {r['seed']} left out: {r['state']}" for r in g['left_out'])
        line = (f"exported {g['model']}.{g['tag']} (seeds {' '.join(map(str, g['seeds']))}{left_out}): top-1 "
                f"{_fmt(top1.get('mean'), '.2f')} +- {_fmt(top1.get('std'), '.2f')} -> {g['folder']}")
        if 'pushed' in g:
            line += f" (pushed to {g['pushed']['repo_id']}@{g['pushed']['hub_commit'][:12]})"
        print(line)
        if 'push_error' in g:
            print(f"failed to push {g['model']}.{g['tag']}: {g['push_error']}", file=sys.stderr)
    for g in r['too_few']:
        print(f"not exported {g['model']}.{g['tag'] or g['dataset']}: {len(g['seeds'])} finished seed(s) of "
              f"{g['runs']} (--min-seeds {args.min_seeds})" + _earlier_export_note(g))
    for g in r['errors']:
        print(f"failed {g['model']}.{g['tag'] or g['dataset']}: {g['error']}" + _earlier_export_note(g),
              file=sys.stderr)
    if r['tables_skipped']:
        print(f"tables: skipped ({r['tables_skipped']})")
    elif r['tables_error']:
        print(f"tables: not updated: {r['tables_error']}", file=sys.stderr)
    else:
        print('tables: ' + (', '.join(f'{p} updated' for p in r['tables']) or 'up to date'))
    return 1 if r['errors'] or r['tables_error'] or any('push_error' in g for g in r['exported']) else 0


def _earlier_export_note(group: dict) -> str:
    """A group not exported now whose staging folder holds an earlier export, maybe of seeds that failed since."""
    earlier = group.get('earlier_export')
    if not earlier:
        return ''
    seeds = ' '.join(map(str, earlier['seeds'] or [])) or '?'
    done = ' '.join(map(str, group['seeds'])) or 'none'
    return f"; {earlier['folder']} still holds an earlier export, of seeds {seeds} (done now: {done})"

