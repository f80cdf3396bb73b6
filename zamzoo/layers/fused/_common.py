"""What every fused implementation shares: the `impl` switch, the eager-only guard, the autograd test, the pooled
statistics."""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.autograd import forward_ad

__all__ = ['IMPLS', 'check_impl', 'runs_eagerly', 'recording_graph', 'exporting_onnx', 'fixed_map_size',
           'submodules_watched', 'require_eager', 'needs_autograd', 'formula_backward', 'hw_stat', 'max_values',
           'min_values', 'amax', 'mean_plus', 'batch_chunks', 'in_batch_chunks', 'empty_like_dense', 'is_dense',
           'may_overwrite_input']

IMPLS = ('fused', 'reference')

CHUNK_BYTES = 1 << 20
"""Bytes of a batch chunk per intra-op thread in the CPU inference paths (see `batch_chunks`): inside a core's L2."""


_ROW_BYTES = 256
"""Rows of this many bytes (a multiple) let torch's CPU max reduction vectorize (see `amax`)."""

_SLOW_ROW_BYTES = 64
"""torch's CPU max over the last dim is slowest on rows of this many bytes (see `amax`)."""


def check_impl(impl: str, name: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f'{name}: impl must be one of {list(IMPLS)}, got {impl!r}')
    return impl


def autocast_on(x: torch.Tensor) -> bool:
    """Whether autocast is on for x's device (a device with no autocast, e.g. meta, has it off): a fast path that
    rounds to autocast's dtype at other places than the plain formula does steps aside."""
    kind = x.device.type
    return torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)


def runs_eagerly(x) -> bool:
    """Whether x is a real tensor computed op by op, with nothing recording the ops: no torch.jit.trace or
    TorchScript-based ONNX export, no torch.compile / torch.export / dynamo ONNX export (FakeTensors), no torch.fx
    (Proxies), no functorch transform (vmap, grad), no forward-mode AD level open (dual tensors: the fused
    autograd.Functions have no jvp, and the inference path would drop the tangent).

    The fused functions are only correct there: they write through views of a fresh buffer (`out=`, in place, in
    batch chunks), which a recorded graph either drops (the TorchScript-based ONNX exporter returns the unwritten
    buffer) or bakes in (torch.jit.trace keeps the traced batch's chunks, so a larger batch reads uninitialised
    memory), and their autograd.Functions are opaque to exporters."""
    if torch.compiler.is_compiling():  # first: Dynamo folds it to True and reads nothing else
        return False
    # torch._C._is_tracing is torch.jit.is_tracing without its Python overhead (2 us per call); the TorchScript-based
    # ONNX exporter traces, the dynamo one compiles
    return (type(x) in (torch.Tensor, torch.nn.Parameter) and not torch._C._is_tracing()
            and not torch._C._are_functorch_transforms_active() and forward_ad._current_level < 0)


@torch.jit.unused
def recording_graph() -> bool:
    """Whether torch.jit.trace (the TorchScript-based ONNX exporter included) or a compiler (torch.compile,
    torch.export, the dynamo ONNX exporter) is recording the ops: it bakes sizes given as arguments (a pooling
    window) into the graph, and the compilers guard on strides (a transposed view of a batch may fix the batch)."""
    # is_compiling first: Dynamo answers it while tracing, and cannot trace _is_tracing (a graph break, an error
    # under fullgraph=True)
    return torch.compiler.is_compiling() or torch._C._is_tracing() or exporting_onnx()


@torch.jit.unused
def exporting_onnx() -> bool:
    """Whether an ONNX exporter (TorchScript-based or dynamo) is recording: the plain formulas then spell some steps
    in the ONNX ops that ONNX Runtime runs fastest (same math; see docs/bench/onnxruntime.md)."""
    return torch.onnx.is_in_onnx_export()


