"""SimAM, ``y = x * sigmoid((x - mu)^2 / (4 (v + lambda)) + 0.5)`` with mu, v the per-channel mean and variance
(divisor max(HW - 1, 1)), computed in its output buffer in place step by step (inference in batch chunks on a
single-threaded CPU, `batch_chunks`), bit for bit the official code's numbers, and an autograd.Function saving x and
the per-channel mu and 4 (v + lambda) only.

Backward: autograd's ops for the official formula in autograd's order, from x and the saved statistics (the
gradients of the reference bit for bit; a hand-derived form in fewer passes, used until 2026-12-05, was ~1e-7 off).
"""
import torch

from ._common import empty_like_dense, formula_backward, in_batch_chunks, needs_autograd, require_eager

__all__ = ['simam_fused', 'simam_gate']


def simam_gate(x: torch.Tensor, e_lambda: float, n: int) -> torch.Tensor:
    """The plain formula's gate sigmoid((x - mu)^2 / (4 (v + lambda)) + 0.5), v the variance with divisor n (an int;
    a float32 tensor where a trace records it: `SimAM._gate_traced`)."""
    d = (x - x.mean((2, 3), keepdim=True)).pow(2)
    v = (d.sum((2, 3), keepdim=True) / n).to(d.dtype)
    return torch.sigmoid(d / (4.0 * (v + e_lambda)) + 0.5)


def _simam_forward(x: torch.Tensor, e_lambda: float):
    """(y, mu, q) with mu, q = 4 (v + lambda) (B, C, 1, 1)."""
    y = empty_like_dense(x)  # returned itself, not a view (see zam._zam_forward)
    return (y,) + _simam_forward_chunk(x, y, e_lambda)


def _simam_forward_chunk(x: torch.Tensor, y: torch.Tensor, e_lambda: float):
    h, w = x.shape[2:]
    mu = x.mean((2, 3), keepdim=True)
    d = torch.sub(x, mu, out=y).square_()
    q = 4.0 * (d.sum((2, 3), keepdim=True) / max(h * w - 1, 1) + e_lambda)
    # divided by q as the official code divides: a product by 1 / q differs in the last bit, which 54 blocks of
    # resnet164_simam in train mode carried to ~9e-5 in the logits
    d.div_(q).add_(0.5).sigmoid_().mul_(x)
    return mu, q


class _SimAMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, e_lambda: float) -> torch.Tensor:
        y, mu, q = _simam_forward(x, e_lambda)
        ctx.e_lambda = e_lambda
        ctx.save_for_backward(x, mu, q)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, mu, q = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            n = max(x.shape[2] * x.shape[3] - 1, 1)
            return formula_backward(lambda t: t * simam_gate(t, ctx.e_lambda, n), [x], [True], gy) + (None,)
        return _simam_backward(gy, x, mu, q), None


def _simam_backward(gy, x, mu, q) -> torch.Tensor:
    """dL/dx as autograd computes it for the official formula (``x * simam_gate(x)``): its ops, adding the terms
    into each gradient in its engine's order (the later-recorded node first), with d = (x - mu)^2 and the gate made
    again as the forward made them."""
    h, w = x.shape[2:]
    diff = x - mu
    d = diff.square()
    r = d / q
    s = (r + 0.5).sigmoid_()
    gx = gy * s
    ga = torch.ops.aten.sigmoid_backward(gy * x, s)  # dL/d(d / q + 0.5)
    # d / q: dL/dd = ga / q, dL/dq = -ga * ((d / q) / q) summed over the map; then q = 4 (sum(d) / n + lambda)
    gsum = (-ga * r.div_(q)).sum((2, 3), keepdim=True).mul_(4.0).div_(max(h * w - 1, 1))
    gdiff = ga.div_(q).add_(gsum).mul_(diff.mul_(2.0))  # pow's backward: dL/dd * 2 (x - mu)
    gx.add_(gdiff)
    return gx.add_(gdiff.neg_().sum((2, 3), keepdim=True).div_(h * w))  # -dL/ddiff summed, mean's backward


def simam_fused(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """SimAM of x (B, C, H, W); a new tensor, x is never modified. Eager mode only."""
    require_eager(x, 'simam_fused')
    if needs_autograd(x):
        return _SimAMFunction.apply(x, e_lambda)
    return in_batch_chunks(x, lambda xs, ys: _simam_forward_chunk(xs, ys, e_lambda))
