"""ZAM: Zero-parameter Attention Module (developer0hye/ZAM) and its two halves ZCA and ZSA.

- ZCA (channel): ``Mc(F) = sigmoid(GAP(F) + GMP(F))``, shape (B, C, 1, 1).
- ZSA (spatial): ``Ms(F) = sigmoid(mean_c(F) + max_c(F))``, shape (B, 1, H, W); no concat, no conv.
- ZAM: channel first, ``F' = F * Mc(F)``, then ``F'' = F' * Ms(F')``.

``pool``: 'avgmax' (the committed code, default), 'avg' (mean only, in both halves) or 'max' (max only).
``skip=True`` is ZAM+R (the original ``use_skip_connection=True``): ``F' = F + F * Mc(F)``, ``F'' = F' + F' * Ms(F')``,
computed as the seed writes it, to the last bit (`zamzoo.layers.fused.zam.apply_gate`; why: that module's docstring).
None of them has parameters.

The max is ``torch.max(x, dim).values``, as in the seed's code (nn.AdaptiveMaxPool2d, torch.max(x, dim=1)): its
gradient goes to the first maximal element (``amax`` would split it between ties). ZAM's ``impl='fused'`` (default)
runs `zamzoo.layers.fused.zam_fused` in eager mode (same numbers, fewer passes and saved tensors);
``impl='reference'`` always runs the plain formula below, which is also what every tracer, exporter and compiler
records (`zamzoo.layers.fused.FusedDispatch`); an ONNX export with a fixed H and W (the dynamo exporter's default)
records the same formula in ops that ONNX Runtime runs in its blocked NCHWc layout (`ZAM._forward_onnx`, pools with
a max: they bake H and W in; with a dynamic H or W, and under the TorchScript-based exporter, the plain formula), and
every ONNX export spells the mean over channels as a MatMul (`fused.zam._mean`: ZAM(Avg), ZCA, ZSA).
"""
from typing import Dict

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from timm.layers import register_notrace_module

from ._checks import check_input
from .fused import FusedDispatch, check_impl
from .fused.zam import apply_gate, zam_eager, zam_formula, zam_pool
from .fused._common import exporting_onnx, fixed_map_size, may_overwrite_input

torch.fx.wrap('check_input')

__all__ = ['ZCA', 'ZSA', 'ZAM', 'zam_pool']

_POOLS = ('avgmax', 'avg', 'max')
_POOL_LABELS = {'avgmax': 'Avg&Max', 'avg': 'Avg', 'max': 'Max'}  # the paper's names of the variants


def _pool_whole_map(x: torch.Tensor, pool: str) -> torch.Tensor:
    """`zam_pool` over [2, 3] ('max' or 'avgmax') as pooling windows of the whole map (ONNX MaxPool, AveragePool)."""
    size = [int(n) for n in x.shape[2:]]  # a constant window, also where a tracer records the shape
    if pool == 'max':
        return F.max_pool2d(x, size)
    return F.avg_pool2d(x, size) + F.max_pool2d(x, size)


def _check_pool(pool: str, name: str) -> str:
    if pool not in _POOLS:
        raise ValueError(f'{name}: pool must be one of {list(_POOLS)}, got {pool!r}')
    return pool


