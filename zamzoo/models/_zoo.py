"""The zoo table: backbone x attention -> model name, constructor arguments, pretrained cfgs, papers, conventions.

Every registered model comes from `ZOO` (built from `BACKBONES` x `ATTENTIONS`); every model is created by the one
function `_create`. Code that needs a fact of a model (its backbone, attention, papers, description, FLOP convention)
asks `ZOO[name]`, never the name's spelling. Facts the model itself knows (feature levels, pool size) are read from
the backbone built once on the meta device. Each backbone family module (cifar_resnet, cifar_mobilenet,
cifar_mobilenetv2) ends with

    default_cfgs = pretrained_cfgs(__name__, <ModelClass>)
    register_family(__name__)

so that timm finds `default_cfgs` in the module of each entrypoint (it reads it at registration) and
`timm.list_models(module='<family>')` lists the family.
"""
import fnmatch
import sys
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._registry import _clear_model_entries, _model_entrypoints

from ..dataset_table import DATASETS, NUM_CLASSES
from ..errors import UsageError
from ..pretrained import WEIGHTS_FILENAME, hub_id, prepare_pretrained, published_hub_ids, weights_errors
from ..recipes import get_recipe, recipe_call
from . import _papers as papers
from ._papers import Paper

__all__ = [
    'Backbone', 'Attention', 'SeedCount', 'ModuleSource', 'ZooEntry', 'Paper', 'BACKBONES', 'ATTENTIONS', 'ZOO', 'TAGS',
    'list_models', 'backbone_recipe', 'pretrained_cfgs', 'pretrained_notes', 'register_family', 'check_new_attention',
    'add_attention', 'remove_attention',
]

INPUT_SIZE = (3, 32, 32)
_FAMILY_CLASSES: Dict[str, Callable[..., Any]] = {}  # family -> model class, filled by `pretrained_cfgs`


@dataclass(frozen=True, kw_only=True)
class Backbone:
    name: str
    family: str                     # module registering it: zamzoo.models.<family>
    model_args: Mapping[str, Any]   # constructor kwargs of the family's model class
    recipe: str                     # zamzoo.recipes name whose normalisation the cfgs announce
    description: str
    paper: Paper
    origin_url: str                 # where the backbone's code comes from
    # FLOP convention of the seed's table (zamzoo.bench.flops): how the original code pooled before its
    # classifier, None = a functional call (0 ops), k = nn.AvgPool2d(k) (thop 0.0.30: (k + 1) ops per output)
    seed_head_pool: Optional[int]
    # forward_features' spatial size at INPUT_SIZE, timm's cfg `pool_size` (declared as timm's cfgs declare it, not
    # computed at import: a meta forward per backbone cost 0.55 CPU-s of every `import zamzoo`; pool_size_at computes
    # it, tests/test_deploy_finetuned.py checks the two agree)
    pool_size: Tuple[int, int]
    first_conv: str = 'stem.conv'
    classifier: str = 'fc'

    @property
    def model_cls(self) -> Callable[..., Any]:
        return _FAMILY_CLASSES[self.family]

    @cached_property
    def _meta_net(self) -> Any:
        """The plain backbone, built once on the meta device (no memory, no arithmetic), in eval mode."""
        return self.model_cls(**self.model_args, device='meta').eval()

    @property
    def feature_levels(self) -> int:
        """Levels of features_only: the stem and every stage."""
        return len(self._meta_net.feature_info)

    def pool_size_at(self, input_size: Tuple[int, int, int]) -> Tuple[int, int]:
        """Spatial size of forward_features at `input_size` (C, H, W), as the backbone computes it (its stride-2
        convs round up: 33 pixels end on 5, not 33 // 8; attention modules keep the size)."""
        with torch.no_grad():
            features = self._meta_net.forward_features(torch.empty(1, *input_size, device='meta'))
        return tuple(features.shape[-2:])


class ModuleSource(NamedTuple):
    """Where a module registered at run time (zamzoo.models.plugins) comes from: config.json's `attention_module`."""
    name: str
    spec: str                       # 'pkg.module:Class' or '/abs/path/file.py:Class'
    source: Optional[str]           # its source file, None when Python cannot tell
    sha256: Optional[str]           # of that file
    options: Mapping[str, Any]      # bound to the class at registration (JSON values), {} for none
    imports: Mapping[str, str]      # file -> sha256 of the user's own modules it imports, directly or not


@dataclass(frozen=True)
class SeedCount:
    """FLOP convention of the seed's table (zamzoo.bench.flops): how thop 0.0.30 counted an attention's original code.
    gap: it average-pools H x W with nn.AdaptiveAvgPool2d(1), (H*W + 1) * C ops, wherever the module pools by
         average (a ZAM's `pool`); False: with F.avg_pool2d / x.mean (0 ops).
    linear: its MLP is nn.Linear layers, (2 * in - 1) * out ops each (the module's 1x1 convs on a pooled 1x1 map
         count so); False: 1x1 convolutions, counted as convolutions."""
    gap: bool = False
    linear: bool = False


