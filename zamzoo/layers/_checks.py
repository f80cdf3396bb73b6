"""Input validation shared by every attention module.

`check_input` is a plain function so that it stays compatible with the three ways a model gets compiled:
- torch.jit.script compiles it like any other TorchScript function;
- torch.fx: it is registered with timm's `register_notrace_function` (timm's feature extraction keeps it as a leaf
  call) and every module that calls it runs `torch.fx.wrap('check_input')` at import (plain `symbolic_trace`);
- torch.compile(fullgraph=True): the shape test is resolved while tracing, the raise is never in the graph.
"""
import operator
from typing import List, Tuple, Union

import torch
from timm.layers import register_notrace_function

__all__ = ['check_input', 'check_spatial_size', 'check_channels', 'to_2tuple_int']


@register_notrace_function
def check_input(x: torch.Tensor, channels: int, name: str) -> None:
    """Raise ValueError unless `x` is a 4-D tensor (B, channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != channels:
        if torch.jit.is_scripting():
            got = ', '.join([str(s) for s in x.shape])
            raise ValueError(
                name + ' expects input of shape (B, ' + str(channels) + ', H, W), got (' + got + ')')
        # eager and torch.compile (under fullgraph=True Dynamo reports this message as the exception it observed)
        raise ValueError(f'{name} expects input of shape (B, {channels}, H, W), got {tuple(x.shape)}')


def check_channels(channels, name: str) -> int:
    """`channels` as an int, or ValueError unless it is a positive integer (int, numpy int, ...)."""
    try:
        value = operator.index(channels)
    except TypeError:
        value = 0
    if isinstance(channels, bool) or value < 1:
        raise ValueError(f'{name}: channels must be a positive int, got {channels!r}')
    return value


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


@register_notrace_function
def check_spatial_size(x: torch.Tensor, height: int, width: int, name: str) -> None:
    """Raise ValueError unless `x` (B, C, H, W) has H == height and W == width."""
    if x.shape[2] != height or x.shape[3] != width:
        if torch.jit.is_scripting():
            raise ValueError(
                name + ' was built for ' + str(height) + 'x' + str(width) + ' inputs (spatial_size), got '
                + str(x.shape[2]) + 'x' + str(x.shape[3]))
        raise ValueError(f'{name} was built for {height}x{width} inputs (spatial_size), got {x.shape[2]}x{x.shape[3]}')
