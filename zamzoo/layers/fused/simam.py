"""SimAM, ``y = x * sigmoid((x - mu)^2 / (4 (v + lambda)) + 0.5)`` with mu, v the per-channel mean and variance
(divisor max(HW - 1, 1)), computed in its output buffer in place step by step (inference in batch chunks on a
single-threaded CPU, `batch_chunks`), bit for bit the official code's numbers, and an autograd.Function saving x and
the per-channel mu and 4 (v + lambda) only.

Backward, with t = x - mu, s the gate, k = 1 / (4 (v + lambda)), n = max(HW - 1, 1), P = HW and
gz = dL/dy * x * s * (1 - s) (the gradient of the gate's logit):
    dL/dx = dL/dy * s + t * (2 k gz - 8 k^2 sum_hw(gz t^2) / n) - 2 k sum_hw(gz t) / P
"""
import torch

from ._common import empty_like_dense, formula_backward, in_batch_chunks, needs_autograd, require_eager

__all__ = ['simam_fused', 'simam_gate']


def simam_gate(x: torch.Tensor, e_lambda: float, n: int) -> torch.Tensor:
    """The plain formula's gate sigmoid((x - mu)^2 / (4 (v + lambda)) + 0.5), v the variance with divisor n."""
    d = (x - x.mean((2, 3), keepdim=True)).pow(2)
    v = d.sum((2, 3), keepdim=True) / n
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
    h, w = x.shape[2:]
    gx = empty_like_dense(x)
    t = x - mu
    s = t.square().div_(q).add_(0.5).sigmoid_()
    k = 1.0 / q
    torch.mul(gy, s, out=gx)
    gz = (gy * x).mul_(s)
    gz.mul_(s.neg_().add_(1.0))  # dL/dlogit = dL/dy * x * s * (1 - s); s now holds 1 - s
    gzt = torch.mul(gz, t, out=s)  # s is free again
    a = gzt.sum((2, 3), keepdim=True)
    dsum = gzt.mul_(t).sum((2, 3), keepdim=True)
    gx.add_(gz.mul_(2.0 * k).sub_(dsum * (8.0 * k * k / max(h * w - 1, 1))).mul_(t))
    gx.sub_(a * (2.0 * k / (h * w)))
    return gx


def simam_fused(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """SimAM of x (B, C, H, W); a new tensor, x is never modified. Eager mode only."""
    require_eager(x, 'simam_fused')
    if needs_autograd(x):
        return _SimAMFunction.apply(x, e_lambda)
    return in_batch_chunks(x, lambda xs, ys: _simam_forward_chunk(xs, ys, e_lambda))
