"""The zoo table: backbone x attention -> model name, constructor arguments and pretrained cfgs.

Every registered model comes from `ZOO` (built from `BACKBONES` x `ATTENTIONS`); every model is created by the one
function `_create`. Each backbone family module (cifar_resnet, cifar_mobilenet, cifar_mobilenetv2) ends with

    default_cfgs = generate_default_cfgs(pretrained_cfgs('<family>'))
    register_family(__name__, <ModelClass>)

so that timm finds `default_cfgs` in the module of each entrypoint (it reads it at registration) and
`timm.list_models(module='<family>')` lists the family.
"""
import fnmatch
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from timm.models import build_model_with_cfg, register_model
from timm.models._registry import _model_entrypoints

from ..pretrained import prepare_pretrained, published_hub_ids, weights_errors
from ..recipes import get_recipe

__all__ = [
    'Backbone', 'Attention', 'ZooEntry', 'BACKBONES', 'ATTENTIONS', 'ZOO', 'TAGS',
    'list_models', 'backbone_recipe', 'pretrained_cfgs', 'register_family',
]


@dataclass(frozen=True)
class Backbone:
    name: str
    family: str                     # module registering it: zamzoo.models.<family>
    model_args: Mapping[str, Any]   # constructor kwargs of the family's model class
    recipe: str                     # zamzoo.recipes name whose normalisation the cfgs announce
    description: str
    paper_ids: Tuple[str, ...]
    paper_name: str
    origin_url: str
    num_features: int
    pool_size: Tuple[int, int]      # spatial size of forward_features at 32x32
    feature_levels: int             # stem + stages (features_only levels)
    first_conv: str = 'stem.conv'
    classifier: str = 'fc'


@dataclass(frozen=True)
class Attention:
    name: str
    layer: Optional[str]            # zamzoo.layers registry name, None for the plain backbone
    slot: str                       # 'block' or 'stage' (where the backbone family puts it)
    description: str
    paper_ids: Tuple[str, ...] = ()
    paper_name: Optional[str] = None
    origin_url: Optional[str] = None


@dataclass(frozen=True)
class ZooEntry:
    name: str
    backbone: Backbone
    attention: Attention

    @property
    def model_args(self) -> Dict[str, Any]:
        args = dict(self.backbone.model_args)
        if self.attention.layer is not None:
            args.update(attn_layer=self.attention.layer, attn_slot=self.attention.slot)
        return args


def _args(**kwargs) -> Mapping[str, Any]:
    return MappingProxyType(kwargs)


_RESNET = ('arXiv:1512.03385',)
_RESNET_NAME = 'Deep Residual Learning for Image Recognition'

BACKBONES: Dict[str, Backbone] = {b.name: b for b in (
    Backbone(
        'resnet18', 'cifar_resnet', _args(block='basic', layers=(2, 2, 2, 2)), 'zam',
        'ResNet-18 for 32x32 inputs (the ZAM seed\'s CIFAR ResNet, kuangliu/pytorch-cifar layout)',
        _RESNET, _RESNET_NAME, 'https://github.com/developer0hye/ZAM', 512, (4, 4), 5),
    Backbone(
        'resnet34', 'cifar_resnet', _args(block='basic', layers=(3, 4, 6, 3)), 'zam',
        'ResNet-34 for 32x32 inputs (the ZAM seed\'s CIFAR ResNet, kuangliu/pytorch-cifar layout)',
        _RESNET, _RESNET_NAME, 'https://github.com/developer0hye/ZAM', 512, (4, 4), 5),
    Backbone(
        'resnet50', 'cifar_resnet', _args(block='bottleneck', layers=(3, 4, 6, 3)), 'zam',
        'ResNet-50 for 32x32 inputs (the ZAM seed\'s CIFAR ResNet, kuangliu/pytorch-cifar layout)',
        _RESNET, _RESNET_NAME, 'https://github.com/developer0hye/ZAM', 2048, (4, 4), 5),
    Backbone(
        'resnet164', 'cifar_resnet',
        _args(block='bottleneck', layers=(18, 18, 18), channels=(16, 32, 64), stem_width=16, weight_init='fan_out'),
        'spem',
        'ResNet-164 for 32x32 inputs (post-activation bottlenecks, bearpaw/pytorch-classification, SPEM\'s backbone)',
        _RESNET, _RESNET_NAME, 'https://github.com/bearpaw/pytorch-classification', 256, (8, 8), 4),
    Backbone(
        'mobilenet', 'cifar_mobilenet', _args(), 'zam',
        'MobileNet (v1) for 32x32 inputs (the ZAM seed\'s)',
        ('arXiv:1704.04861',), 'MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications',
        'https://github.com/developer0hye/ZAM', 1024, (4, 4), 5),
    Backbone(
        'mobilenetv2', 'cifar_mobilenetv2', _args(), 'zam',
        'MobileNetV2 for 32x32 inputs (paper blocks, kuangliu/pytorch-cifar strides)',
        ('arXiv:1801.04381',), 'MobileNetV2: Inverted Residuals and Linear Bottlenecks',
        'https://github.com/kuangliu/pytorch-cifar', 1280, (4, 4), 5),
)}

