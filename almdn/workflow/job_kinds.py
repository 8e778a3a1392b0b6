"""The background jobs' work, registered explicitly: each kind of :mod:`almdn.projects.jobs` and the
function that does it, imported here (no import strings), so the import structure
(``tests/test_imports.py``) sees every module a job runs.

:mod:`almdn.projects.jobs` starts, tracks and cancels jobs without importing any of this; a job's
process runs ``python -m almdn.workflow.job_kinds run <job folder>``, which looks its function up here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from almdn.projects.demo_project import demo_job
from almdn.projects.jobs import JOB_TITLES, run_job
from almdn.workflow.labeling import label_studio_job
from almdn.workflow.review import review_job
from almdn.workflow.training import retrain_job

#: Job kinds and the functions that do their work, ``fn(context, **params)``.
JOB_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "retrain": retrain_job,
    "demo": demo_job,
    "label_studio": label_studio_job,
    "review": review_job,
}
assert set(JOB_FUNCTIONS) == set(JOB_TITLES), "every job kind has a title and a function"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "run":
        return run_job(argv[1], JOB_FUNCTIONS)
    print("usage: python -m almdn.workflow.job_kinds run JOB_FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Run the imported module's main, not this ``__main__`` copy, so the functions are the ones
    # the workflow modules define (and raise the library's own Cancelled).
    from almdn.workflow.job_kinds import main as _main

    sys.exit(_main())
