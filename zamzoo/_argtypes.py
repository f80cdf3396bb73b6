"""argparse types shared by the `<package>/commands.py` modules. Not in zamzoo/cli.py: cli.py imports every
commands module, and a commands module importing cli.py back would point a lower layer at the top one
(tests/test_packaging.py's layering)."""
import argparse
import ast
import math


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if v < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {v}')
    return v


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive number, got {text!r}') from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f'expected a positive (finite) number, got {v}')
    return v


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