@dataclass(frozen=True, kw_only=True)
class Attention:
    name: str
    layer: Optional[str]            # zamzoo.layers registry name, None for the plain backbone
    description: str
    slot: str = 'block'             # 'block' or 'stage' (where the backbone family puts it)
    paper: Optional[Paper] = None
    origin_url: Optional[str] = None
    fused: bool = False             # its module takes impl='fused' | 'reference' (zamzoo bench overhead compares them)
    seed_count: SeedCount = SeedCount()
    # a module whose `variant` attribute is a key here was written after other code, counted as that code
    # (CBAM's 'seed': the ZAM seed's CBAM)
    seed_count_variants: Mapping[str, SeedCount] = field(default_factory=lambda: MappingProxyType({}))
    plugin: Optional[ModuleSource] = None  # a module registered at run time; None for the zoo's own


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

    @property
    def description(self) -> str:
        """'ResNet-18 for 32x32 inputs (...) with ZAM (avg & max pooling), in every block'."""
        attn = self.attention
        return self.backbone.description + (' without attention' if attn.layer is None else f' with {attn.description}')

    @property
    def papers(self) -> Tuple[Paper, ...]:
        """The attention's paper (if any), then the backbone's."""
        return tuple(p for p in (self.attention.paper, self.backbone.paper) if p is not None)

    @property
    def baseline(self) -> str:
        """The model of the same backbone without attention."""
        return _model_name(self.backbone.name, 'plain')


_ZAM_URL = 'https://github.com/developer0hye/ZAM'


def _args(**kwargs) -> Mapping[str, Any]:
    return MappingProxyType(kwargs)


def _seed_resnet(*, name: str, depth: int, **model_args) -> Backbone:
    """The ZAM seed's CIFAR ResNets, whose head pools with F.avg_pool2d (kuangliu/pytorch-cifar)."""
    return Backbone(
        name=name, family='cifar_resnet', model_args=_args(**model_args), recipe='zam',
        description=f"ResNet-{depth} for 32x32 inputs (the ZAM seed's CIFAR ResNet, kuangliu/pytorch-cifar layout)",
        paper=papers.RESNET, origin_url=_ZAM_URL, seed_head_pool=None, pool_size=(4, 4))


def _attn(*, name: str, **kwargs) -> Attention:
    """An attention whose zamzoo.layers name is its zoo name."""
    return Attention(name=name, layer=name, **kwargs)


def _zam(*, name: str, description: str) -> Attention:
    """A ZAM variant: the seed's own module (zero parameters, fused implementation, GAP by nn.AdaptiveAvgPool2d)."""
    return _attn(name=name, description=description, paper=papers.ZAM, origin_url=_ZAM_URL, fused=True,
                 seed_count=SeedCount(gap=True))


BACKBONES: Dict[str, Backbone] = {b.name: b for b in (
    _seed_resnet(name='resnet18', depth=18, block='basic', layers=(2, 2, 2, 2)),
    _seed_resnet(name='resnet34', depth=34, block='basic', layers=(3, 4, 6, 3)),
    _seed_resnet(name='resnet50', depth=50, block='bottleneck', layers=(3, 4, 6, 3)),
    Backbone(
        name='resnet164', family='cifar_resnet', recipe='spem',
        model_args=_args(
            block='bottleneck', layers=(18, 18, 18), channels=(16, 32, 64), stem_width=16, weight_init='fan_out'),
        description='ResNet-164 for 32x32 inputs (post-activation bottlenecks, bearpaw/pytorch-classification, '
                    "SPEM's backbone)",
        paper=papers.RESNET, origin_url='https://github.com/bearpaw/pytorch-classification',
        seed_head_pool=8, pool_size=(8, 8)),  # bearpaw: nn.AvgPool2d(8)
    Backbone(
        name='mobilenet', family='cifar_mobilenet', model_args=_args(), recipe='zam',
        description="MobileNet (v1) for 32x32 inputs (the ZAM seed's)",
        paper=papers.MOBILENET, origin_url=_ZAM_URL, seed_head_pool=4,  # the ZAM seed: nn.AvgPool2d(4)
        pool_size=(4, 4)),
    Backbone(
        name='mobilenetv2', family='cifar_mobilenetv2', model_args=_args(), recipe='zam',
        description='MobileNetV2 for 32x32 inputs (paper blocks, kuangliu/pytorch-cifar strides)',
        paper=papers.MOBILENETV2, origin_url='https://github.com/kuangliu/pytorch-cifar',
        seed_head_pool=None, pool_size=(4, 4)),  # kuangliu: F.avg_pool2d(out, 4)
)}

