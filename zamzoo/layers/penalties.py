"""Loss terms some modules ask for: add them to the task loss in the training loop.

``loss = ce + nam_l1 * nam_l1_penalty(model) + spem_alpha * spem_penalty(model)``; both return a 0-d tensor
(0.0 when the model has no such module), differentiable w.r.t. the parameters concerned.
"""
import torch
from torch import nn

from .nam import NAM
from .spem import SPEM

__all__ = ['nam_l1_penalty', 'spem_penalty']


def _zero(model: nn.Module) -> torch.Tensor:
    for p in model.parameters():
        return p.new_zeros(())
    return torch.zeros(())


def nam_l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over the BN scales of every NAM module (plus |lambda| of pixel attention, when enabled);
    the NAM paper's sparsity term, weighted by s = 1e-4 in its recipe."""
    terms = [m.l1_penalty() for m in model.modules() if isinstance(m, NAM)]
    return torch.stack(terms).sum() if terms else _zero(model)


def spem_penalty(model: nn.Module) -> torch.Tensor:
    """Sum over every SPEM module of p0^2 + p1^2 (0.5 per module at init; 27.0 for ResNet164), weighted by
    alpha = 0.1 in SPEM's recipe."""
    terms = [m.penalty() for m in model.modules() if isinstance(m, SPEM)]
    return torch.stack(terms).sum() if terms else _zero(model)
