"""Background jobs: real detached processes on a real tiny project."""

from __future__ import annotations

import os
import signal
import time

import pytest

from almdn.projects import jobs
from almdn.projects.store import Store
from tests.app_support import project  # noqa: F401
from tests.store_support import move_to_pool


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_retrain_job_runs_in_the_background_to_a_new_model_version(project):
    with Store.open(project, create=False) as store:
        before = store.latest_model_version()
    job = jobs.start_job(project, "retrain", {"project_dir": str(project)})
    assert jobs.active_job(project).id == job.id  # found again from the files alone (a page reload)
    state = job.wait(timeout=300)
    assert state["status"] == "done", state
    assert state["progress"] == 1.0
    assert state["result"]["model_version"] == before + 1
    assert "mAP@0.5" in state["result"]["summary"]
    assert [m["iteration"] for m in job.metrics()] == [1, 2, 3]
    assert jobs.active_job(project) is None and not (project / "jobs" / "active").exists()
    assert jobs.latest_job(project, "retrain").id == job.id
    with Store.open(project, create=False) as store:
        assert store.latest_model_version(scored=True) == before + 1


def test_one_job_at_a_time_and_cancel_leaves_the_store_unchanged(project):
    with Store.open(project, create=False) as store:
        before = store.counts()
    job = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 100_000}})
    _wait_for(lambda: job.metrics(), what="training to start")
    with pytest.raises(jobs.JobAlreadyRunning, match=r"^A retrain is already running \(\d+ % done, training on"):
        jobs.start_job(project, "retrain", {"project_dir": str(project)})
    assert len([p for p in (project / "jobs").iterdir() if p.is_dir()]) == 1  # the refused start left nothing
    job.cancel()
    state = job.wait(timeout=120)
    assert state["status"] == "cancelled"
    assert "nothing was changed" in state["message"]
    with Store.open(project, create=False) as store:
        assert store.counts() == before
    assert not (project / "models").exists() or not any((project / "models").iterdir())
    assert jobs.active_job(project) is None


def test_a_failing_job_ends_in_one_sentence(project):
    with Store.open(project, create=False) as store:
        move_to_pool(store, store.labeled_image_ids())
    state = jobs.start_job(project, "retrain", {"project_dir": str(project)}).wait(timeout=120)
    assert state["status"] == "failed"
    assert state["message"].startswith("No image is labeled yet;")
    assert "Traceback" not in state["message"] and "\n" not in state["message"]
    assert jobs.active_job(project) is None


def test_a_killed_job_reads_as_failed_and_frees_the_project(project):
    job = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 100_000}})
    _wait_for(lambda: job.metrics(), what="training to start")
    pid = job.read()["pid"]
    os.killpg(pid, signal.SIGKILL)  # a crash: no chance to write a final state
    _wait_for(lambda: job.read()["status"] == "failed", timeout=30, what="the dead job to read as failed")
    assert "ended unexpectedly" in job.read()["message"]
    assert jobs.active_job(project) is None  # the stale marker is removed
    # and the next job may start
    next_job = jobs.start_job(project, "retrain", {"project_dir": str(project)})
    assert next_job.wait(timeout=300)["status"] == "done"


def test_unknown_kind_is_refused(project):
    with pytest.raises(jobs.JobError, match="Unknown job kind 'nap'"):
        jobs.start_job(project, "nap")
    assert not (project / "jobs" / "active").exists()


def test_a_finished_jobs_process_is_reaped(project):
    from pathlib import Path

    state = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 1}}).wait(timeout=300)
    assert state["status"] == "done"

    def defunct() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(int(stat.parent.name))
        return found

    _wait_for(lambda: not defunct(), timeout=10, what="the finished job's process to be reaped")


def test_job_folders_and_logs_are_private(project):
    """Job logs and results may quote paths and annotators: 0700 folders, 0600 files, whatever
    the umask (issue 20); the job's process runs with umask 077."""
    import stat

    old = os.umask(0o022)
    try:
        job = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 1}})
        job.wait(timeout=300)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(project / "jobs") == 0o700 and mode(job.folder) == 0o700
    files = [p for p in job.folder.rglob("*") if p.is_file()]
    assert {"log.txt", "job.json"} <= {p.name for p in files}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    for path in (project / "models").rglob("*"):  # what the job wrote: the model, the exported labels
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
