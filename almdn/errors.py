"""The one base class of errors a user can cause and fix, and how every front end renders them.

A :class:`UserError`'s message is one sentence naming the file, item or setting and what to do;
the CLI prints it without a traceback (:func:`almdn.cli_errors.friendly`), a background job
stores it as its failure message (:mod:`almdn.jobs`) and the app shows it in a box
(``app/common.py``). Every library error of that kind derives from it (dataset, checkpoint,
store, training, round, job and start-weights errors).

The Label Studio integration (``label_studio/``) does not import the library, so its base
class :class:`label_studio.errors.LabelStudioError` cannot derive from :class:`UserError`; it
is the only other entry of :data:`USER_ERRORS`, the tuple every front end catches.
"""

from __future__ import annotations

from label_studio.errors import LabelStudioError


class UserError(Exception):
    """A problem the user can fix; the message is one sentence that says what to do."""


class Cancelled(Exception):
    """Work stopped because the user asked (a cancel button, a job's cancel file); nothing of
    it was recorded."""


class DatasetError(UserError):
    """A dataset file (annotations or an image) is missing, unreadable or inconsistent."""


class InvalidChoice(UserError, ValueError):
    """An option outside its allowed values (a sort key, an acquisition method, a batch size)."""


#: What the CLI, the jobs and the app catch and show as one sentence. ``FileExistsError``: a
#: project or output that already exists (its message names the path).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, LabelStudioError, FileExistsError)


def user_message(exc: BaseException) -> str | None:
    """The sentence to show for ``exc``, or None when it is not a user error (a bug: the front
    end shows where the traceback went instead)."""
    return str(exc) if isinstance(exc, USER_ERRORS) else None