ATTENTIONS: Dict[str, Attention] = {a.name: a for a in (
    Attention(name='plain', layer=None, description='no attention'),
    _zam(name='zam', description='ZAM (avg & max pooling), in every block'),
    _zam(name='zam_avg', description='ZAM (average pooling only), in every block'),
    _zam(name='zam_max', description='ZAM (max pooling only), in every block'),
    _zam(name='zamr', description='ZAM+R (ZAM with skip connections), in every block'),
    _attn(name='ulsam', description='ULSAM (4 groups), in every block',
          paper=papers.ULSAM, origin_url='https://github.com/Nandan91/ULSAM'),
    _attn(name='nam', description='NAM (channel attention), in every block',
          paper=papers.NAM, origin_url='https://github.com/Christian-lyc/NAM', fused=True),
    _attn(name='spem', description='SPEM, in every block',
          paper=papers.SPEM, origin_url='https://github.com/Qrange-group/SPEM', fused=True),
    # SE: the PyTorch SELayer (nn.AdaptiveAvgPool2d(1), nn.Linear; SENet's Caffe InnerProduct layers)
    _attn(name='se', description='Squeeze-and-Excitation (reduction 16), in every block',
          paper=papers.SE, origin_url='https://github.com/hujie-frank/SENet',
          seed_count=SeedCount(gap=True, linear=True)),
    _attn(name='eca', description='ECA, in every block',  # eca_layer: nn.AdaptiveAvgPool2d(1), nn.Conv1d
          paper=papers.ECA, origin_url='https://github.com/BangguWu/ECANet', seed_count=SeedCount(gap=True)),
    # Jongchan's CBAM and BAM pool with F.avg_pool2d and run nn.Linear MLPs
    _attn(name='cbam', description='CBAM (paper version: ratio 16, 7x7 spatial conv + BN), in every block',
          paper=papers.CBAM, origin_url='https://github.com/Jongchan/attention-module',
          seed_count=SeedCount(linear=True), seed_count_variants=MappingProxyType({'seed': SeedCount(gap=True)})),
    _attn(name='bam', description='BAM, once per stage (after every stage but the last)', slot='stage',
          paper=papers.BAM, origin_url='https://github.com/Jongchan/attention-module'),
    _attn(name='simam', description='SimAM, in every block',
          paper=papers.SIMAM, origin_url='https://github.com/ZjjConan/SimAM', fused=True),
)}


def _model_name(backbone: str, attention: str) -> str:
    return f'{backbone}_{attention}'


def _zoo_entry(backbone: Backbone, attention: Attention) -> ZooEntry:
    return ZooEntry(_model_name(backbone.name, attention.name), backbone, attention)


# The one table: every model of the zoo, `<backbone>_<attention>`.
ZOO: Dict[str, ZooEntry] = {
    e.name: e for e in (_zoo_entry(b, a) for b in BACKBONES.values() for a in ATTENTIONS.values())
}

# Pretrained tags, the default first: tag -> (dataset of the recipe's normalisation, num_classes).
TAGS: Dict[str, Tuple[str, int]] = {name: (name, n) for name, n in NUM_CLASSES.items()}


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
WEIGHTS_LICENSE = 'apache-2.0'  # the licence of the weights zamzoo trains and publishes (the code's: LICENSE)


# Published weights (the manifest of zamzoo.pretrained): (model, tag) -> 'org/name@commit', read once at import.
_PUBLISHED = published_hub_ids()


def _pretrained_cfg(entry: ZooEntry, tag: str) -> Dict[str, Any]:
    b, a = entry.backbone, entry.attention
    dataset, num_classes = TAGS[tag]
    mean, std = get_recipe(b.recipe).stats(dataset)
    return dict(
        # pinned to the manifest's commit once published (timm's hf_split reads the '@commit'); None until then,
        # so that timm lists only published weights as pretrained (our guard explains the rest)
        hf_hub_id=_PUBLISHED.get((entry.name, tag)),
        hf_hub_filename=WEIGHTS_FILENAME,
        input_size=INPUT_SIZE,
        fixed_input_size=False,
        interpolation='bicubic',
        crop_pct=1.0,
        mean=tuple(mean),
        std=tuple(std),
        num_classes=num_classes,
        label_names=DATASETS[dataset].class_names,
        pool_size=b.pool_size,
        first_conv=b.first_conv,
        classifier=b.classifier,
        license=WEIGHTS_LICENSE,
        description=f'{entry.description}; trained on {dataset}',
        paper_ids=tuple(p.id for p in entry.papers if p.id is not None),
        paper_name='; '.join(p.title for p in entry.papers),
        origin_url=a.origin_url or b.origin_url,
        notes=pretrained_notes(entry, recipe_call(b.recipe)),
    )


