"""Reading one image file as 8-bit RGB, the same way everywhere (image folders, Hugging Face datasets, `zamzoo viz`).

- 16-bit (and 32-bit integer) greyscale images are rescaled to 8 bits (0..65535 -> 0..255), not clipped as
  PIL's ``convert('RGB')`` would (it keeps the low values and saturates the rest to 255);
- an unreadable, empty or truncated file, or one larger than PIL's decompression-bomb limit, raises a `DataError`
  that names the file.
"""
from pathlib import Path

import numpy as np

from ..errors import DataError

_WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def to_rgb(image):
    """A PIL image as 8-bit RGB; wide greyscale modes are rescaled to the 8-bit range first."""
    from PIL import Image

    if image.mode in _WIDE_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8), mode='L')
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


def open_rgb(path, name=None):
    """The image at `path` (a file name or a binary file object), decoded, as an 8-bit RGB PIL image; or a
    `DataError` naming `name` (default: the path)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (*_READ_ERRORS, Image.DecompressionBombError) as e:
        raise _failure(path, e, name) from None


def check_image(path, name=None) -> bool:
    """Raise a `DataError` naming `name` (default: the path) unless `path` is a complete image (header and data
    checked without decoding the pixels: PIL's ``verify``, which reads every chunk of a PNG and its checksums)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except (*_READ_ERRORS, Image.DecompressionBombError) as e:
        raise _failure(path, e, name) from None
    return True
