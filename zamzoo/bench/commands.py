"""`zamzoo bench ...`: a group of subcommands.

- ``bench models``: params, MACs (two conventions) and latency against the plain backbone (zamzoo.bench.models).
- ``bench overhead``: fused vs reference (unfused) attention overhead over the plain backbone.
- ``bench export``: every model through timm's ONNX export (both exporters), checked with ONNX Runtime.
- ``bench tables``: the README / MODEL_CARD model tables from the bench reports and the manifest.
- ``bench train``: training throughput, ours vs. a seed-style loop (zamzoo.train.bench, when installed).
"""
import importlib.util
import shlex


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

    if importlib.util.find_spec('zamzoo.train.bench') is not None:  # the training package's `bench train`
        from zamzoo.train.bench import add_bench_train
        add_bench_train(sub)


def _add_models_arguments(p):
    p.add_argument('--models', nargs='+', default=['*'], metavar='PATTERN',
                   help="model names or fnmatch patterns, e.g. 'resnet18_*' (default: all)")
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--repeats', type=int, default=None, help='interleaved rounds (default: 3 on CPU, 10 on CUDA)')
    p.add_argument('--warmup', type=int, default=None, help='warm-up calls per model (default: 1 CPU, 10 CUDA)')
    p.add_argument('--min-time', type=float, default=None,
                   help='seconds of back-to-back calls per measurement (default: 0.2 CPU, 0.5 CUDA)')
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 64], metavar='B',
                   help='inference batch sizes (default: 1 64)')
    train = p.add_mutually_exclusive_group()
    train.add_argument('--train-step', dest='train_step', action='store_true', default=None,
                       help='also time one SGD training step at batch 128 (default on CUDA only)')
    train.add_argument('--no-train-step', dest='train_step', action='store_false')
    p.add_argument('--train-batch', type=int, default=128, metavar='B', help='training-step batch (default: 128)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--timer', choices=['wall', 'process'], default='wall',
                   help='wall clock (latency, default) or the CPU time of this process (CPU only: steadier on a '
                        'machine shared with other work, with --threads 1)')
    p.add_argument('--runtime', choices=['torch', 'onnxruntime'], default='torch',
                   help='torch: eager PyTorch (default); onnxruntime: also every model exported to ONNX (dynamo '
                        'exporter, checked against PyTorch) under ONNX Runtime with --threads intra-op threads, '
                        'interleaved with the PyTorch rounds (CPU only; needs zamzoo[onnx])')
    p.add_argument('--counts-only', action='store_true', help='params and MACs only, no timing')
    p.add_argument('--out', default='bench-results', metavar='DIR', help='output folder (default: bench-results)')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def run_models(args) -> int:
    from .._paths import check_writable
    from .models import bench_models, markdown_report, progress_printer, select_models, write_report

    names = select_models(args.models)
    check_writable(args.out, '--out')  # before the measurements, not after
    report = bench_models(names, device=args.device, repeats=args.repeats, warmup=args.warmup,
                          min_time=args.min_time, infer_batches=args.batch_sizes, train_step=args.train_step,
                          train_batch=args.train_batch, threads=args.threads, timer=args.timer, runtime=args.runtime,
                          latency=not args.counts_only, progress=progress_printer(args.quiet))
    report['command'] = 'zamzoo bench models ' + ' '.join(shlex.quote(a) for a in _argv_of(args))
    paths = write_report(report, args.out)
    print(markdown_report(report))
    print(f"wrote {paths['json']} and {paths['md']}")
    return 0


def _argv_of(args):
    """The options of `bench models` that change the numbers, as a command line to record in the report."""
    out = ['--models', *args.models, '--device', args.device]
    for flag, value, default in (('--repeats', args.repeats, None), ('--warmup', args.warmup, None),
                                 ('--min-time', args.min_time, None), ('--threads', args.threads, None),
                                 ('--timer', args.timer, 'wall'), ('--runtime', args.runtime, 'torch')):
        if value != default:
            out += [flag, str(value)]
    if args.batch_sizes != [1, 64]:
        out += ['--batch-sizes', *map(str, args.batch_sizes)]
    if args.train_step is not None:
        out.append('--train-step' if args.train_step else '--no-train-step')
    if args.train_batch != 128:
        out += ['--train-batch', str(args.train_batch)]
    if args.counts_only:
        out.append('--counts-only')
    return out
