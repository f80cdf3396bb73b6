"""Subcommands `export`, `push`, `verify` and `list`: parse, call zamzoo.publish, print."""
import json
import sys

from ..pretrained.manifest import MANIFEST_ENV
from ..recipes import list_recipes

MANIFEST_HELP = 'manifest file (default: $ZAMZOO_MANIFEST, else the one shipped in zamzoo/pretrained/)'
PUSH_MANIFEST_HELP = ('manifest file to record the Hub commit in (default: $ZAMZOO_MANIFEST, else, in a zamzoo '
                      'source checkout only, zamzoo/pretrained/manifest.json; an installed zamzoo needs one)')


def add_commands(subparsers):
    p = subparsers.add_parser(
        'export', help='make a Hub-ready folder from training run(s) or a checkpoint',
        description='Write model.safetensors, config.json (timm), README.md (model card), hparams.json, '
                    'train_log.json, results.json and SHA256SUMS for one model and tag. Several run folders of '
                    'the same model (one per seed) give results as mean +- std; the weights come from one run (the '
                    'smallest seed unless --weights-seed).')
    p.add_argument('sources', nargs='+', metavar='RUN_OR_CHECKPOINT',
                   help='training run folder(s) of `zamzoo train`, or one .safetensors / .pt checkpoint')
    p.add_argument('--out', help='output folder (default: hub/staging/<model>.<tag>)')
    p.add_argument('--model', help='model name; required for a bare checkpoint')
    p.add_argument('--tag', help="pretrained tag: cifar100 or cifar10 for a run on the CIFAR data sets (default: its "
                                 "data set); for a run on an image folder or a Hugging Face dataset a tag of its own, "
                                 "not a CIFAR one (default: the one the run recorded, its data's name)")
    p.add_argument('--recipe', choices=list_recipes(), help="the recipe a bare checkpoint was trained with (its "
                   "normalisation is the export's), unless the file records its run's")
    p.add_argument('--seed', type=int, help='training seed, for a bare checkpoint')
    p.add_argument('--weights-seed', type=int, help='publish the weights of the run with this seed')
    p.add_argument('--repo-id', help='Hub repo the export is for (default: zamzoo/<model>.<tag>)')
    p.add_argument('--force', action='store_true', help='replace an existing output folder')
    p.add_argument('--onnx', action='store_true',
                   help='also write model.onnx (opset 18, dynamic batch), checked against PyTorch with ONNX Runtime '
                        "(needs zamzoo[onnx])")
    p.set_defaults(func=_export)

    p = subparsers.add_parser(
        'push', help='upload an export folder to the Hugging Face Hub and record it in the manifest',
        description='Validates the folder (files, sha256, architecture), creates the repo if needed, uploads, '
                    'and records the Hub commit in the manifest. Token: `hf auth login` or HF_TOKEN.')
    p.add_argument('folder', metavar='DIR')
    p.add_argument('--repo-id', help='ORG/NAME (default and only allowed value: the repo the export was made for)')
    p.add_argument('--private', action='store_true', help='create the repo as private')
    p.add_argument('--message', help='commit message')
    p.add_argument('--manifest', help=PUSH_MANIFEST_HELP)
    p.set_defaults(func=_push)

    p = subparsers.add_parser(
        'verify', help='download (or read the cache) and check published weights against the manifest')
    p.add_argument('model', nargs='?', metavar='MODEL', help='model or model.tag (default: every record)')
    p.add_argument('--cache-dir', help='Hugging Face cache folder (default: $HF_HUB_CACHE)')
    p.add_argument('--force-download', action='store_true', help='download again even if cached')
    p.add_argument('--manifest', help=MANIFEST_HELP)
    p.set_defaults(func=_verify)

    p = subparsers.add_parser('list', help='every model with params, MACs and weights status')
    p.add_argument('patterns', nargs='*', default=['*'], metavar='PATTERN', help="wildcards, e.g. 'resnet18_*'")
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    p.add_argument('--manifest', help=MANIFEST_HELP)
    p.set_defaults(func=_list)


