"""Counting parameters and operations of a model, under two conventions.

- :func:`count_macs` / :func:`count_flops`: PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and convolutions only; a multiply-add is 2 FLOPs there, so MACs = FLOPs / 2).
- :func:`seed_flops`: the convention of the ZAM seed's table ("FLOPs" in github.com/developer0hye/ZAM),
  i.e. what ``thop`` 0.0.30 (``thop.profile``) counted on the seed's code, for one 1x3x32x32 image:

  ========================  ==================================================================
  module                    ops
  ========================  ==================================================================
  ConvNd                    output numel * (in/groups * prod(kernel) + 1 if bias)  (= MACs)
  BatchNorm1d/2d/3d         4 * numel
  Linear                    (2 * in_features - 1) * output numel  (bias not counted)
  AvgPool2d(k)              (prod(k) + 1) * output numel; thop 0.0.30 took ``prod([k])`` of the
                            kernel_size *as written*, so ``AvgPool2d(4)`` counts (4 + 1), not (16 + 1)
  AdaptiveAvgPool2d(o)      (prod(in_hw // o) + 1) * output numel
  ReLU, MaxPool, sigmoid,   0 (thop 0.0.30 registered zero-op hooks or none at all; functional
  softmax, torch.* ops      calls such as ``F.avg_pool2d``, ``x.mean()``, ``torch.max`` are invisible)
  ========================  ==================================================================

  Our modules are written differently from the original code (timm-style heads, attention modules that
  pool with ``x.mean`` and run 1x1 convolutions as MLPs), so in a zoo model three places are counted as the
  *original* code (the seed's for the backbones and ZAM, each baseline's official code) would have been
  counted, as the zoo table (zamzoo.models) says:

  * the classifier's global pool (``model.global_pool``), by ``Backbone.seed_head_pool``: the seed's
    CIFAR ResNet pools with ``F.avg_pool2d`` (0 ops); its MobileNet with ``nn.AvgPool2d(4)`` ((4 + 1) * C
    ops, the thop quirk above); bearpaw's ResNet164 with ``nn.AvgPool2d(8)`` ((8 + 1) * C); kuangliu's
    MobileNetV2 with ``F.avg_pool2d`` (0). Other models count their pool modules as listed in the table.
  * an attention module's global average pool over H x W, by ``Attention.seed_count.gap``: the seed's ZAM
    (ZCA) and CBAM variant, the SELayer and ECA's eca_layer pool with ``nn.AdaptiveAvgPool2d(1)`` modules,
    i.e. (H*W + 1) * C ops; the official CBAM and BAM (Jongchan/attention-module) with ``F.avg_pool2d`` (0).
    Other pooling (GMP, mean/max over channels, GMinP, ...) counts 0; pool modules inside attention modules
    are not counted a second time.
  * an attention module's MLP, by ``Attention.seed_count.linear``: SE's and the official CBAM's MLPs are
    ``nn.Linear`` layers, so their 1x1 convolutions on the pooled 1x1 map count as thop counted Linear,
    (2 * in - 1) * out; the seed's CBAM variant has 1x1 convolutions (out * in). A CBAM module's
    ``variant`` ('seed' with ``CBAM_SEED_KWARGS``) picks its count (``Attention.seed_count_variants``).
  Other convolutions, BN and Linear layers inside attention modules count as usual (the CBAM MLP runs twice,
  on the avg- and on the max-pooled vector, and counts twice). A zamzoo attention module the table does not
  list (ZCA, ZSA) is refused; a plugin attention (``register_attention``, ``--attn``, an entry point: the seed's
  code never had it) and other libraries' modules count as thop 0.0.30 counts them, module by module as listed in
  the table (its ``nn.AdaptiveAvgPool2d`` too), whether or not it defines ``attention_maps``.

  This reproduces the seed's table exactly: resnet18_plain / resnet18_cbam (seed variant) /
  resnet18_zam = 557.9775M / 558.4482M / 558.2252M; mobilenet_plain / mobilenet_cbam (seed variant) /
  mobilenet_zamr = 180.7697M / 182.4953M / 181.4638M (the seed prints 557.98M ... 181.46M); and thop 0.0.30 on
  the baselines' official code in the seed's ResNet18: resnet18_cbam / resnet18_bam / resnet18_se / resnet18_eca
  = 558.5990M / 559.7858M / 558.3972M / 558.2345M (thop's float32 sums differ by < 100 ops).
"""
import contextlib
import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..layers import get_attn
from ..models import ATTENTIONS, ZOO, SeedCount

__all__ = ['count_params', 'count_flops', 'count_macs', 'seed_flops', 'example_input']

DEFAULT_INPUT_SIZE = (3, 32, 32)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers excluded), as ``sum(p.numel() for p in model.parameters())``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]]):
    if input_size is None:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        input_size = cfg.get('input_size', DEFAULT_INPUT_SIZE)
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3:
        raise ValueError(f'input_size must be (C, H, W), got {input_size}')
    return input_size


def example_input(model: nn.Module, input_size: Optional[Sequence[int]] = None, batch_size: int = 1):
    """A random batch of the model's input size (its pretrained_cfg's, else 3x32x32), on its device/dtype."""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device('cpu')
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.randn(batch_size, *_input_size(model, input_size), device=device, dtype=dtype)


@contextlib.contextmanager
def _eval_mode(model):
    """Run the block with the model in eval mode, restoring its training flags afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@torch.no_grad()
def count_flops(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> int:
    """FLOPs of one forward pass on one image, as PyTorch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    x = example_input(model, input_size)
    with _eval_mode(model), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> int:
    """Multiply-accumulates of one forward pass on one image: FlopCounterMode's FLOPs / 2."""
    return count_flops(model, input_size) // 2


