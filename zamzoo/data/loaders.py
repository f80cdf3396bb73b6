"""The plain path: a torch DataLoader over a map-style dataset with torchvision transforms v2 (any data set, CPU).

Determinism does not depend on workers or on the global RNG: each sample's augmentation is drawn under a seed
made of (seed, epoch, sample index), and the order of an epoch comes from (seed, epoch). Ranks of a distributed
run take contiguous parts of the same global batches, as the tensor loader does.
"""
import math
from typing import Iterator, List, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .batches import epoch_bounds, epoch_generator, rank_slice


def cifar_transforms(recipe, mean, std, train: bool):
    """The seeds' CIFAR pipeline as torchvision v2 transforms (PIL in, normalised float tensor out)."""
    t = []
    if train:
        if recipe.crop_padding:
            t.append(v2.RandomCrop(32, padding=recipe.crop_padding))
        if recipe.hflip:
            t.append(v2.RandomHorizontalFlip())
        if recipe.rotation:
            t.append(v2.RandomRotation(recipe.rotation, interpolation=InterpolationMode.NEAREST))
    t += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(t)


EVAL_CROP_PCT = {'dataloader': 0.875, 'tensor': 1.0}
EVAL_INTERPOLATION = 'bilinear'
"""Evaluation of image-folder and Hugging Face data, by loader: the shorter side resized (bilinear) to
`eval_resize`, then a centre crop to the input size: timm's eval transform for this crop_pct and interpolation,
which an export of the run declares (so timm, transformers and the model card preprocess as the run was scored).
The DataLoader trains on random-resized crops (timm's way), the tensor loader on padded crops of the image resized
to the input size (CIFAR's way); each evaluates as it trains."""


def eval_resize(img_size: int, crop_pct: float) -> int:
    """The shorter side before the centre crop, as timm computes it (floor)."""
    return math.floor(img_size / crop_pct)


FOLDER_CROP_SCALE = (0.35, 1.0)  # the share of the image a training crop of the DataLoader covers (timm's is 0.08)


def folder_transforms(recipe, mean, std, img_size: int, train: bool, crop_pct: float = EVAL_CROP_PCT['dataloader']):
    """Image folders: random-resized crop + flip (+ rotation) for training, resize + centre crop (`crop_pct`: the
    DataLoader's by default) for evaluation."""
    if train:
        t = [v2.RandomResizedCrop(img_size, scale=FOLDER_CROP_SCALE, antialias=True)]
        if recipe.hflip:
            t.append(v2.RandomHorizontalFlip())
        if recipe.rotation:
            t.append(v2.RandomRotation(recipe.rotation))
    else:
        t = [v2.Resize(eval_resize(img_size, crop_pct), interpolation=InterpolationMode(EVAL_INTERPOLATION),
                       antialias=True),
             v2.CenterCrop(img_size)]
    t += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(t)


class PilImages(Dataset):
    """uint8 image tensors (N, C, H, W) served as PIL images, as torchvision's CIFAR dataset serves its arrays."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = targets.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        from PIL import Image
        img = Image.fromarray(self.images[index])
        return (self.transform(img) if self.transform is not None else img), self.targets[index]


class SeededTransform(Dataset):
    """A dataset whose transform runs under a per-sample seed (seed, epoch, index): same augmentation whatever the
    number of workers, the rank or the state of the global RNG."""

    def __init__(self, dataset, transform, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        img, target = self.dataset[index]
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                # only the CPU generator the transforms draw from: torch.manual_seed also seeds every accelerator
                # backend, 6x the cost of the whole seeding (~130 us of ~150 us per image)
                torch.default_generator.manual_seed(
                    epoch_generator(self.seed, self.epoch, 1000 + int(index)).initial_seed())
                img = self.transform(img)
        return img, target


class EpochBatchSampler(Sampler):
    """This rank's index lists of the epoch's global batches; order from (seed, epoch) when shuffling."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        bounds = epoch_bounds(n, batch_size, drop_last, world_size, train=shuffle)
        # (lo, hi, global size) of each batch this rank has a part of: in evaluation a rank may have none of a last
        # batch smaller than world_size, and an empty batch is not fetched (DataLoader cannot collate one)
        parts = [(*rank_slice(start, stop, rank, world_size), stop - start) for start, stop in bounds]
        self.parts = [(lo, hi, size) for lo, hi, size in parts if hi > lo]
        self.bounds = bounds
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def global_sizes(self) -> List[int]:
        return [stop - start for start, stop in self.bounds]

    def own_sizes(self) -> List[int]:
        return [n for _, _, n in self.parts]

    def __len__(self):
        return len(self.parts)

    def __iter__(self):
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle \
            else torch.arange(self.n)
        for lo, hi, _ in self.parts:
            yield order[lo:hi].tolist()


class DataLoaderBatches:
    """DataLoader batches as (images, targets, global_batch_size) moved to `device`, like `TensorLoader`."""

    def __init__(self, dataset, batch_size: int, transform, *, train: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, num_workers: int = 0, device='cpu',
                 channels_last: bool = False):
        self.dataset = SeededTransform(dataset, transform, seed)
        self.sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=train, seed=seed, rank=rank,
                                         world_size=world_size, drop_last=drop_last and train)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=self.device.type == 'cuda', persistent_workers=False)

    def set_epoch(self, epoch: int):
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    @property
    def num_samples(self) -> int:
        return sum(self.sampler.global_sizes())

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, int]]:
        nb = self.device.type == 'cuda'
        for (x, y), n in zip(self.loader, self.sampler.own_sizes()):
            x = x.to(self.device, non_blocking=nb)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=nb), n
