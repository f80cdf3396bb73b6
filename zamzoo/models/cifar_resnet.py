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
from collections import OrderedDict
from typing import Optional, Sequence, Type, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, calculate_drop_path_rates

from ._base import CifarBlock, CifarNet, ConvBnAct
from ._zoo import pretrained_cfgs, register_family

__all__ = ['CifarResNet', 'BasicBlock', 'Bottleneck']


def _shortcut(in_chs: int, out_chs: int, stride: int, dd) -> nn.Module:
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd),
        bn=nn.BatchNorm2d(out_chs, **dd),
    ))


class _ResNetBlock(CifarBlock):
    """The residual frame of BasicBlock and Bottleneck: branch -> [attn] -> drop path -> (+ shortcut) -> ReLU. A
    subclass builds its branch (and final ReLU) in `_init_branch` and runs them in `forward`."""
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
        super().__init__(planes * self.expansion, stride)
        dd = dict(device=device, dtype=dtype)
        self._init_branch(in_chs, planes, stride, dd)
        self.attn = attn if attn is not None else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.shortcut = _shortcut(in_chs, self.out_chs, stride, dd)

    def _init_branch(self, in_chs: int, planes: int, stride: int, dd: dict):
        raise NotImplementedError


class BasicBlock(_ResNetBlock):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> [attn] -> (+ shortcut) -> ReLU."""
    expansion = 1

    def _init_branch(self, in_chs: int, planes: int, stride: int, dd: dict):
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, self.out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(self.out_chs, **dd)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.attn(self.bn2(self.conv2(x)))
        x = self.drop_path(x) + shortcut
        return self.act2(x)


class Bottleneck(_ResNetBlock):
    """conv1x1 -> BN -> ReLU -> conv3x3 (stride) -> BN -> ReLU -> conv1x1 (x4) -> BN -> [attn] -> (+ shortcut) -> ReLU."""
    expansion = 4

    def _init_branch(self, in_chs: int, planes: int, stride: int, dd: dict):
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, self.out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(self.out_chs, **dd)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.attn(self.bn3(self.conv3(x)))
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
            drop_path_rate: float = 0.,
            **kwargs,
    ):
        """
        Args:
            block: 'basic', 'bottleneck' or a block class with the signature of BasicBlock.
            layers: blocks per stage; the first stage has stride 1, the others 2.
            channels: planes per stage (a stage outputs planes * block.expansion channels).
            stem_width: output channels of the 3x3 stem.
            drop_path_rate: stochastic depth, increasing linearly over the blocks.
            **kwargs: the arguments of CifarNet.
        """
        super().__init__(**kwargs)
        attn, dd = self._attn, self._attn.dd
        if len(layers) != len(channels):
            raise ValueError(f'layers {tuple(layers)} and channels {tuple(channels)} must have the same length')
        block_cls = _BLOCKS[block] if isinstance(block, str) else block
        dpr = iter(calculate_drop_path_rates(drop_path_rate, sum(layers)))
        in_chs, stages = stem_width, []
        for stage_idx, (depth, planes) in enumerate(zip(layers, channels)):
            out_chs = planes * block_cls.expansion
            blocks = []
            for i in range(depth):
                stride = 2 if stage_idx > 0 and i == 0 else 1
                blocks.append(block_cls(
                    in_chs, planes, stride, attn=attn.block(out_chs), drop_path_rate=next(dpr), **dd))
                in_chs = out_chs
            stages.append(blocks)
        self._assemble(ConvBnAct(self.in_chans, stem_width, 3, **dd), stages)


default_cfgs = pretrained_cfgs(__name__, CifarResNet)
register_family(__name__)
