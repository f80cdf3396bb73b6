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
positions of the maxima -- makes F' again from F and Mc (one pass), and runs the ops autograd runs for the plain
formula (`zam_formula`, the ``impl='reference'`` path), in autograd's order: the same gradients bit for bit, so a
zoo model trains as the seed's own code does. (A hand-derived backward in fewer passes, used until 2026-12-05, summed
in another order: each module's input gradient was ~1e-7 off relative, and resnet50_zamr's input gradient 4e-4 off
the seed's ResNetZAM50 in train mode, more than torch.testing.assert_close allows.) Per gate, with G the gate's
input and g = dL/d(its output):
    dL/dm  = sigmoid_backward(sum over the pooled dims of g * G, m)
    dL/dG  = g * m (g + g * m for ZAM+R), + dL/dm at the maxima's positions, + dL/dm / n (the mean)
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
from typing import List, Optional, Tuple

import torch

from ._common import (amax, batch_chunks, empty_like_dense, exporting_onnx, formula_backward, hw_stat,
                      in_batch_chunks, max_values, mean_plus, needs_autograd, require_eager)

__all__ = ['zam_fused', 'zam_eager', 'zam_formula', 'zam_pool', 'apply_gate', 'POOL_STATS']

POOL_STATS = {'avgmax': ('mean', 'max'), 'avg': ('mean',), 'max': ('max',)}


def _pooled(x3: torch.Tensor, dim: int, pool: str, with_index: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """mean + max (or mean, or max) of x3 over dim; the max's positions when asked."""
    total, index = None, None
    for stat in POOL_STATS[pool]:
        value, where = hw_stat(x3, stat, dim, with_index)
        total = value if total is None else total + value
        index = where if where is not None else index
    return total, index


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


def _mean(x: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """x.mean(dims, keepdim=True); in an ONNX export the mean over channels is a MatMul with a row of 1/C: ONNX
    Runtime's ReduceMean over axis 1 is a strided loop, 20x slower than that MatMul at batch 1."""
    if dims == [1] and not torch.jit.is_scripting() and exporting_onnx():
        b, c, h, w = x.shape
        # bmm of an expanded row: matmul's broadcast of a (1, C) row would fix a batch-1 example's batch at 1
        return torch.bmm(x.new_full((1, 1, c), 1.0 / c).expand(b, 1, c), x.flatten(2)).view(b, 1, h, w)
    return x.mean(dims, keepdim=True)


def zam_pool(x: torch.Tensor, dims: List[int], pool: str) -> torch.Tensor:
    """mean + max ('avgmax'), mean ('avg') or max ('max') over `dims` ([2, 3] or [1] of a map, [2] of the
    (B, H * W, C) copy of the channels-last ONNX spelling), keepdim."""
    if pool == 'avg':
        return _mean(x, dims)
    if pool == 'max':
        return max_values(x, dims)
    return _mean(x, dims) + max_values(x, dims)


def zam_formula(x: torch.Tensor, pool: str, skip: bool) -> torch.Tensor:
    """ZAM's plain formula, the seed's ops (``ZAM(impl='reference')``; what autograd differentiates where it records
    the backward, `formula_backward`)."""
    x = apply_gate(x, torch.sigmoid(zam_pool(x, [2, 3], pool)), skip)
    return apply_gate(x, torch.sigmoid(zam_pool(x, [1], pool)), skip)


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
    """dL/dF from dL/dF'' and the tensors saved by the forward, as autograd computes it for `zam_formula`."""
    b, c, h, w = x.shape
    mc, ms = mc.view(b, c, 1, 1), ms.view(b, 1, h, w)
    gf = _gate_backward(gy, apply_gate(x, mc, skip), ms, 1, i2.unsqueeze(1) if i2 is not None else None, pool, skip)
    return _gate_backward(gf, x, mc, 2, i1.unsqueeze(2) if i1 is not None else None, pool, skip)


def _gate_backward(g: torch.Tensor, inp: torch.Tensor, m: torch.Tensor, dim: int, index: Optional[torch.Tensor],
                   pool: str, skip: bool) -> torch.Tensor:
    """dL/d inp of ``apply_gate(inp, m)``, m = sigmoid(zam_pool(inp)) over ``inp.flatten(2)``'s `dim` (2: H * W, m
    (B, C, 1, 1); 1: C, m (B, 1, H, W)), given g = dL/d output: autograd's ops for the formula, adding the terms into
    the input's gradient in its engine's order (the later-recorded node first: the product's, the max's, the
    mean's). `index`: the positions of the max in ``inp.flatten(2)``, (B, C, 1) or (B, 1, H * W)."""
    dims = [2, 3] if dim == 2 else [1]
    # mul's backward sums g * inp to m's shape
    gm = torch.ops.aten.sigmoid_backward((g * inp).sum(dims, keepdim=True), m)
    gi = g + g * m if skip else g * m
    if index is not None:  # torch.max's backward: the gradient to the first maximal element
        flat = gi.flatten(2)
        flat.scatter_add_(dim, index, gm.flatten(2))
        if flat.data_ptr() != gi.data_ptr():  # a copy: gi's H and W do not merge (a g transposed downstream)
            gi.copy_(flat.unflatten(2, inp.shape[2:]))
    if 'mean' in POOL_STATS[pool]:
        gi.add_(gm / inp.flatten(2).shape[dim])  # mean's backward divides by the count
    return gi


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
            return formula_backward(lambda x: zam_formula(x, ctx.pool, ctx.skip), saved[:1], [True], gy) + (None,) * 4
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
