"""The tensor loader: a split held on the device as one uint8 tensor (`zamzoo.data.tensors` decodes any data set
into it), batched with tensor augmentation.

The whole split lives on the device as uint8 (CIFAR's 50k x 3 x 32 x 32 is 150 MB); each step gathers its batch, crops,
flips, rotates and normalises it with a handful of batched ops and no host synchronisation. The same code runs on
CPU tensors (that is how the tests exercise it).

Augmentation follows the seeds' torchvision pipeline, in their order: RandomCrop(32, padding) with zero fill,
RandomHorizontalFlip(0.5), RandomRotation(degrees) with nearest interpolation and zero fill, then Normalize: the
same distributions, drawn from its own generator. The rotation is torchvision's tensor `rotate` (grid_sample, pixel
for pixel), not the PIL rotation of the seeds' DataLoader: at the same angle, 339 of 2,048,000 pixels (2,000 random
32x32 images, angles in [-15, 15)) take a neighbouring source pixel.
Every random draw of an epoch (the order and each position's crop offset, flip and angle) comes from a generator
seeded with (seed, epoch) on the CPU: an epoch is the same on any device and any number of ranks, and a resumed
run sees exactly the data the interrupted one would have.
"""
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .batches import epoch_bounds, epoch_generator, rank_slice


# ---------------------------------------------------------------------------------------------------------------
# Batched augmentation ops. x is (B, C, H, W); per-sample parameters are tensors of shape (B,) on x's device.

def pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero padding on the four sides (torchvision RandomCrop's default fill)."""
    return F.pad(x, (padding,) * 4) if padding else x


def crop_flip(x_padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: Optional[torch.Tensor],
              size: Tuple[int, int], index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Window (dy, dx) of size `size` from each padded image, mirrored left-right where `flip`, in one gather.

    With `index`, `x_padded` is the whole padded data set and the batch is `x_padded[index]`, gathered in the
    same op (no intermediate batch copy).
    """
    h, w = size
    dev = x_padded.device
    ar_w = torch.arange(w, device=dev)
    rows = dy.to(dev)[:, None] + torch.arange(h, device=dev)        # (B, H)
    if flip is None:
        cols = dx.to(dev)[:, None] + ar_w                           # (B, W)
    else:
        cols = dx.to(dev)[:, None] + torch.where(flip.to(dev)[:, None], (w - 1) - ar_w, ar_w)
    b = index.to(dev) if index is not None else torch.arange(rows.shape[0], device=dev)
    c = torch.arange(x_padded.shape[1], device=dev)
    return x_padded[b[:, None, None, None], c[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def random_crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int) -> torch.Tensor:
    """RandomCrop(size=(H, W), padding): the window at offset (dy, dx), each in [0, 2 * padding], of the
    zero-padded image."""
    return crop_flip(pad(x, padding), dy, dx, None, x.shape[-2:])


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where mask is True."""
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle about the image centre, nearest interpolation and zero fill,
    as torchvision's tensor `rotate` (RandomRotation's default) does, pixel for pixel: its inverse matrix in float64
    rounded to float32, applied to its grid of pixel centres, then one grid_sample for the batch. (affine_grid's
    grid, the same rotation, rounds otherwise: at 224 x 224 about one image in five had a pixel from a neighbour.)"""
    if not x.is_floating_point():
        raise TypeError(f'rotate expects a floating-point batch, got {x.dtype}')
    b, _, h, w = x.shape
    a = torch.deg2rad(-degrees.to(device=x.device, dtype=torch.float64))
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, sin, zero], -1), torch.stack([-sin, cos, zero], -1)], 1).float()
    base = torch.empty(1, h, w, 3, device=x.device)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).clone()  # divided column by column: no (0.5 w, 0.5 h) tensor copied to the device
    scaled[..., 0] /= 0.5 * w
    scaled[..., 1] /= 0.5 * h
    grid = base.view(1, h * w, 3).expand(b, h * w, 3).bmm(scaled).view(b, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode='nearest', padding_mode='zeros', align_corners=False)
    return out.to(x.dtype)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], max_value: float = 255.0) -> torch.Tensor:
    """(x / max_value - mean) / std as one multiply-add (uint8 or float input)."""
    scale, shift = _norm_coeffs(mean, std, max_value, x.device)
    return torch.addcmul(shift, x.float(), scale)


def _norm_coeffs(mean, std, max_value, device):
    """(scale, shift), computed in float64, as float32 (1, C, 1, 1) tensors on `device`."""
    mean, std = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    return tuple(t.to(torch.float32).view(1, -1, 1, 1).to(device) for t in (1.0 / (max_value * std), -mean / std))


class TensorLoader:
    """Batches of a device-resident image tensor for one rank; yields (images, targets, global_batch_size).

    images: (N, C, H, W) uint8; targets: (N,) int64; both are moved to `device` once. For training
    (`train=True`) the order and augmentation of each epoch are drawn from (seed, epoch) -- call `set_epoch`.
    Rank r of `world_size` gets a contiguous part of each global batch of `batch_size`, so the union over ranks
    is exactly what a single process would see.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, mean, std, *,
                 train: bool = True, crop_padding: int = 4, hflip: bool = True, rotation: float = 0.0,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 device='cpu', channels_last: bool = False, out_dtype: torch.dtype = torch.float32):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f'TensorLoader expects uint8 images (N, C, H, W), got {tuple(images.shape)} {images.dtype}')
        if len(images) != len(targets):
            raise ValueError(f'{len(images)} images but {len(targets)} targets')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.device = torch.device(device)
        self.n = len(images)
        self.size = tuple(images.shape[-2:])
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.hflip = hflip and train
        self.rotation = float(rotation) if train else 0.0
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = drop_last and train
        self.channels_last = channels_last
        self.out_dtype = out_dtype
        self.epoch = 0
        # Stored once, padded, so a step is a single gather.
        self.images = pad(images, self.crop_padding).to(self.device)
        self.targets = targets.to(self.device)
        self.scale, self.shift = _norm_coeffs(mean, std, 255.0, self.device)
        self.bounds = epoch_bounds(self.n, batch_size, self.drop_last, world_size, train)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def num_samples(self) -> int:
        """Images per epoch over all ranks."""
        return self.bounds[-1][1] if self.bounds else 0

    def epoch_params(self, epoch: int):
        """Order and per-position augmentation of one epoch (CPU tensors, identical on every rank)."""
        g = epoch_generator(self.seed, epoch)
        n, p = self.n, self.crop_padding
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.hflip else None
        angle = (torch.rand(n, generator=g) * 2 - 1) * self.rotation if self.rotation else None
        return order, dy, dx, flip, angle

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, int]]:
        non_blocking = self.device.type == 'cuda'
        # One host-to-device copy per epoch of everything random: order, dy, dx, flip and angle (None if unused).
        params = [p if p is None else p.to(self.device, non_blocking=non_blocking)
                  for p in self.epoch_params(self.epoch)]
        for start, stop in self.bounds:
            lo, hi = rank_slice(start, stop, self.rank, self.world_size)
            yield (*self.batch(*(p if p is None else p[lo:hi] for p in params)), stop - start)

    def batch(self, index, dy, dx, flip, angle):
        x = crop_flip(self.images, dy, dx, flip, self.size, index=index).float()
        if angle is not None:
            x = rotate(x, angle)
        x = torch.addcmul(self.shift, x, self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.out_dtype), self.targets[index]
