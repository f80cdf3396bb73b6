"""ZAM as Triton kernels, for CUDA tensors: two kernels forward, two backward, statistics in fp32. `zam_forward`
and `zam_backward` stand in for the eager pair of `zam` inside the same autograd.Function (`zam.zam_fused` picks them).

Forward:
    _channel_kernel   one program per (b, c) row, or per (b, block of channels) under channels_last: mean and max
                      over H*W -> Mc (and the max's position)
    _spatial_kernel   one program per (b, block of positions): loops over C computing F' = apply(F, Mc) on the
                      fly, mean and max over C -> Ms (and the max's position), then a second loop writes
                      F'' = apply(F', Ms); F' is never stored (apply(F, M): F * M, or F * M + F for ZAM+R, as the
                      eager path spells it: the same result where F is infinite)
Backward (same saved tensors as the eager autograd.Function: F, Mc, Ms, the two max positions):
    _bwd_spatial_kernel   per (b, block of positions): dL/ds2 = sum_c dL/dF'' * F' * Ms (1 - Ms)
    _bwd_channel_kernel   per (b, c) row (or block of channels): dL/dF' on the fly,
                          dL/ds1 = sum_p dL/dF' * F * Mc (1 - Mc), then dL/dF
Max positions: the first maximal element, as torch.max (and the eager path). Memory traffic: forward reads F
twice (the second time per block of positions, from cache) and writes F''; backward reads dL/dF'' and F three
times and writes dL/dF -- against about a dozen full passes for the unfused formula.

Correctness is tested on CPU with Triton's interpreter (``TRITON_INTERPRET=1``, tests/test_fused.py); GPU speed
is measured by `zamzoo bench gpu` (tests/test_cuda.py checks the compiled kernels on a GPU). Only dense contiguous
or channels_last inputs in float32 / float16 / bfloat16 take this path; ZAMZOO_TRITON=0 in the environment turns it
off (the eager PyTorch path then runs on CUDA too).
"""
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the eager path serves everyone without Triton
    triton = None

__all__ = ['HAS_TRITON', 'kernels_on', 'supports_triton', 'zam_forward', 'zam_backward']

HAS_TRITON = triton is not None
ENABLED = os.environ.get('ZAMZOO_TRITON', '1') != '0'
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernels_on(device) -> str:
    """Which path ZAM's CUDA training runs on `device`, as the benchmark reports say it."""
    if torch.device(device).type != 'cuda':
        return 'eager PyTorch (not CUDA)'
    if not HAS_TRITON:
        return 'eager PyTorch (Triton is not installed)'
    return 'Triton' if ENABLED else 'eager PyTorch (ZAMZOO_TRITON=0)'


def supports_triton(x: torch.Tensor) -> bool:
    """Whether the kernels take x: Triton installed and not turned off (ZAMZOO_TRITON=0), a CUDA (or, under
    TRITON_INTERPRET=1, any) tensor, a float dtype, contiguous or channels_last, fewer than 2**31 elements (the
    kernels' offsets are int32)."""
    return (HAS_TRITON and ENABLED and x.dtype in _DTYPES and x.numel() < 2 ** 31
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)))


