"""ZAM in the fewest passes over the feature map that eager PyTorch allows.

Forward (F, the input, (B, C, H, W); P = H*W):
    s1 = pool_hw(F)                 2 reads (mean, max), or 1
    F' = apply(F, sigmoid(s1))      1 read + 1 write (the only full-size temporary)
    s2 = pool_c(F')                 2 reads, or 1
    F'' = apply(F', sigmoid(s2))    in place of F'
with apply(F, M) = F * M, or F + F * M for ZAM+R (skip=True), the seed's spelling and rounding (`apply_gate`): a
multiplication, then an addition (two passes; in place, F * M takes a buffer of a batch chunk). F * (1 + M) would
take one pass and differ in the last bit, which a zoo model in train mode carries to ~2e-5 in its logits against
the seed's own MobileNet (more than torch.testing.assert_close allows); and no single torch op has the seed's two
roundings: addcmul and add with alpha round once (fused multiply-add) on AVX2 and AVX-512 CPUs. The reference
(ZAM.forward with impl='reference') allocates F'' too.

Backward (autograd.Function): saves F and the small statistics only -- Mc (B, C), Ms (B, P) and the int64
positions of the maxima -- and rebuilds every other term from them without recomputing F':
    t      = dL/dF'' * F                                       1 temporary
    dL/dMs = sum_c t * g1          (batched matmul)            1 read
    dL/dF' = dL/dF'' * g2 + dL/ds2 routed through pool_c        written into dL/dF
    dL/dMc = sum_p t * g2 + sum_p F * dL/ds2 / C + max term    (batched matmuls) 2 reads
    dL/dF  = dL/dF' * g1 + dL/ds1 routed through pool_hw       in place
with g1, g2 the slopes of apply: Mc and Ms, or 1 + Mc and 1 + Ms for ZAM+R.
The max terms are scatters of B*C or B*P values into the positions saved by the forward. Inference on a
single-threaded CPU runs chunk by chunk of the batch, so that the passes over a chunk hit the cache
(`batch_chunks`); for training that measured no faster, and the autograd path works on the whole batch. Inference
keeps no statistics and spends as few ops as it can (`_zam_infer_into`: at batch 1 on small maps each op's call
costs about what its kernel does): each gate is made in place of its statistic, and a module built with
``inplace=True`` (the zoo's blocks build it so) writes F'' into F itself, which saves the fresh output's first
touch of memory (mobilenet_zam against mobilenet_plain at 2 threads, with the fewer ops of `mean_plus`: 1.31x ->
1.16x at batch 64, 1.41x -> 1.36x at batch 1; docs/bench/cpu_threads.md). (Measured with the mean of
'avgmax' also folded into the add as sum * 1 / n, a fold since undone because it is not bit-equal to the plain
formula: the 13 modules of mobilenet_zam alone at batch 1, one thread, thread time, two runs each of the code
before and after: 970 / 1044 us -> 791 / 812 us.) The maxima without positions are `amax` (torch's kernel is slow
on 4 x 4 maps).

Max gradients: each max sends its whole gradient to the first maximal element, the element torch.max(x, dim)
returns -- the semantics of the seed's own code (nn.AdaptiveMaxPool2d and torch.max(x, dim=1)) and of the
reference implementation. torch.amax would split it evenly between tied elements; both agree when the maximum is
unique.
"""
from typing import Optional, Tuple

import torch

from ._common import (amax, batch_chunks, empty_like_dense, formula_backward, hw_stat, in_batch_chunks, mean_plus,
                      needs_autograd, require_eager)

__all__ = ['zam_fused', 'zam_eager', 'apply_gate', 'POOL_STATS']

POOL_STATS = {'avgmax': ('mean', 'max'), 'avg': ('mean',), 'max': ('max',)}


