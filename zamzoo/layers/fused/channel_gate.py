"""``y = x * gate(stats_hw(x), *params)``: a channel gate computed from pooled statistics (SPEM's min and max).

Only the full-size work is hand-written: one read per statistic, one multiply, and in backward one
``sum_hw(dL/dy * x)`` and one multiply. The small gate itself (B, C, 1, 1) stays an ordinary differentiable
function: backward re-runs it on the saved statistics and lets autograd give the gradients of the statistics and of
the parameters. Saved for backward: x, the statistics and the int64 positions of min / max (B, C) -- never a
second full-size tensor. Min / max gradients go to the first extremal element (torch.min / torch.max semantics).
"""
from typing import Callable, List, Sequence

import torch

from ._common import formula_backward, hw_stat, needs_autograd, require_eager

__all__ = ['channel_gate_fused']

GateFn = Callable[..., torch.Tensor]


def _stats(x: torch.Tensor, stats: Sequence[str], with_index: bool):
    b, c = x.shape[:2]
    x3 = x.flatten(2)
    values, indices = [], []
    for stat in stats:
        value, index = hw_stat(x3, stat, 2, with_index)
        values.append(value.view(b, c, 1, 1))
        indices.append(index)
    return values, indices


class _ChannelGateFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gate_fn: GateFn, stats: Sequence[str], *params: torch.Tensor):
        values, indices = _stats(x, stats, with_index=True)
        gate = gate_fn(*values, *params).to(x.dtype)
        ctx.gate_fn, ctx.stats = gate_fn, stats
        ctx.save_for_backward(x, *values, *indices, *params)
        return x * gate

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        saved = ctx.saved_tensors
        n = len(ctx.stats)
        x, values, indices, params = saved[0], saved[1:1 + n], saved[1 + n:1 + 2 * n], saved[1 + 2 * n:]
        if torch.is_grad_enabled():  # create_graph=True
            grads = formula_backward(lambda *t: _gated(t[0], ctx.gate_fn, ctx.stats, t[1:], with_index=True),
                                     (x,) + params, ctx.needs_input_grad[:1] + ctx.needs_input_grad[3:], gy)
            return (grads[0], None, None, *grads[1:])
        b, c, h, w = x.shape
        ggate = (gy * x).sum((2, 3), keepdim=True)
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_(True) for v in values]
            leaves += [p.detach().requires_grad_(p.requires_grad) for p in params]
            gate = ctx.gate_fn(*leaves).to(x.dtype)
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(gate, wanted, ggate, allow_unused=True))
        leaf_grads = [next(grads) if leaf.requires_grad else None for leaf in leaves]
        if not ctx.needs_input_grad[0]:
            return (None, None, None, *leaf_grads[n:])
        gx3 = gy.flatten(2) * gate.detach().flatten(2)
        # in the order autograd adds them to the plain formula's input: the last statistic computed first
        for stat, index, g in reversed(list(zip(ctx.stats, indices, leaf_grads[:n]))):
            if g is None:
                continue
            g = g.view(b, c, 1)
            if stat == 'mean':
                gx3.add_(g / (h * w))
            else:
                gx3.scatter_add_(2, index.unsqueeze(2), g)
        return (gx3.view(b, c, h, w), None, None, *leaf_grads[n:])


def channel_gate_fused(
        x: torch.Tensor,
        stats: Sequence[str],
        gate_fn: GateFn,
        params: List[torch.Tensor],
) -> torch.Tensor:
    """``x * gate_fn(*stats_hw(x), *params)``; `stats` names 'mean' | 'max' | 'min' (each (B, C, 1, 1) for
    gate_fn), `gate_fn` returns a gate broadcastable to (B, C, 1, 1), applied in x's dtype (the output has x's
    dtype even where the parameters are wider). Eager mode only."""
    require_eager(x, 'channel_gate_fused')
    if needs_autograd(x, *params):
        return _ChannelGateFunction.apply(x, gate_fn, tuple(stats), *params)
    return _gated(x, gate_fn, stats, params, with_index=False)


def _gated(x: torch.Tensor, gate_fn: GateFn, stats: Sequence[str], params: Sequence[torch.Tensor],
           with_index: bool) -> torch.Tensor:
    """The plain formula ``x * gate_fn(*stats_hw(x), *params)``: min / max by torch.min / torch.max `with_index`
    (their gradient semantics, where autograd differentiates it), by amin / amax without."""
    values, _ = _stats(x, stats, with_index)
    return x * gate_fn(*values, *params).to(x.dtype)
