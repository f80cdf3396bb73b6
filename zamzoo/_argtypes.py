"""argparse types shared by the `<package>/commands.py` modules. Not in zamzoo/cli.py: cli.py imports every
commands module, and a commands module importing cli.py back would point a lower layer at the top one
(tests/test_packaging.py's layering)."""
import argparse
import ast
import math


def _number(text, cast, ok, expected: str):
    try:
        v = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}') from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f'expected {expected}, got {v}')
    return v


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, 'a positive integer')


def non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, 'an integer >= 0')


def positive_float(text):
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), 'a positive (finite) number')


def non_negative_float(text):
    return _number(text, float, lambda v: v >= 0 and math.isfinite(v), 'a finite number >= 0')


def key_value(text):
    """'key=value' with value a Python literal (1, 0.5, True, 'x', (1, 2)) or else a plain string."""
    if '=' not in text:
        raise argparse.ArgumentTypeError(f'expected key=value, got {text!r}')
    key, value = text.split('=', 1)
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    return key.strip(), value
