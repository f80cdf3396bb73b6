"""Fused eager implementations of the zero- and low-parameter attention modules: ZAM (every pooling, with and
without skip), SimAM, SPEM's channel gate and NAM's channel attention.

Each function computes the same numbers as the module's plain formula (``impl='reference'``; up to float rounding
where it sums in another order, e.g. image chunk by image chunk) with fewer passes over
the feature map and fewer full-size temporaries; with autograd recording it runs a custom autograd.Function whose
backward saves the input and small statistics only and rebuilds the rest; without, an in-place forward.

The modules (``impl='fused'``, their default) call these functions in eager mode only (`FusedDispatch`); wherever
ops are recorded -- TorchScript, torch.jit.trace and both ONNX exporters, torch.fx, torch.export, functorch
transforms, torch.compile -- they run their plain formula, and the functions themselves refuse to run there
(`require_eager`): their in-place work through views of a fresh buffer is not what a recorded graph replays. Under
torch.compile inductor fuses the formula into a few loops itself, and its partitioner chooses what to save for
backward (it can recompute the attention input from the preceding BatchNorm), which a hand-written
autograd.Function would hide from it. In eager mode on CUDA, ZAM runs as Triton kernels when Triton is installed
(`triton_zam`; the eager PyTorch path stays the fallback).
"""
from ._common import IMPLS, check_impl, runs_eagerly
from .channel_gate import channel_gate_fused
from .dispatch import FusedDispatch
from .nam import nam_fused, supports_fused_nam
from .simam import simam_fused
from .zam import zam_fused

__all__ = ['IMPLS', 'check_impl', 'runs_eagerly', 'FusedDispatch', 'zam_fused', 'simam_fused', 'channel_gate_fused',
           'nam_fused', 'supports_fused_nam']
