"""Input validation shared by every attention module.

`check_input` is a plain function so that it stays compatible with the three ways a model gets compiled:
- torch.jit.script compiles it like any other TorchScript function;
- torch.fx: it is registered with timm's `register_notrace_function` (timm's feature extraction keeps it as a leaf
  call) and every module that calls it runs `torch.fx.wrap('check_input')` at import (plain `symbolic_trace`);
- torch.compile(fullgraph=True): the shape test is resolved while tracing, the raise is never in the graph.
"""
from typing import List, Tuple, Union

import torch
from timm.layers import register_notrace_function

__all__ = ['check_input', 'to_2tuple_int']


@register_notrace_function
def check_input(x: torch.Tensor, channels: int, name: str) -> None:
    """Raise ValueError unless `x` is a 4-D tensor (B, channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != channels:
        got = ', '.join([str(s) for s in x.shape])
        if x.dim() == 1:
            got = got + ','
        raise ValueError(
            name + ' expects input of shape (B, ' + str(channels) + ', H, W), got (' + got + ')')


def to_2tuple_int(size: Union[int, Tuple[int, int], List[int]], what: str) -> Tuple[int, int]:
    """(H, W) from an int or a pair of positive ints, else ValueError naming `what`."""
    if isinstance(size, bool):
        raise ValueError(f'{what} must be an int or a pair (H, W) of positive ints, got {size!r}')
    if isinstance(size, int):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(s) for s in size)
        except TypeError:
            raise ValueError(f'{what} must be an int or a pair (H, W) of positive ints, got {size!r}') from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f'{what} must be an int or a pair (H, W) of positive ints, got {size!r}')
    return pair