def _export(args) -> int:
    from .._process import sigterm_as_interrupt
    from .export import export_run
    from .push import push_refusal
    with sigterm_as_interrupt():  # killed (`timeout`, `kill`): nothing half-written is left, as after Ctrl-C
        r = export_run(args.sources, args.out, model=args.model, tag=args.tag, recipe=args.recipe, seed=args.seed,
                       weights_seed=args.weights_seed, repo_id=args.repo_id, overwrite=args.force, onnx=args.onnx)
    print(f'exported {r.model}.{r.tag} to {r.path}')
    print(f'  weights: seed {r.weights_seed}, sha256 {r.sha256}')
    print(f'  params {r.params:,}  MACs {r.macs:,}  results: {"yes" if r.has_results else "none (no accuracy claimed)"}')
    if args.onnx:
        print('  model.onnx: checked against PyTorch with ONNX Runtime')
    refusal = push_refusal(r.path)
    print(f'next: zamzoo push {r.path}' if refusal is None else f'not for the Hub: {refusal}')
    return 0


def _push(args) -> int:
    from .push import push_folder
    record, manifest = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.message,
                                   manifest=args.manifest)
    print(f"pushed {record['model']}.{record['tag']} to https://huggingface.co/{record['repo_id']} "
          f"at commit {record['hub_commit']}")
    from ..pretrained.manifest import shipped_manifest
    if manifest is None:
        print(f"not recorded in a manifest (no registry name has the tag {record['tag']!r}): load the weights as "
              f"timm.create_model('hf-hub:{record['repo_id']}@{record['hub_commit']}', pretrained=True)")
    elif str(manifest) == str(shipped_manifest()):
        print(f'recorded in {manifest}; commit it so that pretrained=True pins this revision')
    else:
        print(f'recorded in {manifest}; pretrained=True pins this revision where {MANIFEST_ENV}={manifest}')
    return 0


def _report_manifest_problems(manifest) -> bool:
    """True when the manifest has invalid records. Reading it warned of each one (on the 'zamzoo' logger, once per
    process: `import zamzoo` may have), so one line here counts them rather than print each a second time."""
    from ..pretrained import manifest_problems
    problems = manifest_problems(manifest)
    if problems:
        print(f'FAILED: {len(problems)} invalid record(s) in the weights manifest, each named in a warning above',
              file=sys.stderr)
    return bool(problems)


def _verify(args) -> int:
    from .verify import verify_published
    invalid = _report_manifest_problems(args.manifest)
    results = verify_published(args.model, cache_dir=args.cache_dir, force_download=args.force_download,
                     manifest=args.manifest)
    if not results and not invalid:
        print('nothing is published yet: the manifest has no checkpoints')
        return 0
    for r in results:
        status = 'ok' if r.ok else 'FAILED'
        print(f'{r.model}.{r.tag}  {r.repo_id}@{r.hub_commit[:12]}  {status}: {r.message}',
              file=sys.stdout if r.ok else sys.stderr)
    return 0 if all(r.ok for r in results) and not invalid else 1


def _list(args) -> int:
    from ..models import TAGS, list_models
    from ..models.plugins import unregistered_models
    from .verify import model_status
    unmatched = [p for p in args.patterns if not list_models(p)]
    if unmatched:  # before building any model: a typo among several patterns is not dropped in silence
        why = [f'{p!r}: {unregistered_models(p)}' for p in unmatched if unregistered_models(p)]
        print(f"no zamzoo model matches {', '.join(map(repr, unmatched))}" + ''.join(f'; {w}' for w in why),
              file=sys.stderr)
        return 1
    rows = model_status(args.patterns, manifest=args.manifest)
    invalid = _report_manifest_problems(args.manifest)  # the list is printed; the exit status says it (as verify's)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 1 if invalid else 0
    width = max(len(r.model) for r in rows)
    print(f"{'model':<{width}}  {'params':>11}  {'MACs':>13}  " + '  '.join(f'{t:<24}' for t in TAGS))
    for r in rows:
        print(f'{r.model:<{width}}  {r.params:>11,}  {r.macs:>13,}  '
              + '  '.join(f'{r.weights[t]:<24}' for t in TAGS))
    return 1 if invalid else 0
