"""`zamzoo train` and `zamzoo eval` (thin: parse, call zamzoo.train, print). `zamzoo bench train` lives in
zamzoo.train.bench and is added to the `bench` group by zamzoo.bench.commands."""
import argparse
import ast
import math
import sys

from ..recipes import list_recipes
from .config import AMP_CHOICES, COMPILE_MODES, DATASET_CHOICES, LOADER_CHOICES
from .distributed import is_main_process


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if v < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {v}')
    return v


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive number, got {text!r}') from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f'expected a positive (finite) number, got {v}')
    return v


def key_value(text):
    """'key=value' with value a Python literal (1, 0.5, True, 'x', (1, 2)) or else a plain string."""
    if '=' not in text:
        raise argparse.ArgumentTypeError(f'expected key=value, got {text!r}')
    key, value = text.split('=', 1)
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    return key.strip(), value


def add_commands(subparsers):
    p = subparsers.add_parser(
        'train', help='train a model (one process, or torchrun --nproc_per_node N -m zamzoo train ...)',
        description='Train a model with a named recipe; writes config.json, checkpoint.pt, metrics.jsonl, '
                    'curves.png, results.json and model.safetensors to the run folder.')
    p.add_argument('--model', required=True, help='model name, e.g. resnet18_zam (any timm model name works)')
    p.add_argument('--data', required=True, help='data folder: the one holding cifar-100-python/ (or '
                   'cifar-10-batches-py/); for --dataset folder one with train/ and val/ sub-folders, or one of '
                   'class sub-folders with --holdout; for --dataset hf a Hugging Face dataset (Hub name, '
                   'save_to_disk folder or folder of parquet files)')
    p.add_argument('--dataset', choices=DATASET_CHOICES, default='cifar100')
    add_source_arguments(p, train=True)
    p.add_argument('--recipe', choices=list_recipes(), default=None,
                   help="default: the model's own (zam; spem for resnet164), finetune for --dataset folder")
    p.add_argument('--epochs', type=positive_int, help="override the recipe's number of epochs")
    p.add_argument('--batch-size', type=positive_int, help="override the recipe's global batch size")
    p.add_argument('--lr', type=positive_float, help="override the recipe's learning rate")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='run folder (default runs/<model>-<dataset>-<recipe>-s<seed>)')
    p.add_argument('--resume', action='store_true', help="continue the run in --out from its last checkpoint")
    p.add_argument('--pretrained', action='store_true', help='start from the published weights')
    p.add_argument('--init', metavar='SOURCE', help='start from these weights: a zoo name with published weights, '
                   'hf-hub:org/name, local-dir:PATH, an export or run folder, or a .safetensors file (the head is '
                   're-initialised when the class count differs)')
    p.add_argument('--compile', action='store_true', help='torch.compile the model')
    p.add_argument('--compile-mode', default=None, choices=COMPILE_MODES)
    p.add_argument('--amp', choices=AMP_CHOICES, default='auto', help='autocast dtype (auto: bf16 on CUDA, none on CPU)')
    p.add_argument('--device', default=None, help='cuda, cuda:1 or cpu (default: cuda if available)')
    p.add_argument('--loader', choices=LOADER_CHOICES, default='auto',
                   help='tensor: the whole data set on the device, decoded once, with batched augmentation '
                        '(default on CUDA when it fits); dataloader: torch DataLoader + torchvision transforms '
                        '(default on CPU)')
    p.add_argument('--workers', type=int, default=None, help='DataLoader workers per process')
    p.add_argument('--download', action='store_true', help="download CIFAR with torchvision's own download")
    p.add_argument('--img-size', type=positive_int, default=None, help="image folders: input size (default: the model's)")
    p.add_argument('--model-kwargs', nargs='*', type=key_value, default=[], metavar='KEY=VALUE',
                   help='extra keyword arguments for timm.create_model, e.g. drop_rate=0.1')
    p.add_argument('--eval-every', type=positive_int, default=1, help='evaluate every N epochs (and after the last)')
    p.add_argument('--eval-batch-size', type=positive_int, default=500)
    p.add_argument('--max-bad-steps', type=int, default=0, metavar='N',
                   help='steps with a NaN/inf loss to skip before the run fails (default 0: the first one fails it)')
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
    e = subparsers.add_parser('eval', help='top-1 / top-5 of a model on the test split',
                              description='Evaluate pretrained weights or a checkpoint on the test split.')
    e.add_argument('--model', required=True)
    add_weights_arguments(e, required=True)
    e.add_argument('--data', required=True, help='data folder (as for zamzoo train)')
    e.add_argument('--dataset', choices=DATASET_CHOICES, default='cifar100')
    add_source_arguments(e, train=False)
    e.add_argument('--recipe', choices=list_recipes(), default=None,
                   help="normalisation to use when the checkpoint has no run folder (default: the model's cfg)")
    e.add_argument('--batch-size', type=positive_int, default=500)
    e.add_argument('--device', default=None)
    e.add_argument('--amp', choices=AMP_CHOICES, default='auto')
    e.add_argument('--download', action='store_true')
    e.add_argument('--json', dest='json_out', default=None, help='also write the result to this JSON file')
    e.set_defaults(func=run_eval)


