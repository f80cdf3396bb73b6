"""Exceptions a user can hit. The CLI turns any of them into a one-line message and a non-zero exit."""


class ZamzooError(Exception):
    """Base class of every error zamzoo raises on purpose."""


class DataError(ZamzooError):
    """A data set folder is missing, incomplete or malformed."""


class WeightsError(ZamzooError):
    """Pretrained weights are unpublished, missing, corrupt or do not match the manifest."""
