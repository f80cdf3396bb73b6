"""`zamzoo` command line: parse, call the library, print. Errors become one line and a non-zero exit."""
import argparse
import importlib
import os
import signal
import sys
import warnings
from pathlib import Path

from ._process import freeze_imports
from .errors import ZamzooError

# One pattern: the command line of zamzoo.<pkg> is zamzoo.<pkg>.commands, defining add_commands(subparsers);
# every subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    'zamzoo.train.commands',
    'zamzoo.publish.commands',
    'zamzoo.bench.commands',
    'zamzoo.viz.commands',
    'zamzoo.quickstart.commands',
    'zamzoo.zoo.commands',
    'zamzoo.compare.commands',
)

# Only the errors we raise on purpose (and argparse's) are the user's; anything else is a bug and keeps its traceback.
USER_ERRORS = (ZamzooError,)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog='zamzoo', description='Lightweight attention model zoo for timm.')
    parser.add_argument('--version', action='version', version=f'zamzoo {__version__}')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    _name_command_parsers(parser)
    return parser


def _name_command_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser as the `command_parser` default of its namespace: argparse reports an argument
    no subcommand knows with the top-level usage, which does not list the subcommand's options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_parser=sub)
                _name_command_parsers(sub)


def parse(argv=None) -> argparse.Namespace:
    """The command line's namespace; an unknown argument exits 2 with the usage of the command given."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command_parser = vars(args).pop('command_parser', parser)
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def console_main() -> int:
    """The `zamzoo` command (and `python -m zamzoo`): `main` in a process of its own (`freeze_imports`)."""
    freeze_imports()
    warnings.showwarning = _show_warning
    return main()


_PACKAGE = str(Path(__file__).resolve().parent)
_show_any_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """zamzoo's own warnings as one line, `zamzoo: warning: ...` (a user reads no source path or code line);
    other libraries' as Python shows them."""
    if not str(Path(filename).resolve()).startswith(_PACKAGE + os.sep):
        return _show_any_warning(message, category, filename, lineno, file, line)
    print(f'zamzoo: warning: {message}', file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    args = parse(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        print(f'zamzoo {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'zamzoo {args.command}: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`zamzoo list | head -1`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would raise again
        return 128 + signal.SIGPIPE
