"""The recipes' learning-rate schedules, per optimizer step, in closed form.

One scheduler stepped after every optimizer step gives the lr of every step from (recipe, steps per epoch):

- warm-up (zam): the ZAM seed's loop (weiaicunzai/pytorch-cifar100 as the seed copied it) steps its `WarmUpLR`
  *before* each iteration of epoch 1, and `WarmUpLR` sets ``base_lr * last_epoch / (total_iters + 1e-8)``; so the
  i-th step (0-based) of the warm-up uses ``lr * (i + 1) / (warmup_steps + 1e-8)``: lr/391 first, ~lr last.
- multistep: ``lr * gamma ** bisect_right(milestones, epoch + recipe.epoch_base)`` for the 0-based epoch, the
  closed form of torch's MultiStepLR. zam counts epochs from 1 like its seed (MultiStepLR.step(epoch) with epoch
  1..200), so lr falls at the start of the 60th epoch; nam and spem count from 0 (their MultiStepLR is stepped
  after each epoch / bearpaw sets lr at the start of 0-based epoch t), so lr falls after 60 (81) full epochs.
- cosine (finetune): after the warm-up, ``lr * (1 + cos(pi * k / K)) / 2`` for step k of K, down to 0.

The arithmetic is written in the seeds' order of operations, so the floats are theirs.
"""
import math
from bisect import bisect_right

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..errors import UsageError
from ..recipes import SCHEDULES


def recipe_lr(recipe, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The lr of optimizer step `step` (0-based, counted over the whole run)."""
    if steps_per_epoch < 1:
        raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}')
    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1e-8)
    epoch = step // steps_per_epoch
    if recipe.schedule == 'multistep':
        return base_lr * recipe.gamma ** bisect_right(recipe.milestones, epoch + recipe.epoch_base)
    if recipe.schedule == 'cosine':
        total = max(1, epochs * steps_per_epoch - warmup_steps)
        k = min(step - warmup_steps, total)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * k / total))
    if recipe.schedule == 'constant':
        return base_lr
    raise ValueError(f"recipe '{recipe.name}': unknown schedule '{recipe.schedule}'; expected one of {list(SCHEDULES)}")


class RecipeLR(LRScheduler):
    """A torch scheduler stepped once per optimizer step; `last_epoch` counts steps. Its state_dict is the step."""

    def __init__(self, optimizer, recipe, steps_per_epoch: int, epochs: int, last_epoch: int = -1):
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        recipe_lr(recipe, 1.0, 0, steps_per_epoch, epochs)  # validate the schedule name early
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [recipe_lr(self.recipe, base, self.last_epoch, self.steps_per_epoch, self.epochs)
                for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def state_dict(self):
        return {'last_epoch': self.last_epoch, 'base_lrs': list(self.base_lrs), '_step_count': self._step_count,
                'steps_per_epoch': self.steps_per_epoch, 'epochs': self.epochs,
                '_last_lr': [float(lr) for lr in self._last_lr] if hasattr(self, '_last_lr') else None}

    def load_state_dict(self, state_dict):
        if state_dict['steps_per_epoch'] != self.steps_per_epoch:
            raise UsageError(f"checkpoint's schedule has {state_dict['steps_per_epoch']} steps per epoch, this run "
                             f"{self.steps_per_epoch}: the data set or batch size changed")
        self.last_epoch = state_dict['last_epoch']
        self.base_lrs = list(state_dict['base_lrs'])
        self._step_count = state_dict['_step_count']
        self.epochs = state_dict['epochs']
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            if isinstance(group['lr'], torch.Tensor):  # filled in place, as LRScheduler.step does: a graph reads it
                group['lr'].fill_(lr)
            else:
                group['lr'] = lr
