"""End to end through the app with a real Label Studio server: start it from Settings, send
the top-K from Label, annotate through Label Studio's API (the exact result shape its browser
UI posts), import, retrain from Train; the labeled set grew by K, a new model version exists,
the pool was re-scored and those K images left it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from almdn import jobs, views
from almdn.demo_project import create_demo_project
from almdn.store import Store
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
        expected = views.select_for_labeling(store, K).image_ids
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

        # ---- Label: send the top-K with the model's boxes as pre-annotations
        at.switch_page("views/label.py").run()
        assert not at.exception
        at.number_input(key="label_k").set_value(K).run()
        _button(at, f"Send {K} images").click().run()
        assert any(t.startswith(f"Pushed {K} new tasks to Label Studio project") for t in _texts(at, "success")), _texts(at, "success") + _texts(at, "error")
        with Store.open(project, create=False) as store:
            tasks = store.tasks()
        assert sorted(tasks["image_id"]) == sorted(expected)

        # ---- the annotator draws the true boxes in Label Studio (API, browser-shaped results)
        url = state["result"]["url"]
        token = Credentials.load(project / "label-studio" / "credentials.json").token
        truth = _ground_truth(project)
        drawn = {}
        with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as api:
            project_id = int(tasks["ls_project_id"].iloc[0])
            for task_id, image_id in zip(tasks["task_id"], tasks["image_id"]):
                task = api.get(f"/api/tasks/{int(task_id)}").json()
                assert task["predictions"] and task["predictions"][0]["model_version"] == f"model-{first_version}"
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
        assert any(f"Pulled {K} new and 0 updated annotations" in t for t in _texts(at, "success")), _texts(at, "success") + _texts(at, "warning")
        batches = at.dataframe[0].value
        assert batches["annotated"].tolist() == [K] and batches["status"].tolist() == ["done"]

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
        assert after["labeled"] == before["labeled"] + K
        assert after["pool"] == before["pool"] - K
        new = store.latest_model_version()
        assert new == first_version + 1 and store.latest_model_version(scored=True) == new
        assert set(expected) <= set(store.training_set(new))
        ranking = store.pool_ranking(new)
        assert not set(expected) & set(ranking["image_id"])
        assert ranking["score"].notna().all() and len(ranking) == before["pool"] - K  # the whole new pool re-scored
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
