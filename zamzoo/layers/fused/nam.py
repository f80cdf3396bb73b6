"""NAM's channel attention, ``y = x * sigmoid(w * BN(x))`` with w = |gamma| / sum|gamma| (detached), in place of the
BatchNorm's output: one full-size allocation in inference instead of four (two with autograd), and an
autograd.Function that saves what the formula's autograd saves (x, the batch statistics, the gate) and runs
autograd's ops for it, so its gradients are the reference's bit for bit. (Saving x and the statistics only, and
making BN(x) and the gate again in backward, measured slower than the reference in CPU training:
docs/bench/cpu_training.md.)

Runs the exact `nn.BatchNorm2d` semantics (running statistics, momentum=None, num_batches_tracked, eval mode)
through `torch.native_batch_norm`; other norm layers (e.g. SyncBatchNorm after
`nn.SyncBatchNorm.convert_sync_batchnorm`) are not handled here: `nam_fused` is only used for a plain BatchNorm2d.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._common import formula_backward, needs_autograd, require_eager

__all__ = ['nam_fused', 'supports_fused_nam']


def supports_fused_nam(bn: nn.Module) -> bool:
    return type(bn) is nn.BatchNorm2d and bn.affine


def _batch_norm_args(bn: nn.BatchNorm2d) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], bool, float]:
    """(running_mean, running_var, use batch statistics, momentum) as nn.BatchNorm2d.forward passes them to
    F.batch_norm, with its num_batches_tracked update."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return (bn.running_mean if track else None), (bn.running_var if track else None), batch_stats, factor


def _attention_weight(weight: torch.Tensor) -> torch.Tensor:
    g = weight.detach().abs()
    return (g / g.sum()).view(1, -1, 1, 1)


def _nam_gate(x, weight, bias, running_mean, running_var, batch_stats: bool, momentum: float, eps: float):
    """(sigmoid(w * BN(x)) written over BN(x), the batch mean, the batch 1 / std), BN's running statistics updated."""
    out, save_mean, save_invstd = torch.native_batch_norm(
        x, weight, bias, running_mean, running_var, batch_stats, momentum, eps)
    return out.mul_(_attention_weight(weight)).sigmoid_(), save_mean, save_invstd


class _NamFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, batch_stats: bool, momentum: float, eps: float):
        gate, save_mean, save_invstd = _nam_gate(x, weight, bias, running_mean, running_var, batch_stats, momentum, eps)
        ctx.batch_stats, ctx.eps = batch_stats, eps
        if batch_stats:  # the running statistics are not used by backward (and may change before it runs)
            running_mean = running_var = None
        ctx.save_for_backward(x, weight, bias, running_mean, running_var, save_mean, save_invstd, gate)
        return gate * x

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, weight, bias, running_mean, running_var, save_mean, save_invstd, s = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: no running statistics updated by the formula
            grads = formula_backward(
                lambda *t: t[0] * torch.sigmoid(F.batch_norm(t[0], running_mean, running_var, t[1], t[2],
                                                             ctx.batch_stats, 0.0, ctx.eps) * _attention_weight(t[1])),
                [x, weight, bias], ctx.needs_input_grad[:3], gy)
            return grads + (None,) * 5
        # autograd's ops for the formula sigmoid(BN(x) * w) * x, bit for bit its numbers: the product's, sigmoid's
        # and BatchNorm's backward
        gx = gy * s
        gbn = torch.ops.aten.sigmoid_backward(gy * x, s).mul_(_attention_weight(weight))  # dL/dBN(x)
        gx_bn, gweight, gbias = torch.ops.aten.native_batch_norm_backward(
            gbn, x, weight, running_mean, running_var, save_mean, save_invstd, ctx.batch_stats, ctx.eps,
            [True, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return gx.add_(gx_bn), gweight, gbias, None, None, None, None, None


def nam_fused(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``x * sigmoid(w * bn(x))`` for a plain affine nn.BatchNorm2d `bn` (see `supports_fused_nam`), updating its
    running statistics exactly as ``bn(x)`` does. Eager mode only."""
    require_eager(x, 'nam_fused')
    args = _batch_norm_args(bn) + (bn.eps,)
    if args[2]:  # batch statistics: F.batch_norm's check (one value per channel has no variance)
        F._verify_batch_size(x.size())
    if needs_autograd(x, bn.weight, bn.bias):
        return _NamFunction.apply(x, bn.weight, bn.bias, *args)
    return _nam_gate(x, bn.weight, bn.bias, *args)[0].mul_(x)
