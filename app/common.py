"""What every page shares: the open project, cached reads of its store, one-sentence errors,
and the panel that follows a background job."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from presentation import data_url, thumbnail

from almdn.projects import jobs
from almdn.display import store_tables as views
from almdn.projects.demo_project import default_projects_root
from almdn.user_errors import USER_ERRORS, user_message
from almdn.projects.store import STORE_FILE, Store

PAGE_IMAGE = "views/image.py"
PAGE_TRAIN = "views/train.py"
PAGE_SETTINGS = "views/settings.py"


# --------------------------------------------------------------------------- where the app may be reached

#: The explicit opt-in to serve beyond this machine, named for its risk: the app has no login
#: and can read any path and start jobs. A script argument (``streamlit run app/main.py --
#: --serve-to-network-without-login``) or ``ALMDN_SERVE_TO_NETWORK_WITHOUT_LOGIN=1``.
EXPOSE_FLAG = "--serve-to-network-without-login"
EXPOSE_ENV = "ALMDN_SERVE_TO_NETWORK_WITHOUT_LOGIN"


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for "" / None (all interfaces) and others."""
    import ipaddress

    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_refusal(address: str | None, argv: list[str], environ: dict[str, str]) -> str | None:
    """The sentence with which the app refuses to serve on ``address``, or None when it may:
    loopback always, any other address only with the risk-naming option."""
    if is_loopback(address) or EXPOSE_FLAG in argv or environ.get(EXPOSE_ENV) == "1":
        return None
    where = f"'{address}'" if address else "all network interfaces"
    return (
        f"The almdn app refuses to serve on {where}: it has no login and can read files and start jobs, so it listens on 127.0.0.1 only; "
        f"run it with --server.address 127.0.0.1 (or 'almdn app'), or accept the risk explicitly with '-- {EXPOSE_FLAG}'."
    )


#: The names the app answers to: a page of another site that rebinds its own name to
#: 127.0.0.1 (DNS rebinding) sends its own name as Host, and must get nothing of the project.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def host_refusal(host: str | None, port: int, has_request: bool = True) -> str | None:
    """The sentence with which a page refuses a request whose ``Host`` header is not a
    loopback name (:data:`LOOPBACK_HOSTS`) with the app's ``port``; None when it may be served.

    ``has_request`` False: no HTTP request behind the run (a test harness), nothing to check.
    Called only when the app serves loopback (the network opt-in accepts other names).
    """
    if not has_request:
        return None
    value = (host or "").strip().lower()
    name, _, given = value.rpartition(":") if not value.endswith("]") else (value, "", "")
    if not name:  # no port: the scheme's default
        name, given = value, "80"
    if name in LOOPBACK_HOSTS and given.isdigit() and int(given) == int(port):
        return None
    return (
        f"This page was requested as '{(host or '')[:80]}', not as this machine's own address, so the almdn app shows nothing of the project; "
        f"open it as http://127.0.0.1:{int(port)} (or http://localhost:{int(port)})."
    )


def request_host() -> tuple[str | None, bool]:
    """The ``Host`` header of the page's request, and whether there was a request at all."""
    try:
        headers = st.context.headers
    except Exception:  # noqa: BLE001 - outside a server run: nothing to check
        return None, False
    if not headers:
        return None, False
    return headers.get("Host"), True


# --------------------------------------------------------------------------- the project


def projects_root() -> Path:
    return default_projects_root()


def demo_project_dir() -> Path:
    return projects_root() / "demo"


def project_dir() -> Path:
    """The open project: chosen in this session, else in the URL (survives a reload), else
    ``$ALMDN_PROJECT``, else the built-in demo project."""
    chosen = st.session_state.get("project_dir") or st.query_params.get("project") or os.environ.get("ALMDN_PROJECT")
    path = Path(chosen).absolute() if chosen else demo_project_dir()
    st.session_state["project_dir"] = str(path)
    return path


def open_project(path: str | os.PathLike[str]) -> None:
    st.session_state["project_dir"] = str(Path(path).absolute())
    st.query_params["project"] = str(Path(path).absolute())
    for key in ("image_id", "pool_page"):
        st.session_state.pop(key, None)


def has_store(path: Path) -> bool:
    return (path / STORE_FILE).exists()


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    # One connection per project for the whole server: the store serializes its own use, and
    # WAL lets the job process write meanwhile.
    return Store.open(path, create=False)


def store() -> Store:
    return _store(str(project_dir()))


def revision() -> tuple:
    """The store's fingerprint: cached reads are keyed on it, so they refresh when it changes."""
    return views.store_revision(store())


@st.cache_data(show_spinner=False, max_entries=16)
def _pool_table(path: str, rev: tuple) -> pd.DataFrame:
    return views.pool_table(_store(path))


def pool_table() -> pd.DataFrame:
    return _pool_table(str(project_dir()), revision())


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_detections(path: str, rev: tuple) -> pd.DataFrame:
    return views.stored_detections(_store(path))


def stored_detections() -> pd.DataFrame:
    return _stored_detections(str(project_dir()), revision())


