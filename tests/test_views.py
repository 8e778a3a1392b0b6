"""What the app shows, computed from a real tiny project."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from almdn.display import store_tables as views
from almdn.projects.store import UNCERTAINTY_NAMES, Store
from almdn.workflow import rescore, run_round
from tests.app_support import TINY_SETTINGS, add_corrupt_pool_image, project, store  # noqa: F401


def test_pool_table_ranks_every_pool_image_with_its_classes(store):
    table = views.pool_table(store)
    assert sorted(table["image_id"]) == sorted(store.image_ids("pool"))
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["score"].is_monotonic_decreasing
    assert set(table["status"]) == {"scored"}
    detections = store.detections()
    first = int(table.iloc[0]["image_id"])
    names = set(detections.loc[detections["image_id"] == first, "class_name"])
    assert set(table.iloc[0]["classes"].split(", ")) == names
    assert table["num_detections"].dtype.kind == "i"


def test_statuses_unreadable_no_detection_not_scored(project):
    bad = add_corrupt_pool_image(project)
    with Store.open(project, create=False) as store:
        mv = run_round(store, TINY_SETTINGS).model_version
        copy = project / "incoming" / "late.png"
        # a new image (not a copy: the store dedupes by content), added after the scoring
        pixels = np.array(Image.open(store.image(store.image_ids("test")[0])["path"]).convert("RGB"))
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(copy)
        late = store.add_images([copy], split="pool")["added"][0]
        table = views.pool_table(store)
        status = dict(zip(table["image_id"], table["status"]))
        assert status[bad] == "unreadable"
        assert status[late] == "not scored"
        assert "was added after model version" in views.explain_image(store, late).sentence
        assert [u["image_id"] for u in views.unreadable_images(store, mv)] == [bad]
        rescore(store, mv, TINY_SETTINGS.replace(conf_threshold=0.999))
        table = views.pool_table(store)
        assert (table.loc[table["image_id"] != bad, "status"] == "no detection").all()
        explanation = views.explain_image(store, bad)
        assert "could not be read" in explanation.sentence


def test_sort_filter_and_page(store):
    table = views.pool_table(store)
    by_raw = views.sort_pool(table, "cls_epistemic")
    assert by_raw["cls_epistemic"].is_monotonic_decreasing
    by_z = views.sort_pool(table, "loc_aleatoric", z_scored=True, descending=False)
    assert by_z["z_loc_aleatoric"].is_monotonic_increasing
    classes = views.pool_classes(table)
    some = views.filter_pool(table, [classes[0]])
    assert len(some) and all(classes[0] in c.split(", ") for c in some["classes"])
    few = views.filter_pool(table, min_detections=0, max_detections=int(table["num_detections"].min()))
    assert (few["num_detections"] == table["num_detections"].min()).all()
    with pytest.raises(ValueError, match="Unknown sort key"):
        views.sort_pool(table, "size")


def test_percentile_and_the_reason_for_a_rank(store):
    assert views.percentile_of(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), 3.0) == 75.0
    assert np.isnan(views.percentile_of(np.array([]), 1.0))
    table = views.pool_table(store)
    top = int(table.iloc[0]["image_id"])
    explanation = views.explain_image(store, top)
    assert explanation.rank == 1 and explanation.pool_size == len(table)
    assert explanation.sentence.startswith(f"Image {top} ranks 1 of {len(table)} pool images with score {table.iloc[0]['score']:.2f}")
    unc = explanation.uncertainties.set_index("uncertainty")
    for name in UNCERTAINTY_NAMES:
        expected = 100.0 * (table[name] <= table.iloc[0][name]).mean()
        assert unc.loc[name, "percentile"] == pytest.approx(expected)
    # the detection named as the source holds the image's max of that uncertainty
    dets = store.detections(image_ids=[top])
    for name in UNCERTAINTY_NAMES:
        assert dets.loc[dets["detection"] == unc.loc[name, "detection"], name].iloc[0] == pytest.approx(dets[name].max())
    assert len(explanation.detections) == len(dets)
    labeled = store.labeled_image_ids()[0]
    assert "not in the pool" in views.explain_image(store, labeled).sentence


def test_mixture_detections_reproduce_the_stored_detections(store):
    # The 3-iteration model's scores tie to the last bit, and batch size and thread count
    # change float rounding, hence the order of ties: score here, one image per batch, as drawn.
    rescore(store, 1, TINY_SETTINGS.replace(score_batch_size=1))
    table = views.pool_table(store)
    row = table.iloc[0]
    model = views.load_detector(store.model_version(1)["checkpoint"])
    drawn = views.mixture_detections(model, row["path"])
    stored = store.detections(image_ids=[int(row["image_id"])])
    by_index = {d["detection"]: d for d in drawn}
    k = model.num_components
    for r in stored.itertuples(index=False):
        d = by_index[int(r.detection)]
        assert d["box"] == pytest.approx([r.x1, r.y1, r.x2, r.y2], abs=1e-3)
        assert d["cls_epistemic"] == pytest.approx(r.cls_epistemic, rel=1e-4, abs=1e-7)
        assert np.array(d["component_boxes"]).shape == (k, 4)
        assert sum(d["component_weights"]) == pytest.approx(1.0, abs=1e-5)
        assert sum(d["class_weights"]) == pytest.approx(1.0, abs=1e-5)
        assert sum(d["mixture_probs"]) == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.array(d["component_sigmas"]) > 0)
    only = views.mixture_detections(model, row["path"], detections=[0])
    assert [d["detection"] for d in only] == [0]


def test_align_to_stored_matches_by_label_and_box():
    stored = pd.DataFrame({"detection": [0, 1, 2], "label": [1, 1, 2], "x1": [0.0, 10, 0], "y1": [0.0, 10, 0], "x2": [5.0, 20, 5], "y2": [5.0, 20, 5]})
    drawn = [  # the fresh run swapped the first two (a tie) and found one more below the threshold
        {"detection": 0, "label": 1, "box": [10.1, 10, 20, 20], "score": 0.5},
        {"detection": 1, "label": 1, "box": [0, 0, 5, 5.2], "score": 0.5},
        {"detection": 2, "label": 2, "box": [0, 0, 5, 5], "score": 0.4},
        {"detection": 3, "label": 2, "box": [50, 50, 60, 60], "score": 0.1},
    ]
    aligned = views.align_to_stored(drawn, stored)
    assert [(d["detection"], d["box"][0], d["stored"]) for d in aligned] == [(0, 0, True), (1, 10.1, True), (2, 0, True), (3, 50, False)]
    assert views.align_to_stored(drawn[:1], stored.iloc[:0])[0]["stored"] is False


def test_history_curve_labels_and_revision(project):
    with Store.open(project, create=False) as store:
        rev = views.store_revision(store)
        run_round(store, TINY_SETTINGS)
        curve = views.learning_curve(store)
        assert curve["model_version"].tolist() == [1, 2]
        assert curve["num_labeled"].tolist() == [8, 8]
        assert curve["map50"].notna().all()
        labels = views.labels_per_class(store)
        assert labels["boxes"].sum() == len(store.labels(split="labeled"))
        assert labels["class_name"].tolist() == store.classes()
        assert views.store_revision(store) != rev
        dets = views.stored_detections(store)
        assert set(dets["image_id"]) <= set(store.image_ids("pool"))
        assert isinstance(dets, pd.DataFrame) and len(dets) == len(store.detections(2))


def test_score_drivers_name_the_uncertainty_and_detection_behind_each_score():
    ranking = pd.DataFrame({
        "image_id": [1, 2, 3],
        "score": [2.5, 1.0, np.nan],
        "z_loc_aleatoric": [0.1, 1.0, np.nan], "z_loc_epistemic": [2.5, -1.0, np.nan],
        "z_cls_aleatoric": [0.0, 0.2, np.nan], "z_cls_epistemic": [1.0, 0.9, np.nan],
    })
    detections = pd.DataFrame({
        "image_id": [1, 1, 2, 2], "detection": [0, 1, 0, 1], "class_name": ["cat", "dog", "cat", "dog"],
        "loc_aleatoric": [0.1, 0.2, 0.9, 0.3], "loc_epistemic": [0.5, 0.7, 0.1, 0.1], "cls_aleatoric": [0.1, 0.1, 0.1, 0.1], "cls_epistemic": [0.2, 0.1, 0.3, 0.4],
    })
    drivers = views.score_drivers(ranking, detections, "max_all")
    assert drivers["driver"].tolist()[:2] == ["loc_epistemic", "loc_aleatoric"] and pd.isna(drivers["driver"].iloc[2])  # no score, no driver
    assert drivers["driver_detection"].tolist()[:2] == [1, 0] and pd.isna(drivers["driver_detection"].iloc[2])
    assert drivers["driven_by"].tolist() == ["box epistemic of #1 'dog'", "box aleatoric of #0 'cat'", ""]
    # a class-only aggregation can only be driven by a class uncertainty
    assert views.score_drivers(ranking, detections, "max_cls")["driver"].tolist()[:2] == ["cls_epistemic", "cls_epistemic"]


def test_a_detections_z_scores_are_the_scorings(store):
    mv = store.latest_model_version(scored=True)
    reference = store.detections(mv)
    image = store.image_scores(mv).dropna(subset=["score"]).iloc[0]
    own = reference[reference["image_id"] == image["image_id"]]
    top = own.loc[own["cls_epistemic"].idxmax()]
    table = views.detection_uncertainties(top.to_dict(), reference)
    assert table["label"].tolist() == ["box aleatoric", "box epistemic", "class aleatoric", "class epistemic"]
    assert table["value"].iloc[3] == pytest.approx(top["cls_epistemic"])
    # the detection that gives the image its value has the image's z-score
    assert table["z"].iloc[3] == pytest.approx(image["z_cls_epistemic"], rel=1e-6)
    assert 0 < table["percentile"].iloc[3] <= 100
