"""The training step, written so that it can be captured whole in one CUDA graph (`--cuda-graph`).

`StepMath` is the step's arithmetic, the one definition both loops use: forward under autocast, the summed CE
scaled to the global batch (+ penalty), and the epoch's running sums. `train_one_epoch` runs it eagerly with the
checks that need the host (GradScaler for fp16, skipping a NaN step); `TrainStep` runs forward, backward, the
optimizer's step and the sums with tensor operations only: no host sync, no branch on a value, the lr read from a
device tensor the scheduler fills in place, every tensor it writes allocated once. On CUDA it follows torch's
"whole network capture" (CUDA semantics notes): a few steps of each batch shape run eagerly on a side stream, the
next is captured with `torch.cuda.graph` and every later one replays it; elsewhere the same step runs eagerly.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .build import autocast, use_tensor_lr

WARMUP_STEPS = 3  # eager steps of a batch shape before it is captured (torch's example warms up 3 iterations)


def graph_refusal(*, world_size: int, scaler=None, max_bad_steps: Optional[int] = None) -> Optional[str]:
    """Why this run's step cannot be one CUDA graph (the eager step runs instead), or None."""
    if scaler is not None and scaler.is_enabled():
        return ('fp16 needs the GradScaler, which reads on the host whether the gradients were finite: '
                'use --amp bf16 (the default on GPUs that have it) to capture the step')
    if max_bad_steps:
        return (f'--max-bad-steps {max_bad_steps} checks every loss on the host to skip a bad step: '
                f'use --max-bad-steps 0 to capture the step')
    if world_size > 1:
        return 'the step of several processes (DDP) is not captured: its all-reduce runs outside the graph here'
    return None


def new_sums(device: torch.device) -> dict:
    """The running sums of an epoch, on the device: CE loss, penalty, correct top-1, images."""
    f64, i64 = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
    return {'loss_sum': torch.zeros((), **f64), 'penalty_sum': torch.zeros((), **f64),
            'correct': torch.zeros((), **i64), 'count': torch.zeros((), **i64)}


@dataclass
class StepMath:
    """What one step computes. The loss of a step is sum(CE) * world_size / global_batch (+ penalty), so that DDP's
    gradient average equals the gradient of the mean CE over the whole global batch, even when ranks hold unequal
    parts of it."""
    model: nn.Module  # the one that steps (wrapped)
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    world_size: int = 1
    label_smoothing: float = 0.0
    penalty: Optional[Callable] = None
    penalty_model: Optional[nn.Module] = None  # the unwrapped model the penalty reads

    def loss(self, x, y, n_global: int):
        """(logits, summed CE, penalty or None, the loss to differentiate)."""
        # autocast's weight cache must be off under capture (CUDA graphs notes); it changes no value
        with autocast(self.device, self.amp_dtype, cache_enabled=False):
            logits = self.model(x)
        ce = F.cross_entropy(logits.float(), y, reduction='sum', label_smoothing=self.label_smoothing)
        loss = ce * (self.world_size / n_global)
        pen = self.penalty(self.penalty_model) if self.penalty is not None else None
        if pen is not None:
            loss = loss + pen
        return logits, ce, pen, loss

    @staticmethod
    def add_to_sums(sums: dict, logits, y, ce, pen):
        sums['loss_sum'] += ce.detach()
        if pen is not None:
            sums['penalty_sum'] += pen.detach()
        sums['correct'] += (logits.detach().argmax(-1) == y).sum()
        sums['count'] += y.numel()


class TrainStep:
    """One optimizer step per call, with tensor operations only, into sums it owns (zeroed by `start_epoch`).
    `capture`: replay each batch shape as one CUDA graph (CUDA only); otherwise the same step runs eagerly."""

    def __init__(self, math: StepMath, optimizer: torch.optim.Optimizer, *, count_bad: bool, capture: bool):
        if capture and math.device.type != 'cuda':
            raise ValueError('a CUDA graph needs a CUDA device')
        self.math, self.optimizer, self.count_bad, self.capture = math, optimizer, count_bad, capture
        use_tensor_lr(optimizer, math.device)  # the scheduler fills it in place: the graph reads it
        self.sums = new_sums(math.device)
        self.bad = torch.zeros((), dtype=torch.int64, device=math.device)
        self.graphs = {}  # batch layout -> _CapturedStep
        self.seen = {}  # batch layout -> eager steps run so far
        self.side = torch.cuda.Stream(math.device) if capture else None  # the warm-ups' stream

    def start_epoch(self) -> tuple:
        """(sums, bad-step count) of a new epoch: the same tensors, zeroed (a captured step writes into them)."""
        for t in (*self.sums.values(), self.bad):
            t.zero_()
        return self.sums, self.bad

    def run(self, x, y, n_global: int):
        """The step itself: what is captured."""
        self.optimizer.zero_grad(set_to_none=True)  # under capture backward allocates the grads in the graph's pool
        logits, ce, pen, loss = self.math.loss(x, y, n_global)
        if self.count_bad:
            self.bad += ~torch.isfinite(loss.detach())
        loss.backward()
        self.optimizer.step()
        self.math.add_to_sums(self.sums, logits, y, ce, pen)

    def __call__(self, x, y, n_global: int):
        if not self.capture:
            return self.run(x, y, n_global)
        key = (x.shape, x.stride(), x.dtype, y.shape, n_global)
        if key in self.graphs:
            return self.graphs[key].replay(x, y)
        if self.seen.get(key, 0) < WARMUP_STEPS:
            self.seen[key] = self.seen.get(key, 0) + 1
            return self._warm_up(x, y, n_global)
        self.graphs[key] = _CapturedStep(self.run, x, y, n_global)
        return self.graphs[key].replay(x, y)

    def _warm_up(self, x, y, n_global: int):
        """torch's rule before a capture: warm up on a side stream (lazy initialisations: the momentum buffers,
        cuDNN's autotuning of this shape)."""
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            self.run(x, y, n_global)
        torch.cuda.current_stream().wait_stream(self.side)


class _CapturedStep:
    """One CUDA graph of `step_fn` over static copies of a batch: a replay copies the batch in and runs it."""

    def __init__(self, step_fn, x, y, n_global: int):
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)  # same layout (channels_last stays)
        self.graph = torch.cuda.CUDAGraph()
        # records, does not run: the caller replays it for this batch. thread_local: the checkpoint writer's thread
        # may run meanwhile
        with torch.cuda.graph(self.graph, capture_error_mode='thread_local'):
            step_fn(self.x, self.y, n_global)

    def replay(self, x, y):
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
