"""The max of the seeds' code: ``torch.max(x, dim).values`` (nn.AdaptiveMaxPool2d and F.max_pool2d route alike).

Its gradient goes to the first maximal element; ``amax`` would split it between tied elements (a constant map, a
saturated activation). The values are the same; exporters drop the unused indices (ONNX ReduceMax)."""
from typing import List

import torch

__all__ = ['max_values']


def max_values(x: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """torch.max over dims [2, 3] or [1] of a (B, C, H, W) tensor, keepdim."""
    if dims == [2, 3]:
        return x.flatten(2).max(2, keepdim=True)[0].unsqueeze(3)
    return x.max(dims[0], keepdim=True)[0]
