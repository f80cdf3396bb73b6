"""ResNets for 32x32 inputs: the ZAM seed's CIFAR ResNet-18/34/50 and SPEM's ResNet-164.

* resnet18 / resnet34 / resnet50 -- the ZAM seed's CIFAR ResNet (kuangliu/pytorch-cifar layout, same parameter
  count as weiaicunzai/pytorch-cifar100's): stem conv3x3 3->64 stride 1 (no bias) + BN + ReLU and no max-pool;
  4 stages of 64/128/256/512 planes, strides 1/2/2/2; BasicBlock x[2,2,2,2] / x[3,4,6,3], Bottleneck x[3,4,6,3];
  1x1 conv + BN projection shortcut when the stride or the width changes; global average pool (4x4) -> Linear.
  PyTorch's default init, as the seed's code. 100 classes: 11,220,132 / 21,328,292 / 23,705,252 parameters.
* resnet164 -- bearpaw/pytorch-classification `models/cifar/resnet.py` (SPEM's backbone), post-activation:
  stem conv3x3 3->16 + BN + ReLU; 3 stages x 18 Bottlenecks (depth 164 = 9n + 2), planes 16/32/64, expansion 4,
  strides 1/2/2; 1x1 conv + BN projection in each stage's first block; global average pool (8x8) -> Linear(256).
  Conv init N(0, sqrt(2 / (k*k*out))) as bearpaw. 1,727,284 parameters with 100 classes, 1,704,154 with 10.

Attention slot ('block'): after the last BN of the residual branch (bn2 of BasicBlock, bn3 of Bottleneck),
before the residual add, then ReLU -- the slot of ZAM, CBAM, SE, ECA, NAM, SPEM (and timm's `attn_layer`).
'stage' slot (BAM): after every stage but the last (ResNet-18/34/50: after stages 1, 2, 3, as the BAM paper and its
official code place it; ResNet-164: after stages 1 and 2), i.e. at every bottleneck before a downsampling.
"""
from typing import Any, Dict, Optional, Sequence, Type, Union

import torch
import torch.nn as nn
from timm.layers import DropPath

from timm.models import generate_default_cfgs

from ._base import AttnFactory, AttnLayer, CifarNet, ConvBnAct, dict_modules
from ._zoo import pretrained_cfgs, register_family

__all__ = ['CifarResNet', 'BasicBlock', 'Bottleneck']


def _shortcut(in_chs: int, out_chs: int, stride: int, dd) -> nn.Module:
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(dict_modules(
        conv=nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd),
        bn=nn.BatchNorm2d(out_chs, **dd),
    ))


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> [attn] -> (+ shortcut) -> ReLU."""
    expansion = 1

    def __init__(
            self,
            in_chs: int,
            planes: int,
            stride: int = 1,
            attn: Optional[nn.Module] = None,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.attn = attn if attn is not None else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.shortcut = _shortcut(in_chs, out_chs, stride, dd)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = self.attn(x)
        x = self.drop_path(x) + shortcut
        return self.act2(x)


class Bottleneck(nn.Module):
    """conv1x1 -> BN -> ReLU -> conv3x3 (stride) -> BN -> ReLU -> conv1x1 (x4) -> BN -> [attn] -> (+ shortcut) -> ReLU."""
    expansion = 4

    def __init__(
            self,
            in_chs: int,
            planes: int,
            stride: int = 1,
            attn: Optional[nn.Module] = None,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, **dd)
        self.attn = attn if attn is not None else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.shortcut = _shortcut(in_chs, out_chs, stride, dd)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = self.attn(x)
        x = self.drop_path(x) + shortcut
        return self.act3(x)


_BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class CifarResNet(CifarNet):
    """A ResNet for 32x32 inputs (no stem downsampling, no max-pool); see the module docstring for the layouts."""

    def __init__(
            self,
            block: Union[str, Type[nn.Module]] = 'basic',
            layers: Sequence[int] = (2, 2, 2, 2),
            channels: Sequence[int] = (64, 128, 256, 512),
            stem_width: int = 64,
            num_classes: int = 100,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            attn_layer: AttnLayer = None,
            attn_kwargs: Optional[Dict[str, Any]] = None,
            attn_slot: str = 'block',
            weight_init: str = 'torch',
            device=None,
            dtype=None,
    ):
        """
        Args:
            block: 'basic', 'bottleneck' or a block class with the signature of BasicBlock.
            layers: blocks per stage.
            channels: planes per stage (a stage outputs planes * block.expansion channels).
            stem_width: output channels of the 3x3 stem.
            num_classes: classifier outputs; 0 for no classifier.
            in_chans: input image channels.
            global_pool: timm pooling type ('avg', 'max', 'avgmax', 'catavgmax', '' for none).
            drop_rate: dropout before the classifier.
            drop_path_rate: stochastic depth, linearly increasing over blocks.
            attn_layer: attention name of zamzoo.layers ('zam', 'cbam', ...), a class/partial, or None.
            attn_kwargs: keyword arguments for every attention module.
            attn_slot: 'block' (inside every block) or 'stage' (after every stage but the last; BAM).
            weight_init: 'torch' (PyTorch defaults) or 'fan_out' (bearpaw's kaiming normal, fan_out).
            device, dtype: where and in which dtype to create the parameters.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if len(layers) != len(channels):
            raise ValueError(f'layers {tuple(layers)} and channels {tuple(channels)} must have the same length')
        block_cls = _BLOCKS[block] if isinstance(block, str) else block
        attn = AttnFactory(attn_layer, attn_kwargs, attn_slot, **dd)
        self._init_common(num_classes, in_chans, drop_rate)

        self.stem = ConvBnAct(in_chans, stem_width, 3, **dd)
        self.feature_info.append(dict(num_chs=stem_width, reduction=1, module='stem'))

        num_blocks = sum(layers)
        dpr = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        in_chs, reduction, block_idx = stem_width, 1, 0
        stages = []
        for stage_idx, (depth, planes) in enumerate(zip(layers, channels)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            out_chs = planes * block_cls.expansion
            blocks = []
            for i in range(depth):
                blocks.append(block_cls(
                    in_chs, planes, stride=stride if i == 0 else 1, attn=attn.block(out_chs),
                    drop_path_rate=dpr[block_idx], **dd))
                in_chs = out_chs
                block_idx += 1
            stage_attn = attn.stage(out_chs, stage_idx, len(layers))
            if stage_attn is not None:
                blocks.append(stage_attn)
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f'stages.{stage_idx}'))
        self.stages = nn.Sequential(*stages)
        self.final_conv = nn.Identity()

        self._init_head(in_chs, global_pool, **dd)
        self._init_weights(weight_init, attn.created)


default_cfgs = generate_default_cfgs(pretrained_cfgs('cifar_resnet'))
register_family(__name__, CifarResNet)
