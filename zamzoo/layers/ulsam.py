"""ULSAM: Ultra-Lightweight Subspace Attention Module (Nandan91/ULSAM, WACV 2020, arXiv:2006.15102).

The C channels are split into g groups of G = C/g (``torch.chunk`` order). Per group F_n:
DW conv1x1 (bias) -> BN(G) -> ReLU -> MaxPool 3x3/1/1 -> PW conv1x1 G->1 (bias) -> BN(1) -> ReLU
-> softmax over the H*W positions -> A_n (1xHxW, sums to 1) -> ``F_n * A_n + F_n``.

Where the BNs normalise with batch statistics (train mode) the g branches run one by one, as the seed runs them, on
slices of the module's parameters and running statistics (`_seed_maps`: the seed's module's bits). torch.fx cannot
record that loop (the slices of the running statistics would be constants of its graph, the count of batches a
number), so `torch.fx.symbolic_trace` refuses ULSAM there (timm's fx keeps it a leaf, which runs it). Under TorchScript,
with hooks on the submodules or norm layers other than BatchNorm2d, and in inference, they run at once: the
depthwise conv and its BN are per channel anyway, the g pointwise convs G->1 are one grouped conv C->g (groups=g), and
the g BN(1) are one BN(g) (per-channel statistics, identical). Parameters 5C + 3g, as the original. Its ReLUs stay
ReLUs: `act_layer` (which timm's se_layer hook passes) is accepted and ignored, since the folded inference path
computes ReLU itself. Differences from the original file, on purpose: BatchNorm uses PyTorch defaults (the original
passes momentum=0.9, i.e. running stats follow the last batch) and nothing changes the global default tensor type.

Inference (both BatchNorms in eval mode) computes the same function in fewer, cheaper passes (profiled on CPU,
one thread, mobilenet_ulsam at batch 64: the max-pool took 53% of the time, the 1x1 depthwise conv most of the
rest of the module's share), with the convs folded into the BNs (`_inference_args`, 4 small ops):
- DW conv1x1 + BN is one ``F.batch_norm`` of the input (one vectorized pass; ``addcmul`` with two per-channel
  operands runs element by element, 2.5x slower);
- the 3x3 max-pool stays the original's MaxPool2d (its gradient goes to one of tied maxima; a separable max of
  shifted maps would split it);
- PW conv + BN(g) is one matmul (the g convs G->1) and one ``F.batch_norm``; F_n * A_n + F_n one ``addcmul``.
It is plain tensor ops, so tracers and TorchScript record it as it runs, and autograd (eval mode, grad on)
differentiates it: the numbers of the eager path below, bit for bit (it takes the same ops, but the pool's, whose
maxima are exact, on the same strides). An ONNX export takes a spelling of its own that ONNX Runtime runs in its
NCHWc layout (`_refine_onnx`, with the BNs folded into the convs from the same arguments: `_folded`). Of the
submodules it calls the pool only; where a forward or backward hook watches them (thop, FlopCounterMode, feature
hooks, pruning) they all run as written (`submodules_watched`).

Eager inference with no autograd (`_refine_in_chunks`), at any number of CPU threads, runs the same function chunk
by chunk of the batch (every statistic is per image; `batch_chunks`: the passes hit the cache and the temporaries
reuse memory instead of taking fresh pages, ~27 ms per 33 MB buffer on the 2-core VM it was measured on), with the
pool as maxima of the flat map shifted by one element, then by one row, the pairs that cross a map border set to 0
(the input is a ReLU's output) and the map's first and last element fixed by one small copy a pass
(`_max_pool3x3_flat`: no padded copy, no strided slices, and no buffer but the DW conv's output and the module's own
output). Measured per 13 modules of mobilenet_ulsam (interleaved, CPU time, one thread, busy machine): batch 64
150.6 -> 113.3 ms, batch 1 3.65 -> 2.87 ms. At batch 1 most of what is left is the cost of calling ~54 small ops per
module (the parameters are read once a call, `_inference_args`). With ``inplace=True`` (timm's convention for
activations; the zoo's blocks build it so) that path writes the output into the input, and a chunk-sized scratch
buffer stands in for the output during the pool: no whole-batch buffer at all (mobilenet_ulsam against
mobilenet_plain at batch 64, 2 threads: 1.44x -> 1.27x; docs/bench/cpu_threads.md).
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from timm.layers import register_notrace_module

from ._checks import check_input
from ._maps import keeps_running_stats
from .fused._common import (autocast_on, exporting_onnx, in_batch_chunks, may_overwrite_input, needs_autograd,
                            runs_eagerly, submodules_watched)

torch.fx.wrap('check_input')

__all__ = ['ULSAM']

InferenceArgs = Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                      Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor, float, float]
"""`ULSAM._inference_args`: F.batch_norm's running mean, running var, weight and bias for DW conv + BN, the PW weight,
the same four for BN(g), the two eps."""

FX_IN_TRAIN_MODE = (
    "torch.fx cannot record ULSAM with its BatchNorms in train mode: there it runs the seed's loop over its subspaces, "
    "on slices of its running statistics, which a traced graph would hold as constants. Trace the model in eval mode "
    "(model.eval()), or through timm's fx (timm.models.create_feature_extractor, features_only=True), which calls "
    "ULSAM as a leaf module")

NCHWC_BLOCK = 16
"""ONNX Runtime's NCHWc channel block (16 with AVX-512, 8 with AVX2): a Conv runs in NCHWc only when its output
channels are a multiple of it."""


@register_notrace_module  # timm's fx runs its eager path, bit for bit (why: tests/test_timm_fx_leaves.py)
class ULSAM(nn.Module):
    def __init__(self, channels: int, groups: int = 4, inplace: bool = False, act_layer=None, device=None,
                 dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        channels, groups = int(channels), int(groups)
        if groups < 1 or channels % groups != 0:
            raise ValueError(f'ULSAM: channels ({channels}) must be divisible by groups ({groups})')
        self.channels = channels
        self.groups = groups
        self.inplace = bool(inplace)  # may overwrite its input (see the module docstring)
        self.dw = nn.Conv2d(channels, channels, 1, groups=channels, bias=True, **dd)
        self.bn_dw = nn.BatchNorm2d(channels, **dd)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pw = nn.Conv2d(channels, groups, 1, groups=groups, bias=True, **dd)
        self.bn_pw = nn.BatchNorm2d(groups, **dd)

    def extra_repr(self) -> str:
        return f'{self.channels}, groups={self.groups}' + (', inplace=True' if self.inplace else '')

    def subspace_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The g attention maps, (B, g, H, W); each sums to 1 over H x W."""
        return self._maps(x, self._inference_args())

    def _maps(self, x: torch.Tensor, args: Optional[InferenceArgs]) -> torch.Tensor:
        """ReLU(BN(PW(MaxPool(ReLU(BN(DW(x))))))) -> softmax over H x W, with the submodules or, folded, `args`."""
        b, c, h, w = x.shape
        g = self.groups
        if args is not None:  # `_refine_eager_into`'s ops but its pool (both exact): the same numbers, bit for bit
            return _folded_pw(self.pool(_folded_dw(x, args)), args).view(b, g, h, w)
        if not torch.jit.is_scripting() and self._as_the_seed(x):
            return self._seed_maps(x)
        a = F.relu(self.bn_dw(self.dw(x)))
        a = F.relu(self.bn_pw(self.pw(self.pool(a)))).reshape(b, g, h * w)
        return torch.softmax(a, dim=-1).reshape(b, g, h, w)

    @torch.jit.unused
    def _as_the_seed(self, x: torch.Tensor) -> bool:
        """Whether `_seed_maps` may stand in for the submodules: plain BatchNorm2d (not e.g. SyncBatchNorm after
        convert_sync_batchnorm) and no hook watching them. torch.fx cannot record it (module docstring): refused."""
        plain = type(self.bn_dw) is nn.BatchNorm2d and type(self.bn_pw) is nn.BatchNorm2d
        seed = plain and self.dw.bias is not None and self.pw.bias is not None and not self._submodules_watched()
        if seed and isinstance(x, torch.fx.Proxy):
            raise torch.fx.proxy.TraceError(FX_IN_TRAIN_MODE)
        return seed

    @torch.jit.unused
    def _seed_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps as the seed computes them, subspace by subspace: on each torch.chunk of x its own DW conv, BN, ReLU,
        pool, PW conv G -> 1, BN, ReLU and softmax, with that chunk's slice of the parameters and running statistics.
        The same function as the submodules, which run all g subspaces at once, but not the same last bits: PyTorch
        hands a conv to oneDNN or to its own kernel, and oneDNN picks its kernel, by shape, batch size and thread
        count; and a conv's bias gradient sums a strided slice of a whole-map gradient where the seed's sums a map of
        its own. At two threads, in train mode, the submodules put the output 4.8e-7 and the DW weights' gradient
        6.9e-5 (of values ~1) off the seed's module. Costs a training step of `mobilenet_ulsam` 2.67x -> 2.88x the
        plain backbone (docs/bench/cpu_training.md)."""
        b, _, h, w = x.shape
        g = self.groups
        dw_weight, dw_bias, pw_weight, pw_bias = (t.chunk(g) for t in (self.dw.weight, self.dw.bias, self.pw.weight,
                                                                       self.pw.bias))
        bn_dw, bn_pw = _chunked_batch_norm(self.bn_dw, g), _chunked_batch_norm(self.bn_pw, g)
        maps = []
        for i, f in enumerate(x.chunk(g, 1)):
            a = self.pool(F.relu(bn_dw(F.conv2d(f, dw_weight[i], dw_bias[i], groups=f.shape[1]), i)))
            a = F.relu(bn_pw(F.conv2d(a, pw_weight[i], pw_bias[i]), i))
            maps.append(torch.softmax(a.reshape(b, 1, h * w), dim=-1))
        return torch.cat(maps, 1).reshape(b, g, h, w)

    @torch.jit.unused
    def _dw_pool_onnx(self, x: torch.Tensor, folded: List[torch.Tensor]) -> torch.Tensor:
        """MaxPool(ReLU(folded DW conv + BN)) as a depthwise Conv, which ONNX Runtime runs in its NCHWc layout with its
        ReLU and the MaxPool."""
        c = self.channels
        return self.pool(F.relu(F.conv2d(x, folded[0].view(c, 1, 1, 1), folded[1].view(c), groups=c)))

    @torch.jit.unused
    def _refine_onnx(self, x: torch.Tensor, folded: List[torch.Tensor]) -> torch.Tensor:
        """`_refine` in ops that ONNX Runtime runs in its NCHWc layout (docs/bench/onnxruntime.md) wherever the map is
        full-size, so no reorder to NCHW and back around the module: the grouped PW conv C -> g as a dense Conv
        C -> a multiple of `NCHWC_BLOCK` with block-diagonal weights (zero rows after the g real ones), the softmax on
        the small (B, g, H * W) maps, then 1 + A_n broadcast over each group's channels by a Conv g -> C with 0/1
        weights and bias 1, and one same-shape Mul."""
        b, _, h, w = x.shape
        c, g = self.channels, self.groups  # constants, also where a tracer records the shape (Conv weights)
        rows = -(-g // NCHWC_BLOCK) * NCHWC_BLOCK
        eye = torch.eye(g, dtype=x.dtype, device=x.device)
        weight = (eye.view(g, g, 1) * folded[2]).view(g, c)  # row n: group n's PW weights at its G columns
        weight = F.pad(weight, (0, 0, 0, rows - g)).view(rows, c, 1, 1)
        a = F.relu(F.conv2d(self._dw_pool_onnx(x, folded), weight, F.pad(folded[3].view(g), (0, rows - g))))
        # flattened before the slice: a reshape of the sliced map would fix a batch-1 example's batch at 1
        a = torch.softmax(a.flatten(2)[:, :g], dim=-1).reshape(b, g, h, w)
        expand = eye.repeat_interleave(c // g, dim=0).view(c, g, 1, 1)
        return x * F.conv2d(a, expand, x.new_ones(c))

    @torch.jit.unused
    def _folded(self, args: InferenceArgs) -> List[torch.Tensor]:
        """The ONNX spelling's weights (`_refine_onnx`) from `args`, each BN in eval mode as a per-channel scale
        rsqrt(var + eps) * weight and its shift: [DW scale, DW shift (1, C, 1, 1), PW weight (g, 1, G), PW bias
        (g, 1, 1)]."""
        c, g = self.channels, self.groups
        dw_scale = args[2] * torch.rsqrt(args[1] + args[9])
        pw_scale = torch.rsqrt(args[6] + args[10])
        pw_scale = pw_scale if args[7] is None else pw_scale * args[7]
        return [dw_scale.view(1, c, 1, 1), args[3].view(1, c, 1, 1), args[4] * pw_scale.view(g, 1, 1),
                args[8].view(g, 1, 1)]

    def _foldable(self) -> bool:
        """Whether both BNs normalise with running statistics, no hook watches the submodules and autocast is off
        (under it the submodules' convs run in its dtype, where the folded ops would round elsewhere: 8e-3 off in
        bfloat16)."""
        if not torch.jit.is_scripting() and (self._submodules_watched() or self._under_autocast()):
            return False
        bn_dw, bn_pw = self.bn_dw, self.bn_pw
        return not (bn_dw.training or bn_pw.training or bn_dw.running_var is None or bn_pw.running_var is None)

    @torch.jit.unused
    def _submodules_watched(self) -> bool:  # a method: TorchScript cannot type a module passed to a function
        return submodules_watched(self)

    @torch.jit.unused
    def _under_autocast(self) -> bool:
        weight = self.dw.weight  # a Proxy under torch.fx, which records the folded ops
        return isinstance(weight, torch.Tensor) and autocast_on(weight)

    def _refine(self, x: torch.Tensor, args: Optional[InferenceArgs]) -> torch.Tensor:
        """F_n * A_n + F_n. With the submodules (train mode) as the seed writes it, a product then a sum:
        F_n * (1 + A_n) would round A_n (~1 / HW) away in 1 + A_n in a 16-bit dtype (bfloat16: 1 + 1/1024 is 1), and
        addcmul rounds once (fused multiply-add on AVX2 / AVX-512 CPUs), 2.4e-7 off the seed's module in train mode.
        Folded (`args`: inference), one addcmul, as the eager inference path writes it. In x's dtype, as the inference
        path writes it (under autocast the float32 maps would win)."""
        if args is not None and not torch.jit.is_scripting() and exporting_onnx():
            return self._refine_onnx(x, self._folded(args))
        b, c, h, w = x.shape
        x5 = x.reshape(b, self.groups, c // self.groups, h, w)
        maps = self._maps(x, args).unsqueeze(2)
        refined = x5 * maps + x5 if args is None else torch.addcmul(x5, x5, maps)
        return refined.to(x.dtype).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'ULSAM')
        if torch.jit.is_scripting() or self.training:
            return self._refine(x, self._inference_args())
        return self._refine_in_chunks(x)

    @torch.jit.unused
    def _refine_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """`_refine` through `_refine_eager_into`, image chunk by image chunk (`in_batch_chunks`), where that is safe:
        nothing records the ops (a recorded loop would hold the traced batch size, a recorded write into a view can
        be dropped), no autograd, BNs with running statistics; into x itself where `may_overwrite_input`."""
        args = self._inference_args()
        if args is None or not runs_eagerly(x) or (torch.is_grad_enabled() and needs_autograd(x, *self.parameters())):
            return self._refine(x, args)
        return in_batch_chunks(x, lambda xs, ys: _refine_eager_into(xs, args, ys), several_threads=True,
                               out=x if may_overwrite_input(self, x) else None)

    def _inference_args(self) -> Optional[InferenceArgs]:
        """The BNs with running statistics folded with the convs into `F.batch_norm`'s arguments, for every inference
        path (`_refine_eager_into`, `_maps`, the ONNX spelling's `_folded`): DW conv + BN as one affine map of the
        input (running mean 0, weight: DW weight x BN weight, bias: the BN of the DW bias); the PW weight (g, 1, G);
        BN(g) of the PW conv's output without its bias (running mean 0, bias: BN(g) of the PW bias, so that autograd
        reaches it, which it cannot through a running mean); then the BNs' eps. 4 small ops; each parameter is read
        once (nn.Module.__getattr__: ~0.7 us a read, ~20 reads). None where the submodules run as written
        (`_foldable`). BN(g)'s weight scales both the PW output and its shift here, so where an input is infinite
        its gradient can be NaN where the submodules' is infinite (outputs and the input's gradient agree)."""
        if not self._foldable():
            return None
        c, g = self.channels, self.groups
        dw, bn_dw, pw, bn_pw = self.dw, self.bn_dw, self.pw, self.bn_pw
        dw_weight, gamma = dw.weight.view(c), bn_dw.weight
        zeros = dw_weight.new_zeros(c)
        dw_bias, pw_bias = dw.bias, pw.bias
        eps = (self.bn_dw.eps, self.bn_pw.eps)  # (a BN's constant: TorchScript reads it through self only)
        dw_shift = F.batch_norm((zeros if dw_bias is None else dw_bias).view(1, c), bn_dw.running_mean,
                                bn_dw.running_var, gamma, bn_dw.bias, False, 0.0, eps[0])
        pw_shift = F.batch_norm((zeros[:g] if pw_bias is None else pw_bias).view(1, g), bn_pw.running_mean,
                                bn_pw.running_var, bn_pw.weight, bn_pw.bias, False, 0.0, eps[1])
        return (zeros, bn_dw.running_var, dw_weight if gamma is None else dw_weight * gamma, dw_shift.view(c),
                pw.weight.view(g, 1, c // g), zeros[:g], bn_pw.running_var, bn_pw.weight, pw_shift.view(g),
                eps[0], eps[1])

    @keeps_running_stats
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'spatial': (B, g, H, W)}: one map per subspace (channel group), each summing to 1 over H x W."""
        check_input(x, self.channels, 'ULSAM')
        return {'spatial': self.subspace_maps(x)}


