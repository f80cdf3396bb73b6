"""Fused eager implementations of the zero- and low-parameter attention modules: ZAM (every pooling, with and
without skip), SimAM, SPEM's channel gate and NAM's channel attention.

Each function computes the same numbers as the module's plain formula (``impl='reference'``) with fewer passes over
the feature map and fewer full-size temporaries; with autograd recording it runs a custom autograd.Function whose
backward saves the input and small statistics only and rebuilds the rest; without, an in-place forward.

The modules (``impl='fused'``, their default) call these functions in eager mode and under torch.fx (as leaf calls),
and run their plain formula under TorchScript (a ``@torch.jit.unused`` method holds the eager path) and under
torch.compile: inductor fuses the formula into a few loops itself, and its partitioner chooses what to save for
backward (it can recompute the attention input from the preceding BatchNorm), which a hand-written
autograd.Function would hide from it. In eager mode on CUDA, ZAM runs as Triton kernels when Triton is installed
(`triton_zam`; the eager PyTorch path stays the fallback).
"""
from ._common import IMPLS, check_impl
from .channel_gate import channel_gate_fused
from .nam import nam_fused, supports_fused_nam
from .simam import simam_fused
from .zam import zam_fused

__all__ = ['IMPLS', 'check_impl', 'zam_fused', 'simam_fused', 'channel_gate_fused', 'nam_fused',
           'supports_fused_nam']
