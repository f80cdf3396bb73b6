"""Distributed setup for `torchrun --nproc_per_node N -m zamzoo train ...` (single or multi node).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run is one process.
CUDA runs use NCCL with one GPU per local rank; CPU runs use gloo.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError, ZamzooError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    initialized_here: bool = False

    is_main = property(lambda self: self.rank == 0)
    distributed = property(lambda self: self.world_size > 1)


# what gloo and NCCL raise in a process whose peer left without a word (killed by a signal, out of memory)
PEER_LOSS_SIGNS = ('Connection closed by peer', 'Connection reset by peer', 'gloo/transport', 'Broken pipe',
                   'remote process exited')


class PeerLost(ZamzooError):
    """A process of a run lost its connection to another one: the failure is the other process's."""


def as_peer_loss(error: BaseException) -> BaseException:
    """`error` as a PeerLost where it is a lost connection to another process of the run (torch's DistError, or
    gloo's and NCCL's own words), so that a run whose process was killed is not recorded as failed by the error of
    a process that was not; else `error` itself."""
    text = str(error)
    if not (isinstance(error, dist.DistError) or any(sign in text for sign in PEER_LOSS_SIGNS)):
        return error
    first = (text.strip().splitlines() or [type(error).__name__])[0][:200]
    return PeerLost(f'lost its connection to another process of the run, which ended without recording an error '
                    f'(killed by a signal? out of memory?): {type(error).__name__}: {first}')


def is_main_process() -> bool:
    """Rank 0 by torchrun's environment (before torch.distributed is set up): the process that prints."""
    return int(os.environ.get('RANK', '0')) == 0


def available_devices() -> list:
    """The devices this machine can run on: cpu, each CUDA GPU, mps when present."""
    devices = ['cpu'] + [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append('mps')
    return devices


def resolve_device(device=None) -> torch.device:
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    have = available_devices()
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError(f"device: unknown '{device}'; this machine has {', '.join(have)}") from None
    any_gpu = device.type == 'cuda' and device.index is None and torch.cuda.is_available()
    if not (device.type == 'cpu' or any_gpu or str(device) in have):
        raise UsageError(f"device '{device}' is not available here; this machine has {', '.join(have)}")
    return device


def setup(device=None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    device = resolve_device(device)
    if world_size <= 1:
        return DistInfo(device=device)
    rank = int(os.environ['RANK'])
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device.type == 'cuda':
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f'local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); '
                             f'use --nproc_per_node <= the number of GPUs')
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    initialized_here = not dist.is_initialized()
    if initialized_here:
        kwargs = {'backend': 'nccl', 'device_id': device} if device.type == 'cuda' else {'backend': 'gloo'}
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                    initialized_here=initialized_here)


def teardown(info: DistInfo):
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def finite_on_every_rank(finite: torch.Tensor, world_size: int) -> torch.Tensor:
    """`finite` (a bool scalar) and'ed over the ranks of the process group, so that every rank decides alike."""
    if world_size == 1:
        return finite
    flag = finite.to(torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag.bool()


def barrier(info: DistInfo):
    if info.distributed:
        dist.barrier(device_ids=[info.device.index] if info.device.type == 'cuda' else None)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo):
    """Give every rank rank 0's buffers (BN running statistics) before evaluating or saving."""
    if info.distributed:
        for b in module.buffers():
            dist.broadcast(b, src=0)


def gather_object(obj, info: DistInfo):
    """Every rank's `obj`, in rank order, on rank 0 (None on the other ranks)."""
    if not info.distributed:
        return [obj]
    gathered = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_object(obj, info: DistInfo):
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
