"""What every zamzoo backbone shares: the attention plumbing and timm's model API.

Each backbone family (cifar_resnet, cifar_mobilenet, cifar_mobilenetv2) builds the same four parts and inherits
everything else from `CifarNet`:

    stem        ConvBnAct (conv3x3 stride 1, BN, act)  feature level 0
    stages      nn.Sequential of stage Sequentials    feature levels 1..N, one per stage
    final_conv  an optional 1x1 conv head (MobileNetV2), nn.Identity otherwise
    global_pool + fc                                  timm's `create_classifier`

A stage holds its blocks and, for attention in the 'stage' slot (BAM), the stage's attention module as its last
element, so the stage output (a feature level) is the attended map and grad checkpointing, features_only,
forward_intermediates and fx all see one plain sequence.

Attention placement is a property of the backbone family (which slot a 'block' attention takes inside a block is
written in each family's block); which module goes there is a property of the attention name, resolved by
`zamzoo.layers.get_attn`.
"""
import inspect
import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from ..layers import get_attn

__all__ = ['CifarNet', 'CifarBlock', 'AttnFactory', 'ConvBnAct', 'ATTN_SLOTS']

ATTN_SLOTS = ('block', 'stage')

AttnLayer = Union[str, Callable[..., nn.Module], None]


class CifarBlock(nn.Module):
    """A module of a stage (or the stem): its output channels and stride, from which `CifarNet` derives
    feature_info."""

    def __init__(self, out_chs: int, stride: int):
        super().__init__()
        self.out_chs = out_chs
        self.stride = stride