# ---------------------------------------------------------------------------------------------------
# The seed's (thop 0.0.30) convention

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVGPOOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)

def _leaf_ops(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """thop 0.0.30's count for one call of module m (input x, output y); 0 for modules it did not count."""
    if isinstance(m, _CONV):
        return y.numel() * (m.in_channels // m.groups * math.prod(m.kernel_size) + (1 if m.bias is not None else 0))
    if isinstance(m, _BN):
        return 4 * x.numel()
    if isinstance(m, nn.Linear):
        return _linear_ops(m.in_features, y)
    if isinstance(m, _AVGPOOL):
        ks = m.kernel_size if isinstance(m.kernel_size, (tuple, list)) else (m.kernel_size,)
        return (math.prod(ks) + 1) * y.numel()
    if isinstance(m, _ADAPTIVE_AVGPOOL):
        return (_gap_kernel(m, x) + 1) * y.numel()
    return 0


def _linear_ops(in_features: int, y: torch.Tensor) -> int:
    """thop's count of a Linear layer (no bias term) with `in_features` inputs and output y."""
    return (2 * in_features - 1) * y.numel()


def _gap_kernel(m, x):
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * (x.dim() - 2)
    return math.prod(size // (o if o is not None else size) for size, o in zip(x.shape[2:], out))


def _attention_classes(plugin: bool) -> set:
    """The classes of the attention modules registered as plugins (`plugin`) or of the zoo's own attentions."""
    layers = (get_attn(a.layer) for a in ATTENTIONS.values() if (a.plugin is not None) == plugin)
    return {getattr(layer, 'func', layer) for layer in layers} - {None}


def _plugin_classes() -> set:
    """The classes only plugins use: a plugin registering a zoo class (SE with other options) leaves it counted."""
    return _attention_classes(plugin=True) - _attention_classes(plugin=False)


def _outermost_attention(module: nn.Module, plugins: frozenset = frozenset()):
    """The zamzoo attention modules (they have ``attention_maps``; not a plugin's, of the classes `plugins`) inside
    `module` but not inside another one."""
    for child in module.children():
        if callable(getattr(child, 'attention_maps', None)) and type(child) not in plugins:
            yield child
        else:
            yield from _outermost_attention(child, plugins)


def _seed_count(attention: nn.Module) -> SeedCount:
    """The zoo table's seed FLOP convention of this attention module: its class's attention's, or that attention's
    for the module's `variant` where the table lists one (CBAM's 'seed')."""
    rules = set()
    for a in ATTENTIONS.values():
        if a.plugin is not None:  # a plugin's options may differ from the zoo's; its modules are not counted here
            continue
        layer = get_attn(a.layer)  # a class or functools.partial; None for 'plain'
        if getattr(layer, 'func', layer) is type(attention):
            rules.add(a.seed_count_variants.get(getattr(attention, 'variant', None), a.seed_count))
    if len(rules) != 1:
        raise ValueError(f'seed_flops: no seed FLOP convention for {type(attention).__name__} modules; the zoo table '
                         f'gives one for the attention modules of its models')
    return rules.pop()


def _as_linear(attention: nn.Module, count: SeedCount):
    """The 1x1 convolutions of an attention module whose original code ran nn.Linear layers in their place."""
    if not count.linear:
        return set()
    return {id(m) for m in attention.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1}


def _zoo_entry(model: nn.Module):
    """The zoo table's entry of the model's architecture (its pretrained_cfg's), None for a model outside the zoo."""
    return ZOO.get((getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or '')


@torch.no_grad()
def seed_flops(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> int:
    """Operations of one forward pass on one image under the ZAM seed's convention (module docstring)."""
    total = 0
    handles = []
    skip = set()  # modules whose count a rule above them already gave (head pool, attention pools)
    as_linear = set()  # 1x1 convs counted as the nn.Linear of the original code when they run on a 1x1 map

    def leaf_hook(m, inputs, output):
        nonlocal total
        x = inputs[0]
        if id(m) not in skip and isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor):
            linear = id(m) in as_linear and x[0, 0].numel() == 1
            total += _linear_ops(m.in_channels, output) if linear else _leaf_ops(m, x, output)

    def attention_hook(m, inputs, output):
        nonlocal total
        x = inputs[0]
        total += (x[0, 0].numel() + 1) * x.shape[0] * x.shape[1]

    def head_hook(kernel):
        def hook(m, inputs, output):
            nonlocal total
            if kernel is not None:
                total += (kernel + 1) * output.numel()
        return hook

    attentions = [(m, _seed_count(m))  # may refuse: before any hook
                  for m in _outermost_attention(model, frozenset(_plugin_classes()))]
    entry = _zoo_entry(model)
    head = getattr(model, 'global_pool', None)
    if isinstance(head, nn.Module) and entry is not None:
        skip.update(id(m) for m in head.modules())
        handles.append(head.register_forward_hook(head_hook(entry.backbone.seed_head_pool)))

    for attention, count in attentions:
        skip.update(id(sub) for sub in attention.modules() if isinstance(sub, _AVGPOOL + _ADAPTIVE_AVGPOOL))
        as_linear.update(_as_linear(attention, count))
        if count.gap and 'avg' in str(getattr(attention, 'pool', 'avg')):  # a ZAM's `pool` may have no average
            handles.append(attention.register_forward_hook(attention_hook))
    for m in model.modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(leaf_hook))

    x = example_input(model, input_size)
    try:
        with _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(total)
