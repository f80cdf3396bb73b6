"""SPEM: Self-adaptive Pooling Enhanced attention Module (Qrange-group/SPEM, MMM 2023).

With per-channel affine maps (w, b of shape 1xCx1x1) and p = Parameter(2)::

    mx  = GMP(F) * w2 + b2 ;  mn = GMinP(F) * w2 + b2        # one shared affine (w2, b2)
    lam = p0^2 / (p0^2 + p1^2)
    mix = (lam * mx + (1 - lam) * mn) * w1 + b1
    out = sigmoid(mx + mn) * sigmoid(mix) * F

Init w1 = w2 = 0, b1 = b2 = -1, p = [0.5, 0.5]: the gate starts at sigmoid(-2) * sigmoid(-1) = 0.0320586 for any
input. Params 4C + 2. The loss adds ``alpha * sum over modules of (p0^2 + p1^2)`` (alpha = 0.1): `penalty()` per
module, `spem_penalty(model)` for a whole model.

GMP and GMinP are ``torch.max`` / ``torch.min`` over H x W, as nn.AdaptiveMaxPool2d and ``x.min(dim)`` in the
original code: the gradient of each goes to the first extremal element (``amax`` / ``aminmax`` would split ties).
``impl='fused'`` (default) runs `zamzoo.layers.fused.channel_gate_fused` in eager mode; ``impl='reference'`` always
runs the plain formula, which is also what every tracer, exporter and compiler records.
"""
from typing import Dict, Tuple

import torch
import torch.fx
from torch import nn
from timm.layers import register_notrace_module

from ._checks import check_input
from .fused import FusedDispatch, channel_gate_fused, check_impl
from .fused._common import max_values, min_values

torch.fx.wrap('check_input')

__all__ = ['SPEM', 'spem_gate']


def spem_gate(
        mx: torch.Tensor,
        mn: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        p: torch.Tensor,
) -> torch.Tensor:
    """sigmoid(mx' + mn') * sigmoid(mix) from GMP and GMinP (B, C, 1, 1) and the module's parameters, spelled as the
    seed spells it: lam and 1 - lam as p0^2 / (p0^2 + p1^2) and p1^2 / (p0^2 + p1^2) (1 - lam rounds differently, and
    54 modules of resnet164_spem in train mode carried that to ~8e-6 in the logits against the seed's own model)."""
    mx = mx * w2 + b2
    mn = mn * w2 + b2
    p2 = p * p
    total = p2[0] + p2[1]
    mix = (p2[0] / total * mx + p2[1] / total * mn) * w1 + b1
    return torch.sigmoid(mx + mn) * torch.sigmoid(mix)


def max_min_hw(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """GMP and GMinP of x, (B, C, 1, 1) each (`max_values`, `min_values`), in the seed's order: where the max and the
    min are one element (a 1x1 or constant map), autograd adds their gradients to it in the reverse order of the
    forward, so the other order is 1 ulp off the seed's gradient there."""
    return max_values(x, [2, 3]), min_values(x, [2, 3])


@register_notrace_module  # timm's fx runs its eager path, bit for bit (why: tests/test_timm_fx_leaves.py)
class SPEM(FusedDispatch, nn.Module):
    def __init__(self, channels: int, impl: str = 'fused', act_layer=None, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.channels = int(channels)
        self.impl = check_impl(impl, 'SPEM')
        shape = (1, self.channels, 1, 1)
        self.w1 = nn.Parameter(torch.zeros(shape, **dd))
        self.b1 = nn.Parameter(torch.full(shape, -1.0, **dd))
        self.w2 = nn.Parameter(torch.zeros(shape, **dd))
        self.b2 = nn.Parameter(torch.full(shape, -1.0, **dd))
        self.p = nn.Parameter(torch.full((2,), 0.5, **dd))

    def extra_repr(self) -> str:
        return f'{self.channels}, impl={self.impl!r}'

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(mx + mn) * sigmoid(mix), (B, C, 1, 1), in x's dtype (the parameters may be wider)."""
        mx, mn = max_min_hw(x)
        return spem_gate(mx, mn, self.w1, self.b1, self.w2, self.b2, self.p).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'SPEM')
        return self._forward_impl(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_gate(x)

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        return channel_gate_fused(x, ('max', 'min'), spem_gate, [self.w1, self.b1, self.w2, self.b2, self.p])

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': the gate, (B, C, 1, 1)}."""
        check_input(x, self.channels, 'SPEM')
        return {'channel': self.channel_gate(x)}

    def penalty(self) -> torch.Tensor:
        """p0^2 + p1^2 (0.5 at init)."""
        return (self.p * self.p).sum()