if HAS_TRITON:
    @triton.jit
    def _gate(v, m, SKIP: tl.constexpr):
        """v * m, or v * m + v for ZAM+R: the eager path's spelling (`zam.apply_gate`), not v * (1 + m), which
        rounds 1 + m first and turns -inf * (1 + 0) into -inf where the formula's -inf + -inf * 0 is NaN."""
        if SKIP:
            return v * m + v
        return v * m

    @triton.jit
    def _load_tile(ptr, mc_ptr, b, C, offs_c, offs_p, mask_p, sb, sc, sp, SKIP: tl.constexpr):
        """The (BLOCK_C, BLOCK_P) tile of image b in fp32 (0 outside), its mask, and F' there (0 outside)."""
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        mc = tl.load(mc_ptr + b * C + offs_c, mask=mask_c, other=0.0)
        v = tl.load(ptr + b * sb + offs_c[:, None] * sc + offs_p[None, :] * sp, mask=mask, other=0.0)
        v = v.to(tl.float32)
        return v, mask, _gate(v, mc[:, None], SKIP)

    @triton.jit
    def _channel_rows(C, BLOCK_C: tl.constexpr):
        """The image and the block of BLOCK_C channels of this program (one program per (b, channel block))."""
        blocks = tl.cdiv(C, BLOCK_C)
        offs_c = (tl.program_id(0) % blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        return tl.program_id(0) // blocks, offs_c, offs_c < C

    @triton.jit
    def _channel_kernel(x_ptr, mc_ptr, idx_ptr, C, P, sxb, sxc, sxp,
                        MEAN: tl.constexpr, MAX: tl.constexpr, WITH_INDEX: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        b, offs_c, mask_c = _channel_rows(C, BLOCK_C)
        base = x_ptr + b * sxb + offs_c[:, None] * sxc
        total = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        run_max = tl.full([BLOCK_C, BLOCK_P], float('-inf'), tl.float32)
        run_idx = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.int64)
        for p0 in range(0, P, BLOCK_P):
            offs = p0 + tl.arange(0, BLOCK_P)
            mask = mask_c[:, None] & (offs < P)[None, :]
            v = tl.load(base + offs[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
            total += v
            v = tl.where(mask, v, float('-inf'))
            # strict: each lane keeps its first maximum; a NaN is the maximum, as in torch.max (its first one)
            better = (v > run_max) | ((v != v) & (run_max == run_max))
            run_idx = tl.where(better, offs[None, :], run_idx)
            run_max = tl.where(better, v, run_max)
        s = tl.zeros([BLOCK_C], dtype=tl.float32)
        if MEAN:
            s += tl.sum(total, axis=1) / P
        if MAX:
            is_nan = run_max != run_max
            nan_row = tl.max(is_nan.to(tl.int32), axis=1) > 0
            mx = tl.where(nan_row, float('nan'), tl.max(tl.where(is_nan, float('-inf'), run_max), axis=1))
            s += mx
            if WITH_INDEX:  # the smallest position among the lanes holding the maximum (a NaN where there is one)
                holds = tl.where(nan_row[:, None], is_nan, run_max == mx[:, None])
                first = tl.min(tl.where(holds, run_idx, P), axis=1)
                tl.store(idx_ptr + b * C + offs_c, first, mask=mask_c)
        tl.store(mc_ptr + b * C + offs_c, tl.sigmoid(s), mask=mask_c)

    @triton.jit
    def _spatial_kernel(x_ptr, mc_ptr, ms_ptr, idx_ptr, y_ptr, C, P, sxb, sxc, sxp, syb, syc, syp,
                        MEAN: tl.constexpr, MAX: tl.constexpr, SKIP: tl.constexpr, WITH_INDEX: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        b = tl.program_id(0)
        offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        total = tl.zeros([BLOCK_P], dtype=tl.float32)
        run_max = tl.full([BLOCK_P], float('-inf'), tl.float32)
        run_idx = tl.zeros([BLOCK_P], dtype=tl.int64)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            v, mask, f = _load_tile(x_ptr, mc_ptr, b, C, offs_c, offs_p, mask_p, sxb, sxc, sxp, SKIP)
            total += tl.sum(f, axis=0)
            if MAX:
                f = tl.where(mask, f, float('-inf'))
                nan_at = tl.min(tl.where(f != f, offs_c[:, None], C), axis=0)  # the tile's first NaN, C if none
                tile_max, tile_idx = tl.max(tl.where(f != f, float('-inf'), f), axis=0, return_indices=True,
                                            return_indices_tie_break_left=True)
                tile_idx = tl.where(nan_at < C, nan_at - c0, tile_idx)
                tile_max = tl.where(nan_at < C, float('nan'), tile_max)
                # a NaN is the maximum, as in torch.max (its first one)
                better = (tile_max > run_max) | ((nan_at < C) & (run_max == run_max))
                run_idx = tl.where(better, c0 + tile_idx, run_idx)
                run_max = tl.where(better, tile_max, run_max)
        s = tl.zeros([BLOCK_P], dtype=tl.float32)
        if MEAN:
            s += total / C
        if MAX:
            s += run_max
            if WITH_INDEX:
                tl.store(idx_ptr + b * P + offs_p, run_idx, mask=mask_p)
        ms = tl.sigmoid(s)
        tl.store(ms_ptr + b * P + offs_p, ms, mask=mask_p)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            v, mask, f = _load_tile(x_ptr, mc_ptr, b, C, offs_c, offs_p, mask_p, sxb, sxc, sxp, SKIP)
            y = _gate(f, ms[None, :], SKIP)
            tl.store(y_ptr + b * syb + offs_c[:, None] * syc + offs_p[None, :] * syp,
                     y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bwd_spatial_kernel(gy_ptr, x_ptr, mc_ptr, ms_ptr, ds2_ptr, C, P, sgb, sgc, sgp, sxb, sxc, sxp,
                            SKIP: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        b = tl.program_id(0)
        offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        gms = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            v, mask, f = _load_tile(x_ptr, mc_ptr, b, C, offs_c, offs_p, mask_p, sxb, sxc, sxp, SKIP)
            gy = tl.load(gy_ptr + b * sgb + offs_c[:, None] * sgc + offs_p[None, :] * sgp, mask=mask, other=0.0)
            gms += tl.sum(gy.to(tl.float32) * f, axis=0)
        ms = tl.load(ms_ptr + b * P + offs_p, mask=mask_p, other=0.0)
        tl.store(ds2_ptr + b * P + offs_p, gms * ms * (1.0 - ms), mask=mask_p)

    @triton.jit
    def _bwd_channel_kernel(gy_ptr, x_ptr, mc_ptr, ms_ptr, ds2_ptr, i1_ptr, i2_ptr, gx_ptr, C, P,
                            sgb, sgc, sgp, sxb, sxc, sxp, sob, soc, sop, MEAN: tl.constexpr, MAX: tl.constexpr,
                            SKIP: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        b, offs_c, mask_c = _channel_rows(C, BLOCK_C)
        mc = tl.load(mc_ptr + b * C + offs_c, mask=mask_c, other=0.0)
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        for p0 in range(0, P, BLOCK_P):  # dL/dg1 = sum_p dL/dF' * F
            offs = p0 + tl.arange(0, BLOCK_P)
            mask = mask_c[:, None] & (offs < P)[None, :]
            gf = _grad_f1(gy_ptr, ms_ptr, ds2_ptr, i2_ptr, b, offs_c, C, P, sgb, sgc, sgp, offs, mask,
                          MEAN, MAX, SKIP)
            v = tl.load(x_ptr + b * sxb + offs_c[:, None] * sxc + offs[None, :] * sxp, mask=mask, other=0.0)
            acc += gf * v.to(tl.float32)
        ds1 = tl.sum(acc, axis=1) * mc * (1.0 - mc)
        if MAX:
            i1 = tl.load(i1_ptr + b * C + offs_c, mask=mask_c, other=-1)
        for p0 in range(0, P, BLOCK_P):
            offs = p0 + tl.arange(0, BLOCK_P)
            mask = mask_c[:, None] & (offs < P)[None, :]
            gf = _grad_f1(gy_ptr, ms_ptr, ds2_ptr, i2_ptr, b, offs_c, C, P, sgb, sgc, sgp, offs, mask,
                          MEAN, MAX, SKIP)
            gx = _gate(gf, mc[:, None], SKIP)
            if MEAN:
                gx += ds1[:, None] / P
            if MAX:
                gx += tl.where(offs[None, :] == i1[:, None], ds1[:, None], 0.0)
            tl.store(gx_ptr + b * sob + offs_c[:, None] * soc + offs[None, :] * sop,
                     gx.to(gx_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _grad_f1(gy_ptr, ms_ptr, ds2_ptr, i2_ptr, b, offs_c, C, P, sgb, sgc, sgp, offs, mask,
                 MEAN: tl.constexpr, MAX: tl.constexpr, SKIP: tl.constexpr):
        """dL/dF' at (b, offs_c, offs) = dL/dF'' * g2 + dL/ds2 through the mean and the max over channels."""
        gy = tl.load(gy_ptr + b * sgb + offs_c[:, None] * sgc + offs[None, :] * sgp, mask=mask, other=0.0)
        mask_p = offs < P
        ms = tl.load(ms_ptr + b * P + offs, mask=mask_p, other=0.0)
        ds2 = tl.load(ds2_ptr + b * P + offs, mask=mask_p, other=0.0)
        gf = _gate(gy.to(tl.float32), ms[None, :], SKIP)
        if MEAN:
            gf += (ds2 / C)[None, :]
        if MAX:
            i2 = tl.load(i2_ptr + b * P + offs, mask=mask_p, other=-1)
            gf += tl.where(i2[None, :] == offs_c[:, None], ds2[None, :], 0.0)
        return gf


def _pow2(n: int, cap: int) -> int:
    return min(triton.next_power_of_2(max(n, 1)), cap)


def _flags(pool: str):
    return dict(MEAN=pool != 'max', MAX=pool != 'avg')


def _channel_blocks(x3: torch.Tensor, c: int, p: int) -> dict:
    """Tiles of the per-channel kernels: a whole row of positions per program where a row is contiguous; under
    channels_last, where it is strided by C, blocks of channels side by side, so that the loads coalesce. (With one
    row per program, each bf16 load of a channels_last row took its own 32-byte sector; on an H200 the two kernels
    were then 1.5 ms of resnet18_zam's 4.7 ms training step. The blocked version is not measured on a GPU yet.)"""
    if x3.stride(2) == 1:
        return dict(BLOCK_C=1, BLOCK_P=_pow2(p, 1024))
    return dict(BLOCK_C=_pow2(c, 32), BLOCK_P=_pow2(p, 32))


def zam_forward(x: torch.Tensor, pool: str, skip: bool, with_index: bool):
    """(F'', Mc, Ms, max positions over H*W or None, max positions over C or None), as `zam._zam_forward`."""
    b, c, h, w = x.shape
    p = h * w
    x3 = x.flatten(2)  # a view: x is contiguous or channels_last
    y = torch.empty_like(x)
    y3 = y.flatten(2)
    mc = torch.empty(b, c, device=x.device, dtype=torch.float32)
    ms = torch.empty(b, p, device=x.device, dtype=torch.float32)
    index = with_index and pool != 'avg'
    i1 = torch.empty(b, c, device=x.device, dtype=torch.int64) if index else mc  # mc: an unused placeholder
    i2 = torch.empty(b, p, device=x.device, dtype=torch.int64) if index else ms
    flags = _flags(pool)
    blocks = _channel_blocks(x3, c, p)
    _channel_kernel[(b * triton.cdiv(c, blocks['BLOCK_C']),)](x3, mc, i1, c, p, *x3.stride(), WITH_INDEX=index,
                                                             **blocks, **flags)
    block_p = _pow2(p, 64)
    _spatial_kernel[(b, triton.cdiv(p, block_p))](
        x3, mc, ms, i2, y3, c, p, *x3.stride(), *y3.stride(), SKIP=skip, WITH_INDEX=index,
        BLOCK_C=_pow2(c, 32), BLOCK_P=block_p, **flags)
    return y, mc, ms, (i1 if index else None), (i2 if index else None)


def zam_backward(gy, x, mc, ms, i1, i2, pool: str, skip: bool) -> torch.Tensor:
    """dL/dF from dL/dF'' and the tensors saved by `zam_forward`, as `zam._zam_backward`."""
    b, c, h, w = x.shape
    p = h * w
    x3, gy3 = x.flatten(2), gy.flatten(2)
    gx = torch.empty_like(x)
    gx3 = gx.flatten(2)
    ds2 = torch.empty(b, p, device=x.device, dtype=torch.float32)
    block_p = _pow2(p, 64)
    _bwd_spatial_kernel[(b, triton.cdiv(p, block_p))](
        gy3, x3, mc, ms, ds2, c, p, *gy3.stride(), *x3.stride(), SKIP=skip, BLOCK_C=_pow2(c, 32), BLOCK_P=block_p)
    blocks = _channel_blocks(x3, c, p)
    _bwd_channel_kernel[(b * triton.cdiv(c, blocks['BLOCK_C']),)](
        gy3, x3, mc, ms, ds2, mc if i1 is None else i1, ms if i2 is None else i2, gx3, c, p,
        *gy3.stride(), *x3.stride(), *gx3.stride(), SKIP=skip, **blocks, **_flags(pool))
    return gx
