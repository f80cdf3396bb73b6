"""SimAM (Yang et al., ICML 2021), parameter-free: the yardstick for ZAM.

``d = (x - mean_hw(x))^2; v = sum_hw(d) / (HW - 1); out = x * sigmoid(d / (4 * (v + e_lambda)) + 0.5)``,
exactly the official code, except on a 1x1 map (e.g. the last stage of an ImageNet ResNet fed 32x32 images): there
the official HW - 1 = 0 gives 0/0 = NaN; we divide by max(HW - 1, 1), so d = v = 0 and the gate is sigmoid(0.5).

``impl='fused'`` (default) runs `zamzoo.layers.fused.simam_fused` in eager mode, but under autocast; ``impl='reference'``
always runs the plain formula of `gate`, which is also what every tracer, exporter and compiler records. Under CUDA
autocast the formula's pow and sum run in float32 (and so its output is float32), where the fused path would stay in
x's dtype: there the formula runs.
"""
import math
from typing import Dict

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from timm.layers import register_notrace_function, register_notrace_module

from ._checks import check_input
from .fused import FusedDispatch, check_impl, simam_fused
from .fused.simam import simam_gate
from .fused._common import autocast_on, exporting_onnx, fixed_map_size

torch.fx.wrap('check_input')


@register_notrace_function
def simam_denominator(x: torch.Tensor) -> int:
    """HW - 1, at least 1 (a leaf for torch.fx: max() of traced sizes cannot be traced)."""
    return max(x.shape[2] * x.shape[3] - 1, 1)


torch.fx.wrap('simam_denominator')

__all__ = ['SimAM']


@register_notrace_module  # timm's fx runs its eager path, bit for bit (why: tests/test_timm_fx_leaves.py)
class SimAM(FusedDispatch, nn.Module):
    def __init__(self, channels: int, e_lambda: float = 1e-4, impl: str = 'fused', act_layer=None, device=None,
                 dtype=None):
        super().__init__()
        # channels only for the common signature and the input check; no parameters
        self.channels = int(channels)
        self.e_lambda = float(e_lambda)
        self.impl = check_impl(impl, 'SimAM')

    def extra_repr(self) -> str:
        return f'{self.channels}, e_lambda={self.e_lambda}, impl={self.impl!r}'

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The element-wise gate sigmoid(d / (4 (v + lambda)) + 0.5), (B, C, H, W)."""
        if torch.jit.is_tracing():
            return self._gate_traced(x)
        return simam_gate(x, self.e_lambda, simam_denominator(x))

    @torch.jit.unused
    def _gate_traced(self, x: torch.Tensor) -> torch.Tensor:
        """`gate` for torch.jit.trace (the TorchScript-based ONNX exporter, OpenVINO's converter): max(HW - 1, 1) as
        ops on the map's size, so that a graph with a dynamic H and W computes it at each size (Python's max()
        records the traced size's branch: 0 / 0 = NaN on a 1x1 map). In float32 (HW - 1 exact, as the int's
        division computes it), v back in x's dtype."""
        n = torch.ones_like(x[:1, :1], dtype=torch.float32).sum((2, 3), keepdim=True).sub(1).clamp_min(1)
        return simam_gate(x, self.e_lambda, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'SimAM')
        return self._forward_impl(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        if (not torch.jit.is_scripting() and exporting_onnx() and fixed_map_size(x)
                and x.shape[2] * x.shape[3] > 1):  # (on a 1x1 map instance_norm refuses to run; the gate: sigmoid(0.5))
            return x * self._gate_onnx(x)
        return x * self.gate(x)

    @torch.jit.unused
    def _gate_onnx(self, x: torch.Tensor) -> torch.Tensor:
        """`gate` in fewer passes over the map for ONNX Runtime (docs/bench/onnxruntime.md): with n = HW - 1,
        d / (4 (v + lambda)) = y^2 where y = sqrt(n / 4HW) (x - mean) / sqrt(d.sum / HW + lambda n / HW) is
        one InstanceNormalization (mean, variance and the normalisation in one op). The + 0.5 is the bias of a
        depthwise 1x1 Conv of weight 1, which ONNX Runtime runs in its NCHWc layout with the Sigmoid fused (the Mul by
        x then runs there too). HW is baked in: used only where the export fixes H and W (`fixed_map_size`)."""
        hw = x.shape[2] * x.shape[3]
        n = hw - 1
        c = self.channels
        scale = x.new_full((c,), math.sqrt(n / (4.0 * hw)))
        y = F.instance_norm(x, weight=scale, eps=self.e_lambda * n / hw)
        return torch.sigmoid(F.conv2d(y * y, x.new_ones(c, 1, 1, 1), x.new_full((c,), 0.5), groups=c))

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if autocast_on(x):  # module docstring
            return self._forward_reference(x)
        return simam_fused(x, self.e_lambda)

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'spatial': the per-position energy gate averaged over channels, (B, 1, H, W)}."""
        check_input(x, self.channels, 'SimAM')
        return {'spatial': self.gate(x).mean(1, keepdim=True)}