ATTENTIONS: Dict[str, Attention] = {a.name: a for a in (
    Attention('plain', None, 'block', 'no attention'),
    Attention(
        'zam', 'zam', 'block', 'ZAM (avg & max pooling), in every block',
        (), 'ZAM: Zero parameter Attention Module', 'https://github.com/developer0hye/ZAM'),
    Attention(
        'zam_avg', 'zam_avg', 'block', 'ZAM (average pooling only), in every block',
        (), 'ZAM: Zero parameter Attention Module', 'https://github.com/developer0hye/ZAM'),
    Attention(
        'zam_max', 'zam_max', 'block', 'ZAM (max pooling only), in every block',
        (), 'ZAM: Zero parameter Attention Module', 'https://github.com/developer0hye/ZAM'),
    Attention(
        'zamr', 'zamr', 'block', 'ZAM+R (ZAM with skip connections), in every block',
        (), 'ZAM: Zero parameter Attention Module', 'https://github.com/developer0hye/ZAM'),
    Attention(
        'ulsam', 'ulsam', 'block', 'ULSAM (4 groups), in every block',
        ('arXiv:2006.15102',), 'ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional '
        'Neural Networks', 'https://github.com/Nandan91/ULSAM'),
    Attention(
        'nam', 'nam', 'block', 'NAM (channel attention), in every block',
        ('arXiv:2111.12419',), 'NAM: Normalization-based Attention Module', 'https://github.com/Christian-lyc/NAM'),
    Attention(
        'spem', 'spem', 'block', 'SPEM, in every block',
        ('doi:10.1007/978-3-031-27818-1_4',),
        'SPEM: Self-adaptive Pooling Enhanced Attention Module for Image Recognition (MMM 2023)',
        'https://github.com/Qrange-group/SPEM'),
    Attention(
        'se', 'se', 'block', 'Squeeze-and-Excitation (reduction 16), in every block',
        ('arXiv:1709.01507',), 'Squeeze-and-Excitation Networks', 'https://github.com/hujie-frank/SENet'),
    Attention(
        'eca', 'eca', 'block', 'ECA, in every block',
        ('arXiv:1910.03151',), 'ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks',
        'https://github.com/BangguWu/ECANet'),
    Attention(
        'cbam', 'cbam', 'block', 'CBAM (paper version: ratio 16, 7x7 spatial conv + BN), in every block',
        ('arXiv:1807.06521',), 'CBAM: Convolutional Block Attention Module',
        'https://github.com/Jongchan/attention-module'),
    Attention(
        'bam', 'bam', 'stage', 'BAM, once per stage (after every stage but the last)',
        ('arXiv:1807.06514',), 'BAM: Bottleneck Attention Module', 'https://github.com/Jongchan/attention-module'),
    Attention(
        'simam', 'simam', 'block', 'SimAM, in every block',
        ('https://proceedings.mlr.press/v139/yang21o.html',),
        'SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks (ICML 2021)',
        'https://github.com/ZjjConan/SimAM'),
)}

# The one table: every model of the zoo, `<backbone>_<attention>`.
ZOO: Dict[str, ZooEntry] = {
    f'{b.name}_{a.name}': ZooEntry(f'{b.name}_{a.name}', b, a)
    for b in BACKBONES.values() for a in ATTENTIONS.values()
}

# Pretrained tags, the default first: tag -> (dataset of the recipe's normalisation, num_classes).
TAGS: Dict[str, Tuple[str, int]] = {'cifar100': ('cifar100', 100), 'cifar10': ('cifar10', 10)}


def list_models(pattern: str = '*') -> List[str]:
    """Names of zamzoo's models (not timm's), sorted; `pattern` is an fnmatch wildcard."""
    return sorted(n for n in ZOO if fnmatch.fnmatchcase(n, pattern))


def _entry(model_name: str) -> ZooEntry:
    name = model_name.split('.', 1)[0]  # accept 'arch.tag'
    try:
        return ZOO[name]
    except KeyError:
        raise ValueError(f"unknown zamzoo model '{model_name}'; see zamzoo.list_models()") from None


def backbone_recipe(model_name: str) -> str:
    """The recipe (zamzoo.recipes) a model or backbone is trained with: 'spem' for resnet164, 'zam' otherwise."""
    if model_name in BACKBONES:
        return BACKBONES[model_name].recipe
    return _entry(model_name).backbone.recipe


# ------------------------------------------------------------------ pretrained cfgs
def hub_id(model_name: str, tag: str) -> str:
    """The Hugging Face Hub repository of one model's weights (one repo per `arch.tag`, timm's convention)."""
    return f'zamzoo/{model_name}.{tag}'


