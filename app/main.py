"""almdn's app: ``streamlit run app/main.py``.

See which pool images the model is unsure about and why, send them to annotators in Label
Studio, bring the labels back, retrain, and watch the model get better. The pages only read
the project store and start jobs; every number comes from :mod:`almdn.display.store_tables`.

The first run opens the built-in demo project and creates it (``projects/demo``, or under
``$ALMDN_PROJECTS``) with visible progress; ``$ALMDN_PROJECT`` opens another project.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Jobs and inference beside the app: spinning OpenMP threads slow everything 10-20x on a small
# machine (measured on a 2-core CPU); set before torch is imported anywhere.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

import streamlit as st  # noqa: E402
from streamlit import config as st_config  # noqa: E402

# Usage statistics off whatever config file the working directory offers (or lacks).
if st_config.get_option("browser.gatherUsageStats"):
    st_config.set_option("browser.gatherUsageStats", False)

st.set_page_config(page_title="almdn", page_icon=":material/center_focus_weak:", layout="wide")

import common  # noqa: E402

# Loopback only, enforced here rather than by .streamlit/config.toml, which streamlit reads
# only from the current directory: started from elsewhere it would listen on every interface.
_refusal = common.exposure_refusal(st_config.get_option("server.address"), sys.argv[1:], dict(os.environ))
if _refusal:
    print(_refusal, file=sys.stderr)
    st.error(_refusal)
    st.stop()
# Served on loopback, answer only to loopback names with our port: a foreign Host (a site that
# rebinds its name to 127.0.0.1) gets one sentence and nothing of the project, the Label Studio
# login on the Label page included. The page's HTML and websocket are Streamlit's and answer
# any Host; what they render comes from here.
if common.is_loopback(st_config.get_option("server.address")):
    _host, _has_request = common.request_host()
    _host_refusal = common.host_refusal(_host, st_config.get_option("server.port"), _has_request)
    if _host_refusal:
        st.error(_host_refusal)
        st.stop()

from almdn.projects import demo_project, jobs  # noqa: E402
from almdn.user_errors import USER_ERRORS  # noqa: E402

PAGES = {
    "Active learning": [
        st.Page("views/pool.py", title="Pool", icon=":material/grid_view:", default=True),
        st.Page("views/image.py", title="Image", icon=":material/image_search:", url_path="image"),
        st.Page("views/label.py", title="Label", icon=":material/label:", url_path="label"),
        st.Page("views/review.py", title="Review", icon=":material/rule:", url_path="review"),
        st.Page("views/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("views/history.py", title="History", icon=":material/timeline:", url_path="history"),
    ],
    "Project": [
        st.Page("views/settings.py", title="Settings", icon=":material/settings:", url_path="settings"),
        st.Page("views/projects.py", title="Projects", icon=":material/folder_open:", url_path="projects"),
    ],
}


def demo_sizes() -> dict[str, int]:
    """Sizes of the demo project from ``$ALMDN_DEMO_SIZES`` ("num_train=300,iterations=100";
    defaults: :class:`almdn.projects.demo_project.DemoProjectConfig`)."""
    sizes = {}
    for item in filter(None, (os.environ.get("ALMDN_DEMO_SIZES") or "").split(",")):
        key, _, value = item.partition("=")
        sizes[key.strip()] = int(value)
    return sizes


def demo_setup(project: Path) -> bool:
    """Create the demo project on first run, showing progress; True once it is ready."""
    if st.session_state.get("demo-ready") == str(project) or demo_project.is_ready(project):
        st.session_state["demo-ready"] = str(project)
        return True
    st.title("Setting up the demo project")
    st.write(
        "A first run creates the built-in demo project: a small dataset of handwritten digits on real photographs, "
        "an initial labeled set, and a first mixture-density SSD trained on it, which then scores the unlabeled pool. "
        "This takes a few minutes on a CPU; the page follows along."
    )
    if jobs.active_job(project) is None:
        last = jobs.latest_job(project, "demo")
        state = last.read() if last is not None else None
        if state is None:
            with common.sentence_on_error():
                jobs.start_job(project, "demo", {"project_dir": str(project), **demo_sizes()})
        elif state["status"] in ("failed", "cancelled"):
            st.error(state.get("message") or "The set-up stopped.") if state["status"] == "failed" else st.info("The set-up was cancelled.")
            if st.button("Set up the demo project again", type="primary"):
                with common.sentence_on_error():
                    jobs.start_job(project, "demo", {"project_dir": str(project), **demo_sizes()})
                st.rerun()
    common.job_panel(kinds=("demo",), key="demo")
    st.caption(f"Project folder: {project}. Open another project on the Projects page meanwhile.")
    return False


def sidebar(project: Path) -> None:
    with st.sidebar:
        if common.has_store(project):
            store = common.store()
            counts = store.counts()
            st.markdown(f"**{store.name}**")
            st.caption(f"{counts['labeled']} labeled · {counts['pool']} pool · {counts['test']} test · {counts['model_versions']} models")
        else:
            st.caption(f"No project at {project}")
        common.job_status_line(key="sidebar")


navigation = st.navigation(PAGES)
project = common.project_dir()
on_projects_page = navigation.url_path == "projects"
if not on_projects_page and project == common.demo_project_dir() and not demo_setup(project):
    st.stop()
if common.has_store(project):
    try:
        common.store()
    except USER_ERRORS as exc:  # e.g. a damaged or newer store: one sentence, no traceback
        st.error(str(exc))
        st.page_link("views/projects.py", label="Open another project", icon=":material/folder_open:")
        st.stop()
sidebar(project)
if not common.has_store(project) and not on_projects_page:
    st.warning(f"There is no project at '{project}'; create or open one on the Projects page.")
    st.page_link("views/projects.py", label="Projects", icon=":material/folder_open:")
    st.stop()
navigation.run()
