"""SPEM: Self-adaptive Pooling Enhanced attention Module (Qrange-group/SPEM, MMM 2023).

With per-channel affine maps (w, b of shape 1xCx1x1) and p = Parameter(2)::

    mx  = GMP(F) * w2 + b2 ;  mn = GMinP(F) * w2 + b2        # one shared affine (w2, b2)
    lam = p0^2 / (p0^2 + p1^2)
    mix = (lam * mx + (1 - lam) * mn) * w1 + b1
    out = sigmoid(mx + mn) * sigmoid(mix) * F

Init w1 = w2 = 0, b1 = b2 = -1, p = [0.5, 0.5]: the gate starts at sigmoid(-2) * sigmoid(-1) = 0.0320586 for any
input. Params 4C + 2. The loss adds ``alpha * sum over modules of (p0^2 + p1^2)`` (alpha = 0.1): `penalty()` per
module, `spem_penalty(model)` for a whole model.
"""
from typing import Dict

import torch
import torch.fx
from torch import nn

from ._checks import check_input

torch.fx.wrap('check_input')

__all__ = ['SPEM']


class SPEM(nn.Module):
    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.channels = int(channels)
        shape = (1, self.channels, 1, 1)
        self.w1 = nn.Parameter(torch.zeros(shape, **dd))
        self.b1 = nn.Parameter(torch.full(shape, -1.0, **dd))
        self.w2 = nn.Parameter(torch.zeros(shape, **dd))
        self.b2 = nn.Parameter(torch.full(shape, -1.0, **dd))
        self.p = nn.Parameter(torch.full((2,), 0.5, **dd))

    def extra_repr(self) -> str:
        return f'{self.channels}'

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(mx + mn) * sigmoid(mix), (B, C, 1, 1)."""
        mn, mx = torch.aminmax(x.flatten(2), dim=-1)  # one pass for GMinP and GMP
        mx = mx[:, :, None, None] * self.w2 + self.b2
        mn = mn[:, :, None, None] * self.w2 + self.b2
        p2 = self.p * self.p
        lam = p2[0] / (p2[0] + p2[1])
        mix = (lam * mx + (1.0 - lam) * mn) * self.w1 + self.b1
        return torch.sigmoid(mx + mn) * torch.sigmoid(mix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'SPEM')
        return x * self.channel_gate(x)

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': the gate, (B, C, 1, 1)}."""
        check_input(x, self.channels, 'SPEM')
        return {'channel': self.channel_gate(x)}

    def penalty(self) -> torch.Tensor:
        """p0^2 + p1^2 (0.5 at init)."""
        return (self.p * self.p).sum()
