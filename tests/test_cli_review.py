"""``almdn project review`` (:mod:`almdn.cli.review`): prints the queue as a table; one sentence
when there is no labeled image or no model."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from almdn.cli import main
from almdn.data.records import BoxRecord
from almdn.projects.store import Store
from almdn.workflow import create_project
from tests.app_support import project, write_small_box_dataset  # noqa: F401
from tests.label_studio_support import ls_server  # noqa: F401  (fixture: the session's real Label Studio)
from tests.store_support import move_to_pool
from tests.test_workflow_review import _a_perfect_detector, _plant, _true_labels


def test_review_prints_the_queue_with_file_and_class_names(project, monkeypatch):
    with Store.open(project, create=False) as store:
        truth, classes = _true_labels(store), store.classes()
        deleted_image, deleted, flipped_image, flipped, wrong = _plant(store)
        files = store.images("labeled").set_index("image_id")["path"].map(lambda p: Path(p).name)
    _a_perfect_detector(monkeypatch, truth, classes)
    result = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--top-k", "5"])
    assert result.exit_code == 0, result.output
    assert "Review queue of" in result.output and "in sample" in result.output
    lines = result.output.splitlines()
    missing = [line for line in lines if " missing " in f" {line} "]
    swapped = [line for line in lines if f"{wrong} -> {flipped[0]}" in line]
    assert len(missing) == 1 and files[deleted_image] in missing[0] and deleted[0] in missing[0]
    assert len(swapped) == 1 and files[flipped_image] in swapped[0]
    only = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--kind", "class"])
    assert only.exit_code == 0 and files[deleted_image] not in only.output.split("scoring:")[-1]
    assert f"{wrong} -> {flipped[0]}" in only.output


def test_review_without_a_model_or_labels_says_so_in_one_sentence(project, tmp_path):
    fresh = tmp_path / "fresh"
    store, _ = create_project(fresh, [("coco", str(write_small_box_dataset(tmp_path / "data", num_images=4)), None)], min_anchor_coverage=None)
    store.close()
    result = CliRunner().invoke(main, ["project", "review", "--project", str(fresh)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "The project has no model yet to review its labels with" in result.output
    with Store.open(project, create=False) as store:
        move_to_pool(store, store.labeled_image_ids())
    result = CliRunner().invoke(main, ["project", "review", "--project", str(project)])
    assert result.exit_code == 1 and "The project has no labeled images to review" in result.output
    bad = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--kind", "typo"])
    assert bad.exit_code == 2 and "missing" in bad.output  # click lists the kinds


def test_review_is_listed_in_the_project_group():
    result = CliRunner().invoke(main, ["project", "--help"])
    assert result.exit_code == 0 and "review" in result.output


def test_review_keeps_the_queue_lists_test_labels_only_on_request_and_pushes(project, monkeypatch, ls_server):
    with Store.open(project, create=False) as store:
        truth, classes = _true_labels(store), store.classes()
        labels = store.labels(split="test")
        test_image = int(labels["image_id"].iloc[0])
        truth.update({int(i): [(r.class_name, r.x1, r.y1, r.x2, r.y2) for r in labels[labels["image_id"] == i].itertuples()]
                      for i in labels["image_id"].unique()})
        first = labels[labels["image_id"] == test_image].iloc[0]
        wrong = next(c for c in classes if c != first["class_name"])
        rest = [BoxRecord(r.class_name, r.x1, r.y1, r.x2, r.y2) for r in labels[labels["image_id"] == test_image].iloc[1:].itertuples()]
        store.add_labels(test_image, [BoxRecord(wrong, first["x1"], first["y1"], first["x2"], first["y2"]), *rest], split=None)
        deleted_image, *_ = _plant(store)
        test_file = Path(store.image(test_image)["path"]).name
    _a_perfect_detector(monkeypatch, truth, classes)
    plain = CliRunner().invoke(main, ["project", "review", "--project", str(project)])
    assert plain.exit_code == 0, plain.output
    with Store.open(project, create=False) as store:  # the test split only on request
        assert test_image not in set(store.latest_review_queue()[0]["image_id"])
    asked = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--include-test"])
    assert asked.exit_code == 0 and f"{wrong} -> {first['class_name']}" in asked.output
    with Store.open(project, create=False) as store:
        queue = store.latest_review_queue()[0]
        assert queue.loc[queue["image_id"] == test_image, "kind"].tolist() == ["class"] and test_file in set(queue["file_name"])
    refused = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--include-test", "--folds", "2"])
    assert refused.exit_code != 0 and "--folds 0" in refused.output and "Traceback" not in refused.output
    connected = CliRunner().invoke(main, ["ls", "connect", "--project", str(project), ls_server.url], env={"LABEL_STUDIO_API_KEY": ls_server.token})
    assert connected.exit_code == 0, connected.output
    pushed = CliRunner().invoke(main, ["project", "review", "--project", str(project), "--kind", "missing", "--push"])
    assert pushed.exit_code == 0, pushed.output
    assert "Sent 1 image for review" in pushed.output
    with Store.open(project, create=False) as store:
        tasks = store.review_tasks()
        assert tasks["image_id"].tolist() == [deleted_image] and tasks["selected_why"].iloc[0].startswith("missing box")
