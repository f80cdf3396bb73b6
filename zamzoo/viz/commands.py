"""`zamzoo viz`: attention maps of a model on one image, written as a PNG."""
from pathlib import Path

from ..errors import UsageError
from ..train.commands import add_weights_arguments


def add_commands(subparsers):
    p = subparsers.add_parser('viz', description=run.__doc__,
                              help='draw the attention maps of a model on an image (PNG)')
    p.add_argument('--model', required=True,
                   help="a zamzoo model name, e.g. resnet18_zam, or an export folder as 'local-dir:FOLDER'")
    add_weights_arguments(p, required=False)  # neither: the model's random initialisation, said when it runs
    p.add_argument('--image', required=True, metavar='FILE', help='an image file (png, jpg, ...)')
    p.add_argument('--out', required=True, metavar='PNG', help='where to write the figure (.png)')
    p.add_argument('--class-index', type=int, default=None, help='class Grad-CAM explains (default: the top one)')
    p.set_defaults(func=run)


def run(args) -> int:
    """Draw every attention module's maps (spatial maps over the image, channel weights as strips) and a Grad-CAM
    class activation map of MODEL on an image."""
    from .. import viz
    from .._paths import check_file_replaceable, check_writable

    check_writable(args.out, '--out', folder=False)
    if Path(args.out).expanduser().resolve() == Path(args.image).expanduser().resolve():
        raise UsageError(f'--out {args.out} is the --image: the figure would replace the image it is drawn on')
    check_file_replaceable(args.out, is_ours=viz.is_viz_figure, what='a figure zamzoo viz wrote')
    model = viz.load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
    random_init = not (args.pretrained or args.checkpoint or args.model.startswith(viz.LOCAL_DIR))
    weights = 'pretrained' if args.pretrained else args.checkpoint or ('random init' if random_init else 'its weights')
    transform = viz.describe_transform(model)
    result = viz.visualize(model, args.image, args.out, class_index=args.class_index,
                           title=f'{args.model} ({weights}) on {args.image}\n{transform}')
    n_sp = sum(r.spatial is not None for r in result.records)
    n_ch = sum(r.channel is not None for r in result.records)
    print(f'{args.out}: {len(result.records)} attention modules ({n_sp} spatial maps, {n_ch} channel strips), '
          f'Grad-CAM of class {result.class_index}; input: {transform}')
    if random_init:
        print('weights: the random initialisation (neither --pretrained nor --checkpoint): the maps are of an '
              'untrained model')
    if not result.records:
        print("no attention maps drawn: viz draws the modules that have an attention_maps(x) method returning "
              "{'spatial': (B, k, H, W) and / or 'channel': (B, C, 1, 1)} (as zamzoo's own do); the Grad-CAM is drawn")
    return 0
