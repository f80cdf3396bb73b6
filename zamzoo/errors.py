"""Exceptions a user can hit. The CLI turns any of them into a one-line message and a non-zero exit."""


class ZamzooError(Exception):
    """Base class of every error zamzoo raises on purpose."""


class DataError(ZamzooError):
    """A data set folder is missing, incomplete or malformed."""


class WeightsError(ZamzooError):
    """Pretrained weights are unpublished, missing, corrupt or do not match the manifest."""


class UsageError(ZamzooError, ValueError):
    """An argument, setting or option the user gave is not valid (also a ValueError, for the Python API)."""


class OutputError(ZamzooError):
    """An output path cannot be written, or holds something zamzoo did not write and will not replace."""


class NonFiniteError(ZamzooError):
    """A loss, weight or metric is NaN or infinite: training stops, export and push refuse."""


class NotFoundError(ZamzooError, FileNotFoundError):
    """A file or folder the user named does not exist."""
