"""Background jobs of a project: one at a time, detached from the app, cancellable.

The app must stay responsive while a model trains for minutes, and a page reload (or a closed
browser tab) must not lose the training. So a job is a separate process
(``python -m almdn.workflow.job_kinds run <job folder>``) in its own session, and everything about it lives
in files under ``<project>/jobs/``:

- ``active``: the id of the running job, created exclusively (``O_EXCL``) when a job starts,
  so two starts cannot both win; removed by the job when it ends (or found stale when its
  process is gone);
- ``<id>/job.json``: kind, parameters, status (``running``, ``done``, ``failed``,
  ``cancelled``), progress in [0, 1], the current stage, one sentence for the user when it
  failed, and the result; replaced atomically on every update, so a reader never sees half;
- ``<id>/metrics.jsonl``: one line per logged training step (iteration, loss, ...), the live
  loss curve;
- ``<id>/cancel``: present when the user asked to cancel; the job checks it between steps;
- ``<id>/log.txt``: the process's output (a traceback of an unexpected error goes here, the
  user sees one sentence naming this file).

A job's work is a function ``fn(context, **params)``, registered by kind in
:data:`almdn.workflow.job_kinds.JOB_FUNCTIONS` (which imports the workflow functions; this module
imports none of them); it reports through its :class:`JobContext` and returns a JSON-able
result. The job's process is ``python -m almdn.workflow.job_kinds run <job folder>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from almdn.errors import Cancelled, UserError
from almdn.user_errors import user_message

#: The job kinds and what each is called in a sentence; their functions are
#: :data:`almdn.workflow.job_kinds.JOB_FUNCTIONS`.
JOB_TITLES = {"retrain": "a retrain", "demo": "the demo project set-up", "label_studio": "the start of Label Studio", "review": "a label review"}
JOB_KINDS: tuple[str, ...] = tuple(JOB_TITLES)
#: The module whose ``main`` a job's process runs (it registers the job functions).
RUNNER_MODULE = "almdn.workflow.job_kinds"
FINISHED = ("done", "failed", "cancelled")


class JobError(UserError, RuntimeError):
    """A job cannot be started or read; the message says what to do."""


class JobAlreadyRunning(JobError):
    """Another job of the project is still running."""


#: Raised inside a job when the user cancelled it (the library's one cancellation,
#: :class:`almdn.errors.Cancelled`: a cancelled round or scoring ends its job the same way).
JobCancelled = Cancelled


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        f.write(json.dumps(data, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(int(pid), os.WNOHANG)  # reap our own finished child
        if done == int(pid):
            return False
    return True


def jobs_dir(project_dir: str | os.PathLike[str]) -> Path:
    return Path(project_dir) / "jobs"


@dataclass
class Job:
    """A job's folder; every property reads the files afresh."""

    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def project_dir(self) -> Path:
        return self.folder.parent.parent

    def read(self) -> dict[str, Any]:
        """The job's state; a job whose process died without finishing reads as failed."""
        try:
            state = json.loads((self.folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise JobError(f"Job '{self.folder}' has no readable state; delete the folder.") from None
        if state.get("status") not in FINISHED and not _pid_alive(state.get("pid")):
            # Re-read once: the process may have written its final state just before exiting.
            with contextlib.suppress(OSError, ValueError):
                state = json.loads((self.folder / "job.json").read_text(encoding="utf-8"))
            if state.get("status") not in FINISHED:
                state["status"] = "failed"
                state["message"] = f"The job's process ended unexpectedly; see {self.folder / 'log.txt'} and start it again."
        return state

    @property
    def status(self) -> str:
        return str(self.read()["status"])

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def metrics(self) -> list[dict[str, Any]]:
        """Logged training steps so far (a partly written last line is left out)."""
        path = self.folder / "metrics.jsonl"
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def cancel(self) -> None:
        """Ask the job to stop at its next check (between training steps)."""
        (self.folder / "cancel").touch()

    @property
    def cancel_requested(self) -> bool:
        return (self.folder / "cancel").exists()

    def wait(self, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
        """Block until the job finishes; returns its final state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.read()
            if state["status"] in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"Job {self.id} did not finish within {timeout:.0f} s.")
            time.sleep(poll)


def start_job(project_dir: str | os.PathLike[str], kind: str, params: dict[str, Any] | None = None, python: str | None = None) -> Job:
    """Start a job of ``kind`` with ``params`` in the background; returns at once.

    Raises :class:`JobAlreadyRunning` (one sentence) when another job of the project runs.
    """
    if kind not in JOB_KINDS:
        raise JobError(f"Unknown job kind '{kind}'; use one of {', '.join(JOB_KINDS)}.")
    root = jobs_dir(project_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)  # logs and results: private to the user
    job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = root / job_id
    _claim(root, job_id)
    try:
        folder.mkdir(mode=0o700)
        state = {
            "id": job_id, "kind": kind, "params": params or {}, "status": "running", "pid": None,
            "created_at": _now(), "started_at": None, "finished_at": None,
            "progress": 0.0, "stage": "starting", "message": "", "result": None,
        }
        _write_json(folder / "job.json", state)
        env = dict(os.environ)
        # Training beside the app and other work: spinning OpenMP threads would slow everything
        # 10-20x on a small machine (measured on a 2-core CPU).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONUNBUFFERED"] = "1"
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(os.open(folder / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            process = subprocess.Popen(
                [python or sys.executable, "-m", RUNNER_MODULE, "run", str(folder)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=repo,
                start_new_session=True,  # survives the app's process and its page reloads
                umask=0o077,  # what the job writes (models, exports, metrics) is private to the user
            )
        # Reap the child as soon as it exits: a finished job must not linger as a defunct
        # process of the app (nothing else waits for it, the app may run for days).
        threading.Thread(target=process.wait, name=f"almdn-job-{job_id}", daemon=True).start()
        state["pid"] = process.pid
        # The child may already have written its own state: only fill in the pid.
        with contextlib.suppress(OSError, ValueError):
            current = json.loads((folder / "job.json").read_text(encoding="utf-8"))
            if current.get("pid") is None:
                current["pid"] = process.pid
                _write_json(folder / "job.json", current)
    except BaseException:
        _release(root, job_id)
        raise
    return Job(folder)


def _claim(root: Path, job_id: str) -> None:
    """Make ``job_id`` the project's active job, or raise :class:`JobAlreadyRunning`."""
    marker = root / "active"
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            running = active_job(root.parent)
            if running is not None:
                state = running.read()
                title = JOB_TITLES.get(state["kind"], state["kind"])
                raise JobAlreadyRunning(
                    f"{title[0].upper() + title[1:]} is already running ({100 * float(state.get('progress') or 0):.0f} % done, "
                    f"{state.get('stage')}); wait for it to finish or cancel it first."
                ) from None
            continue  # active_job removed a stale marker: try again
        with os.fdopen(fd, "w") as f:
            f.write(job_id)
        return
    raise JobError(f"Cannot claim '{marker}'; delete it if no job of this project runs.")


def _release(root: Path, job_id: str) -> None:
    marker = root / "active"
    with contextlib.suppress(FileNotFoundError, OSError):
        if marker.read_text().strip() == job_id:
            marker.unlink()


def active_job(project_dir: str | os.PathLike[str]) -> Job | None:
    """The project's running job, or None (a marker left by a dead job is removed)."""
    root = jobs_dir(project_dir)
    marker = root / "active"
    try:
        job_id = marker.read_text().strip()
    except FileNotFoundError:
        return None
    job = Job(root / job_id)
    try:
        state = json.loads((job.folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    if state is not None and state.get("status") not in FINISHED:
        if state.get("pid") is None or _pid_alive(state.get("pid")):
            return job  # running (or started a moment ago and not yet given its pid)
    _release(root, job_id)
    return None


def latest_job(project_dir: str | os.PathLike[str], kind: str | None = None) -> Job | None:
    """The most recently created job (of ``kind``), running or finished."""
    root = jobs_dir(project_dir)
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        if kind is None:
            return Job(folder)
        with contextlib.suppress(OSError, ValueError):
            if json.loads((folder / "job.json").read_text(encoding="utf-8")).get("kind") == kind:
                return Job(folder)
    return None


class JobContext:
    """What a running job reports through; also usable in-process (``folder=None``)."""

    def __init__(self, folder: Path | None = None, on_progress: Callable[[float, str], None] | None = None) -> None:
        self.folder = folder
        self._on_progress = on_progress
        self._state: dict[str, Any] = {}
        self._last_write = 0.0

    def _update(self, force: bool = False, **changes: Any) -> None:
        if self.folder is None:
            return
        self._state.update(changes)
        now = time.monotonic()
        if force or now - self._last_write > 0.2:  # bounded file writes for fast loops
            _write_json(self.folder / "job.json", self._state)
            self._last_write = now

    def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report ``fraction`` (0..1) of the whole job done, and what it is doing now."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        changes: dict[str, Any] = {"progress": fraction}
        if stage is not None:
            changes["stage"] = stage
        self._update(force=stage is not None, **changes)
        if self._on_progress is not None:
            self._on_progress(fraction, stage or "")

    def log_metrics(self, entry: dict[str, Any]) -> None:
        """Append one training step's numbers (the live loss curve)."""
        if self.folder is None:
            return
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=_json_default) + "\n")

    def cancelled(self) -> bool:
        return self.folder is not None and (self.folder / "cancel").exists()


def run_job(folder: str | os.PathLike[str], functions: Mapping[str, Callable[..., Any]]) -> int:
    """Do the job in ``folder`` with its kind's function of ``functions`` (the child process's
    main, :func:`almdn.workflow.job_kinds.main`); returns the exit status."""
    folder = Path(folder)
    context = JobContext(folder)
    context._state = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    context._update(force=True, pid=os.getpid(), started_at=_now(), status="running")
    # A cancel request from the app arrives as a file; SIGTERM (e.g. a shutdown) ends the job
    # the same orderly way.
    signal.signal(signal.SIGTERM, lambda *_: (folder / "cancel").touch())
    code = 0
    try:
        fn = functions[context._state["kind"]]
        result = fn(context, **context._state.get("params", {}))
        context._update(force=True, status="done", progress=1.0, stage="finished", result=result, finished_at=_now())
    except JobCancelled:
        context._update(force=True, status="cancelled", stage="cancelled", message="Cancelled; nothing was changed in the project.", finished_at=_now())
    except BaseException as exc:  # noqa: BLE001 -- every failure must end in a state the app can show
        code = 1
        message = user_message(exc)
        if message is None:
            traceback.print_exc()
            message = f"The job stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:160]}); see {folder / 'log.txt'}."
        context._update(force=True, status="failed", message=message, finished_at=_now())
    finally:
        _release(folder.parent, folder.name)
    return code
