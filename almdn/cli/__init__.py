"""The command-line layer: the ``almdn`` command and its subcommands (``almdn.cli:main``, ``python -m almdn.cli``)."""

from almdn.cli.commands import main

__all__ = ["main"]
