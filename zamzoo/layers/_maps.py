"""`keeps_running_stats`: `attention_maps` leaves a module's BatchNorm statistics as they were."""
import functools

import torch
from torch.nn.modules.batchnorm import _NormBase

__all__ = ['keeps_running_stats']


def keeps_running_stats(attention_maps):
    """Decorate an ``attention_maps(self, x)``: in train mode its BatchNorms normalise with the batch's statistics,
    as the forward does (so the maps are those it applies), but their running_mean / running_var /
    num_batches_tracked are restored afterwards: looking at the maps does not count as a training batch."""
    @functools.wraps(attention_maps)
    def wrapper(self, x: torch.Tensor):
        saved = [(m, {k: b.clone() for k, b in m.named_buffers(recurse=False)})
                 for m in self.modules() if isinstance(m, _NormBase)]
        try:
            return attention_maps(self, x)
        finally:
            with torch.no_grad():
                for module, buffers in saved:
                    for key, value in buffers.items():
                        getattr(module, key).copy_(value)
    return wrapper
