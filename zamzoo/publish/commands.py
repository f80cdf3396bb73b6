"""Subcommands of this package (filled in by its issue)."""


def add_commands(subparsers):
    pass
