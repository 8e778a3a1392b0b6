"""End to end through the app with a real Label Studio server: start it from Settings, send
the top-K from Label, annotate through Label Studio's API (the exact result shape its browser
UI posts), import, retrain from Train; the labeled set grew by K, a new model version exists,
the pool was re-scored and those K images left it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from almdn import workflow
from almdn.projects import jobs
from almdn.acquisition.stored import DEFAULT_ACQUISITION, select_for_labeling
from almdn.projects.demo_project import create_demo_project
from almdn.projects.store import Store
from label_studio.server import LABEL_STUDIO_VERSION, Credentials, LocalServer, free_port
from tests.app_support import APP, REPO, tiny_config
from tests.label_studio_support import ls_server, region  # noqa: F401


pytestmark = pytest.mark.slow
TEMPLATE = REPO / ".cache" / "label-studio" / f"template-{LABEL_STUDIO_VERSION}"  # shared with the Label Studio tests
K = 3


def _button(at: AppTest, prefix: str):
    return next(b for b in at.button if b.label.startswith(prefix))


def _texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def _defunct_children() -> list[int]:
    """Our child processes that ended but were never waited for (zombies)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def _ground_truth(project: Path) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """The demo dataset's true boxes by image path (the simulated annotator's knowledge)."""
    coco = json.loads((project / "data" / "annotations" / "train.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    root = project / "data" / "images"
    boxes: dict[str, list] = {str((root / im["file_name"]).resolve()): [] for im in coco["images"]}
    by_id = {im["id"]: str((root / im["file_name"]).resolve()) for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes[by_id[a["image_id"]]].append((names[a["category_id"]], (x, y, x + w, y + h)))
    return boxes


def test_send_annotate_import_retrain(tmp_path, monkeypatch):
    subprocess.run(["bash", str(REPO / "scripts" / "setup_label_studio.sh")], check=True, cwd=REPO)
    monkeypatch.setenv("ALMDN_LABEL_STUDIO_TEMPLATE", str(TEMPLATE))  # the job process inherits it
    project = tmp_path / "demo"
    create_demo_project(project, tiny_config())
    with Store.open(project, create=False) as store:
        before = store.counts()
        first_version = store.latest_model_version()
        expected = select_for_labeling(store, K, DEFAULT_ACQUISITION).image_ids  # the Label page's default
        paths = {i: str(Path(store.image(i)["path"]).resolve()) for i in expected}

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state["project_dir"] = str(project)
    at.run()
    server = LocalServer(project / "label-studio")
    try:
        # ---- Settings: start a local Label Studio (a background job)
        at.switch_page("views/settings.py").run()
        at.number_input(key="ls_port").set_value(free_port())
        _button(at, "Start a local Label Studio").click().run()
        state = jobs.latest_job(project, "label_studio").wait(timeout=400)
        assert state["status"] == "done", state
        at.run()
        assert any(t.startswith("Connected to the local Label Studio at http://127.0.0.1:") for t in _texts(at, "success"))
        # issue 15, item 5: starting is idempotent, and the job's process was reaped
        assert _button(at, "Start a local Label Studio").disabled
        job_count = len(list((project / "jobs").iterdir()))
        assert workflow.start_label_studio_job(project, free_port()) is None  # another tab's click: nothing started
        assert len(list((project / "jobs").iterdir())) == job_count
        assert _defunct_children() == []
        # item 1: the login where the link is (user name; password behind a reveal toggle)
        login = Credentials.load(project / "label-studio" / "credentials.json")
        assert login.username in _texts(at, "code") and login.password not in _texts(at, "code")
        next(t for t in at.toggle if t.label == "Show the password").set_value(True).run()
        assert login.password in _texts(at, "code")

        # ---- Label: send the top-K with the model's boxes as pre-annotations
        at.switch_page("views/label.py").run()
        assert not at.exception
        assert login.username in _texts(at, "code")  # the same login next to "Open Label Studio"
        at.number_input(key="label_k").set_value(K).run()
        previewed = [int(im.caption.split(" ")[0][1:]) for im in at.get("image")[0].proto.imgs]
        assert previewed == expected
        _button(at, f"Send {K} images").click().run()
        assert any(t.startswith(f"Pushed {K} new tasks to Label Studio project") for t in _texts(at, "success")), _texts(at, "success") + _texts(at, "error")
        with Store.open(project, create=False) as store:
            tasks = store.tasks()
        assert sorted(tasks["image_id"]) == sorted(expected)
        # item 2: what was sent is shown, and nothing can be sent again before a fresh preview
        assert any(t.startswith(f"Sent: {K} images (") for t in _texts(at, "caption"))
        assert not [b for b in at.button if b.label.startswith("Send ")]
        at.run()
        with Store.open(project, create=False) as store:
            assert len(store.tasks()) == K
        _button(at, "Preview the next batch").click().run()
        fresh = [int(im.caption.split(" ")[0][1:]) for im in at.get("image")[0].proto.imgs]
        assert not set(fresh) & set(expected) and not _button(at, "Send ").disabled

        # ---- the annotator draws the true boxes in Label Studio (API, browser-shaped results)
        url = state["result"]["url"]
        token = Credentials.load(project / "label-studio" / "credentials.json").token
        truth = _ground_truth(project)
        drawn = {}
        with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as api:
            project_id = int(tasks["ls_project_id"].iloc[0])
            skipped_task, skipped_image = int(tasks["task_id"].iloc[-1]), int(tasks["image_id"].iloc[-1])
            skip = {"result": [], "was_cancelled": True, "lead_time": 1.0, "draft_id": 0, "parent_prediction": None, "parent_annotation": None,
                    "started_at": "2026-01-01T10:00:00.000Z", "project": str(project_id)}
            assert api.post(f"/api/tasks/{skipped_task}/annotations/", params={"project": project_id}, json=skip).status_code == 201
            for task_id, image_id in zip(tasks["task_id"].iloc[:-1], tasks["image_id"].iloc[:-1]):
                task = api.get(f"/api/tasks/{int(task_id)}").json()
                assert task["predictions"] and task["predictions"][0]["model_version"] == f"model-{first_version}"
                assert 0 <= task["predictions"][0]["score"] <= 1 and task["data"]["rank"] >= 1
                boxes = truth[paths[int(image_id)]]
                drawn[int(image_id)] = boxes
                body = {"lead_time": 4.2, "result": [region(label, box, 128, 128) for label, box in boxes], "draft_id": 0,
                        "parent_prediction": None, "parent_annotation": None, "started_at": "2026-01-01T10:00:00.000Z", "project": str(project_id)}
                response = api.post(f"/api/tasks/{int(task_id)}/annotations/", params={"project": project_id}, json=body)
                assert response.status_code == 201, response.text

        # ---- the Label page opened again (a new browser session): finished labels are imported on load
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.session_state["project_dir"] = str(project)
        at.run()
        at.switch_page("views/label.py").run()
        assert any(f"Pulled {K - 1} new and 0 updated annotations" in t and "1 task skipped by the annotator" in t for t in _texts(at, "success")), _texts(at, "success") + _texts(at, "warning")
        # the sent batches' table (the page also shows the preview's table, with its "why" column)
        [batches] = [d.value for d in at.dataframe if "annotated" in d.value.columns]
        assert batches["annotated"].tolist() == [K - 1] and batches["skipped"].tolist() == [1] and batches["status"].tolist() == ["done"]

        # ---- item 9: the skipped image is sent again (the same task opens again) ...
        assert "Skipped in Label Studio" in _texts(at, "subheader")
        assert at.multiselect(key="skipped_choice").value == [skipped_image]
        _button(at, "Send again").click().run()
        assert "1 skipped task open again in Label Studio." in _texts(at, "success")
        with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as api:
            assert api.get(f"/api/tasks/{skipped_task}").json()["annotations"] == []  # open again, no new task
            assert api.get("/api/tasks", params={"project": project_id}).json()["total"] == K
            assert api.post(f"/api/tasks/{skipped_task}/annotations/", params={"project": project_id}, json=skip).status_code == 201  # skipped again
        with Store.open(project, create=False) as store:
            assert store.tasks().set_index("task_id").at[skipped_task, "status"] == "open"
            assert skipped_image not in select_for_labeling(store, 100, DEFAULT_ACQUISITION).image_ids  # it is out for labeling
        _button(at, "Import finished labels now").click().run()
        at.run()  # the import ran below the skipped list: draw the page again
        # ... or put back into the pool: its task is deleted, a later batch may choose it again
        _button(at, "Put back in the pool").click().run()
        assert "1 image back in the pool; its task was deleted in Label Studio." in _texts(at, "success")
        assert "Skipped in Label Studio" not in _texts(at, "subheader")
        with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as api:
            assert api.get(f"/api/tasks/{skipped_task}").status_code == 404
        with Store.open(project, create=False) as store:
            assert skipped_image in select_for_labeling(store, 100, DEFAULT_ACQUISITION).image_ids
            assert store.image(skipped_image)["split"] == "pool"

        # ---- Train: retrain (the tiny budget of the project's settings)
        at.switch_page("views/train.py").run()
        _button(at, "Retrain").click().run()
        state = jobs.latest_job(project, "retrain").wait(timeout=400)
        assert state["status"] == "done", state
        at.run()
        assert any(f"finished: Model version {first_version + 1}" in t for t in _texts(at, "success"))
        assert at.metric[1].delta is not None and at.metric[1].delta.endswith(f"vs v{first_version}")

        # ---- Label: import by hand finds nothing new; the batch is done
        at.switch_page("views/label.py").run()
        _button(at, "Import finished labels now").click().run()
        assert any(t.startswith("No new labels: Pulled 0 new and 0 updated annotations") for t in _texts(at, "info"))

        # ---- Settings: stop the local server; the Label page says so in one sentence
        at.switch_page("views/settings.py").run()
        _button(at, "Stop the local Label Studio").click().run()
        assert "Label Studio stopped." in _texts(at, "info")
        at.switch_page("views/label.py").run()
        assert f"Label Studio at {url} does not answer; start it again on the Settings page. Everything else in the app keeps working." in _texts(at, "warning")
        assert _button(at, "Send").disabled
    finally:
        server.stop()

    with Store.open(project, create=False) as store:
        after = store.counts()
        assert after["labeled"] == before["labeled"] + K - 1
        assert after["pool"] == before["pool"] - K + 1
        new = store.latest_model_version()
        assert new == first_version + 1 and store.latest_model_version(scored=True) == new
        annotated = [i for i in expected if i != skipped_image]
        assert set(annotated) <= set(store.training_set(new))
        ranking = store.pool_ranking(new)
        assert not set(annotated) & set(ranking["image_id"]) and skipped_image in set(ranking["image_id"])
        assert ranking["score"].notna().all() and len(ranking) == before["pool"] - K + 1  # the whole new pool re-scored
        labels = store.labels(image_ids=expected)
        for image_id, boxes in drawn.items():
            got = sorted((r.class_name, (r.x1, r.y1, r.x2, r.y2)) for r in labels[labels["image_id"] == image_id].itertuples())
            want = sorted((name, tuple(float(v) for v in box)) for name, box in boxes)
            assert [g[0] for g in got] == [w[0] for w in want]
            for (_, g), (_, w) in zip(got, want):
                assert g == pytest.approx(w, abs=1e-6)
    assert not server.status()["running"]


def test_connect_to_a_running_server_from_settings(ls_server, tmp_path_factory, tmp_path):
    from tests.app_support import built_project, copy_project

    project = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state["project_dir"] = str(project)
    at.run()
    at.switch_page("views/settings.py").run()
    at.text_input[0].set_value(ls_server.url)
    at.text_input[1].set_value("not-the-token")
    _button(at, "Connect").click().run()
    assert any(t.startswith(f"Label Studio at {ls_server.url} rejects the API token (HTTP 401)") for t in _texts(at, "error")), _texts(at, "error")
    at.text_input[1].set_value(ls_server.token)
    _button(at, "Connect").click().run()
    assert f"Connected to {ls_server.url}; the token is stored in the project folder (mode 0600)." in _texts(at, "success")
    assert oct((project / "label-studio" / "connection.json").stat().st_mode & 0o777) == "0o600"
    at.switch_page("views/label.py").run()
    assert any(t == f"Label Studio answers at {ls_server.url}." for t in _texts(at, "success"))
    assert not _button(at, "Send").disabled
