"""`zamzoo bench train`: images/s of one training epoch, our loop against a loop in the seeds' style, same run.

Both train the same architecture on the same synthetic CIFAR-shaped data (uint8 images, random labels) with the
same recipe's augmentation and optimizer:

- ours: the training loop's own `train_one_epoch` over the device-resident `TensorLoader` (batched augmentation
  on the device), autocast (bf16 on CUDA), channels_last, fused SGD, optional torch.compile, no host sync per step;
- reference: what the seeds do -- a torch DataLoader with worker processes over PIL images and torchvision's
  classic transforms (RandomCrop, RandomHorizontalFlip, RandomRotation, ToTensor, Normalize), fp32, and
  `loss.item()` every step (the seeds print it).

Each loop first runs a few warm-up steps (including the epoch's last, partial batch shape, so compilation and
cuDNN autotuning stay out of the timed epoch); the warm-up time is reported apart.
"""
import os
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .. import provenance
from .._io import write_json_atomic
from .._paths import check_writable
from ..dataset_table import NUM_CLASSES
from ..errors import UsageError
from ..recipes import get_recipe

DEFAULT_MODEL = 'resnet18_zam'
DEFAULT_RECIPE = 'zam'
DEFAULT_BATCH = get_recipe(DEFAULT_RECIPE).batch_size
SYNTHETIC_CLASSES = NUM_CLASSES['cifar100']  # the synthetic images are CIFAR-100-shaped


def synthetic_cifar(n: int, num_classes: int = SYNTHETIC_CLASSES, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, num_classes, (n,), generator=g)
    return images, targets


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _subset_for_warmup(n, batch_size, steps):
    """Enough images for `steps` full batches and, if the epoch ends with a partial batch, one of that size."""
    return min(n, steps * batch_size + n % batch_size)


def ours_trainer(model_name, *, device, batch_size, recipe, amp, compile, compile_mode, num_classes, steps_per_epoch,
                 seed=0, cuda_graph=False):
    """Our loop for `model_name`: (make_loader(images, targets), run_epoch(loader) -> the epoch's sums, pieces).
    cuda_graph: the step of `zamzoo train --cuda-graph` (captured on CUDA, eager elsewhere)."""
    from ..data import TensorLoader
    from .build import amp_dtype, build_pieces, create_model
    from .loop import train_one_epoch

    model = create_model(model_name, num_classes)
    channels_last = device.type == 'cuda'
    mean, std = recipe.stats('cifar100')
    mk = lambda im, tg: TensorLoader(im, tg, batch_size, mean, std, train=True, crop_padding=recipe.crop_padding,  # noqa
                                     hflip=recipe.hflip, rotation=recipe.rotation, seed=seed, device=device,
                                     channels_last=channels_last)
    p = build_pieces(model, device, amp_dtype(amp, device), channels_last=channels_last, recipe=recipe,
                     steps_per_epoch=steps_per_epoch)
    net = torch.compile(p.model, mode=compile_mode, dynamic=False) if compile else p.model
    step = _graph_step(net, p, device, recipe, compile, compile_mode) if cuda_graph else None
    kw = dict(device=device, amp_dtype=p.amp_dtype, penalty=p.penalty, penalty_model=p.model, scaler=p.scaler,
              label_smoothing=recipe.label_smoothing, train_step=step)
    return mk, lambda loader: train_one_epoch(net, loader, p.optimizer, p.scheduler, **kw), p


def _graph_step(net, p, device, recipe, compile, compile_mode):
    """The step `zamzoo train --cuda-graph` runs; refused (UsageError) where train would refuse the option or run
    the eager step."""
    from .config import check_graph_compile_mode
    from .step import StepMath, TrainStep, graph_refusal

    check_graph_compile_mode(compile, compile_mode)
    refusal = graph_refusal(world_size=1, scaler=p.scaler)
    if refusal is not None:
        raise UsageError(f'--cuda-graph: {refusal}')
    step_math = StepMath(net, device, p.amp_dtype, 1, recipe.label_smoothing, p.penalty, p.model)
    return TrainStep(step_math, p.optimizer, count_bad=False, capture=device.type == 'cuda')


