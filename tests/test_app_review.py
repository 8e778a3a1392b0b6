"""The Review page (``app/views/review.py``) under Streamlit's AppTest on a real tiny project: no
queue yet, a kept queue ranked and filtered, an image drawn with what was flagged, the review
job started from the page, and the History page's review counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from almdn.projects import jobs
from almdn.projects.store import Store
from tests.app_support import APP, built_project, project  # noqa: F401


def open_review(project_dir, page: str = "views/review.py") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project_dir)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plant_queue(project_dir) -> tuple[int, int]:
    """A kept queue over two real labeled images: a wrong class on one (with the detection that
    says so), a missing box and a spurious label on the other."""
    with Store.open(project_dir, create=False) as store:
        labels = store.labels(split="labeled")
        first, second = labels["image_id"].drop_duplicates().tolist()[:2]
        a = labels[labels["image_id"] == first].iloc[0]
        b = labels[labels["image_id"] == second].iloc[0]
        other = next(c for c in store.classes() if c != a["class_name"])
        queue = pd.DataFrame({
            "rank": [1, 1, 1], "kind": ["class", "missing", "spurious"], "kind_name": ["wrong class", "missing box", "spurious label"],
            "image_id": [first, second, second], "file_name": ["a.png", "b.png", "b.png"],
            "class_name": [a["class_name"], other, b["class_name"]], "other_class_name": [other, "", ""], "label_index": [0, np.nan, 0],
            "detection": [0, 1, np.nan], "x1": [a["x1"], 1.0, b["x1"]], "y1": [a["y1"], 1.0, b["y1"]], "x2": [a["x2"], 12.0, b["x2"]],
            "y2": [a["y2"], 12.0, b["y2"]], "iou": [0.9, np.nan, np.nan], "score": [0.93, 0.9, np.nan], "review_score": [0.9, 0.7, 0.4],
            "fold": [np.nan] * 3, "seen_by_model": [True] * 3, "path": ["", "", ""],
        })
        detections = pd.DataFrame({"image_id": [first, second], "class_name": [other, other], "score": [0.93, 0.9],
                                   "x1": [a["x1"], 1.0], "y1": [a["y1"], 1.0], "x2": [a["x2"], 12.0], "y2": [a["y2"], 12.0]})
        store.write_review_queue(queue, detections, model_version=store.latest_model_version(), folds=0, scoring="mixture", conf_threshold=0.5)
    return int(first), int(second)


def test_without_a_queue_the_page_says_what_to_do(project):
    at = open_review(project)
    assert any("No review yet" in t.value for t in at.info)
    assert any(b.label == "Find label errors" and not b.disabled for b in at.button)


def test_a_kept_queue_is_ranked_filtered_and_drawn_with_what_was_flagged(project):
    first, second = plant_queue(project)
    at = open_review(project)
    table = at.dataframe[0].value
    assert table["image_id"].tolist() == [first, second] and table["items"].tolist() == [1, 2]
    assert table["reason"].iloc[0].startswith("wrong class: labelled")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    red = [s for s in figure["layout"]["shapes"] if s["line"]["color"] == "#ff3b30"]
    assert len(red) == 1  # the wrong-class label of the first image
    assert any("wrong class" in m.value for m in at.markdown)
    at.selectbox(key="review-kind").set_value("spurious").run()
    assert at.dataframe[0].value["image_id"].tolist() == [second]
    at.selectbox(key="review-kind").set_value(None).run()
    at.selectbox(key="review-image").set_value(second).run()
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    red = [s for s in figure["layout"]["shapes"] if s["line"]["color"] == "#ff3b30"]
    assert len(red) == 2  # the missing box's detection and the spurious label
    versions = at.dataframe[1].value
    assert versions["is_current"].tolist()[-1] == 1 and versions["provenance"].iloc[0].startswith("import")


def test_find_label_errors_runs_the_review_job_and_shows_its_queue(project):
    at = open_review(project)
    next(b for b in at.button if b.label == "Find label errors").click().run()
    job = jobs.latest_job(project)
    assert job is not None and job.read()["kind"] == "review"
    state = job.wait(timeout=600)
    assert state["status"] == "done", state.get("message")
    at = open_review(project)
    with Store.open(project, create=False) as store:
        assert store.latest_review_queue() is not None
    assert not any("No review yet" in t.value for t in at.info)


def test_history_counts_the_review(project):
    first, _ = plant_queue(project)
    with Store.open(project, create=False) as store:
        row = store.ls_project("http://127.0.0.1:1", 1, "t")
        store.record_review_batch(row, [(11, first)], {first: store.current_annotation(first)}, {11: (5, "u")})
    at = open_review(project, "views/history.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Review tasks sent"] == "1" and metrics["Still open"] == "1" and metrics["Images corrected"] == "0"