def pretrained_notes(entry: ZooEntry, recipe: str) -> Tuple[str, str]:
    """A pretrained cfg's notes: the recipe its weights were trained with (`zamzoo.recipes.recipe_call`, or what
    is known of it) and where the backbone's code comes from."""
    return f'recipe: {recipe}', f'backbone code origin: {entry.backbone.origin_url}'


def pretrained_cfgs(module_name: str, model_cls: Callable[..., Any]) -> Dict[str, Any]:
    """timm's default_cfgs of the family that `module_name` (zamzoo.models.<family>) implements with `model_cls`:
    'model.tag' -> cfg for every model of the family, the default tag (cifar100) first."""
    family = _family(module_name)
    _FAMILY_CLASSES[family] = model_cls
    return _cfgs(entry for entry in ZOO.values() if entry.backbone.family == family)


def _cfgs(entries: Iterable[ZooEntry]) -> Dict[str, Any]:
    cfgs = generate_default_cfgs({
        f'{entry.name}.{tag}': _pretrained_cfg(entry, tag) for entry in entries for tag in TAGS})
    # timm makes a model's first tag with weights its default: with cifar10 weights published alone, the bare name
    # would build 10 classes with CIFAR-10's statistics. The bare name is cifar100's, published or not.
    default_tag = next(iter(TAGS))
    for default_cfg in cfgs.values():
        default_cfg.tags.remove(default_tag)
        default_cfg.tags.appendleft(default_tag)
    return cfgs


# ------------------------------------------------------------------ creation and registration
def _family(module_name: str) -> str:
    return module_name.rsplit('.', 1)[-1]


def _create(variant: str, pretrained: bool = False, **kwargs):
    """Build any zoo model through timm's builder (cfg defaults, pretrained loading, features_only)."""
    entry = ZOO[variant]
    model_cls = entry.backbone.model_cls
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

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module_name
    entrypoint.__doc__ = f'{ZOO[name].description}.'
    return entrypoint


def register_family(module_name: str) -> None:
    """Register with timm every zoo model of the family that `module_name` (zamzoo.models.<family>) implements
    (after `pretrained_cfgs` has named its model class)."""
    family = _family(module_name)
    _register_entries(module_name, [name for name, entry in ZOO.items() if entry.backbone.family == family])


def _register_entries(module_name: str, names: Iterable[str]) -> None:
    """The entrypoints become attributes of the family module, with their own __name__, __qualname__ and
    __module__, since timm files each model under its function's name and module (and reads its cfgs from the
    module's `default_cfgs`). A name timm already has from elsewhere is refused: registering it would overwrite
    timm's model and drop its pretrained tags."""
    module = sys.modules[module_name]
    for name in names:
        _check_timm_free(name, module_name)
        fn = _make_entrypoint(name, module_name)
        setattr(module, name, fn)
        register_model(fn)


def _check_timm_free(name: str, module_name: Optional[str] = None) -> None:
    existing = _model_entrypoints.get(name)
    if existing is not None and getattr(existing, '__module__', None) != module_name:
        raise UsageError(f"zamzoo model name '{name}' is already registered in timm by {existing.__module__}")


# ------------------------------------------------------------------ rows added at run time
def check_new_attention(name: str) -> None:
    """UsageError unless `name` can become a new row: no attention of the table and no timm model has its names."""
    if name in ATTENTIONS:
        raise UsageError(f"attention '{name}' is already in the zoo table; choose another name")
    for backbone in BACKBONES:
        _check_timm_free(_model_name(backbone, name))


def add_attention(attention: Attention) -> Dict[str, str]:
    """Add a row to the table (its layer already in zamzoo.layers' registry) and register `<backbone>_<name>` for
    every backbone with timm, as the family modules do at import; backbone -> model name."""
    check_new_attention(attention.name)
    ATTENTIONS[attention.name] = attention
    entries = [_zoo_entry(b, attention) for b in BACKBONES.values()]
    ZOO.update((e.name, e) for e in entries)
    for family in sorted({e.backbone.family for e in entries}):
        module_name = f'{__package__}.{family}'
        members = [e for e in entries if e.backbone.family == family]
        sys.modules[module_name].default_cfgs.update(_cfgs(members))  # timm reads them at registration
        _register_entries(module_name, [e.name for e in members])
    return {e.backbone.name: e.name for e in entries}


def remove_attention(name: str) -> None:
    """Undo `add_attention`: the row, its models, their timm registrations (timm has no public way to forget a
    model, hence its registry's own clean-up function)."""
    attention = ATTENTIONS.pop(name)
    for entry in [e for e in ZOO.values() if e.attention is attention]:
        del ZOO[entry.name]
        module = sys.modules[_model_entrypoints.pop(entry.name).__module__]
        _clear_model_entries(entry.name)
        delattr(module, entry.name)
        module.__all__.remove(entry.name)
        del module.default_cfgs[entry.name]
