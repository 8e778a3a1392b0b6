"""The one base class of errors a user can cause and fix, and how every front end renders them.

A :class:`UserError`'s message is one sentence naming the file, item or setting and what to do;
the CLI prints it without a traceback (:func:`almdn.cli.errors.friendly`), a background job
stores it as its failure message (:mod:`almdn.projects.jobs`) and the app shows it in a box
(``app/common.py``). Every library error of that kind derives from it (dataset, checkpoint,
store, training, round, job and start-weights errors).

This base module imports nothing, the Label Studio integration included: the tuple every
front end catches, :class:`UserError` beside the integration's own
:class:`label_studio.errors.LabelStudioError`, is :data:`almdn.user_errors.USER_ERRORS`, where
both are known.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message is one sentence that says what to do."""


class Cancelled(Exception):
    """Work stopped because the user asked (a cancel button, a job's cancel file); nothing of
    it was recorded."""


class DatasetError(UserError):
    """A dataset file (annotations or an image) is missing, unreadable or inconsistent."""


class InvalidChoice(UserError, ValueError):
    """An option outside its allowed values (a sort key, an acquisition method, a batch size)."""
