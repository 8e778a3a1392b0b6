"""The Review page's tables (:mod:`almdn.display.review_tables`): reasons in one sentence, one row
per image ranked by its highest item, the kind filter, what to draw on an image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from almdn.display.review_tables import IMAGE_COLUMNS, filter_kind, image_overlay, item_reason, queue_caption, review_images, review_reasons


def a_queue() -> pd.DataFrame:
    return pd.DataFrame({
        "rank": [1, 2, 1, 1], "kind": ["missing", "missing", "class", "spurious"], "image_id": [3, 5, 5, 7],
        "file_name": ["c.png", "e.png", "e.png", "g.png"], "class_name": ["cat", "dog", "cat", "bird"], "other_class_name": ["", "", "dog", ""],
        "x1": [1.0, 2.0, 10.0, 4.0], "y1": [1.0, 2.0, 10.0, 4.0], "x2": [9.0, 8.0, 20.0, 9.0], "y2": [9.0, 8.0, 20.0, 9.0],
        "iou": [np.nan, np.nan, 0.9, np.nan], "score": [0.95, 0.6, 0.93, np.nan], "review_score": [0.8, 0.3, 0.9, 0.5],
        "relabeled": [False, False, False, True],
    })


def test_each_kind_has_its_sentence():
    queue = a_queue()
    assert item_reason(queue.iloc[2]) == "wrong class: labelled 'cat', the model sees 'dog' (0.93)."
    assert item_reason(queue.iloc[0].to_dict()).startswith("missing box: the model finds a 'cat' (0.95)")
    assert item_reason(queue.iloc[3]).startswith("spurious label")


def test_one_row_per_image_ranked_by_its_highest_item_and_the_kind_filter():
    images = review_images(a_queue())
    assert list(images.columns) == list(IMAGE_COLUMNS)
    assert images["image_id"].tolist() == [5, 3, 7] and images["rank"].tolist() == [1, 2, 3]
    row = images.iloc[0]
    assert row["items"] == 2 and row["kinds"] == "missing box, wrong class" and row["reason"].startswith("wrong class")
    assert images["relabeled"].tolist() == [False, False, True]
    assert review_images(a_queue(), "missing")["image_id"].tolist() == [3, 5]
    assert review_images(a_queue(), "loose").empty
    with pytest.raises(ValueError):
        filter_kind(a_queue(), "nonsense")
    assert review_reasons(a_queue(), [7, 5, 99]) == {7: item_reason(a_queue().iloc[3]), 5: item_reason(a_queue().iloc[2])}


def test_the_overlay_flags_the_labels_and_detections_the_items_are_about():
    labels = pd.DataFrame({"image_id": [5, 5], "class_name": ["cat", "dog"], "x1": [10.0, 30.0], "y1": [10.0, 30.0], "x2": [20.0, 40.0], "y2": [20.0, 40.0]})
    detections = pd.DataFrame({"image_id": [5, 5, 3], "class_name": ["dog", "dog", "cat"], "score": [0.6, 0.93, 0.95],
                               "x1": [2.0, 10.0, 1.0], "y1": [2.0, 10.0, 1.0], "x2": [8.0, 20.0, 9.0], "y2": [8.0, 20.0, 9.0]})
    overlay = image_overlay(a_queue(), labels, detections, 5)
    assert [l["flagged"] for l in overlay["labels"]] == ["class", None]
    assert [d["flagged"] for d in overlay["detections"]] == ["missing", None]  # the missing box's detection; the other is on image 3
    assert [i["kind"] for i in overlay["items"]] == ["missing", "class"]


def test_the_caption_says_how_and_what_is_out_of_date():
    queue = a_queue()
    queue.attrs.update(created_at="2026-12-02T10:11:12+00:00", folds=4, model_version=None, num_labeled=40, scoring="mixture")
    text = queue_caption(queue)
    assert "4 out-of-fold models" in text and "40 labeled images" in text and "1 item is on images relabeled since" in text
