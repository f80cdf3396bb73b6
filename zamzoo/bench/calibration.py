"""Random-init models whose outputs depend on their inputs, for every check of a compiled, exported or fused path.

With BatchNorm's default running statistics (mean 0, variance 1) a deep random network in eval mode gives the same
logits for every input (MobileNet's: to the last bit), or overflows: a graph that computed another model, or no model,
would then match eager PyTorch. `calibrate_batchnorm` gives every BatchNorm the statistics of random inputs first.
"""
from typing import Sequence

import torch
from torch import nn

__all__ = ['calibrate_batchnorm']


def calibrate_batchnorm(model: nn.Module, input_size: Sequence[int], batches: int = 2, batch_size: int = 16,
                        seed: int = 0) -> nn.Module:
    """Give every BatchNorm the running statistics of random N(0, 1) inputs (cumulative average of `batches`
    training-mode forward passes, no gradients, on the model's device); returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    device = next(iter(model.parameters()), torch.empty(0)).device
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch_size, *input_size), generator=generator).to(device))
    return model.eval()