@st.cache_data(show_spinner=False, max_entries=50_000)
def thumbnail_url(path: str, cache_dir: str, size: int = 96) -> str | None:
    return data_url(thumbnail(path, cache_dir, size))


def thumbnails(paths: list[str], size: int = 96) -> list[str | None]:
    cache_dir = str(project_dir() / "cache" / "thumbs")
    return [thumbnail_url(p, cache_dir, size) for p in paths]


@st.cache_resource(show_spinner=False, max_entries=4)
def detector(checkpoint: str):
    return views.load_detector(checkpoint)


def scored_version() -> int | None:
    return store().latest_model_version(scored=True)


# --------------------------------------------------------------------------- errors


@contextmanager
def sentence_on_error():
    """Show a user's error (:data:`almdn.user_errors.USER_ERRORS`) as one sentence; the page goes on."""
    try:
        yield
    except USER_ERRORS as exc:
        st.error(user_message(exc))


def show_warnings(messages: list[str | None]) -> None:
    """A use case's warnings (the small-object check of the labeled boxes), one box each; None
    (no warning) shows nothing."""
    for message in filter(None, messages):
        st.warning(message, icon=":material/warning:")


# --------------------------------------------------------------------------- Label Studio


def label_studio_login(status, key: str) -> None:
    """The login of the project's local Label Studio where its link is: the user name, and the
    password behind a reveal toggle (both in code blocks, which have a copy button)."""
    if not status.connected:
        return
    if not (status.local and status.username):
        st.caption("Log in to that Label Studio with your own account on it.")
        return
    st.caption("Log in to this project's Label Studio as its admin (created for this project; the login is also in "
               f"{project_dir() / 'label-studio' / 'credentials.json'}):")
    c1, c2 = st.columns([3, 2])
    with c1:
        st.code(status.username, language=None)
    with c2:
        if st.toggle("Show the password", key=f"{key}-reveal"):
            st.code(status.password, language=None)


# --------------------------------------------------------------------------- jobs


def job_title(state: dict[str, Any]) -> str:
    title = jobs.JOB_TITLES.get(state.get("kind", ""), state.get("kind", "job"))
    return title[0].upper() + title[1:]


def job_panel(kinds: tuple[str, ...] | None = None, show_loss: bool = True, key: str = "job") -> None:
    """Progress of the project's running job (or the last one, finished), live.

    Re-drawn every second while a job runs; when it ends the whole page re-runs so that it
    shows the new state of the store.
    """

    @st.fragment(run_every=1.0 if jobs.active_job(project_dir()) is not None else None)
    def panel() -> None:
        job = jobs.active_job(project_dir())
        running = job is not None
        if job is None:
            job = jobs.latest_job(project_dir())
        if job is None:
            return
        state = job.read()
        if kinds is not None and state["kind"] not in kinds:
            return
        was_running = st.session_state.get(f"{key}-running")
        st.session_state[f"{key}-running"] = running
        if running:
            st.progress(float(state.get("progress") or 0.0), text=f"{job_title(state)}: {state.get('stage')} ({100 * float(state.get('progress') or 0):.0f} %)")
            if show_loss:
                metrics = job.metrics()
                if metrics:
                    from figures import loss_curve_figure

                    last = metrics[-1]
                    st.caption(f"iteration {last.get('iteration')} of {last.get('total')}, loss {last.get('loss', float('nan')):.3f}")
                    st.plotly_chart(loss_curve_figure(metrics), key=f"{key}-loss")
            if job.cancel_requested:
                st.info("Cancelling: the job stops after its current step.")
            elif st.button("Cancel", key=f"{key}-cancel"):
                job.cancel()
                st.rerun(scope="fragment")
        else:
            if was_running:
                st.rerun()  # the job just ended: refresh everything that reads the store
            status = state["status"]
            result = state.get("result") or {}
            if status == "done":
                st.success(f"{job_title(state)} finished: {result.get('summary', 'done')}")
                show_warnings(result.get("warnings") or [])  # a round's small-object warning
            elif status == "failed":
                st.error(state.get("message") or "The job failed.")
            elif status == "cancelled":
                st.info(f"{job_title(state)} was cancelled; nothing was changed in the project.")

    panel()


def wait_for_job_text() -> str:
    """The running job in one line with its progress as of now ("" when none runs)."""
    job = jobs.active_job(project_dir())
    if job is None:
        return ""
    state = job.read()
    return f"{job_title(state)} is running ({100 * float(state.get('progress') or 0):.0f} %, {state.get('stage')})."


def job_status_line(style: str = "caption", suffix: str = "", key: str = "status") -> None:
    """The running job's line (:func:`wait_for_job_text`), redrawn every second while it runs.

    A fragment of its own: the progress bar of :func:`job_panel` re-runs every second on its
    own, and a line drawn once with the page would stay at the moment the page ran ("0 %,
    starting") while the bar moves on.
    """

    @st.fragment(run_every=1.0 if jobs.active_job(project_dir()) is not None else None)
    def line() -> None:
        text = wait_for_job_text()
        if not text:
            return
        if style == "warning":
            st.warning(text + suffix, icon=":material/hourglass_top:")
        else:
            st.caption(":material/hourglass_top: " + text + suffix)

    line()