def _chunked_batch_norm(bn: nn.BatchNorm2d, g: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`f(a, i)`: bn's forward of a, as a BatchNorm2d of its own holding channel chunk i (of g) of bn's parameters and
    running statistics would compute it (nn.BatchNorm2d.forward's choices, num_batches_tracked counted once for the
    g chunks). F.batch_norm updates the running statistics through the chunks, views of bn's buffers."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    stats = [bn.running_mean, bn.running_var] if not bn.training or bn.track_running_stats else [None, None]
    mean, var, weight, bias = ([None] * g if t is None else t.chunk(g) for t in (*stats, bn.weight, bn.bias))
    return lambda a, i: F.batch_norm(a, mean[i], var[i], weight[i], bias[i], batch_stats, momentum, bn.eps)


def _refine_eager_into(x: torch.Tensor, args: InferenceArgs, out: torch.Tensor) -> None:
    """`ULSAM._refine` of x (no autograd, eager) written into `out` (x itself, or a tensor not overlapping it), in
    long contiguous passes: the DW conv + BN and BN(g) as `F.batch_norm` (`ULSAM._inference_args`), the pool as
    `_max_pool3x3_flat`. The same ops as `ULSAM._maps` and `_refine` but the pool (both exact), on the same
    strides: the same numbers, bit for bit."""
    b, c, h, w = x.shape
    g = args[4].shape[0]
    a = _folded_dw(x, args)
    # the pool's scratch: `out` until the end, unless it is x (read at the end) or not contiguous (channels_last)
    free = out.is_contiguous() and out.data_ptr() != x.data_ptr()
    maps = _folded_pw(_max_pool3x3_flat(a, out if free else torch.empty_like(a)), args)
    x5 = x.view(b, g, c // g, h, w)
    torch.addcmul(x5, x5, maps.view(b, g, 1, h, w), out=out.view(b, g, c // g, h, w))


def _folded_dw(x: torch.Tensor, args: InferenceArgs) -> torch.Tensor:
    """ReLU(BN(DW conv(x))) with `ULSAM._inference_args`, contiguous (for the flat pool, and so that the matmul of
    `_folded_pw` gets the same strides whatever x's layout: another summation order otherwise)."""
    return F.batch_norm(x, args[0], args[1], args[2], args[3], False, 0.0, args[9]).contiguous().relu_()


def _folded_pw(pooled: torch.Tensor, args: InferenceArgs) -> torch.Tensor:
    """The maps from the pooled map (contiguous): softmax over H x W of ReLU(BN(g)(PW convs)), (B, g, H * W)."""
    b, c, h, w = pooled.shape
    g = args[4].shape[0]
    a = torch.matmul(args[4], pooled.view(b, g, c // g, h * w))
    a = F.batch_norm(a.view(b, g, h * w), args[5], args[6], args[7], args[8], False, 0.0, args[10]).relu_()
    return torch.softmax(a, dim=-1)


def _max_pool3x3_flat(a: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(a, 3, 1, 1)`` of a contiguous (B, C, H, W) tensor of values >= 0 or NaN (a ReLU's output),
    written into `a` and returned, eager only: a max over 3 columns, then over 3 rows (`_max3_along`). `scratch`:
    contiguous, shaped as `a`, not overlapping it; overwritten. No other full-size buffer: in a model each fresh one
    pushes the backbone's weights out of the cache (mobilenet_ulsam at batch 1, in one run against the pool with
    temporaries: 1.67x -> 1.44x the plain backbone at one thread, 1.90x -> 1.68x at two; docs/bench/cpu_threads.md)."""
    h, w = a.shape[2:]
    if not a.numel():
        return a
    if w > 1:
        _max3_along(a, 3, scratch)
    if h > 1:
        _max3_along(a, 2, scratch)
    return a


def _max3_along(x: torch.Tensor, dim: int, scratch: torch.Tensor) -> None:
    """Each element of contiguous `x` (values >= 0 or NaN) replaced by the max of it and its neighbours along `dim`
    (those inside the map), as two passes over the whole flat tensor: the max of each element and the one `step`
    further (pairs, into `scratch`), then of neighbouring pairs (back into x). The pairs that cross from one line
    along `dim` into the next are set to 0 in between: no value >= 0 loses to it, so each line's first and last
    position keep the pair inside the line (F.max_pool2d's -inf padding, for a ReLU's output). The first and the
    last `step` elements, outside the second pass, take their pair in one strided copy."""
    step, length = x.stride(dim), x.shape[dim]
    flat, pairs, n = x.view(-1), scratch.view(-1)[:x.numel() - step], x.numel()
    torch.maximum(flat[:-step], flat[step:], out=pairs)  # pairs[k]: max(x[k], x[k + step])
    lines = n // (length * step)
    # as_strided: offsets into the storage; per line but the last, its last `step` pairs
    pairs.as_strided((lines - 1, step), (length * step, 1), pairs.storage_offset() + (length - 1) * step).zero_()
    torch.maximum(pairs[:-step], pairs[step:], out=flat[step:n - step])
    flat.as_strided((2, step), (n - step, 1), flat.storage_offset()).copy_(
        pairs.as_strided((2, step), (n - 2 * step, 1), pairs.storage_offset()))
