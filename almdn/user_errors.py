"""What every front end catches and shows as one sentence: the library's :class:`UserError`
and the Label Studio integration's :class:`LabelStudioError`, known together here (the base
:mod:`almdn.errors` imports no integration; ``label_studio/`` never imports the library).

The CLI prints these without a traceback (:func:`almdn.cli.errors.friendly`), a background job
stores the sentence as its failure message (:mod:`almdn.projects.jobs`) and the app shows it in a box.
"""

from __future__ import annotations

from almdn.errors import UserError
from label_studio.errors import LabelStudioError

#: What the CLI, the jobs and the app catch and show as one sentence. ``FileExistsError``: a
#: project or output that already exists (its message names the path).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, LabelStudioError, FileExistsError)


def user_message(exc: BaseException) -> str | None:
    """The sentence to show for ``exc``, or None when it is not a user error (a bug: the front
    end shows where the traceback went instead)."""
    return str(exc) if isinstance(exc, USER_ERRORS) else None
