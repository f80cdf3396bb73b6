"""`zamzoo quickstart`: the command line of `zamzoo.quickstart`."""
from typing import List

from . import QuickstartConfig, QuickstartResult, quickstart
from .._process import sigterm_as_interrupt


def add_commands(subparsers):
    from .._argtypes import positive_float, positive_int

    d = QuickstartConfig()
    p = subparsers.add_parser(
        'quickstart', help='the whole factory offline in about two minutes on a CPU: data, train, export, reload, viz',
        description='Make a small shapes data set, train a zoo model on it with the real training loop, export it '
                    'for the Hub, load it back through timm + huggingface_hub from a local cache (offline), check '
                    'its predictions equal the trained model\'s, and draw its attention maps. No network needed.')
    p.add_argument('--out', default=d.out, help=f'output folder, must not exist (default {d.out})')
    p.add_argument('--model', default=d.model, help=f'zoo model to train (default {d.model})')
    p.add_argument('--train-images', type=positive_int, default=d.train_images)
    p.add_argument('--val-images', type=positive_int, default=d.val_images)
    p.add_argument('--epochs', type=positive_int, default=d.epochs)
    p.add_argument('--batch-size', type=positive_int, default=d.batch_size)
    p.add_argument('--lr', type=positive_float, default=d.lr)
    p.add_argument('--seed', type=int, default=d.seed)
    p.add_argument('--attention-images', type=positive_int, default=d.attention_images)
    p.add_argument('--device', default=d.device, help='cpu or cuda (default: cuda if available)')
    p.set_defaults(func=run)


def summary_lines(r: QuickstartResult) -> List[str]:
    p = r.paths
    return [
        '',
        f'quickstart done in {r.wall_s:.0f} s (training {r.train_wall_s:.0f} s)',
        f'  accuracy: {r.model} reached top-1 {r.top1:.1f}% on {r.val_images} held-out images (chance: '
        f'{r.chance:.0f}%); the training loop measured {r.run_top1:.1f}%',
        f'  reloaded through timm + huggingface_hub (offline) from the local cache as hf-hub:{r.repo_id}: '
        f'predictions identical to the trained model\'s (max |logit difference| {r.max_logit_diff:.2g})',
        'artefacts:',
        f'  data set (image folder)   {p["data"]}',
        f'  training run              {p["run"]}',
        f'    metrics / plot          {p["metrics"]}  {p["curves"]}',
        f'    checkpoint / weights    {p["checkpoint"]}  {p["weights"]}',
        f'  Hub-ready export          {p["export"]}',
        f'  Hugging Face cache        {p["hf_cache"]}',
        '  attention maps            ' + '\n                            '.join(r.attention),
        f'  summary                   {p["summary"]}',
        'next:',
        '  train on CIFAR-100 (downloads it once, ~160 MB; a GPU makes it minutes instead of hours):',
        '    zamzoo train --model resnet18_zam --data data/ --download --out runs/resnet18_zam-s0',
        '  publish a run to the Hub (log in first: `hf auth login`):',
        '    zamzoo export runs/resnet18_zam-s0 --out hub/staging/resnet18_zam.cifar100 && '
        'zamzoo push hub/staging/resnet18_zam.cifar100',
        '  train on your own images (DIR/train/<class>/*.png and DIR/val/<class>/*.png); add --pretrained to '
        'fine-tune published weights (`zamzoo list` shows which exist):',
        f'    zamzoo train --model {r.model} --dataset folder --data DIR --out runs/mine',
    ]


def run(args) -> int:
    from ..train.reporting import TqdmReporter

    config = QuickstartConfig(out=args.out, model=args.model, train_images=args.train_images,
                              val_images=args.val_images, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, seed=args.seed, attention_images=args.attention_images,
                              device=args.device)
    with sigterm_as_interrupt():  # a killed quickstart removes its --out, as after Ctrl-C
        result = quickstart(config, reporter=TqdmReporter(), log=lambda message: print(message, flush=True))
    print('\n'.join(summary_lines(result)))
    return 0
