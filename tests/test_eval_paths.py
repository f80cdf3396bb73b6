"""Evaluation scores what it is given as it was trained or declared: every held-out image exactly once under
torch.distributed (gloo, 2 CPU processes), a run's --model-kwargs, the class count a run recorded for integer
labels, and an export folder's own preprocessing (timm's resolve_data_config + create_transform)."""
import json

import numpy as np
import pytest
import torch

from conftest import write_images
from zamzoo.train import TrainConfig, evaluate, train
from zamzoo.train import distributed as D

TINY = 'test_resnet'


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ DDP evaluation

def _eval_sums(n: int, loader: str, rank: int = 0, world_size: int = 1) -> dict:
    """The training loop's evaluation (`evaluate_loader`, then `_reduce`: summed over ranks) of a seeded linear
    model on the first `n` of 9 seeded 8x8 images, batches of 4, with this rank's part of each batch."""
    from zamzoo.data.loaders import DataLoaderBatches, PilImages, cifar_transforms
    from zamzoo.data.tensor_loader import TensorLoader
    from zamzoo.train.loop import _reduce, evaluate_loader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8, generator=g)[:n]
    targets = torch.randint(0, 3, (9,), generator=g)[:n]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    info = D.DistInfo(rank=rank, world_size=world_size)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if loader == 'tensor':
        batches = TensorLoader(images, targets, 4, mean, std, train=False, rank=rank, world_size=world_size)
    else:
        batches = DataLoaderBatches(PilImages(images, targets), 4, cifar_transforms(None, mean, std, False),
                                    train=False, rank=rank, world_size=world_size)
    return _reduce(evaluate_loader(model, batches, device=torch.device('cpu'), amp_dtype=None, num_classes=3), info)


def _ddp_worker(rank: int, world_size: int, store: str, out: str):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world_size)
    try:
        result = {f'{loader}/{n}': _eval_sums(n, loader, rank, world_size)
                  for loader in ('tensor', 'dataloader') for n in (9, 1)}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(out, 'w') as f:
            json.dump(result, f)


def test_distributed_evaluation_scores_every_image_once_as_one_process_does(tmp_path):
    """9 images in batches of 4 over 2 ranks: the last batch of one image is scored by rank 0 alone (it was dropped:
    test_images 8 of 9); one image over 2 ranks: rank 1 has nothing and still joins the all-reduce (every rank
    failed on 0 images). Both loaders, against one process."""
    import torch.multiprocessing as mp
    out = tmp_path / 'ddp.json'
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'store'), str(out)), nprocs=2, join=True)
    ddp = json.loads(out.read_text())
    for key, sums in ddp.items():
        loader, n = key.split('/')
        single = _eval_sums(int(n), loader)
        assert sums['count'] == single['count'] == int(n), key
        assert sums['top1'] == single['top1'] and sums['top5'] == single['top5'], key
        assert sums['loss_sum'] == pytest.approx(single['loss_sum'], rel=1e-6), key
