"""The app under ``streamlit run`` in a real headless Chromium: every page loads, draws its
content and is photographed; the server binds 127.0.0.1 by default."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.app_support import REPO, project  # noqa: F401

sys.path.insert(0, str(REPO / "scripts"))
from app_screenshots import CHROMIUM, CHROMIUM_FLAGS, PAGES, screenshots, streamlit_server  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/test.sh installs it with apt-get)")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                    found.add(address)
    return found


def test_every_page_in_a_real_browser(project, tmp_path):
    with streamlit_server(project) as url:
        # A fresh server's first page waits on imports and a cold file cache: warm it first.
        # How long that takes is a benchmark's business (bench/app_cold_start.py), not this test's.
        screenshots(url, tmp_path / "warm-up", pages=PAGES[:1], wait_s=180)
        results = screenshots(url, tmp_path / "shots", width=1400, height=2000, wait_s=120)
    assert list(results) == [p.name for p in PAGES]
    for name, result in results.items():
        image = Image.open(result["file"])
        assert image.size == (1400, 2000), name
        # a drawn page is not blank: the screenshot has many colours
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50, name
        assert "Page not found" not in result["text"], name
        assert "Traceback" not in result["text"], name
    text = {name: r["text"] for name, r in results.items()}
    assert "Pool images" in text["pool"] and "22" in text["pool"]
    assert "ranks 1 of 22 pool images" in text["image"]
    assert "Not connected to Label Studio" in text["label"]
    assert "Find label errors" in text["review"] and "No review yet" in text["review"]
    assert "Retrain" in text["train"] and "mAP@0.5 (test)" in text["train"]
    assert "Labeled boxes per class" in text["history"]
    assert "Start a local Label Studio" in text["settings"]
    assert "Create a project" in text["projects"]


def test_the_app_binds_to_loopback_by_default(project):
    # no --server.address: the repository's .streamlit/config.toml decides
    with streamlit_server(project, address=None) as url:
        port = int(url.rsplit(":", 1)[1])
        assert httpx.get(url + "/_stcore/health", timeout=5).text.strip() == "ok"
        addresses = _listening_addresses(port)
        assert addresses == {"0100007F"}, addresses  # 127.0.0.1 only, in /proc's byte order


def test_label_studio_login_shown_by_the_app_opens_a_pushed_task_in_a_real_browser(project, tmp_path, monkeypatch):
    """Issue 15: log into the project's local Label Studio with the login the Label page shows,
    open a pushed task in Label Studio's own page, and find the ranking in its data and a 0-1
    prediction score."""
    import subprocess

    from playwright.sync_api import sync_playwright
    from streamlit.testing.v1 import AppTest

    from almdn import workflow
    from label_studio.server import LABEL_STUDIO_VERSION, LocalServer, free_port
    from tests.app_support import APP

    subprocess.run(["bash", str(REPO / "scripts" / "setup_label_studio.sh")], check=True, cwd=REPO)
    monkeypatch.setenv("ALMDN_LABEL_STUDIO_TEMPLATE", str(REPO / ".cache" / "label-studio" / f"template-{LABEL_STUDIO_VERSION}"))
    server = LocalServer(project / "label-studio")
    try:
        job = workflow.start_label_studio_job(project, free_port())
        assert job is not None and job.wait(timeout=400)["status"] == "done", job.read()
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.session_state["project_dir"] = str(project)
        at.run()
        at.switch_page("views/label.py").run()
        # the login, as a user reads it off the page: the user name, and the password once revealed
        codes = [c.value for c in at.code]
        [username] = [c for c in codes if "@" in c]
        next(t for t in at.toggle if t.label == "Show the password").set_value(True).run()
        [password] = [c.value for c in at.code if c.value not in codes]
        at.number_input(key="label_k").set_value(2).run()
        next(b for b in at.button if b.label.startswith("Send 2 images")).click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        url = server.status()["url"]
        from almdn.projects.store import Store

        with Store.open(project, create=False) as store:
            tasks = store.tasks()
        project_id, task_id = int(tasks["ls_project_id"].iloc[0]), int(tasks["task_id"].iloc[0])

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(f"{url}/user/login/", wait_until="domcontentloaded")
                page.fill("input[name=email]", username)
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url(lambda u: "/user/login" not in u, timeout=30_000)
                # Label Studio's own page of the task: the labeling interface with the model's boxes
                page.goto(f"{url}/projects/{project_id}/data?task={task_id}", wait_until="domcontentloaded")
                page.get_by_text("model-1", exact=False).first.wait_for(state="visible", timeout=60_000)
                page.screenshot(path=str(tmp_path / "task.png"))
                shown = page.inner_text("body")
                # the data manager's table: the ranking is there to sort and filter by
                page.goto(f"{url}/projects/{project_id}/data", wait_until="domcontentloaded")
                page.get_by_text("class_epistemic", exact=False).first.wait_for(state="visible", timeout=60_000)
                page.screenshot(path=str(tmp_path / "data-manager.png"))
                grid = page.inner_text("body")
                # the task as this logged-in browser session reads it (session cookie, no token)
                task = page.request.get(f"{url}/api/tasks/{task_id}").json()
            finally:
                browser.close()
    finally:
        server.stop()
    data = task["data"]
    assert data["rank"] >= 1 and data["final_score"] is not None
    for name in ("box_aleatoric", "box_epistemic", "class_aleatoric", "class_epistemic"):
        assert isinstance(data[name], float), name
    assert data["predicted_classes"] and data["driven_by"]
    [prediction] = task["predictions"]
    assert 0.0 <= prediction["score"] <= 1.0
    # Label Studio's page shows it as a percentage of at most 100 (it showed 1648.95 % before)
    import re

    shown_score = re.search(r"model-1\s+\S+ ago · ([\d.]+)%", shown)
    assert shown_score and float(shown_score.group(1)) == pytest.approx(100 * prediction["score"], abs=0.01), shown[:500]
    for column in ("rank", "final_score", "driven_by", "box_aleatoric", "box_epistemic", "class_aleatoric", "class_epistemic", "predicted_classes"):
        assert column in grid, column
