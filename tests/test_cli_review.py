"""``almdn project review`` (:mod:`almdn.cli.review`): prints the queue as a table; one sentence
when there is no labeled image or no model."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from almdn.cli import main
from almdn.projects.store import Store
from almdn.workflow import create_project
from tests.app_support import project, write_small_box_dataset  # noqa: F401
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
