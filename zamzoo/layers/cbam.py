"""CBAM (Woo et al., arXiv:1807.06521): channel ``sigmoid(MLP(avg) + MLP(max))`` then spatial
``sigmoid(BN(conv_k([max_c; mean_c])))``.

Defaults = the paper's official code (Jongchan/attention-module): MLP C -> C//16 -> C with biases (its nn.Linear
layers), spatial conv 7x7 without bias over [max_c; mean_c] (its ChannelPool's order), followed by BN. ResNet18
CIFAR-100 with it: 11,310,012 params. (timm's ``CbamModule`` computes the same function with other parameter names
(its spatial conv and BN are one ``ConvNormAct``: ``spatial.conv.conv`` / ``spatial.conv.bn`` against our
``spatial.conv`` / ``spatial.bn``), a bias-free MLP by default, a hidden width C / 16 rounded to the nearest (ours is
C // 16, the official code's) and [mean_c; max_c] (a permutation of the conv's input channels): its state_dicts do
not load into ours. The official spatial BN also uses momentum 0.01: we keep PyTorch's default.) The channel half
is timm's ``ChannelAttn``. Both maxima are torch.max's (`max_values`), as in the official code and the seed's
(timm's ``amax`` splits the gradient between tied maxima).
Initialisation (`CBAM.init_weights`, run by the constructor) as the official ResidualNet.__init__ initialises its
CBAMs: spatial BN weight 0 (the spatial gate is exactly 0.5 at init, whatever the input), every bias 0 (the MLP's
included), the spatial conv kaiming normal (fan_out); the backbones' own init leaves attention modules alone.

The ZAM seed's variant (``CBAM_SEED_KWARGS``): spatial kernel 3 over [mean_c; max_c] (its order), bias-free MLP, no
BN after the spatial conv;
``2*C*(C//16) + 18`` params per module (ResNet18 CIFAR-100: 11,307,316); PyTorch's default init, as the seed's code.
"""
from typing import Dict, Optional, Type, Union

import torch
import torch.fx
from torch import nn
from timm.layers import create_act_layer
from timm.layers.cbam import ChannelAttn

from ._checks import check_input
from ._maps import keeps_running_stats
from .fused._common import max_values
from .se_eca import reduced_channels

torch.fx.wrap('check_input')

__all__ = ['CBAM', 'CbamSpatialAttn', 'CBAM_SEED_KWARGS']

CBAM_SEED_KWARGS = dict(spatial_kernel_size=3, mlp_bias=False, spatial_norm=False, spatial_max_first=False)
"""kwargs turning the official CBAM into the ZAM seed's variant: ``CBAM(C, **CBAM_SEED_KWARGS)``."""


class CbamSpatialAttn(nn.Module):
    """conv_k over [max_c; mean_c] (the official code's order), or [mean_c; max_c] with ``max_first=False`` (the ZAM
    seed's), 2 -> 1, no bias; optional BN(1); gate."""

    def __init__(
            self,
            kernel_size: int = 7,
            norm: bool = True,
            gate_layer: Union[str, Type[nn.Module]] = 'sigmoid',
            max_first: bool = True,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f'CBAM: spatial_kernel_size must be odd and positive, got {kernel_size}')
        self.max_first = bool(max_first)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(1, **dd) if norm else nn.Identity()
        self.gate = create_act_layer(gate_layer)

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        stats = [x.mean(dim=1, keepdim=True), max_values(x, [1])]
        s = torch.cat(stats[::-1] if self.max_first else stats, dim=1)
        return self.gate(self.bn(self.conv(s)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.spatial_gate(x)


class CBAM(nn.Module):
    def __init__(
            self,
            channels: int,
            rd_ratio: float = 1. / 16,
            rd_channels: Optional[int] = None,
            spatial_kernel_size: int = 7,
            spatial_norm: bool = True,
            mlp_bias: bool = True,
            spatial_max_first: bool = True,
            act_layer: Optional[Type[nn.Module]] = None,
            gate_layer: Union[str, Type[nn.Module]] = 'sigmoid',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.channels = int(channels)
        self.channel = ChannelAttn(
            self.channels,
            rd_channels=reduced_channels(self.channels, rd_ratio, rd_channels),
            act_layer=act_layer or nn.ReLU,  # None: the seed's
            gate_layer=gate_layer,
            mlp_bias=mlp_bias,
            **dd,
        )
        self.spatial = CbamSpatialAttn(spatial_kernel_size, norm=spatial_norm, gate_layer=gate_layer,
                                       max_first=spatial_max_first, **dd)
        settings = dict(spatial_kernel_size=spatial_kernel_size, mlp_bias=mlp_bias, spatial_norm=spatial_norm,
                        spatial_max_first=spatial_max_first)
        self.variant = 'seed' if settings == CBAM_SEED_KWARGS else 'paper'  # whose code it follows (the FLOP count's)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official code's init (Jongchan/attention-module MODELS/model_resnet.py, ResidualNet.__init__) when the
        spatial branch has its BN (the paper version): BN weight 0 and every bias 0, so the spatial gate is 0.5 at
        init; spatial conv kaiming normal (fan_out). Without it (the seed's variant): PyTorch's defaults, as the
        seed's code."""
        if not isinstance(self.spatial.bn, nn.BatchNorm2d):
            return
        nn.init.zeros_(self.spatial.bn.weight)
        nn.init.zeros_(self.spatial.bn.bias)
        nn.init.kaiming_normal_(self.spatial.conv.weight, mode='fan_out')
        for fc in (self.channel.fc1, self.channel.fc2):
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channel
        x_avg = c.fc2(c.act(c.fc1(x.mean((2, 3), keepdim=True))))
        x_max = c.fc2(c.act(c.fc1(max_values(x, [2, 3]))))
        return c.gate(x_avg + x_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'CBAM')
        x = x * self.channel_gate(x)
        return x * self.spatial.spatial_gate(x)

    @keeps_running_stats
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': Mc(F) (B, C, 1, 1), 'spatial': Ms(F') (B, 1, H, W)} as in forward."""
        check_input(x, self.channels, 'CBAM')
        mc = self.channel_gate(x)
        return {'channel': mc, 'spatial': self.spatial.spatial_gate(x * mc)}