# Published weights (the manifest of zamzoo.pretrained): (model, tag) -> 'org/name@commit', read once at import.
_PUBLISHED = published_hub_ids()


def _pretrained_cfg(entry: ZooEntry, tag: str) -> Dict[str, Any]:
    b, a = entry.backbone, entry.attention
    dataset, num_classes = TAGS[tag]
    mean, std = get_recipe(b.recipe).stats(dataset)
    paper_ids = tuple(dict.fromkeys(b.paper_ids + a.paper_ids))
    paper_names = [n for n in (b.paper_name, a.paper_name) if n]
    return dict(
        # pinned to the manifest's commit once published (timm's hf_split reads the '@commit'); None until then,
        # so that timm lists only published weights as pretrained (our guard explains the rest)
        hf_hub_id=_PUBLISHED.get((entry.name, tag)),
        hf_hub_filename='model.safetensors',
        input_size=(3, 32, 32),
        fixed_input_size=False,
        interpolation='bicubic',
        crop_pct=1.0,
        mean=tuple(mean),
        std=tuple(std),
        num_classes=num_classes,
        pool_size=b.pool_size,
        first_conv=b.first_conv,
        classifier=b.classifier,
        license='apache-2.0',
        description=f'{b.description}; attention: {a.description}; trained on {dataset}',
        paper_ids=paper_ids,
        paper_name='; '.join(paper_names),
        origin_url=a.origin_url or b.origin_url,
        notes=(f'recipe: zamzoo.recipes.get_recipe({b.recipe!r})', f'backbone code origin: {b.origin_url}'),
    )


def pretrained_cfgs(family: str) -> Dict[str, Dict[str, Any]]:
    """{'model.tag': cfg} for every model of one family, the default tag (cifar100) first."""
    return {
        f'{name}.{tag}': _pretrained_cfg(entry, tag)
        for name, entry in ZOO.items() if entry.backbone.family == family
        for tag in TAGS
    }


# ------------------------------------------------------------------ creation and registration
_FAMILY_CLASSES: Dict[str, Callable[..., Any]] = {}


def _create(variant: str, pretrained: bool = False, **kwargs):
    """Build any zoo model through timm's builder (cfg defaults, pretrained loading, features_only)."""
    entry = ZOO[variant]
    model_cls = _FAMILY_CLASSES[entry.backbone.family]
    model_args = dict(entry.model_args, **kwargs)  # the caller's kwargs win, as in timm's entrypoints
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(entry.backbone.feature_levels)))
    if kwargs.get('features_only'):
        _check_out_indices(variant, kwargs.get('out_indices'), entry.backbone.feature_levels)
    if pretrained:  # the pretrained guard (zamzoo.pretrained): unpublished -> WeightsError; published -> pinned,
        model_args = prepare_pretrained(variant, model_args)  # sha256-checked against the manifest
    with weights_errors(variant, pretrained, model_args):  # download/load failures -> WeightsError naming the model
        return build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg, **model_args)


def _check_out_indices(variant: str, out_indices, levels: int) -> None:
    """timm's features_only wrapper meets an index the model does not have with an IndexError deep inside."""
    if out_indices is None:
        return
    if isinstance(out_indices, int):
        bad = not 1 <= out_indices <= levels
    else:
        bad = any(i not in range(-levels, levels) for i in out_indices)
    if bad:
        raise ValueError(
            f'out_indices={out_indices!r} does not fit {variant}, which has {levels} feature levels: give indices '
            f'in 0..{levels - 1} (or -{levels}..-1), or an int n (1..{levels}) for the last n levels')


def _make_entrypoint(name: str, module_name: str) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs):
        return _create(name, pretrained=pretrained, **kwargs)

    entry = ZOO[name]
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module_name
    entrypoint.__doc__ = f'{entry.backbone.description}; attention: {entry.attention.description}.'
    return entrypoint


def register_family(module_name: str, model_cls: Callable[..., Any]) -> None:
    """Register with timm every zoo model of the family that `module_name` (zamzoo.models.<family>) implements.

    The entrypoints become attributes of that module, with their own __name__, __qualname__ and __module__,
    since timm files each model under its function's name and module. A name timm already has from elsewhere is
    refused: registering it would overwrite timm's model and drop its pretrained tags.
    """
    family = module_name.rsplit('.', 1)[-1]
    module = sys.modules[module_name]
    _FAMILY_CLASSES[family] = model_cls
    for name, entry in ZOO.items():
        if entry.backbone.family != family:
            continue
        existing = _model_entrypoints.get(name)
        if existing is not None and getattr(existing, '__module__', None) != module_name:
            raise RuntimeError(f"zamzoo model name '{name}' is already registered in timm by {existing.__module__}")
        fn = _make_entrypoint(name, module_name)
        setattr(module, name, fn)
        register_model(fn)
