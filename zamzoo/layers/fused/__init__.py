"""Fused eager implementations of the zero- and low-parameter attention modules: ZAM (every pooling, with and
without skip), SimAM, SPEM's channel gate and NAM's channel attention.

Each function computes the same numbers as the module's plain formula (``impl='reference'``) with fewer passes over
the feature map and fewer full-size temporaries: on CPU bit for bit, outputs and gradients alike (except where
inference works through the batch in chunks, `batch_chunks`: torch's own reductions over a chunk may round unlike
over the whole batch, as the formula run image by image does, ~1e-7). With autograd
recording it runs a custom autograd.Function that saves the input and small statistics only, and whose backward
rebuilds the rest and runs the ops autograd runs for the formula, in autograd's order (a backward summed in another
order drifts from the seeds' code in a deep model: 4e-4 in resnet50_zamr's input gradient); without, an in-place
forward. (On CUDA the Triton kernels of `triton_zam` sum in their own order: within 2e-5 of the formula.)

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
