"""`zamzoo bench ...`: a group of subcommands.

- ``bench models``: params, MACs (two conventions) and latency against the plain backbone (zamzoo.bench.models).
- ``bench overhead``: fused vs reference (unfused) attention overhead over the plain backbone.
- ``bench export``: every model through timm's ONNX export (both exporters), checked with ONNX Runtime.
- ``bench tables``: the README / MODEL_CARD model tables from the bench reports and the manifest.
- ``bench train``: training throughput, ours vs. a seed-style loop (zamzoo.train.bench).
"""
import shlex

from .._argtypes import non_negative_float, non_negative_int, positive_int
from ..recipes import list_recipes


def add_commands(subparsers):
    from . import export, gpu, overhead, tables

    bench = subparsers.add_parser('bench', help='benchmarks: model cost and latency, tables, training speed')
    sub = bench.add_subparsers(dest='bench_command', required=True, metavar='BENCH_COMMAND')
    commands = {
        'models': (_add_models_arguments, run_models,
                   'params, MACs and latency of models against their plain backbone',
                   'For each model: params, MACs (torch FlopCounterMode and the ZAM seed\'s thop convention) and '
                   'latency at inference batch 1 and 64 (and a training step on CUDA), measured in one run next to '
                   'its plain backbone; writes models_<device>.json and .md to --out.'),
        'tables': (tables.add_arguments, tables.run, 'regenerate the model tables of README.md and MODEL_CARD.md',
                   'Fill the generated blocks of README.md and MODEL_CARD.md from bench reports and the weights '
                   'manifest.'),
        'overhead': (overhead.add_arguments, overhead.run,
                     'fused vs reference attention overhead over the plain backbone',
                     'Time <backbone>_plain, the model (fused attention) and the model with '
                     "attn_kwargs=dict(impl='reference') in the same run, interleaved rounds."),
        'export': (export.add_arguments, export.run,
                   'ONNX export of every model with both exporters, checked with ONNX Runtime',
                   "Export each model through timm's onnx_export (TorchScript-based and dynamo exporters, dynamic "
                   'batch) and compare ONNX Runtime with PyTorch at batch 1 and 8; writes export_onnx.json and .md to '
                   '--out. Needs zamzoo[onnx].'),
        'gpu': (gpu.add_arguments, gpu.run, 'GPU training speed in one call: bench train x compile modes, a profile, '
                'zoo run with K runs per GPU', gpu.__doc__.split('\n\n')[0] + ' Writes gpu_<device>.json and .md.'),
    }
    for name, (add_arguments, run, help_, description) in commands.items():
        p = sub.add_parser(name, help=help_, description=description)
        add_arguments(p)
        p.set_defaults(func=run)

    _add_train(sub)


def _add_models_arguments(p):
    from .models import INFER_BATCHES, RUNTIMES, TIMERS, TIMING_DEFAULTS, TRAIN_BATCH

    cpu, cuda = TIMING_DEFAULTS['cpu'], TIMING_DEFAULTS['cuda']
    p.add_argument('--models', nargs='+', default=['*'], metavar='PATTERN',
                   help="model names or fnmatch patterns, e.g. 'resnet18_*' (default: all)")
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--repeats', type=positive_int, default=None,
                   help=f"interleaved rounds (default: {cpu['repeats']} on CPU, {cuda['repeats']} on CUDA)")
    p.add_argument('--warmup', type=non_negative_int, default=None,
                   help=f"untimed calls per model before the one that sizes the rounds to --min-time (default: "
                        f"{cpu['warmup']} CPU, {cuda['warmup']} CUDA)")
    p.add_argument('--min-time', type=non_negative_float, default=None,
                   help=f"seconds of back-to-back calls per measurement (default: {cpu['min_time']} CPU, "
                        f"{cuda['min_time']} CUDA)")
    p.add_argument('--batch-sizes', type=positive_int, nargs='+', default=list(INFER_BATCHES), metavar='B',
                   help=f"inference batch sizes, distinct (default: {' '.join(map(str, INFER_BATCHES))})")
    train = p.add_mutually_exclusive_group()
    train.add_argument('--train-step', dest='train_step', action='store_true', default=None,
                       help='also time one SGD training step at --train-batch (default on CUDA only)')
    train.add_argument('--no-train-step', dest='train_step', action='store_false')
    p.add_argument('--train-batch', type=positive_int, default=TRAIN_BATCH, metavar='B',
                   help=f'training-step batch (default: {TRAIN_BATCH})')
    p.add_argument('--threads', type=positive_int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--timer', choices=list(TIMERS), default='wall',
                   help='wall clock (latency, default) or the CPU time of this process (CPU only: steadier on a '
                        'machine shared with other work, with --threads 1)')
    p.add_argument('--runtime', choices=RUNTIMES, default=RUNTIMES[0],
                   help='torch: eager PyTorch (default); onnxruntime: also every model exported to ONNX (dynamo '
                        'exporter, checked against PyTorch) under ONNX Runtime with --threads intra-op threads, '
                        'interleaved with the PyTorch rounds (CPU only; needs zamzoo[onnx]); compile: also every '
                        'model through torch.compile (inductor, static shapes, checked against PyTorch; on a CPU it '
                        'needs a C++ compiler), interleaved alike')
    p.add_argument('--counts-only', action='store_true', help='params and MACs only, no timing')
    p.add_argument('--out', default='bench-results', metavar='DIR', help='output folder (default: bench-results)')
    p.add_argument('--name', metavar='STEM', default=None,
                   help='file name of the report, without .json/.md (default: models_<device>[_<timer>], '
                        'models_counts with --counts-only); recorded in its command, with --out')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def run_models(args) -> int:
    from .._paths import check_writable
    from .models import (bench_models, check_batch_sizes, check_report_name, markdown_report, progress_printer,
                         select_models, write_report)

    names = select_models(args.models)
    check_batch_sizes(args.batch_sizes)
    check_report_name(args.name)
    check_writable(args.out, '--out')  # before the measurements, not after
    report = bench_models(names, device=args.device, repeats=args.repeats, warmup=args.warmup,
                          min_time=args.min_time, infer_batches=args.batch_sizes, train_step=args.train_step,
                          train_batch=args.train_batch, threads=args.threads, timer=args.timer, runtime=args.runtime,
                          latency=not args.counts_only, progress=progress_printer(args.quiet))
    report['command'] = 'zamzoo bench models ' + ' '.join(shlex.quote(a) for a in _argv_of(args))
    paths = write_report(report, args.out, args.name)
    print(markdown_report(report))
    print(f"wrote {paths['json']} and {paths['md']}")
    return 0


