"""Reading one image file as 8-bit RGB, the same way everywhere (image folders, Hugging Face datasets, `zamzoo viz`,
and so both loaders, which decode through `open_rgb`). Each mode is converted from the range it really holds:

- 8-bit modes (L, P, 1, LA, RGBA, CMYK, YCbCr, LAB, HSV...) by PIL's ``convert('RGB')`` (alpha is dropped);
- 16-bit greyscale (I;16*) and 32-bit integer greyscale (I) holding 0..65535 are rescaled to 8 bits
  (0..65535 -> 0..255), not clipped as PIL's ``convert('RGB')`` would; an I image with values outside 0..65535 is
  refused (its range cannot be told from the file);
- 32-bit float greyscale (F): values all in 0..1 are read as 0..1 (the float convention), values above 1 and up to
  255 as 0..255; negative, larger or non-finite values are refused. (PIL clips F to 0..255: a 0..1 image turns black.)

An unreadable, empty or truncated file, one refused above, or one larger than PIL's decompression-bomb limit, raises a
`DataError` that names the file.
"""
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError

_WIDE_GREY_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
# Modes converted without looking at the pixels; the others are converted by `check_image` too, so an image refused
# for its range (or a mode PIL cannot convert) stops the run when the data is indexed, not mid-epoch.
_PLAIN_MODES = ('1', 'L', 'P', 'RGB', 'RGBA', 'RGBX', 'LA', 'PA', 'CMYK', 'YCbCr', 'LAB', 'HSV',
                'I;16', 'I;16L', 'I;16B', 'I;16N')


def _grey_as_8_bit(image):
    """A wide (16-bit, 32-bit integer or float) greyscale image as an 8-bit one, from the range it holds."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == 'F':
        if not (np.isfinite(values).all() and lo >= 0 and hi <= 255):
            raise ValueError(f'32-bit float pixels range {lo:g}..{hi:g}; expected 0..1 or 0..255')
        scale = 255.0 if hi <= 1 else 1.0
    else:
        if lo < 0 or hi > 65535:
            raise ValueError(f'32-bit integer pixels range {lo:g}..{hi:g}; expected 0..65535 (16 bits)')
        scale = 1 / 257.0
    return Image.fromarray(np.rint(values * scale).astype(np.uint8), mode='L')


def to_rgb(image):
    """A PIL image as 8-bit RGB, converted from the range its mode holds (a ValueError for a range it refuses)."""
    if image.mode in _WIDE_GREY_MODES:
        image = _grey_as_8_bit(image)
    if isinstance(image.info.get('transparency'), bytes):
        # PIL drops a palette's per-entry alpha when it converts to RGB, as here, but warns on stderr for every image
        image = image.copy()
        del image.info['transparency']
    return image if image.mode == 'RGB' else image.convert('RGB')


def _is_empty(path) -> bool:
    if isinstance(path, (str, Path)):
        return Path(path).is_file() and Path(path).stat().st_size == 0
    return hasattr(path, 'getbuffer') and path.getbuffer().nbytes == 0


def _failure(path, e: BaseException, name=None) -> DataError:
    from PIL import Image

    name = name or path
    if isinstance(e, Image.DecompressionBombError):
        return DataError(f'{name}: refused as a possible decompression bomb ({e})')
    reason = 'empty file (0 bytes)' if _is_empty(path) else f'{type(e).__name__}: {e}'
    return DataError(f'cannot read {name} as an image ({reason}); replace or remove it')


_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def open_rgb(path, name=None, exif: bool = False, mode: Optional[str] = None):
    """The image at `path` (a file name or a binary file object), decoded, as an 8-bit RGB PIL image; or a
    `DataError` naming `name` (default: the path). `exif` and `mode` (a PIL mode): first decoded as the `datasets`
    library's ``Image(mode=...)`` feature decodes it (what ``ds[i]['image']`` shows): turned as its EXIF orientation
    says, then converted to `mode`; torchvision's and timm's folder loaders do neither, and neither do image folders
    here."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            shown = im
            if exif and im.getexif().get(Image.ExifTags.Base.Orientation) is not None:
                shown = ImageOps.exif_transpose(im)
            return _as_rgb_in_mode(shown, mode, name or path) if mode and mode != shown.mode else to_rgb(shown)
    except (*_READ_ERRORS, Image.DecompressionBombError) as e:
        raise _failure(path, e, name) from None


def _as_rgb_in_mode(image, mode: str, name):
    """`image` converted to `mode`, then to RGB; a `DataError` that blames the mode (not the file) when PIL lacks
    either conversion or `to_rgb` refuses the range it gives."""
    try:
        return to_rgb(image.convert(mode))
    except ValueError as e:
        raise DataError(f"{name}: its {image.mode} image converted to the Image feature's mode {mode} (as datasets "
                        f"decodes it) cannot be read as RGB ({e}); expected a mode that converts to RGB: cast the "
                        f"column to one, e.g. datasets.Image(mode='RGB')") from None


def _decode(image):
    """Decode an open image, as `open_rgb` will, to find what a header check cannot: truncated or broken data, and
    (for the modes not in `_PLAIN_MODES`) a range `to_rgb` refuses. A JPEG in a plain mode is decoded at 1/8 scale
    (PIL's ``draft``): libjpeg still reads and entropy-decodes every byte, so it fails where the full decode does,
    and skips the full-size inverse DCT and colour conversion (0.4-0.65 of the full decode's time on 500x375 photos)."""
    if image.mode in _PLAIN_MODES:
        image.draft(image.mode, (1, 1))
        image.load()
    else:
        image.load()
        to_rgb(image)


def _verify_reads_data(image) -> bool:
    """Whether PIL's ``verify`` checks the image data of this format (PNG: every chunk and its checksum); for the
    others (JPEG, BMP, TIFF, GIF, WebP...) it checks nothing the header did not."""
    from PIL import ImageFile

    return type(image).verify is not ImageFile.ImageFile.verify


def check_image(path, name=None) -> bool:
    """Raise a `DataError` naming `name` (default: the path) unless `path` is a complete image whose mode converts to
    RGB: a PNG by PIL's ``verify`` (its pixels decoded only for the modes not in `_PLAIN_MODES`, to check their
    range), every other format by decoding it (`_decode`), so that what passes here `open_rgb` reads."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            verified, plain = _verify_reads_data(im), im.mode in _PLAIN_MODES
            if verified:
                im.verify()
            else:
                _decode(im)
        if verified and not plain:
            if hasattr(path, 'seek'):
                path.seek(0)
            with Image.open(path) as im:
                _decode(im)
    except (*_READ_ERRORS, Image.DecompressionBombError) as e:
        raise _failure(path, e, name) from None
    return True