def add_source_arguments(p, train: bool):
    """Hugging Face dataset columns and splits; the held-out share of a data set without a validation split."""
    p.add_argument('--image-column', help='hf: the image column (default: img, image, or the only Image feature)')
    p.add_argument('--label-column', help='hf: the label column (default: fine_label, label, or the only '
                   'ClassLabel feature)')
    if train:
        p.add_argument('--train-split', help="hf: the training split (default: train)")
    p.add_argument('--val-split', help='hf: the evaluation split (default: validation, val, valid or test)')
    if train:
        p.add_argument('--holdout', type=positive_float, metavar='FRACTION',
                       help='folder / hf without a validation split: hold out this share of each class '
                            '(e.g. 0.1), chosen from the seed; the split is written to the run folder')


def format_recipe(recipe) -> str:
    d = recipe.to_dict()
    width = max([len(k) for k in d] + [len('normalization.' + ds) for ds in d['normalization']])
    lines = [f'recipe {recipe.name} (version {recipe.version}):']
    for k, v in d.items():
        if k == 'normalization':
            for ds, (mean, std) in v.items():
                lines.append(f'  {"normalization." + ds:<{width}}  mean {tuple(mean)} std {tuple(std)}')
        else:
            lines.append(f'  {k:<{width}}  {v}')
    return '\n'.join(lines)


class TqdmReporter:
    """A progress bar per epoch (images/s, loss) on stderr, one line per epoch on stdout."""
    bar = None

    def start(self, info):
        c = info['config']
        start = info['start_epoch']
        print(f"run folder {info['out']}" + (f' (resuming after epoch {start})' if start else ''))
        print(f"model {c['model']} ({c['num_params']:,} params), {c['dataset']} ({c['num_classes']} classes, "
              f"{c['train_images']} train images), {c['world_size']} process(es), batch {c['recipe']['batch_size']} "
              f"({c['per_rank_batch_size']} per process), {c['steps_per_epoch']} steps/epoch")
        print(f"device {c['device']}; amp {c['amp']}, loader {c['loader']}, channels_last {c['channels_last']}, "
              f"compile {c['compile']}, seed {c['seed']}, code {c['code_commit']}")
        sys.stdout.flush()

    def epoch_start(self, epoch, epochs, steps, images):
        from tqdm import tqdm
        self.bar = tqdm(total=images, unit='img', unit_scale=True, desc=f'epoch {epoch}/{epochs}', leave=False,
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def step(self, steps, images, loss):
        if self.bar is not None:
            self.bar.update(images - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f'{loss:.4f}', refresh=False)

    def epoch_end(self, record, epochs):
        from .metrics import format_epoch
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(format_epoch(record, epochs), flush=True)

    def finish(self, results):
        top1 = results.get('top1')
        line = f"done: {results['epochs']} epochs"
        if top1 is not None:
            line += (f", final top-1 {top1:.2f}% top-5 {results['top5']:.2f}%, best top-1 {results['best_top1']:.2f}% "
                     f"(epoch {results['best_epoch']})")
        line += f", {results['images_per_s']:,.0f} img/s, wall {results['wall_time_s']:.0f} s"
        print(line, flush=True)


def run_train(args) -> int:
    from dataclasses import fields

    from .config import TrainConfig
    from .loop import Reporter, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update(compile_mode=None if args.compile_mode == 'default' else args.compile_mode,
                  model_kwargs=dict(args.model_kwargs))
    config = TrainConfig(**values).validate()
    main = is_main_process()
    if main:
        print(format_recipe(config.resolve_recipe()), flush=True)
    reporter = TqdmReporter() if main else Reporter()
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
    print(f"{r['model']} on {r['dataset']} test ({r['images']:,} images, weights {r['weights']}): "
          f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}")
    if args.json_out:
        from .._io import write_json_atomic
        write_json_atomic(args.json_out, r)
        print(f'wrote {args.json_out}')
    return 0
