"""The review queue of the labeled images (:func:`almdn.workflow.review.review_queue`, issue 22):
planted errors reach the queue with their file and class names; out of fold, no model scores
an image it was trained on; one sentence when there is nothing to review with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import almdn.engine.fit
import almdn.engine.inference
from almdn.data.records import BoxRecord
from almdn.errors import InvalidChoice, UserError
from almdn.review.scoring import KINDS
from almdn.projects.store import Store
from almdn.workflow import create_project
from almdn.workflow.review import QUEUE_COLUMNS, queue_table, review_queue
from tests.app_support import TINY_SETTINGS, project, write_small_box_dataset  # noqa: F401
from tests.store_support import move_to_pool


def _true_labels(store: Store) -> dict[int, list[tuple[str, float, float, float, float]]]:
    """The labeled images' current boxes, as they are before a test plants an error."""
    labels = store.labels(split="labeled")
    return {int(i): [(r.class_name, r.x1, r.y1, r.x2, r.y2) for r in group.itertuples()] for i, group in labels.groupby("image_id")}


def _a_perfect_detector(monkeypatch, truth: dict[int, list[tuple]], classes: list[str]) -> list[list[int]]:
    """Make :func:`almdn.engine.inference.predict` return, for every image, exactly its true
    boxes (score 0.9, low uncertainties): a model that learnt the objects, not the errors.
    Returns the image ids of every call."""
    calls: list[list[int]] = []
    rng = np.random.default_rng(0)

    def predict(model, dataset, **kwargs):
        calls.append(list(dataset.image_ids))
        out = []
        for image_id in dataset.image_ids:
            boxes = truth.get(int(image_id), [])
            n = len(boxes)
            out.append({
                "boxes": torch.tensor([b[1:] for b in boxes], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([classes.index(b[0]) + 1 for b in boxes], dtype=torch.long),
                "scores": torch.full((n,), 0.9),
                **{name: torch.tensor(rng.uniform(0.01, 0.02, n), dtype=torch.float32)
                   for name in ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic", "cls_entropy")},
            })
        return out

    monkeypatch.setattr(almdn.engine.inference, "predict", predict)
    return calls


def _plant(store: Store) -> tuple[int, tuple, int, tuple, str]:
    """Delete a box of one labeled image and flip the class of a box of another (new current
    annotations, as a re-import would make). Returns (image, deleted box, image, flipped box, wrong class)."""
    truth = _true_labels(store)
    classes = store.classes()
    several = [i for i, boxes in truth.items() if len(boxes) >= 2]
    deleted_image, flipped_image = several[0], [i for i in truth if i != several[0]][0]
    deleted = truth[deleted_image][0]
    store.add_labels(deleted_image, [BoxRecord(*b) for b in truth[deleted_image][1:]])
    flipped = truth[flipped_image][0]
    wrong = next(c for c in classes if c != flipped[0])
    store.add_labels(flipped_image, [BoxRecord(wrong, *flipped[1:])] + [BoxRecord(*b) for b in truth[flipped_image][1:]])
    return deleted_image, deleted, flipped_image, flipped, wrong


def test_in_sample_queue_holds_the_deleted_box_and_the_flipped_class(project, monkeypatch):
    with Store.open(project, create=False) as store:
        truth = _true_labels(store)
        classes = store.classes()
        deleted_image, deleted, flipped_image, flipped, wrong = _plant(store)
        files = store.images("labeled").set_index("image_id")["path"].map(lambda p: Path(p).name)
        model_version = store.latest_model_version()
        counts = store.counts()
    calls = _a_perfect_detector(monkeypatch, truth, classes)
    stages = []
    queue = review_queue(project, top_k=None, progress=lambda f, s=None: stages.append(f))
    assert list(queue.columns) == list(QUEUE_COLUMNS)
    assert calls == [sorted(truth)]  # one pass over every labeled image, by the current model
    assert queue.attrs["model_version"] == model_version and queue.attrs["folds"] == []
    # exactly the planted errors: the perfect detector agrees with every other label
    assert sorted(queue["kind"]) == ["class", "missing"]
    missing = queue[queue["kind"] == "missing"].iloc[0]
    assert missing["image_id"] == deleted_image and missing["file_name"] == files[deleted_image]
    assert missing["class_name"] == deleted[0] and missing["kind_name"] == "missing box"
    assert [missing[c] for c in ("x1", "y1", "x2", "y2")] == pytest.approx(list(deleted[1:]), abs=1e-3)
    swapped = queue[queue["kind"] == "class"].iloc[0]
    assert swapped["image_id"] == flipped_image and swapped["file_name"] == files[flipped_image]
    assert (swapped["class_name"], swapped["other_class_name"]) == (wrong, flipped[0])
    assert swapped["rank"] == 1 and swapped["label_index"] == 0
    assert queue["fold"].isna().all() and queue["seen_by_model"].all()  # the current model trained on them
    assert stages == sorted(stages) and stages[-1] == 1.0
    # --kind and --top-k
    only = review_queue(project, kind="class", top_k=1)
    assert list(only["image_id"]) == [flipped_image] and list(only["kind"]) == ["class"]
    # nothing written
    with Store.open(project, create=False) as store:
        assert store.counts() == counts
    assert not (project / "review").exists() or not any((project / "review").iterdir())
    text = queue_table(queue)
    assert files[deleted_image] in text and f"{wrong} -> {flipped[0]}" in text


def test_out_of_fold_no_model_scores_an_image_it_was_trained_on(project, monkeypatch):
    """Two real out-of-fold trainings (the project's 3-iteration settings): each model's
    training set and the images it scored, recorded at the training and inference calls."""
    trained: list[tuple[torch.nn.Module, list[int]]] = []
    scored: list[tuple[torch.nn.Module, list[int]]] = []
    real_fit, real_predict = almdn.engine.fit.train_evaluate_save, almdn.engine.inference.predict

    def fit(model, train_set, *args, **kwargs):
        trained.append((model, list(train_set.image_ids)))
        return real_fit(model, train_set, *args, **kwargs)

    def predict(model, dataset, *args, **kwargs):
        scored.append((model, list(dataset.image_ids)))
        return real_predict(model, dataset, *args, **kwargs)

    monkeypatch.setattr(almdn.engine.fit, "train_evaluate_save", fit)
    monkeypatch.setattr(almdn.engine.inference, "predict", predict)
    with Store.open(project, create=False) as store:
        labeled = set(store.labeled_image_ids())
        versions = len(store.model_versions())
    queue = review_queue(project, top_k=None, folds=2, settings=TINY_SETTINGS, conf_threshold=0.0)
    assert len(trained) == 2 and len(scored) == 2
    for (model, images), (trained_model, train_ids) in zip(scored, trained):
        assert model is trained_model  # each fold's own model, freshly trained
        assert not set(images) & set(train_ids)
        assert set(images) | set(train_ids) == labeled
    assert set(scored[0][1]) | set(scored[1][1]) == labeled and not set(scored[0][1]) & set(scored[1][1])
    folds = queue.attrs["folds"]
    assert [set(f.score_ids) for f in folds] == [set(s) for _, s in scored]
    # every queued item names the fold that scored it, and that fold did not train on it
    fold_of = {i: f.index for f in folds for i in f.score_ids}
    assert len(queue) and (queue["fold"].astype(int) == queue["image_id"].map(fold_of)).all()
    assert not queue["seen_by_model"].any()
    assert set(queue["kind"]) <= set(KINDS)
    with Store.open(project, create=False) as store:
        assert len(store.model_versions()) == versions  # the fold models are not model versions
    assert not any((project / "review").iterdir())  # and are removed


def test_in_sample_with_the_real_model_ranks_within_each_kind(project):
    queue = review_queue(project, top_k=3, conf_threshold=0.0)
    assert len(queue) and list(queue.columns) == list(QUEUE_COLUMNS)
    for kind, rows in queue.groupby("kind"):
        assert list(rows["rank"]) == list(range(1, len(rows) + 1)) and len(rows) <= 3
        assert list(rows["review_score"]) == sorted(rows["review_score"], reverse=True)
    assert list(dict.fromkeys(queue["kind"])) == [k for k in KINDS if k in set(queue["kind"])]


def test_no_labeled_images_or_no_model_says_so_in_one_sentence(project, tmp_path):
    with Store.open(project, create=False) as store:
        move_to_pool(store, store.labeled_image_ids())
    with pytest.raises(UserError, match="no labeled images to review"):
        review_queue(project)
    fresh = tmp_path / "fresh"
    store, _ = create_project(fresh, [("coco", str(write_small_box_dataset(tmp_path / "data", num_images=4)), None)], min_anchor_coverage=None)
    store.close()
    with pytest.raises(UserError, match="no model yet"):
        review_queue(fresh)
    with pytest.raises(UserError, match="5 folds need at least 5 labeled images"):
        review_queue(fresh, folds=5)


def test_bad_choices_are_refused(project):
    with pytest.raises(InvalidChoice, match="Unknown kind"):
        review_queue(project, kind="typo")
    with pytest.raises(InvalidChoice, match="--folds 1"):
        review_queue(project, folds=1)
    with pytest.raises(InvalidChoice, match="scoring"):
        review_queue(project, scoring="cleanlab")  # the benchmark's baseline, never run time


def test_find_label_errors_keeps_the_queue_and_the_detections_in_the_store(project, monkeypatch):
    from almdn.workflow.review import find_label_errors

    with Store.open(project, create=False) as store:
        truth, classes = _true_labels(store), store.classes()
        deleted_image, deleted, flipped_image, _, _ = _plant(store)
        _a_perfect_detector(monkeypatch, truth, classes)
        queue = find_label_errors(store)
        kept, detections = store.latest_review_queue()
    assert len(queue) >= 2 and set(queue["image_id"]) >= {deleted_image, flipped_image}
    # read back identical (the whole queue: no top-k), nothing relabeled since
    pd.testing.assert_frame_equal(kept.drop(columns="relabeled"), queue.reset_index(drop=True), check_dtype=False, rtol=1e-12)
    assert not kept["relabeled"].any() and kept.attrs["folds"] == 0 and kept.attrs["num_labeled"] == len(truth)
    # the detections drawn beside the labels: the queued images only, in the store's pixels
    assert set(detections["image_id"]) <= set(queue["image_id"])
    found = detections[detections["image_id"] == deleted_image]
    assert any(c == deleted[0] and np.allclose([x1, y1, x2, y2], deleted[1:], atol=1e-3)
               for c, x1, y1, x2, y2 in found[["class_name", "x1", "y1", "x2", "y2"]].itertuples(index=False))


def test_the_review_job_runs_through_the_jobs_machinery(project):
    from almdn.projects import jobs

    job = jobs.start_job(project, "review", {"project_dir": str(project), "folds": 0})
    state = job.wait(timeout=600)
    assert state["status"] == "done", state.get("message")
    assert "labeled images flagged by the current model (in sample)" in state["result"]["summary"]
    with Store.open(project, create=False) as store:
        kept = store.latest_review_queue()
        assert kept is not None and kept[0].attrs["model_version"] == store.latest_model_version()
        assert len(kept[0]) == state["result"]["items"]
