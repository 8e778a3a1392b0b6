"""Review tasks against a real Label Studio server: labeled images sent back with their labels
as editable annotations, corrections pulled as new label versions, unchanged reviews writing
nothing, test labels only on request (:mod:`almdn.workflow.labeling_review`)."""

from __future__ import annotations

import pytest

from almdn.data.records import BoxRecord, ImageRecord
from almdn.errors import UserError
from almdn.workflow.labeling import pull, push, push_review
from label_studio.client import IMAGE_KEY, PURPOSE_KEY, annotation_boxes
from tests.label_studio_support import CLASSES, HEIGHT, WIDTH, annotator, ls_project, ls_server, write_pool_images  # noqa: F401  (fixtures)

BOXES = {
    0: [BoxRecord("cat", 4.0, 6.0, 40.0, 50.0), BoxRecord("dog", 60.0, 10.0, 100.0, 70.0)],
    1: [BoxRecord("bird", 10.0, 20.0, 50.0, 60.0)],
    2: [BoxRecord("dog", 30.0, 30.0, 90.0, 80.0)],  # a test image
}


def labeled_images(p) -> tuple[list[int], int]:
    """Two labeled images and one test image, with labels, beside the fixture's pool."""
    paths = write_pool_images(p.folder.parent / "labeled", 3)
    labeled = p.store.add_images([ImageRecord(paths[i], boxes=BOXES[i]) for i in (0, 1)], split="labeled", source="seed.json")["added"]
    test = p.store.add_images([ImageRecord(paths[2], boxes=BOXES[2])], split="test", source="test.json")["added"][0]
    return labeled, test


def state(store) -> dict:
    """Everything a pull may write of the labels (missing values as None, so two reads compare equal)."""
    def records(frame):
        return frame.astype(object).where(frame.notna(), None).to_dict("records")
    return {"annotations": records(store.annotations()), "labels": records(store.labels()), "splits": store.images()["split"].tolist()}


def boxes_of(store, image_id: int) -> list[tuple]:
    return sorted((r.class_name, round(r.x1, 3), round(r.y1, 3), round(r.x2, 3), round(r.y2, 3)) for r in store.labels([image_id]).itertuples())


def server_task(p, annotator, task_id: int) -> dict:
    project_id = int(p.store.ls_projects(p.client.url)["project_id"].iloc[-1])
    return next(t for t in annotator.tasks(project_id) if t["id"] == task_id)


def test_a_review_round_trip_changes_exactly_the_corrected_labels_and_keeps_the_old_version(ls_project, annotator):
    p = ls_project
    (a, b), _ = labeled_images(p)
    before_b = boxes_of(p.store, b)
    report = push_review(p.store, p.client, [a, b], why={a: "wrong class: labelled 'dog', the model sees 'bird' (0.93)"})
    assert sorted(i for _, i in report.created) == [a, b] and "for review" in str(report)
    tasks = p.store.review_tasks()
    assert set(tasks["image_id"]) == {a, b} and set(tasks["status"]) == {"open"} and tasks["review_baseline"].notna().all()
    task_a = int(tasks.loc[tasks["image_id"] == a, "task_id"].iloc[0])
    server = server_task(p, annotator, task_a)
    # told apart from new labeling in the task data, the current labels as the editable annotation
    assert server["data"][PURPOSE_KEY] == "review" and server["data"][IMAGE_KEY] == a
    assert server["data"]["review_why"].startswith("wrong class")
    (prefilled,) = server["annotations"]
    boxes, problem = annotation_boxes(prefilled, task_a, "x", WIDTH, HEIGHT, set(CLASSES))
    assert problem is None and sorted((n, round(x1, 3), round(y1, 3), round(x2, 3), round(y2, 3)) for n, x1, y1, x2, y2, _ in boxes) == boxes_of(p.store, a)

    # nothing reviewed yet: a pull writes no label
    untouched = state(p.store)
    pulled = pull(p.store, p.client)
    assert state(p.store) == untouched and pulled.new_annotations == 0 and pulled.corrected_images == []
    assert set(p.store.review_tasks()["status"]) == {"open"}

    # the reviewer fixes image a: the dog is a bird, the cat's box is moved
    annotator.update(prefilled["id"], [("cat", (8.0, 6.0, 44.0, 50.0)), ("bird", (60.0, 10.0, 100.0, 70.0))])
    pulled = pull(p.store, p.client)
    assert pulled.corrected_images == [a] and pulled.reviewed_unchanged == []
    assert boxes_of(p.store, a) == [("bird", 60.0, 10.0, 100.0, 70.0), ("cat", 8.0, 6.0, 44.0, 50.0)]
    assert boxes_of(p.store, b) == before_b  # exactly the corrected labels changed
    versions = p.store.label_versions(a)
    assert versions["is_current"].tolist() == [0, 1] and versions["num_labels"].tolist() == [2, 2]
    assert versions["provenance"].iloc[0] == "import (seed.json)" and versions["provenance"].iloc[1].startswith("review by ")
    assert sorted(p.store.annotation_boxes(int(versions["annotation_id"].iloc[0]))) == sorted((x.class_name, x.x1, x.y1, x.x2, x.y2) for x in BOXES[0])
    assert p.store.images().set_index("image_id").at[a, "split"] == "labeled"
    summary = p.store.review_summary()
    assert summary == {"sent": 2, "open": 1, "unchanged": 0, "corrected_images": 1, "corrected_labels": 4}  # two boxes changed: each removed and added

    # pulling again finds nothing new
    again = state(p.store)
    assert pull(p.store, p.client).corrected_images == [] and state(p.store) == again


