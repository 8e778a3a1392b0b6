"""Errors of the Label Studio integration; each message is one sentence that says what to do.

This package does not import the library (``almdn`` calls it, never the other way round), so
its base class stands beside :class:`almdn.errors.UserError` in :data:`almdn.user_errors.USER_ERRORS`.
"""

from __future__ import annotations


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not do something; the message says what to do."""


class LabelStudioUnavailable(LabelStudioError):
    """The server cannot be reached (down, wrong URL) or stopped answering mid-way."""


class ServerError(LabelStudioError):
    """The local server cannot be started, reached or stopped; the message says what to do."""