class _ZeroParam(nn.Module):
    def __init__(self, channels: int, pool: str = 'avgmax', skip: bool = False, act_layer=None, device=None,
                 dtype=None):
        super().__init__()
        # act_layer / device / dtype accepted for timm's common signature: no activation, nothing to allocate
        self.channels = int(channels)
        self.pool = _check_pool(pool, type(self).__name__)
        self.skip = bool(skip)
        # the variant's display name, e.g. 'ZAM(Max)', 'ZAM+R(Avg&Max)' (viz labels its maps with it)
        self.label = f"{type(self).__name__}{'+R' if self.skip else ''}({_POOL_LABELS[self.pool]})"

    def extra_repr(self) -> str:
        return f'{self.channels}, pool={self.pool!r}, skip={self.skip}'

    def _apply_gate(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return apply_gate(x, gate, self.skip)


class ZCA(_ZeroParam):
    """ZAM's channel attention alone: ``F * sigmoid(pool_hw(F))`` (``F + F * ...`` with skip=True)."""

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(zam_pool(x, [2, 3], self.pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'ZCA')
        return self._apply_gate(x, self.channel_gate(x))

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': Mc(x) of shape (B, C, 1, 1)}."""
        check_input(x, self.channels, 'ZCA')
        return {'channel': self.channel_gate(x)}


class ZSA(_ZeroParam):
    """ZAM's spatial attention alone: ``F * sigmoid(pool_c(F))`` (``F + F * ...`` with skip=True)."""

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(zam_pool(x, [1], self.pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'ZSA')
        return self._apply_gate(x, self.spatial_gate(x))

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'spatial': Ms(x) of shape (B, 1, H, W)}."""
        check_input(x, self.channels, 'ZSA')
        return {'spatial': self.spatial_gate(x)}


@register_notrace_module  # timm's fx runs its eager path, bit for bit (why: tests/test_timm_fx_leaves.py)
class ZAM(FusedDispatch, _ZeroParam):
    """ZCA then ZSA. ``ZAM(C)`` is ZAM(Avg&Max); ``pool='avg'|'max'`` the other seed variants; ``skip=True`` ZAM+R;
    ``impl='fused'|'reference'`` (see the module docstring). ``inplace=True``, as for timm's activations: the module
    may overwrite its input (its eager inference path with impl='fused' writes the output there); the zoo's blocks
    build it so, their attention's input being a BatchNorm's fresh output."""

    def __init__(
            self,
            channels: int,
            pool: str = 'avgmax',
            skip: bool = False,
            impl: str = 'fused',
            inplace: bool = False,
            act_layer=None,
            device=None,
            dtype=None,
    ):
        super().__init__(channels, pool=pool, skip=skip)
        self.impl = check_impl(impl, 'ZAM')
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', impl={self.impl!r}' + (', inplace=True' if self.inplace else '')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'ZAM')
        return self._forward_impl(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and exporting_onnx() and self.pool != 'avg' and fixed_map_size(x):
            return self._forward_onnx(x)  # (with no max over C, the plain spelling makes fewer passes at batch 64)
        return zam_formula(x, self.pool, self.skip)

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        # `FusedDispatch` has checked `runs_eagerly`
        return zam_eager(x, self.pool, self.skip, inplace=may_overwrite_input(self, x))

    @torch.jit.unused
    def _forward_onnx(self, x: torch.Tensor) -> torch.Tensor:
        """`_forward_reference` in ops that ONNX Runtime runs in its blocked NCHWc layout (docs/bench/onnxruntime.md),
        where the backbone's convs run: no reorder to NCHW and back around the module. The statistics over H, W are
        an AveragePool and a MaxPool of the whole map; each gate is made full-size before its Mul (NCHWc runs only
        same-shape Muls): the channel gate by a nearest Resize, the spatial gate by a 1x1 Conv 1 -> C of ones (with
        skip, its bias 1 makes it 1 + gate: no Add node). The statistics over C, which NCHWc cannot compute, reduce
        the last axis of the map transposed to (B, H * W, C): ONNX Runtime runs the Transpose as one reorder, and its
        reductions over C in NCHW are strided and slow (the 3-D Reshape keeps its transpose optimizer from moving the
        Transpose back behind the reductions). With skip, x * (1 + gate) is x + x * gate on every finite input (the
        checked export's tolerance); where an activation is infinite and its gate 0, it keeps the infinity where
        eager PyTorch's x + x * gate is NaN (inf * 0)."""
        b, _, h, w = x.shape
        c = self.channels  # a constant, also where a tracer records the shape: the Convs' weights must be constants
        stats = _pool_whole_map(x, self.pool)
        scale = [float(h), float(w)]  # constant Resize scales (NCHWc runs no other), also under a tracer
        x = x * F.interpolate(self._channel_factor_nchwc(torch.sigmoid(stats)), scale_factor=scale, mode='nearest')
        stats = zam_pool(x.permute(0, 2, 3, 1).reshape(b, h * w, c), [2], self.pool).reshape(b, 1, h, w)
        ones = x.new_ones(c)
        return x * F.conv2d(torch.sigmoid(stats), ones.view(c, 1, 1, 1), ones if self.skip else None)

    @torch.jit.unused
    def _channel_factor_nchwc(self, gate: torch.Tensor) -> torch.Tensor:
        """The channel gate (B, C, 1, 1), 1 + gate with skip=True as a depthwise Conv (weight 1, bias 1): NCHWc runs
        that, not an Add of a constant."""
        if not self.skip:
            return gate
        ones = gate.new_ones(self.channels)
        return F.conv2d(gate, ones.view(-1, 1, 1, 1), ones, groups=self.channels)

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': Mc(F) (B, C, 1, 1), 'spatial': Ms(F') (B, 1, H, W)}, F' the channel-refined map as in forward."""
        check_input(x, self.channels, 'ZAM')
        mc = torch.sigmoid(zam_pool(x, [2, 3], self.pool))
        ms = torch.sigmoid(zam_pool(self._apply_gate(x, mc), [1], self.pool))
        return {'channel': mc, 'spatial': ms}