def test_an_unchanged_review_writes_nothing(ls_project, annotator):
    p = ls_project
    (a, _b), _ = labeled_images(p)
    push_review(p.store, p.client, [a])
    task_id = int(p.store.review_tasks()["task_id"].iloc[0])
    (prefilled,) = server_task(p, annotator, task_id)["annotations"]
    before = state(p.store)
    # the reviewer opens it and presses Update without changing a box
    response = annotator.api.patch(f"/api/annotations/{prefilled['id']}/", json={"result": prefilled["result"], "lead_time": 2.0})
    assert response.status_code == 200, response.text
    pulled = pull(p.store, p.client)
    assert pulled.reviewed_unchanged == [a] and pulled.corrected_images == [] and pulled.new_annotations == 0
    assert state(p.store) == before  # no label version written
    task = p.store.review_tasks().iloc[0]
    assert task["status"] == "annotated" and task["review_outcome"] == "unchanged"
    assert p.store.review_summary()["unchanged"] == 1
    assert pull(p.store, p.client).reviewed_unchanged == [] and state(p.store) == before  # counted once


def test_review_refusals_and_no_second_open_task(ls_project):
    p = ls_project
    (a, _b), test = labeled_images(p)
    with pytest.raises(UserError, match="pool"):
        push_review(p.store, p.client, [p.image_ids[0]])
    with pytest.raises(UserError, match="explicit request"):
        push_review(p.store, p.client, [a, test])
    assert p.store.review_tasks().empty  # nothing sent
    first = push_review(p.store, p.client, [a])
    second = push_review(p.store, p.client, [a])
    assert len(first.created) == 1 and second.created == [] and second.already == [a]
    # a labeling push never counts a review task as the image's labeling task, nor the reverse
    labeling = push(p.store, p.client, 2)
    assert all(i in p.image_ids for _, i in labeling.created)
    assert p.store.batches()["purpose"].tolist() == ["review", "label"]


def test_a_corrected_test_label_names_the_results_it_invalidates(ls_project, annotator):
    p = ls_project
    _, test = labeled_images(p)
    push_review(p.store, p.client, [test], include_test=True)
    task_id = int(p.store.review_tasks()["task_id"].iloc[0])
    (prefilled,) = server_task(p, annotator, task_id)["annotations"]
    annotator.update(prefilled["id"], [("cat", (30.0, 30.0, 90.0, 80.0))])
    pulled = pull(p.store, p.client)
    assert pulled.test_labels_changed == [test] and pulled.corrected_images == [test]
    assert p.store.images().set_index("image_id").at[test, "split"] == "test"
    assert boxes_of(p.store, test) == [("cat", 30.0, 30.0, 90.0, 80.0)]
    stale = p.store.stale_model_versions()
    assert stale["name"].tolist() == ["model-a"] and stale["changed_test_images"].tolist() == [1]
    assert any("model-a" in n and "out of date" in n for n in pulled.notices)