def bench_ours(model_name, images, targets, *, device, batch_size, recipe, amp, compile, compile_mode,
               warmup_steps, num_classes, seed=0, cuda_graph=False):
    from .checkpoint import seed_everything

    seed_everything(seed)
    mk, run_epoch, p = ours_trainer(model_name, device=device, batch_size=batch_size, recipe=recipe, amp=amp,
                                    compile=compile, compile_mode=compile_mode, num_classes=num_classes,
                                    steps_per_epoch=-(-len(images) // batch_size), seed=seed, cuda_graph=cuda_graph)
    loader = mk(images, targets)
    m = _subset_for_warmup(len(images), batch_size, warmup_steps)
    _sync(device)
    t0 = time.perf_counter()
    if m:
        run_epoch(mk(images[:m], targets[:m]))
    _sync(device)
    warm = time.perf_counter() - t0
    loader.set_epoch(1)
    t0 = time.perf_counter()
    sums = run_epoch(loader)
    loss = float(sums['loss_sum']) / int(sums['count'])  # the one host sync
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {'images_per_s': len(images) / elapsed, 'epoch_s': elapsed, 'warmup_s': warm, 'loss': loss,
            'amp': p.amp_name, 'compile': bool(compile), 'compile_mode': compile_mode,
            'cuda_graph': bool(cuda_graph) and device.type == 'cuda',
            'channels_last': device.type == 'cuda', 'loader': 'tensor (device-resident)', 'steps': len(loader)}


def bench_reference(model_name, images, targets, *, device, batch_size, recipe, workers, warmup_steps, num_classes,
                    seed=0):
    from torchvision import transforms as T
    from ..data import PilImages
    from .build import create_model
    from .checkpoint import seed_everything

    seed_everything(seed)
    mean, std = recipe.stats('cifar100')
    t = [T.RandomCrop(32, padding=recipe.crop_padding)] if recipe.crop_padding else []
    t += [T.RandomHorizontalFlip()] if recipe.hflip else []
    t += [T.RandomRotation(recipe.rotation)] if recipe.rotation else []
    transform = T.Compose(t + [T.ToTensor(), T.Normalize(mean, std)])
    model = create_model(model_name, num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)

    def epoch(ims, tgs):
        loader = torch.utils.data.DataLoader(PilImages(ims, tgs, transform), batch_size=batch_size, shuffle=True,
                                             num_workers=workers)
        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)  # the seeds read the loss every step
            n += len(y)
        return total / n

    m = _subset_for_warmup(len(images), batch_size, warmup_steps)
    t0 = time.perf_counter()
    if m:
        epoch(images[:m], targets[:m])
    _sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = epoch(images, targets)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {'images_per_s': len(images) / elapsed, 'epoch_s': elapsed, 'warmup_s': warm, 'loss': loss,
            'amp': 'none', 'compile': False, 'channels_last': False, 'loader': f'DataLoader ({workers} workers) + PIL',
            'steps': -(-len(images) // batch_size)}


def bench_train(model: str = DEFAULT_MODEL, *, device: Optional[str] = None, batch_size: int = DEFAULT_BATCH,
                images: Optional[int] = None, recipe: str = DEFAULT_RECIPE, compile: bool = False,
                compile_mode: Optional[str] = None, amp: str = 'auto', workers: Optional[int] = None,
                reference: bool = True, warmup_steps: Optional[int] = None, num_classes: int = SYNTHETIC_CLASSES,
                seed: int = 0, out: Optional[str] = None, cuda_graph: bool = False) -> dict:
    """Images/s of one training epoch of `model` for our loop and the seeds'-style reference loop.

    Defaults: 50,000 images (a CIFAR epoch) on CUDA, 1,024 on CPU. Writes, when `out` is given,
    `<out>/train-<model>-<device>-b<batch>-<recipe>-<amp>[-compiled-<mode>][-graph].json`. Returns the result dict
    (ratio in 'speedup')."""
    from .distributed import resolve_device

    dev = resolve_device(device)
    if batch_size < 1:
        raise UsageError(f'batch size must be >= 1, got {batch_size}')
    images = images if images is not None else (50_000 if dev.type == 'cuda' else 1024)
    if images < batch_size:
        raise UsageError(f'images ({images}) must be at least one batch ({batch_size})')
    if warmup_steps is not None and warmup_steps < 0:
        raise UsageError(f'warm-up steps must be >= 0, got {warmup_steps}')
    if out is not None:
        check_writable(out, '--out')
    warmup_steps = warmup_steps if warmup_steps is not None else (20 if dev.type == 'cuda' else 2)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    rec = get_recipe(recipe)
    ims, tgs = synthetic_cifar(images, num_classes, seed)
    result = {
        'benchmark': 'train', 'model': model, 'recipe': rec.name, 'batch_size': batch_size, 'images': images,
        'num_classes': num_classes, 'device': provenance.device_description(dev), 'device_type': dev.type,
        'data': 'synthetic CIFAR-shaped uint8 images, random labels', 'warmup_steps': warmup_steps,
    }
    result['ours'] = bench_ours(model, ims, tgs, device=dev, batch_size=batch_size, recipe=rec, amp=amp,
                                compile=compile, compile_mode=compile_mode, warmup_steps=warmup_steps,
                                num_classes=num_classes, seed=seed, cuda_graph=cuda_graph)
    if reference:
        result['reference'] = bench_reference(model, ims, tgs, device=dev, batch_size=batch_size, recipe=rec,
                                              workers=workers, warmup_steps=warmup_steps, num_classes=num_classes,
                                              seed=seed)
        result['speedup'] = result['ours']['images_per_s'] / result['reference']['images_per_s']
    result.update({'code_commit': provenance.code_commit(), 'torch': torch.__version__,
                   'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z')})
    if out is not None:  # one file per setting: a measurement replaces only one of the same setting
        variant = (f"-compiled-{compile_mode or 'default'}" if compile else '') + ('-graph' if cuda_graph else '')
        path = Path(out) / f"train-{model}-{dev.type}-b{batch_size}-{recipe}-{result['ours']['amp']}{variant}.json"
        write_json_atomic(path, result)
        result['path'] = str(path)
    return result
