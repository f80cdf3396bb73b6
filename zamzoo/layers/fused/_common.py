"""What every fused implementation shares: the `impl` switch, the autograd test, the pooled statistics."""
from typing import Optional, Tuple

import torch

__all__ = ['IMPLS', 'check_impl', 'needs_autograd', 'hw_stat']

IMPLS = ('fused', 'reference')


def check_impl(impl: str, name: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f'{name}: impl must be one of {list(IMPLS)}, got {impl!r}')
    return impl


def needs_autograd(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether a graph must be recorded: grad mode on and the input or a parameter requires grad."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))


def hw_stat(x3: torch.Tensor, stat: str, dim: int, with_index: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """('mean' | 'max' | 'min') of `x3` over `dim`, and the index of the extremum when asked (None for the mean).

    The index is what torch.max / torch.min return (the first extremal element), so a gradient routed through it
    is the gradient of ``torch.max(x, dim).values``; without it the cheaper amax / amin kernels run."""
    if stat == 'mean':
        return x3.mean(dim), None
    if stat == 'max':
        if with_index:
            return x3.max(dim)
        return x3.amax(dim), None
    if with_index:
        return x3.min(dim)
    return x3.amin(dim), None