@torch.jit.unused
def fixed_map_size(x: torch.Tensor) -> bool:
    """Whether x's H and W are numbers fixed in the graph being recorded: only then may an ONNX spelling bake them in
    (a pooling window of the whole map, Resize scales, InstanceNormalization's epsilon) and stay exact at every input
    the exported graph accepts. False under the dynamo exporter with a dynamic H or W (SymInts), and always under the
    TorchScript-based exporter: its traced sizes (Tensors) may become dynamic axes (`dynamic_axes`), which the plain
    formulas follow."""
    return all(type(s) is int for s in x.shape[2:])


@torch.jit.unused
def submodules_watched(module: torch.nn.Module) -> bool:
    """Whether a hook watches `module`'s submodules, forward or backward, on them or on every module (thop, the module
    tracker of FlopCounterMode, feature hooks, `torch.nn.utils.prune`'s pre-hook that recomputes a pruned weight): a
    fast path that does not call them as modules would skip those hooks, so the plain formula runs instead."""
    hooks = torch.nn.modules.module
    if (hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
            or hooks._global_backward_pre_hooks):
        return True
    # _modules without nn.Module.__getattr__ (~0.7 us a read)
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in module._modules.values() if m is not None)


def require_eager(x: torch.Tensor, name: str) -> None:
    """Refuse to run a fused function where `runs_eagerly` is False: a recorded graph of it could be wrong."""
    if not runs_eagerly(x):
        raise RuntimeError(
            f'{name} is an eager-only fast path and cannot be traced, exported, compiled or transformed; '
            "call the module (it records its plain formula there) or use impl='reference'")