def _argv_of(args):
    """The options of `bench models` that change the numbers, and where the files go (--out, --name), as a command
    line to record in the report: it writes the file it is recorded in."""
    from .models import INFER_BATCHES, RUNTIMES, TRAIN_BATCH

    out = ['--models', *args.models, '--device', args.device]
    for flag, value, default in (('--repeats', args.repeats, None), ('--warmup', args.warmup, None),
                                 ('--min-time', args.min_time, None), ('--threads', args.threads, None),
                                 ('--timer', args.timer, 'wall'), ('--runtime', args.runtime, RUNTIMES[0])):
        if value != default:
            out += [flag, str(value)]
    if args.batch_sizes != list(INFER_BATCHES):
        out += ['--batch-sizes', *map(str, args.batch_sizes)]
    if args.train_step is not None:
        out.append('--train-step' if args.train_step else '--no-train-step')
    if args.train_batch != TRAIN_BATCH:
        out += ['--train-batch', str(args.train_batch)]
    if args.counts_only:
        out.append('--counts-only')
    out += ['--out', args.out] + (['--name', args.name] if args.name else [])
    return out


def _add_train(bench_subparsers):
    from ..train.bench import DEFAULT_BATCH, DEFAULT_MODEL, DEFAULT_RECIPE
    from ..train.config import AMP_CHOICES, COMPILE_MODES

    p = bench_subparsers.add_parser(
        'train', help='images/s of one training epoch: our loop vs a seeds-style DataLoader loop',
        description='Images/s of one training epoch on synthetic CIFAR-shaped data, for our loop and for a '
                    'reference loop in the seeds\' style (DataLoader + PIL transforms + fp32), in one run.')
    p.add_argument('--model', default=DEFAULT_MODEL)
    p.add_argument('--device', default=None, help='cuda or cpu (default: cuda if available)')
    p.add_argument('--batch-size', type=positive_int, default=DEFAULT_BATCH)
    p.add_argument('--images', type=positive_int, default=None,
                   help='images in the timed epoch (default 50000 on CUDA, 1024 on CPU)')
    p.add_argument('--recipe', choices=list_recipes(), default=DEFAULT_RECIPE,
                   help='augmentation and optimizer settings')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--compile-mode', default=None, choices=COMPILE_MODES)
    p.add_argument('--cuda-graph', action='store_true', help="zamzoo train --cuda-graph's step: one CUDA graph")
    p.add_argument('--amp', choices=AMP_CHOICES, default='auto')
    p.add_argument('--workers', type=non_negative_int, default=None,
                   help='reference DataLoader workers (default min(4, CPUs))')
    p.add_argument('--warmup-steps', type=non_negative_int, default=None)
    p.add_argument('--no-reference', action='store_true', help='measure our loop only')
    p.add_argument('--out', default='bench-results', help='folder for the JSON result (default bench-results/)')
    p.set_defaults(func=run_bench_train)


def run_bench_train(args) -> int:
    from ..train.bench import bench_train

    r = bench_train(args.model, device=args.device, batch_size=args.batch_size, images=args.images,
                    recipe=args.recipe, compile=args.compile,
                    compile_mode=None if args.compile_mode in (None, 'default') else args.compile_mode,
                    amp=args.amp, workers=args.workers, reference=not args.no_reference,
                    warmup_steps=args.warmup_steps, out=args.out, cuda_graph=args.cuda_graph)
    o = r['ours']
    print(f"{r['model']} batch {r['batch_size']}, {r['images']:,} synthetic images, {r['device']}")
    print(f"  ours:      {o['images_per_s']:>10,.0f} img/s  ({o['epoch_s']:.2f} s/epoch; amp {o['amp']}, "
          f"compile {o['compile']}, cuda graph {o['cuda_graph']}, channels_last {o['channels_last']}; "
          f"warm-up {o['warmup_s']:.1f} s)")
    if 'reference' in r:
        ref = r['reference']
        print(f"  reference: {ref['images_per_s']:>10,.0f} img/s  ({ref['epoch_s']:.2f} s/epoch; {ref['loader']}, fp32)")
        print(f"  speedup:   {r['speedup']:.2f}x")
    if 'path' in r:
        print(f"wrote {r['path']}")
    return 0
