"""What the store keeps of label review (:mod:`almdn.projects.store.review`): comparing labelings,
the kept queue, label versions with provenance, and the migration of an older store."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from almdn.data.records import BoxRecord, ImageRecord
from almdn.projects.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, _statements, labels_changed, same_labels


def test_same_labels_is_a_multiset_comparison_within_the_tolerance():
    a = [("cat", 1.0, 2.0, 3.0, 4.0), ("dog", 5.0, 6.0, 7.0, 8.0)]
    assert same_labels(a, list(reversed(a)))
    assert same_labels(a, [("cat", 1.01, 2.0, 3.0, 4.0), ("dog", 5.0, 6.0, 7.0, 8.04)])
    assert not same_labels(a, [("cat", 1.2, 2.0, 3.0, 4.0), ("dog", 5.0, 6.0, 7.0, 8.0)])  # moved
    assert not same_labels(a, [("cat", 1.0, 2.0, 3.0, 4.0), ("cat", 5.0, 6.0, 7.0, 8.0)])  # class flipped
    assert not same_labels(a, a[:1]) and not same_labels(a, [*a, a[0]])  # deleted, duplicated
    assert same_labels([], [])


def test_labels_changed_counts_removed_and_added_boxes():
    before = [("cat", 1.0, 2.0, 3.0, 4.0), ("dog", 5.0, 6.0, 7.0, 8.0)]
    assert labels_changed(before, before) == 0
    assert labels_changed(before, before[:1]) == 1  # one deleted
    assert labels_changed(before, [*before, ("bird", 0.0, 0.0, 1.0, 1.0)]) == 1  # one added
    assert labels_changed(before, [("bird", 1.0, 2.0, 3.0, 4.0), before[1]]) == 2  # one relabelled: removed and added


def small_store(tmp_path) -> tuple[Store, list[int]]:
    store = Store.open(tmp_path / "project")
    store.add_classes(["cat", "dog"])
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((40, 50, 3), 30 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    ids = store.add_images([ImageRecord(p, boxes=[BoxRecord("cat", 1, 1, 20, 20)]) for p in paths[:2]], split="labeled", source="a.json")["added"]
    ids += store.add_images([ImageRecord(paths[2], boxes=[BoxRecord("dog", 2, 2, 30, 30)])], split="test", source="t.json")["added"]
    return store, ids


def test_the_queue_is_kept_read_back_and_marks_images_relabeled_since(tmp_path):
    store, (a, b, _) = small_store(tmp_path)
    assert store.latest_review_queue() is None
    queue = pd.DataFrame({"rank": [1, 1], "kind": ["missing", "class"], "image_id": [a, b], "class_name": ["cat", "dog"],
                          "iou": [np.nan, 0.8], "review_score": [0.9, 0.7]})
    detections = pd.DataFrame({"image_id": [a], "class_name": ["cat"], "score": [0.95], "x1": [1.0], "y1": [1.0], "x2": [5.0], "y2": [5.0]})
    store.write_review_queue(queue, detections, model_version=None, folds=4, scoring="mixture", conf_threshold=0.5)
    kept, dets = store.latest_review_queue()
    pd.testing.assert_frame_equal(kept.drop(columns="relabeled"), queue)
    pd.testing.assert_frame_equal(dets, detections)
    assert kept.attrs["folds"] == 4 and kept.attrs["scoring"] == "mixture" and kept.attrs["num_labeled"] == 2
    assert kept["relabeled"].tolist() == [False, False]
    store.add_labels(b, [BoxRecord("dog", 1, 1, 20, 20)], origin="import", source="fix.json")
    assert store.latest_review_queue()[0]["relabeled"].tolist() == [False, True]
    store.write_review_queue(queue.iloc[:1])  # a new queue replaces the old one
    assert len(store.latest_review_queue()[0]) == 1


def test_label_versions_keep_every_labeling_with_its_provenance(tmp_path):
    store, (a, _, _) = small_store(tmp_path)
    first = store.current_annotation(a)
    store.add_labels(a, [BoxRecord("dog", 1, 1, 20, 20), BoxRecord("cat", 3, 3, 9, 9)], origin="import", source="second.json")
    versions = store.label_versions(a)
    assert versions["provenance"].tolist() == ["import (a.json)", "import (second.json)"]
    assert versions["is_current"].tolist() == [0, 1] and versions["num_labels"].tolist() == [1, 2]
    assert store.annotation_boxes(first) == [("cat", 1.0, 1.0, 20.0, 20.0)]


def test_reviewable_images_and_no_stale_results_without_review(tmp_path):
    store, (a, _, test) = small_store(tmp_path)
    store.check_reviewable([a])
    store.check_reviewable([a, test], include_test=True)
    with pytest.raises(StoreError, match="explicit request"):
        store.check_reviewable([test])
    with pytest.raises(StoreError, match="not in the project"):
        store.check_reviewable([999])
    store.record_model_version(tmp_path / "m.pt", {"map50": 0.3})
    store.add_labels(test, [BoxRecord("cat", 2, 2, 30, 30)], origin="import", split=None)  # not a review: no review result dates
    assert store.stale_model_versions().empty
    assert store.review_summary() == {"sent": 0, "open": 0, "unchanged": 0, "corrected_images": 0, "corrected_labels": 0}


def test_a_version_5_store_migrates_keeping_its_tasks_as_labeling_tasks(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:5]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO ls_projects (url, project_id, title, created_at) VALUES ('http://127.0.0.1:1', 1, 't', 'now')")
    conn.execute("INSERT INTO images (path, width, height, size_bytes, sha256, split, added_at) VALUES ('/x.png', 4, 4, 1, 'h', 'pool', 'now')")
    conn.execute("INSERT INTO tasks (ls_project, task_id, image_id, status, created_at, updated_at) VALUES (1, 7, 1, 'open', 'now', 'now')")
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    store = Store.open(path)
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.tasks()["purpose"].tolist() == ["label"] and store.review_tasks().empty