def needs_autograd(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether a graph must be recorded: grad mode on and the input or a parameter requires grad."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))


def formula_backward(formula: Callable[..., torch.Tensor], inputs: Sequence[Optional[torch.Tensor]],
                     needs_grad: Sequence[bool], gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
    """A fused autograd.Function's gradients where autograd records its backward (``create_graph=True``: gradient
    penalties, Hessian-vector products): the gradients of ``formula(*inputs)``, the plain formula the Function stands
    for, taken by autograd and so themselves differentiable; the hand-written backwards (in place, ``out=``) are
    not. None for each input that needs no gradient."""
    wanted = [t for t, need in zip(inputs, needs_grad) if need]
    grads = iter(torch.autograd.grad(formula(*inputs), wanted, gy, create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in needs_grad)


def hw_stat(x3: torch.Tensor, stat: str, dim: int, with_index: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """('mean' | 'max' | 'min') of `x3` over `dim`, and the index of the extremum when asked (None for the mean).

    The index is what torch.max / torch.min return (the first extremal element), so a gradient routed through it
    is the gradient of ``torch.max(x, dim).values``; without it the cheaper amax / amin kernels run."""
    if stat == 'mean':
        return x3.mean(dim), None
    if stat == 'max':
        if with_index:
            return x3.max(dim)
        return amax(x3, dim), None
    if with_index:
        return x3.min(dim)
    return x3.amin(dim), None


def max_values(x: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """The max of the seeds' code, ``torch.max(x, dim).values`` (nn.AdaptiveMaxPool2d and F.max_pool2d route alike),
    over dims [2, 3] or [1] of a (B, C, H, W) tensor, keepdim: its gradient goes to the first maximal element
    (``amax`` would split it between tied elements: a constant map, a saturated activation); exporters drop the
    unused indices (ONNX ReduceMax). Where no gradient is routed -- grad mode off (eager inference, or a graph
    recorded under ``torch.no_grad()``), a TorchScript trace (`torch.jit.trace`, ``openvino.convert_model``; its check
    re-traces in another grad mode, so its ops cannot depend on it) and an ONNX export -- ``amax``: the same values
    without the positions, one reduction over H and W where torch.max needs the map flattened first. Eager:
    mobilenet_cbam at one thread, process time, interleaved, 1.50x / 1.30x the plain backbone at batch 1 / 64, against
    1.72x / 1.49x with the positions. Recorded: OpenVINO runs the flatten as a reorder of the whole map out of its
    channels-last layout (`openvino.convert_model`, one thread: mobilenet_zam 1.67x -> 1.45x at batch 1, 2.22x ->
    1.80x at batch 64; docs/bench/openvino.md); ONNX Runtime runs both alike. A trace differentiated later splits a
    tie's gradient, as amax does; torch.compile and torch.export with grad mode on record torch.max."""
    if _without_positions():
        return x.amax(dims, keepdim=True)
    if dims == [2, 3]:
        return x.flatten(2).max(2, keepdim=True)[0].unsqueeze(3)
    return x.max(dims[0], keepdim=True)[0]


def _without_positions() -> bool:
    """No gradient to route, a TorchScript trace or an ONNX export (see `max_values`)."""
    if not torch.is_grad_enabled() or torch.jit.is_tracing():
        return True
    return not torch.jit.is_scripting() and exporting_onnx()


def min_values(x: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """`max_values`'s minimum: ``torch.min(x, dim).values``, or ``amin`` where `max_values` takes ``amax``."""
    if _without_positions():
        return x.amin(dims, keepdim=True)
    if dims == [2, 3]:
        return x.flatten(2).min(2, keepdim=True)[0].unsqueeze(3)
    return x.min(dims[0], keepdim=True)[0]


def amax(x3: torch.Tensor, dim: int) -> torch.Tensor:
    """``x3.amax(dim)`` of a 3-D x3, the same values faster where torch's CPU kernel would not vectorize.

    That kernel vectorizes only where a row (the innermost size) is a multiple of 128 bytes; a max over the middle
    dim of a contiguous (B, N, P) float tensor with P = 16 (4 x 4 maps) runs element by element, ~40x slower than a
    sum (measured, one thread: (64, 1024, 16) 2.7 ms, 0.05 ms done as here). Here k consecutive rows of P become one
    row of k * P (a multiple of 256 bytes: AVX2 and AVX-512), reduced as a whole over the middle dim, then the k
    maxima of each position (a tensor N / k times smaller). A max over the last dim of rows of 64 bytes (16 floats:
    4 x 4 maps) is ~3x slower per element than over rows of 32 or 128 bytes: the maxima of the rows' two halves come
    first, in one vectorized pass (measured, one thread: (64, 1024, 16) 1.16 -> 0.61 ms; 8 or 4 floats: no gain)."""
    b, n, p = x3.shape
    if not x3.is_cpu or not x3.is_contiguous():
        return x3.amax(dim)
    if dim == 2:
        if p * x3.element_size() != _SLOW_ROW_BYTES:
            return x3.amax(2)
        return torch.maximum(x3[:, :, :p // 2], x3[:, :, p // 2:]).amax(2)
    k = _ROW_BYTES // math.gcd(p * x3.element_size(), _ROW_BYTES)
    if dim != 1 or k == 1 or n % k:
        return x3.amax(dim)
    return x3.view(b, n // k, k * p).amax(1).view(b, k, p).amax(1)


def mean_plus(x3: torch.Tensor, dim: int, other: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x3.mean(dim)``, plus `other` (in place of it) when given: the same numbers in fewer ops.

    On CPU in float32 or float64, torch's mean is a sum divided in place by the count, a Python number that each
    call converts into a tensor (to, _to_copy, empty_strided, copy_); here the count is a cached 0-dim tensor, and the
    division and the addition of `other` are one addcdiv (``other + 1 * sum / n``: the sum divided as the mean
    divides it, then added; 1 * s is s). At batch 1 every op a module calls after the backbone's convs have left
    the cores' caches costs ~5 us more than alone (docs/bench/cpu_threads.md). Elsewhere (bfloat16 and float16,
    whose CPU mean sums in float32 before the division; CUDA), torch's mean."""
    if not x3.is_cpu or x3.dtype not in (torch.float32, torch.float64) or x3.shape[dim] > _EXACT_COUNTS:
        mean = x3.mean(dim)
        return mean if other is None else other.add_(mean)
    s = x3.sum(dim)
    if other is None:
        return s.div_(_count(x3.shape[dim]))
    return other.addcdiv_(s, _count(x3.shape[dim]))


_COUNTS: Dict[int, torch.Tensor] = {}
_EXACT_COUNTS = 1 << 24
"""Counts up to this are exact in the float32 of `_count`."""


def _count(n: int) -> torch.Tensor:
    """n as a 0-dim float32 CPU tensor (a float64 sum divided by it stays float64), made once:
    a normal tensor, not an inference tensor, whatever the mode it is first asked for in."""
    count = _COUNTS.get(n)
    if count is None:
        with torch.inference_mode(False):
            count = _COUNTS[n] = torch.tensor(float(n))
    return count


def batch_chunks(x: torch.Tensor, several_threads: bool = False) -> List[slice]:
    """Slices of the batch of about CHUNK_BYTES of x per intra-op thread each (at least one image) on CPU with one
    intra-op thread, or with several where `several_threads`; the whole batch otherwise.

    Every statistic of these modules is per image, so a chunk is computed alone; each of the several passes over
    a chunk then finds it in the cores' caches instead of main memory, and a chunk's temporaries are small enough
    for the allocator to reuse instead of taking fresh pages from the kernel (measured with one thread, CPU
    inference at batch 64: the attention overhead of resnet18_zam 1.5% instead of 5.8%, of mobilenet_zamr 26-30%
    instead of 38-40%). With several threads each op splits a chunk between them, and every op is a parallel region
    whose threads must meet once per chunk: on a busy machine those meetings cost more than the cache saves
    (resnet18_zam inference at 2 threads, load average 4: 2.7x the plain backbone in chunks). Only paths whose
    whole-batch temporaries would each take fresh pages (ULSAM: several per pass sequence) ask for chunks there."""
    threads = torch.get_num_threads()
    if not x.is_cpu or (threads > 1 and not several_threads):
        return [slice(None)]
    n = max(1, CHUNK_BYTES * threads // max(math.prod(x.shape[1:]) * x.element_size(), 1))
    return [slice(i, i + n) for i in range(0, max(x.shape[0], 1), n)]  # an empty batch: one empty chunk


def in_batch_chunks(x: torch.Tensor, write_chunk: Callable[[torch.Tensor, torch.Tensor], object],
                    several_threads: bool = False, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`out` (x itself for an in-place path), or a new tensor shaped as x (`empty_like_dense`), written by
    ``write_chunk(x[s], out[s])`` for each batch slice s of `batch_chunks` (eager inference only: the writes go
    through views)."""
    out = empty_like_dense(x) if out is None else out
    chunks = batch_chunks(x, several_threads)
    if len(chunks) == 1:
        write_chunk(x, out)
    else:
        for s in chunks:
            write_chunk(x[s], out[s])
    return out


def is_dense(x: torch.Tensor) -> bool:
    """Whether x is contiguous or channels_last: flatten(2) and view(B, C, H * W) of it are views."""
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def may_overwrite_input(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether `module`, built with ``inplace=True`` (timm's convention for activations: it may overwrite its input),
    may write its inference output into x: x is dense (`is_dense`: its views are what the fused paths expect), not
    an inference tensor outside inference mode (torch refuses in-place writes to those), and no forward hook or
    pre-hook, on the module or on every module, is handed x (one may keep it and read it after the forward, as
    `zamzoo.viz` and feature tools do)."""
    hooks = torch.nn.modules.module
    return (module.inplace and not (module._forward_hooks or module._forward_pre_hooks or hooks._global_forward_hooks
                                    or hooks._global_forward_pre_hooks)
            and is_dense(x) and (torch.is_inference_mode_enabled() or not x.is_inference()))


def empty_like_dense(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor shaped as x, channels_last if x is, else contiguous: flatten(2) of it (and of any
    batch slice of it) is a view."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
