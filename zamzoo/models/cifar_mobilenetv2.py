"""MobileNetV2 for 32x32 inputs.

Layout chosen: the paper's network (Sandler et al., table 2: inverted residual blocks with ReLU6, linear
bottlenecks, expansion 6, the expand conv left out when t = 1, residual add only when stride 1 and in == out,
final 1x1 conv to 1280) with the CIFAR strides of kuangliu/pytorch-cifar's MobileNetV2: stem stride 1 (paper 2) and
the stride of the second bottleneck row (24 channels) 1 (paper 2). The net then downsamples three times,
32 -> 16 -> 8 -> 4, and ends on a 4x4 map before the global average pool, like the zoo's CIFAR ResNet-18/50 and the
seed's MobileNet, so every backbone of the zoo sees the same resolutions and the attention maps are comparable.
Unlike kuangliu's file we keep the paper's blocks: kuangliu adds 1x1 conv + BN projection shortcuts to the
stride-1 blocks that change width and always builds the expand conv; those are not MobileNetV2 (and the ULSAM paper
evaluates the standard MobileNetV2 block). PyTorch's default init. 2,351,972 parameters with 100 classes.

Rows (t, c, n, s) grouped into stages by resolution:
stage 0 (32x32): (1, 16, 1, 1) (6, 24, 2, 1) | stage 1 (16x16): (6, 32, 3, 2) |
stage 2 (8x8): (6, 64, 4, 2) (6, 96, 3, 1) | stage 3 (4x4): (6, 160, 3, 2) (6, 320, 1, 1); then final_conv 320->1280.

Attention slot ('block'): after the projection (linear 1x1) conv's BN, before the residual add, in all 17 blocks,
including those without a residual (the slot of SE in MobileNetV3 is inside the expansion, but ZAM/CBAM/SPEM act on
a block's output, as in the ResNets' slot after the last BN). Not in the stem nor in final_conv.
'stage' slot (BAM): after stages 0, 1 and 2 (24, 32 and 96 channels), just before every downsampling.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath, calculate_drop_path_rates

from ._base import CifarBlock, CifarNet, ConvBnAct
from ._zoo import pretrained_cfgs, register_family

__all__ = ['CifarMobileNetV2', 'InvertedResidual']

# per stage: rows of (expansion t, out channels c, repeats n, first stride s)
CIFAR_MOBILENETV2: Tuple[Tuple[Tuple[int, int, int, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, 2, 1)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


class InvertedResidual(CifarBlock):
    """[pw1x1 -> BN -> ReLU6] -> dw3x3 -> BN -> ReLU6 -> pw1x1 (linear) -> BN -> [attn] -> (+ x if stride 1, in == out)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expand_ratio: int = 6,
            attn: Optional[nn.Module] = None,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__(out_chs, stride)
        dd = dict(device=device, dtype=dtype)
        mid_chs = in_chs * expand_ratio
        self.has_skip = stride == 1 and in_chs == out_chs
        if expand_ratio != 1:
            self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False, **dd)
            self.bn1 = nn.BatchNorm2d(mid_chs, **dd)
            self.act1 = nn.ReLU6(inplace=True)
        else:
            self.conv_pw, self.bn1, self.act1 = nn.Identity(), nn.Identity(), nn.Identity()
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride=stride, padding=1, groups=mid_chs, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(mid_chs, **dd)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, **dd)
        self.attn = attn if attn is not None else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.attn(self.bn3(self.conv_pwl(x)))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class CifarMobileNetV2(CifarNet):
    """MobileNetV2 for 32x32 inputs; see the module docstring for the layout and the attention slots."""

    def __init__(
            self,
            stem_width: int = 32,
            block_cfg: Sequence[Sequence[Tuple[int, int, int, int]]] = CIFAR_MOBILENETV2,
            head_width: int = 1280,
            drop_path_rate: float = 0.,
            **kwargs,
    ):
        """
        Args:
            stem_width: output channels of the 3x3 stem.
            block_cfg: per stage, rows of (expansion, out_chs, repeats, first stride).
            head_width: output channels of the final 1x1 conv.
            drop_path_rate: stochastic depth on the residual blocks, increasing linearly over the blocks.
            **kwargs: the arguments of CifarNet (drop_rate: the paper's ImageNet model uses 0.2; default 0 here).
        """
        super().__init__(**kwargs)
        attn, dd = self._attn, self._attn.dd
        dpr = iter(calculate_drop_path_rates(drop_path_rate, sum(n for rows in block_cfg for _, _, n, _ in rows)))
        in_chs, stages = stem_width, []
        for rows in block_cfg:
            blocks = []
            for t, c, n, s in rows:
                for i in range(n):
                    blocks.append(InvertedResidual(
                        in_chs, c, s if i == 0 else 1, t, attn=attn.block(c), drop_path_rate=next(dpr), **dd))
                    in_chs = c
            stages.append(blocks)
        self._assemble(
            ConvBnAct(self.in_chans, stem_width, 3, act_layer=nn.ReLU6, **dd), stages,
            ConvBnAct(in_chs, head_width, 1, act_layer=nn.ReLU6, **dd))


default_cfgs = pretrained_cfgs(__name__, CifarMobileNetV2)
register_family(__name__)
