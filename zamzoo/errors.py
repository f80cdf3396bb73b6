"""Exceptions a user can hit. The CLI turns any of them into a one-line message and a non-zero exit."""
import re

_TERMINAL_CODES = re.compile(r'\x1b\[[0-9;]*m')  # the colours torch's exporters print their steps in


class ZamzooError(Exception):
    """Base class of every error zamzoo raises on purpose."""


class DataError(ZamzooError):
    """A data set folder is missing, incomplete or malformed."""


class SplitMismatch(DataError):
    """The data lacks images a run's split file lists: it is not the data the run held its images out of."""


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


_CLASS_PREFIX = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>")  # "<class 'torch.x.Error'>: why" -> "Error: why"


def one_line(e: BaseException) -> str:
    """'<Type>: <the first line of its message>', without terminal colour codes: another library's error, as a
    message of ours quotes it. Of torch.onnx's report, whose first line is the same advice for every failure, the
    line of the exception it summarises."""
    lines = [line.strip() for line in _TERMINAL_CODES.sub('', str(e)).strip().splitlines()]
    if '## Exception summary' in lines:
        summary = [line for line in lines[lines.index('## Exception summary') + 1:] if line]
        if summary:
            lines = [_CLASS_PREFIX.sub(r'\1', summary[0])]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
