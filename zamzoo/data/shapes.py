"""A small learnable image data set made on the fly: coloured shapes in 10 classes at 32x32, written as an
image folder (``train/<class>/*.png`` and ``val/<class>/*.png``), so that training on it exercises the same path as
a user's own data (``zamzoo train --dataset folder``).

The class is the shape; its colour, size, position, background and noise are random, so a model has to learn
shapes, not colours. The images depend only on the seed and the counts.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np

CLASSES = ('circle', 'ring', 'square', 'frame', 'triangle', 'diamond', 'plus', 'cross', 'star', 'bars')
IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # drawn at 4x and downsampled: anti-aliased edges


def _polygon(cx, cy, r, angles):
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]


def _draw(draw, shape: str, cx: float, cy: float, r: float, fill, background):
    """Draw one shape of radius `r` centred at (cx, cy) on a PIL ImageDraw (coordinates in supersampled pixels)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2.0, r * 0.35)  # stroke width of the thin shapes
    if shape in ('circle', 'ring'):
        draw.ellipse(box, fill=fill)
        if shape == 'ring':
            draw.ellipse((cx - r + w, cy - r + w, cx + r - w, cy + r - w), fill=background)
    elif shape in ('square', 'frame'):
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
        if shape == 'frame':
            draw.rectangle((cx - s + w, cy - s + w, cx + s - w, cy + s - w), fill=background)
    elif shape == 'triangle':
        draw.polygon(_polygon(cx, cy + r * 0.15, r, np.deg2rad([-90, 30, 150])), fill=fill)
    elif shape == 'diamond':
        draw.polygon(_polygon(cx, cy, r, np.deg2rad([0, 90, 180, 270])), fill=fill)
    elif shape == 'plus':
        draw.rectangle((cx - w / 2, cy - r, cx + w / 2, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - w / 2, cx + r, cy + w / 2), fill=fill)
    elif shape == 'cross':
        d = r * 0.75
        draw.line((cx - d, cy - d, cx + d, cy + d), fill=fill, width=int(w))
        draw.line((cx - d, cy + d, cx + d, cy - d), fill=fill, width=int(w))
    elif shape == 'star':
        angles = np.deg2rad(np.arange(10) * 36 - 90)
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)], fill=fill)
    elif shape == 'bars':
        for dy in (-r * 0.55, r * 0.55):
            draw.rectangle((cx - r, cy + dy - w / 2, cx + r, cy + dy + w / 2), fill=fill)
    else:
        raise ValueError(f"unknown shape '{shape}'; expected one of {CLASSES}")


def render_shape(shape: str, rng: np.random.Generator) -> np.ndarray:
    """One (32, 32, 3) uint8 image of `shape` with random colours, size, position and noise."""
    from PIL import Image, ImageDraw

    size = IMAGE_SIZE * _SUPERSAMPLE
    background = rng.integers(0, 256, 3)
    fill = rng.integers(0, 256, 3)
    while np.abs(fill - background).sum() < 200:  # keep the shape visible against its background
        fill = rng.integers(0, 256, 3)
    r = rng.uniform(8.0, 12.0) * _SUPERSAMPLE
    # near the centre, whole: the training crops (random-resized, down to a third of the image) keep most of it
    jitter = min(4 * _SUPERSAMPLE, size / 2 - r - _SUPERSAMPLE)
    cx, cy = size / 2 + rng.uniform(-jitter, jitter, 2)
    background, fill = tuple(map(int, background)), tuple(map(int, fill))
    image = Image.new('RGB', (size, size), background)
    _draw(ImageDraw.Draw(image), shape, cx, cy, r, fill, background)
    pixels = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.int16)
    noise = rng.integers(-12, 13, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_shapes(n_train: int = 2000, n_val: int = 500, seed: int = 0) -> Arrays:
    """(train_images, train_labels, val_images, val_labels): images (N, 32, 32, 3) uint8, labels cycling over the
    10 classes (balanced). Train and val come from different random streams of the same seed."""
    def split(n, stream):
        rng = np.random.default_rng([seed, stream])
        labels = np.arange(n) % len(CLASSES)
        return np.stack([render_shape(CLASSES[c], rng) for c in labels]), labels

    if n_train < len(CLASSES) or n_val < len(CLASSES):
        raise ValueError(f'shapes: expected at least {len(CLASSES)} train and val images (one per class), '
                         f'got {n_train} and {n_val}')
    return (*split(n_train, 0), *split(n_val, 1))


def write_shapes(root, n_train: int = 2000, n_val: int = 500, seed: int = 0) -> Path:
    """Write the data set as an image folder at `root` (``train/<class>/<i>.png``, ``val/<class>/<i>.png``) and
    return `root`. Written into a temporary folder next to `root` and renamed into place: `root` is either absent
    or complete. An existing `root` is refused."""
    from PIL import Image

    root = Path(root)
    if root.exists():
        raise FileExistsError(f'{root} already exists; choose another folder or remove it')
    root.parent.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xva, yva = make_shapes(n_train, n_val, seed)
    staging = Path(tempfile.mkdtemp(prefix=f'.{root.name}.', suffix='.tmp', dir=root.parent))
    try:
        for split, images, labels in (('train', xtr, ytr), ('val', xva, yva)):
            for name in CLASSES:
                (staging / split / name).mkdir(parents=True)
            for i, (image, label) in enumerate(zip(images, labels)):
                Image.fromarray(image).save(staging / split / CLASSES[label] / f'{i:05d}.png')
        os.chmod(staging, 0o755)  # mkdtemp makes a private folder
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root
