"""`zamzoo train` and `zamzoo eval` (thin: parse, call zamzoo.train, print), and the flags of a training run that
`zamzoo zoo run` shares."""
import argparse

from .._argtypes import key_value, positive_float, positive_int
from ..dataset_table import DEFAULT_DATASET
from ..errors import UsageError
from ..recipes import list_recipes
from .config import AMP_CHOICES, COMPILE_MODES, DATASET_CHOICES, LOADER_CHOICES
from .distributed import is_main_process

# The flags of one training run besides what names the run (model, dataset, seed, run folder): one set for
# `zamzoo train`, `zamzoo zoo run` (and `zamzoo compare`). Each flag's dest is a TrainConfig field.
RUN_ARGUMENTS = {
    '--data': dict(required=True, help='data folder: the one holding cifar-100-python/ (or cifar-10-batches-py/); '
                   'for --dataset folder one with train/ and val/ sub-folders, or one of class sub-folders with '
                   '--holdout; for --dataset hf a Hugging Face dataset (Hub name, save_to_disk folder or folder '
                   'of parquet files)'),
    '--download': dict(action='store_true', help="download CIFAR with torchvision's own download"),
    '--image-column': dict(help='hf: the image column (default: img, image, or the only Image feature)'),
    '--label-column': dict(help='hf: the label column (default: fine_label, label, or the only ClassLabel feature)'),
    '--train-split': dict(help='hf: the training split (default: train)'),
    '--val-split': dict(help='hf: the evaluation split (default: validation, val, valid or test)'),
    '--holdout': dict(type=positive_float, metavar='FRACTION',
                      help='folder / hf without a validation split: hold out this share of each class (e.g. 0.1), '
                           'chosen from the seed; the split is written to the run folder'),
    '--recipe': dict(choices=list_recipes(), default=None,
                     help="default: the model's own (zam; spem for resnet164), finetune for --dataset folder / hf"),
    '--epochs': dict(type=positive_int, help="override the recipe's number of epochs"),
    '--batch-size': dict(type=positive_int, help="override the recipe's global batch size"),
    '--lr': dict(type=positive_float, help="override the recipe's learning rate"),
    '--pretrained': dict(action='store_true', help="start from the model's published weights, recorded as --init "
                         "MODEL's are; the head as with --init, or re-initialised by a recipe with reset_head "
                         "(finetune)"),
    '--init': dict(metavar='SOURCE', help='start from these weights: a zoo name with published weights, '
                   'hf-hub:org/name, local-dir:PATH, an export or run folder, or a .safetensors file (the head is '
                   're-initialised when the class count differs)'),
    '--model-kwargs': dict(nargs='*', action='extend', type=key_value, default=[], metavar='KEY=VALUE',
                           help='extra keyword arguments for timm.create_model, e.g. drop_rate=0.1'),
    '--device': dict(default=None, help='cuda, cuda:1 or cpu (default: cuda if available)'),
    '--amp': dict(choices=AMP_CHOICES, default='auto', help='autocast dtype (auto: bf16 on CUDA, none on CPU)'),
    '--compile': dict(action='store_true', help='torch.compile the model'),
    '--compile-mode': dict(default=None, choices=COMPILE_MODES),
    '--cuda-graph': dict(action='store_true', help='capture the whole training step (forward, backward, SGD) once '
                         'per batch shape as a CUDA graph and replay it; not with fp16, --max-bad-steps > 0 or '
                         'several processes (the eager step runs, with a warning); on CPU the same step runs eagerly'),
    '--channels-last': dict(action=argparse.BooleanOptionalAction, default=None,
                            help='channels_last memory format (default: on CUDA)'),
    '--loader': dict(choices=LOADER_CHOICES, default='auto',
                     help='tensor: the whole data set on the device, decoded once, with batched augmentation '
                          '(default on CUDA when it fits); dataloader: torch DataLoader + torchvision transforms '
                          '(default on CPU); --resume keeps the loader the run started with'),
    '--workers': dict(type=int, default=None, help='DataLoader workers per process'),
    '--img-size': dict(type=positive_int, default=None,
                       help="folder / hf: input size (default: the model's; CIFAR is 32x32)"),
    '--eval-every': dict(type=positive_int, default=1, help='evaluate every N epochs (and after the last)'),
    '--eval-batch-size': dict(type=positive_int, default=500),
    '--max-bad-steps': dict(type=int, default=0, metavar='N', help='steps with a NaN/inf loss to skip in each '
                            'epoch before the run fails (default 0: the first one fails it); a skipped step changes '
                            'nothing, its BN statistics included, is skipped on every rank, and is counted in its '
                            "epoch's skipped_steps (metrics.jsonl) with a warning"),
}


def add_run_arguments(parser, leave_out=(), only=None):
    """Add RUN_ARGUMENTS to `parser`: all of them, or `only` these flags, less those in `leave_out`."""
    for flag, options in RUN_ARGUMENTS.items():
        if flag not in leave_out and (only is None or flag in only):
            parser.add_argument(flag, **options)


