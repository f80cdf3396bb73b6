"""ULSAM: Ultra-Lightweight Subspace Attention Module (Nandan91/ULSAM, WACV 2020, arXiv:2006.15102).

The C channels are split into g groups of G = C/g (``torch.chunk`` order). Per group F_n:
DW conv1x1 (bias) -> BN(G) -> ReLU -> MaxPool 3x3/1/1 -> PW conv1x1 G->1 (bias) -> BN(1) -> ReLU
-> softmax over the H*W positions -> A_n (1xHxW, sums to 1) -> ``F_n * A_n + F_n``.

The g independent branches are computed at once: the depthwise conv and its BN are per channel anyway, the g
pointwise convs G->1 are one grouped conv C->g (groups=g), and the g BN(1) are one BN(g) (per-channel statistics,
identical). Parameters 5C + 3g, as the original. Differences from the original file, on purpose: BatchNorm uses
PyTorch defaults (the original passes momentum=0.9, i.e. running stats follow the last batch) and nothing
changes the global default tensor type.
"""
from typing import Dict

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ._checks import check_input

torch.fx.wrap('check_input')

__all__ = ['ULSAM']


class ULSAM(nn.Module):
    def __init__(self, channels: int, groups: int = 4, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        channels, groups = int(channels), int(groups)
        if groups < 1 or channels % groups != 0:
            raise ValueError(f'ULSAM: channels ({channels}) must be divisible by groups ({groups})')
        self.channels = channels
        self.groups = groups
        self.dw = nn.Conv2d(channels, channels, 1, groups=channels, bias=True, **dd)
        self.bn_dw = nn.BatchNorm2d(channels, **dd)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pw = nn.Conv2d(channels, groups, 1, groups=groups, bias=True, **dd)
        self.bn_pw = nn.BatchNorm2d(groups, **dd)

    def extra_repr(self) -> str:
        return f'{self.channels}, groups={self.groups}'

    def subspace_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The g attention maps, (B, g, H, W); each sums to 1 over H x W."""
        a = F.relu(self.bn_dw(self.dw(x)))
        a = self.pool(a)
        a = F.relu(self.bn_pw(self.pw(a)))
        b, g, h, w = a.shape
        return torch.softmax(a.reshape(b, g, h * w), dim=-1).reshape(b, g, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'ULSAM')
        b, c, h, w = x.shape
        a = self.subspace_maps(x).unsqueeze(2)  # (B, g, 1, H, W)
        xg = x.reshape(b, self.groups, c // self.groups, h, w)
        return (xg * (1.0 + a)).reshape(b, c, h, w)  # F_n * A_n + F_n

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'spatial': (B, g, H, W)}: one map per subspace (channel group), each summing to 1 over H x W."""
        check_input(x, self.channels, 'ULSAM')
        return {'spatial': self.subspace_maps(x)}
