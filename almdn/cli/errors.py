"""One-sentence errors for every ``almdn`` command (no traceback for what a user can fix)."""

from __future__ import annotations

import functools
import warnings

import click

from almdn.errors import UserError  # noqa: F401  (what the commands raise)
from almdn.user_errors import USER_ERRORS, user_message


#: Exit status of a command that did its work but skipped some inputs (unreadable images);
#: 1 is a user error (nothing done), 2 a usage error.
EXIT_SKIPPED = 3


def friendly(func):
    """Print the library's user errors (:data:`almdn.user_errors.USER_ERRORS`) as one-line CLI
    errors (exit status 1), with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        # imported here: the CLI starts fast and this module pulls in torch
        from almdn.data.coco import BoxesAdjusted
        from almdn.models.anchors import AnchorCoverageWarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, BoxesAdjusted):  # a summary for the user: one line, no source location
                click.echo(f"Note: {message}", err=True)
            elif issubclass(category, AnchorCoverageWarning):
                click.echo(f"Warning: {message}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        try:
            with warnings.catch_warnings():
                shown = warnings.showwarning
                warnings.showwarning = show
                return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(user_message(exc)) from None

    return wrapper


def skipped_exit(names: list[str], exit_status: bool = True) -> None:
    """After a scoring: list the unreadable images it skipped (one line each, on stderr) and,
    with ``exit_status``, end with exit status :data:`EXIT_SKIPPED` if there were any."""
    for name in names:
        click.echo(f"Skipped unreadable image: {name}", err=True)
    if names:
        click.echo(f"{len(names)} unreadable images were skipped (listed above); the others were scored.", err=True)
        if exit_status:
            raise SystemExit(EXIT_SKIPPED)