def train_config_values(args) -> dict:
    """The TrainConfig fields among parsed flags (a flag's dest is its field)."""
    from dataclasses import fields

    from .config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if 'compile_mode' in values and values['compile_mode'] == 'default':
        values['compile_mode'] = None
    if 'model_kwargs' in values:
        keys = [key for key, _ in values['model_kwargs']]
        if len(set(keys)) < len(keys):  # a dict keeps the last: the run would record one value of two given
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise UsageError(f"--model-kwargs: {', '.join(twice)} given twice; expected each key once")
        values['model_kwargs'] = dict(values['model_kwargs'])
    return values


def add_commands(subparsers):
    p = subparsers.add_parser(
        'train', help='train a model (one process, or torchrun --nproc_per_node N -m zamzoo train ...)',
        description='Train a model with a named recipe; writes config.json, checkpoint.pt, metrics.jsonl, '
                    'curves.png, results.json and model.safetensors to the run folder.')
    p.add_argument('--model', required=True, help='model name, e.g. resnet18_zam (any timm model name works)')
    p.add_argument('--dataset', choices=DATASET_CHOICES, default=DEFAULT_DATASET)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='run folder (default runs/<model>-<dataset>-<recipe>-s<seed>)')
    p.add_argument('--resume', action='store_true', help="continue the run in --out from its last checkpoint")
    add_run_arguments(p)
    add_attention_arguments(p)
    p.set_defaults(func=run_train)
    _add_eval(subparsers)


def add_attention_arguments(parser):
    """--attn SPEC [--name NAME]: an attention module from outside the zoo, registered before the model is built."""
    parser.add_argument('--attn', metavar='SPEC', help="your own attention module, 'pkg.module:Class' or "
                        "'path/to/file.py:Class' (Class(channels, device=None, dtype=None), output shaped like its "
                        "input), registered as <backbone>_<name> for every backbone: e.g. --model resnet18_<name>")
    parser.add_argument('--name', dest='attn_name', metavar='NAME',
                        help="--attn's name (default: the class name in lower case)")


def add_weights_arguments(parser, required: bool):
    """--pretrained | --checkpoint PATH: where a command that runs a trained model (eval, viz) gets its weights."""
    src = parser.add_mutually_exclusive_group(required=required)
    src.add_argument('--pretrained', action='store_true', help='the published weights (through timm / the Hub)')
    src.add_argument('--checkpoint', metavar='PATH', help='a run folder, model.safetensors, or checkpoint.pt')


def _add_eval(subparsers):
    e = subparsers.add_parser('eval', help='top-1 / top-5 of a model on held-out data',
                              description="Evaluate pretrained weights or a checkpoint on the CIFAR test split, or on "
                                          "an image folder's val/ folder, a Hugging Face dataset's validation split "
                                          "or the images a --holdout run held out.")
    e.add_argument('--model', required=True)
    add_weights_arguments(e, required=True)
    e.add_argument('--data', required=True, help='data folder (as for zamzoo train)')
    e.add_argument('--dataset', choices=DATASET_CHOICES, default=None,
                   help="default: the checkpoint's run's (or export's), or the one the published weights' tag names, "
                        "else cifar100")
    add_run_arguments(e, only=('--image-column', '--label-column', '--val-split'))
    e.add_argument('--recipe', choices=list_recipes(), default=None,
                   help="CIFAR: the normalisation to use when the checkpoint has no run or export folder (default: the "
                        "model's cfg)")
    e.add_argument('--batch-size', type=positive_int, default=500)
    e.add_argument('--device', default=None)
    e.add_argument('--amp', choices=AMP_CHOICES, default='auto')
    e.add_argument('--download', action='store_true')
    e.add_argument('--json', dest='json_out', default=None, help='also write the result to this JSON file')
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    from .._process import sigterm_as_interrupt
    from .config import TrainConfig
    from .loop import train
    from .reporting import Reporter, TqdmReporter

    config = TrainConfig(**train_config_values(args)).validate()
    reporter = TqdmReporter() if is_main_process() else Reporter()
    with sigterm_as_interrupt():  # killed (`timeout`, a job's time limit): the checkpoint in flight is finished first
        train(config, reporter=reporter)
    return 0


def _is_eval_json(path) -> bool:
    import json
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and {'model', 'top1', 'weights'} <= set(obj)


def run_eval(args) -> int:
    from .._paths import check_file_replaceable, check_writable
    from .evaluate import evaluate

    if args.json_out:  # checked before the evaluation, not after
        check_writable(args.json_out, '--json', folder=False)
        check_file_replaceable(args.json_out, is_ours=_is_eval_json, what='an earlier `zamzoo eval --json` result')
    r = evaluate(args.model, args.data, args.dataset, pretrained=args.pretrained, checkpoint=args.checkpoint,
                 batch_size=args.batch_size, device=args.device, amp=args.amp, recipe=args.recipe,
                 download=args.download, image_column=args.image_column, label_column=args.label_column,
                 val_split=args.val_split)
    print(f"{r['model']} on {r['dataset']} ({r['images']:,} images evaluated, weights {r['weights']}): "
          f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}")
    if r['unfinished_run']:
        print(f"note: the run has not finished ({r['unfinished_run']}): these are its last checkpoint's weights")
    if args.json_out:
        from .._io import write_json_atomic
        write_json_atomic(args.json_out, r)
        print(f'wrote {args.json_out}')
    return 0
