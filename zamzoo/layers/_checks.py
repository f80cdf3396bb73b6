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

__all__ = [
    'check_input', 'check_spatial_size', 'check_channels', 'check_trainable_batch', 'positive_int', 'to_2tuple_int',
]


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


@register_notrace_function
def check_trainable_batch(x: torch.Tensor, training: bool, name: str) -> None:
    """In training, raise ValueError for a batch of one image, which a BatchNorm over (B, C) cannot normalise."""
    if training and x.shape[0] == 1:
        raise ValueError(name + ' cannot train on a batch of 1 image: the BatchNorm1d of its channel branch needs more '
                         'than one value per channel (the original code fails alike); train on 2 or more, or eval()')


def positive_int(value, what: str, alternative: str = '') -> int:
    """`value` as an int, or ValueError ("<what> must be a positive int<alternative>") unless it is a positive
    integer (int, numpy int, ...)."""
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f'{what} must be a positive int{alternative}, got {value!r}')
    return number


def check_channels(channels, name: str) -> int:
    """`channels` as an int, or ValueError unless it is a positive integer (int, numpy int, ...)."""
    return positive_int(channels, f'{name}: channels')


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
