"""MobileNet (v1) for 32x32 inputs: the ZAM seed's.

Stem conv_bn(3, 32, stride 1), then 13 depthwise-separable blocks (in -> out, stride):
(32->64,1) (64->128,1) (128->128,1) (128->256,2) (256->256,1) (256->512,2) 5x(512->512,1) (512->1024,2)
(1024->1024,1); 32 -> 16 -> 8 -> 4; global average pool (4x4) -> Linear(1024, num_classes) with bias; every conv
bias-free. 3,309,476 parameters with 100 classes. PyTorch's default init, as the seed's code.

Blocks are grouped in stages by resolution, each later stage opening with its stride-2 block:
stage 0 (32x32): 64, 128, 128 | stage 1 (16x16): 256, 256 | stage 2 (8x8): 512 x 6 | stage 3 (4x4): 1024 x 2.

Attention slot ('block'): dw3x3 -> BN -> ReLU -> pw1x1 -> BN -> [attention] -> ReLU, in all 13 blocks, not in the
stem (the seed's placement for ZAM, ZAM+R and its CBAM).
'stage' slot (BAM): after stages 0, 1 and 2 (128, 256 and 512 channels), i.e. just before every downsampling, the
bottlenecks where the BAM paper puts it, and the counterpart of BAM after ResNet stages 1-3.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ._base import CifarBlock, CifarNet, ConvBnAct
from ._zoo import pretrained_cfgs, register_family

__all__ = ['CifarMobileNet', 'DepthwiseSeparable']

# (out_chs, stride) per block, grouped by stage.
SEED_MOBILENET: Tuple[Tuple[Tuple[int, int], ...], ...] = (
    ((64, 1), (128, 1), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)


class DepthwiseSeparable(CifarBlock):
    """dw3x3 -> BN -> ReLU -> pw1x1 -> BN -> [attn] -> ReLU."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            attn: Optional[nn.Module] = None,
            device=None,
            dtype=None,
    ):
        super().__init__(out_chs, stride)
        dd = dict(device=device, dtype=dtype)
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride=stride, padding=1, groups=in_chs, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.attn = attn if attn is not None else nn.Identity()
        self.act1, self.act2 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_dw(x)))
        return self.act2(self.attn(self.bn2(self.conv_pw(x))))


class CifarMobileNet(CifarNet):
    """MobileNet v1 for 32x32 inputs; see the module docstring for the layout and the attention slots."""

    def __init__(
            self,
            stem_width: int = 32,
            block_cfg: Sequence[Sequence[Tuple[int, int]]] = SEED_MOBILENET,
            drop_path_rate: float = 0.,
            **kwargs,
    ):
        """
        Args:
            stem_width: output channels of the 3x3 stem.
            block_cfg: per stage, the (out_chs, stride) of each depthwise-separable block.
            drop_path_rate: taken as timm's other models take it, but only 0 is valid: these blocks have no
                residual connection for stochastic depth to drop.
            **kwargs: the arguments of CifarNet.
        """
        if drop_path_rate:
            raise ValueError(
                f'drop_path_rate={drop_path_rate}: MobileNet (v1) has no residual connections, so stochastic depth '
                'has nothing to drop; use 0, dropout before the classifier (drop_rate), or a residual backbone '
                '(resnet*, mobilenetv2)')
        super().__init__(**kwargs)
        attn, dd = self._attn, self._attn.dd
        in_chs, stages = stem_width, []
        for stage_cfg in block_cfg:
            blocks = []
            for out_chs, stride in stage_cfg:
                blocks.append(DepthwiseSeparable(in_chs, out_chs, stride, attn=attn.block(out_chs), **dd))
                in_chs = out_chs
            stages.append(blocks)
        self._assemble(ConvBnAct(self.in_chans, stem_width, 3, **dd), stages)


default_cfgs = pretrained_cfgs(__name__, CifarMobileNet)
register_family(__name__)
