"""The choice between a module's fused eager path and its plain formula, shared by ZAM, SimAM, SPEM and NAM."""
import torch

from ._common import is_dense, runs_eagerly

__all__ = ['FusedDispatch']


class FusedDispatch:
    """Mixin for an attention module with an ``impl`` attribute ('fused' | 'reference'), a TorchScript-compilable
    ``_forward_reference(x)`` (the plain formula) and an eager ``_forward_fused(x)`` computing the same numbers.

    `_forward_impl` runs the fused path only where `runs_eagerly`; every tracer, exporter and compiler (TorchScript,
    torch.jit.trace, both ONNX exporters, torch.fx, torch.compile, torch.export, vmap) records the plain formula.
    timm's fx tracer keeps the modules leaves (`register_notrace_module`): its traced model calls them eagerly.
    An input neither contiguous nor channels_last (a transposed or sliced map) takes the formula too: the fused
    paths' sums would run in another order than the formula's over its strides (1e-7 off, not bit for bit)."""

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == 'fused' and not torch.jit.is_scripting():
            return self._forward_eager(x)
        return self._forward_reference(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if runs_eagerly(x) and is_dense(x):
            return self._forward_fused(x)
        return self._forward_reference(x)