def _pooled(x3: torch.Tensor, dim: int, pool: str, with_index: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """mean + max (or mean, or max) of x3 over dim; the max's positions when asked."""
    total, index = None, None
    for stat in POOL_STATS[pool]:
        value, where = hw_stat(x3, stat, dim, with_index)
        total = value if total is None else total + value
        index = where if where is not None else index
    return total, index


def _slope(m: torch.Tensor, skip: bool) -> torch.Tensor:
    """d `apply_gate` / dx: m, or 1 + m for ZAM+R."""
    return m + 1.0 if skip else m


def _zam_forward(x: torch.Tensor, pool: str, skip: bool, with_index: bool):
    """(F'', Mc (B, C), Ms (B, P), max positions over H*W, over C -- None without `with_index`)."""
    # y is returned itself, never a view of it: autograd forbids in-place ops (e.g. a following
    # ReLU(inplace=True)) on views created inside a custom Function
    y = empty_like_dense(x)
    return (y,) + _zam_forward_chunk(x, y, pool, skip, with_index)


def _zam_forward_chunk(x: torch.Tensor, y: torch.Tensor, pool: str, skip: bool, with_index: bool):
    """Writes F'' of x into y; returns Mc, Ms and the max positions (None without `with_index`)."""
    b, c, h, w = x.shape
    s1, i1 = _pooled(x.flatten(2), 2, pool, with_index)  # flatten: a view for contiguous and channels_last
    mc = torch.sigmoid(s1)
    _apply_into(x, mc.view(b, c, 1, 1), skip, y)  # F'
    s2, i2 = _pooled(y.flatten(2), 1, pool, with_index)
    ms = torch.sigmoid(s2)
    _apply_into(y, ms.view(b, 1, h, w), skip, y)  # F''
    return mc, ms, i1, i2


def _zam_formula(x: torch.Tensor, pool: str, skip: bool) -> torch.Tensor:
    """The plain formula (``ZAM(impl='reference')``), differentiated where autograd records the backward
    (`formula_backward`)."""
    b, c, h, w = x.shape
    y = apply_gate(x, torch.sigmoid(_pooled(x.flatten(2), 2, pool, True)[0]).view(b, c, 1, 1), skip)
    return apply_gate(y, torch.sigmoid(_pooled(y.flatten(2), 1, pool, True)[0]).view(b, 1, h, w), skip)


def apply_gate(x: torch.Tensor, m: torch.Tensor, skip: bool) -> torch.Tensor:
    """x * m, or x + x * m for ZAM+R: the seed's spelling, to the last bit (x * (1 + m) rounds 1 + m first)."""
    return x + x * m if skip else x * m


def _apply_into(x: torch.Tensor, m: torch.Tensor, skip: bool, out: torch.Tensor) -> None:
    """`apply_gate` written into `out`: x itself, or a tensor not overlapping it."""
    if not skip:
        torch.mul(x, m, out=out)
    elif out.data_ptr() != x.data_ptr():
        torch.mul(x, m, out=out).add_(x)  # x * m + x, the same sum
    else:  # in place: x * m takes a buffer of its own, a batch chunk at a time (no whole-batch buffer to page in)
        for s in batch_chunks(x, several_threads=True):
            xs = x[s]
            xs.add_(xs * m[s])


def _zam_infer_into(x: torch.Tensor, y: torch.Tensor, pool: str, skip: bool) -> None:
    """F'' of x written into y, keeping no statistics (inference), in the fewest ops: each gate is made in place of
    its fresh statistic (`_pool_stat`)."""
    b, c, h, w = x.shape
    _apply_into(x, _pool_stat(x.flatten(2), 2, pool).sigmoid_().view(b, c, 1, 1), skip, y)  # F'
    _apply_into(y, _pool_stat(y.view(b, c, h * w), 1, pool).sigmoid_().view(b, 1, h, w), skip, y)  # F'' (y dense)


def _pool_stat(x3: torch.Tensor, dim: int, pool: str) -> torch.Tensor:
    """`_pooled` without the positions of the max. The mean is divided as torch's mean divides (`mean_plus`): the
    sum times 1 / n would save an op and differ from the plain formula in the last bit."""
    if pool == 'max':
        return amax(x3, dim)
    return mean_plus(x3, dim, amax(x3, dim) if pool == 'avgmax' else None)


def _zam_backward(gy, x, mc, ms, i1, i2, pool: str, skip: bool) -> torch.Tensor:
    """dL/dF from dL/dF'' and the tensors saved by the forward."""
    b, c, h, w = x.shape
    gx = empty_like_dense(x)
    x3, gy3, gf = x.flatten(2), gy.flatten(2), gx.flatten(2)  # gf: dL/dF', then dL/dF in place
    g1, g2 = _slope(mc, skip), _slope(ms, skip)
    with_mean, with_max = 'mean' in POOL_STATS[pool], 'max' in POOL_STATS[pool]

    t = gy3 * x3
    ds2 = torch.bmm(g1.unsqueeze(1), t).squeeze(1) * (ms * (1.0 - ms))  # dL/ds2, (B, P)
    torch.mul(gy3, g2.unsqueeze(1), out=gf)
    gg1 = torch.bmm(t, g2.unsqueeze(2)).squeeze(2)  # dL/dg1 = sum_p dL/dF' * F, term by term
    del t
    if with_mean:
        gf.add_(ds2.unsqueeze(1) / c)
        gg1.add_(torch.bmm(x3, ds2.unsqueeze(2)).squeeze(2), alpha=1.0 / c)
    if with_max:
        gf.scatter_add_(1, i2.unsqueeze(1), ds2.unsqueeze(1))
        gg1.scatter_add_(1, i2, x3.gather(1, i2.unsqueeze(1)).squeeze(1) * ds2)
    ds1 = gg1 * (mc * (1.0 - mc))  # dL/ds1, (B, C)

    gf.mul_(g1.unsqueeze(2))
    if with_mean:
        gf.add_(ds1.unsqueeze(2) / (h * w))
    if with_max:
        gf.scatter_add_(2, i1.unsqueeze(2), ds1.unsqueeze(2))
    return gx


class _ZamFunction(torch.autograd.Function):
    """Saves x, Mc, Ms and the max positions; `forward_fn` / `backward_fn`: the eager PyTorch pair above or the
    Triton kernels of `triton_zam`, which keep the same saved tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pool: str, skip: bool, forward_fn=_zam_forward, backward_fn=_zam_backward):
        y, mc, ms, i1, i2 = forward_fn(x, pool, skip, with_index=True)
        ctx.pool, ctx.skip, ctx.backward_fn = pool, skip, backward_fn
        ctx.save_for_backward(x, mc, ms, i1, i2)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            return formula_backward(lambda x: _zam_formula(x, ctx.pool, ctx.skip), saved[:1], [True], gy) + (None,) * 4
        return ctx.backward_fn(gy, *saved, ctx.pool, ctx.skip), None, None, None, None


def zam_fused(x: torch.Tensor, pool: str = 'avgmax', skip: bool = False) -> torch.Tensor:
    """ZAM (ZCA then ZSA) of x (B, C, H, W); `pool` 'avgmax' | 'avg' | 'max', `skip` for ZAM+R.

    With autograd recording, the memory-light autograd.Function; without, the forward alone (no max positions, no
    graph; in batch chunks on a single-threaded CPU). On CUDA with Triton installed both run as the kernels of
    `triton_zam`, else as eager PyTorch ops. Returns a new tensor; x is never modified. Eager mode only."""
    require_eager(x, 'zam_fused')
    return zam_eager(x, pool, skip)


def zam_eager(x: torch.Tensor, pool: str, skip: bool, inplace: bool = False) -> torch.Tensor:
    """`zam_fused` for a caller that has checked `runs_eagerly` itself (`FusedDispatch`); with `inplace` (the caller
    has checked `may_overwrite_input`), inference in eager PyTorch writes F'' into x and returns x."""
    forward_fn, backward_fn = _zam_forward, _zam_backward
    if x.is_cuda:
        from . import triton_zam  # imports Triton only where it can run
        if triton_zam.supports_triton(x):
            forward_fn, backward_fn = triton_zam.zam_forward, triton_zam.zam_backward
    if needs_autograd(x):
        return _ZamFunction.apply(x, pool, skip, forward_fn, backward_fn)
    if forward_fn is _zam_forward:
        return in_batch_chunks(x, lambda xs, ys: _zam_infer_into(xs, ys, pool, skip), out=x if inplace else None)
    return forward_fn(x, pool, skip, with_index=False)[0]