class ConvBnAct(CifarBlock):
    """conv (bias-free) -> BN -> act. A plain module, not an nn.Sequential, so that timm's feature wrappers (which
    flatten Sequentials one level) keep it whole as the 'stem' feature level."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 3,
            stride: int = 1,
            act_layer: Callable[..., nn.Module] = nn.ReLU,
            device=None,
            dtype=None,
    ):
        super().__init__(out_chs, stride)
        dd = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _takes_inplace(layer: Optional[Callable[..., nn.Module]]) -> bool:
    """Whether `layer` (a class or partial) names an `inplace` parameter."""
    try:
        return layer is not None and 'inplace' in inspect.signature(layer).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin, some C-implemented callables)
        return False


class AttnFactory:
    """Builds the attention modules of one backbone and remembers them.

    `attn_layer` is a registry name of `zamzoo.layers` ('zam', 'cbam', ...), a class or partial taking
    `(channels, **kwargs, device=None, dtype=None)` (timm's convention), or None / 'plain' for no attention.
    `attn_kwargs` go to every module's constructor (e.g. the ZAM seed's CBAM variant, `impl=`).
    `slot` is 'block' (one module per block, in the family's block slot) or 'stage' (one module after every stage
    except the last, i.e. before every downsampling, as BAM is placed in its paper).

    In every family the block slot's input is a BatchNorm's fresh output that nothing else reads, so a block module
    whose layer takes `inplace` (timm's convention for activations: it may overwrite its input; ZAM, ULSAM) is built
    with ``inplace=True``, unless `attn_kwargs` set it.
    """

    def __init__(
            self,
            attn_layer: AttnLayer = None,
            attn_kwargs: Optional[Dict[str, Any]] = None,
            slot: str = 'block',
            device=None,
            dtype=None,
    ):
        if slot not in ATTN_SLOTS:
            raise ValueError(f"attn_slot must be one of {ATTN_SLOTS}, got {slot!r}")
        self.slot = slot
        self.dd = dict(device=device, dtype=dtype)
        self.created: List[nn.Module] = []
        layer = get_attn(attn_layer)
        if layer is None and attn_kwargs:
            raise ValueError(f'attn_kwargs {attn_kwargs} given to a model without attention (attn_layer={attn_layer!r})')
        self.layer = partial(layer, **attn_kwargs) if attn_kwargs else layer
        self._block_kwargs = {'inplace': True} if _takes_inplace(layer) and 'inplace' not in (attn_kwargs or {}) else {}

    def _create(self, channels: int, **kwargs) -> nn.Module:
        module = self.layer(channels, **kwargs, **self.dd)
        self.created.append(module)
        return module

    def block(self, channels: int) -> Optional[nn.Module]:
        """The module for a block's attention slot, or None."""
        if self.layer is None or self.slot != 'block':
            return None
        return self._create(channels, **self._block_kwargs)

    def stage(self, channels: int, stage_idx: int, num_stages: int) -> Optional[nn.Module]:
        """The module that follows stage `stage_idx` (0-based), or None. Never after the last stage."""
        if self.layer is None or self.slot != 'stage' or stage_idx >= num_stages - 1:
            return None
        return self._create(channels)


class CifarNet(nn.Module):
    """Base of the zamzoo backbones: timm's classification-model API over stem -> stages -> final_conv -> head.

    A family's __init__ takes its own arguments and passes the others (**kwargs) here, then builds its stem and
    blocks (their attention from `self._attn`, the `AttnFactory` of this model) and hands them to `_assemble`.
    Arguments every family takes:
        num_classes: classifier outputs; 0 for no classifier.
        in_chans: input image channels.
        global_pool: timm pooling type ('avg', 'max', 'avgmax', 'catavgmax'; '' for none, with num_classes=0).
        drop_rate: dropout before the classifier.
        attn_layer: attention name of zamzoo.layers ('zam', 'cbam', ...), a class / partial, or None.
        attn_kwargs: keyword arguments for every attention module (e.g. zamzoo.layers.CBAM_SEED_KWARGS).
        attn_slot: 'block' (the family's slot inside every block) or 'stage' (after every stage but the last; BAM).
        weight_init: 'torch' (PyTorch's defaults) or 'fan_out' (kaiming normal, fan_out, as bearpaw's ResNet).
        device, dtype: where and in which dtype to create the parameters.
    Blocks are `CifarBlock`s (they expose `out_chs` and `stride`), from which `_assemble` derives feature_info.
    """

    def __init__(
            self,
            num_classes: int = 100,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            attn_layer: AttnLayer = None,
            attn_kwargs: Optional[Dict[str, Any]] = None,
            attn_slot: str = 'block',
            weight_init: str = 'torch',
            device=None,
            dtype=None,
    ):
        super().__init__()
        if in_chans < 1:
            raise ValueError(f'in_chans must be at least 1 (image channels), got {in_chans}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self._attn = AttnFactory(attn_layer, attn_kwargs, attn_slot, device=device, dtype=dtype)
        self._head_args = global_pool, weight_init  # used, then dropped, by _assemble

    def _assemble(self, stem: ConvBnAct, stages: List[List[CifarBlock]], final_conv: Optional[ConvBnAct] = None):
        """Set stem, stages (with the 'stage'-slot attention and feature_info), final_conv and head; init weights."""
        attn, (global_pool, weight_init) = self._attn, self._head_args
        del self._attn, self._head_args
        self.stem = stem
        self.feature_info = [dict(num_chs=stem.out_chs, reduction=1, module='stem')]
        reduction, out_chs, sequences = 1, stem.out_chs, []
        for idx, blocks in enumerate(stages):
            reduction *= math.prod(b.stride for b in blocks)
            out_chs = blocks[-1].out_chs
            stage_attn = attn.stage(out_chs, idx, len(stages))
            sequences.append(nn.Sequential(*blocks, *([stage_attn] if stage_attn is not None else [])))
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f'stages.{idx}'))
        self.stages = nn.Sequential(*sequences)
        self.final_conv = final_conv if final_conv is not None else nn.Identity()
        self.num_features = final_conv.out_chs if final_conv is not None else out_chs
        self._set_head(self.num_classes, global_pool, **attn.dd)
        self._init_weights(weight_init, attn.created)

    def _set_head(self, num_classes: int, global_pool: str, **dd):
        """Pooling and classifier (timm's `create_classifier`) for `num_classes` outputs (0: none)."""
        if num_classes < 0:
            raise ValueError(f'num_classes must be at least 0 (0: no classifier), got {num_classes}')
        if num_classes > 0 and not global_pool:
            raise ValueError(
                f"global_pool='' (no pooling) needs num_classes=0 (no classifier), got num_classes={num_classes}")
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    @torch.jit.ignore
    def _init_weights(self, mode: str, attn_modules: List[nn.Module]):
        """'torch': PyTorch's default init, as the ZAM seed's code (and kuangliu's) leaves it.
        'fan_out': bearpaw's ResNet init, conv weights ~ N(0, sqrt(2 / (k*k*out_channels))) = kaiming normal fan_out.
        Attention modules keep the init their constructors gave them (e.g. CBAM's official init): none is touched here."""
        if mode == 'torch':
            return
        if mode != 'fan_out':
            raise ValueError(f"weight_init must be 'torch' or 'fan_out', got {mode!r}")
        if self.stem.conv.weight.is_meta:  # no values to set (and torch's normal_ on meta tensors is slow)
            return
        skip = {id(m) for a in attn_modules for m in a.modules()}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in skip:
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    # ---------------------------------------------------------------- timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=[
                (r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)', None),
                (r'^final_conv', (99999,)),  # timm's MATCH_PREV_GROUP: the head conv joins the last block group
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head: `num_classes` outputs (0: none); `global_pool` None keeps the current pooling, except that a
        classifier on a head without pooling (global_pool='') gets timm's default 'avg' instead of failing."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type or ('avg' if num_classes > 0 else '')
        p = next(self.parameters())
        self._set_head(num_classes, global_pool, device=p.device, dtype=p.dtype)
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features at the levels of `feature_info` (0 = stem, i = output of stage i), timm's signature.

        indices: the last n levels if int, all if None, else the listed levels (negative from the end).
        norm: accepted for timm compatibility; these backbones have no final norm.
        Returns the intermediates, or (final features as forward_features gives them, intermediates).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.final_conv(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and head) not needed for the feature levels `indices`; returns the kept indices."""
        num_levels = len(self.stages) + 1
        take_indices, max_index = feature_take_indices(num_levels, indices)
        # final_conv (MobileNetV2's 1x1 conv to 1280) follows the last stage and never feeds a feature level: it goes
        # with the head or the norm too, as timm's efficientnet prunes its conv_head (else its parameters go unused)
        prune_end = prune_norm or prune_head or max_index < num_levels - 1
        self.stages = self.stages[:max_index]  # level 0 is the stem, level i the output of stage i
        if prune_end:
            self.final_conv = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices
