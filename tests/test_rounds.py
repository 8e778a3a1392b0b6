"""One active-learning round on a real store: train, evaluate, score, record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from almdn.rounds import RoundCancelled, RoundError, RoundSettings, document_root, rescore, run_round, unreadable_key
from almdn.store import Store
from tests.app_support import TINY_SETTINGS, add_corrupt_pool_image, project  # noqa: F401


def test_round_records_a_scored_model_version_trained_on_the_labeled_set(project):
    with Store.open(project, create=False) as store:
        labeled = store.labeled_image_ids()
        pool = store.image_ids("pool")
        before = store.latest_model_version()
        steps, stages = [], []
        result = run_round(store, TINY_SETTINGS, progress=lambda f, s=None: stages.append((f, s)), on_metrics=steps.append)
        assert result.model_version == before + 1
        assert result.previous_model_version == before
        assert store.training_set(result.model_version) == sorted(labeled)
        assert store.latest_model_version(scored=True) == result.model_version
        scores = store.image_scores(result.model_version)
        assert sorted(scores["image_id"]) == sorted(pool)
        # threshold 0 keeps every detection: every image is scored
        assert scores["score"].notna().all()
        info = store.model_version(result.model_version)
        assert {"map50", "map75", "map", "voc07_map50"} <= set(info["metrics"])
        assert info["metrics"]["warm_start_from"] is None  # the paper's retrain: from the initial weights
        assert info["metrics"]["iterations"] == TINY_SETTINGS.iterations
        assert len(store.rounds()) == 2
        assert Path(result.checkpoint).exists()
    # progress is monotone and ends at recording; one metrics entry per logged step
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.99
    assert [s["iteration"] for s in steps] == [1, 2, 3]
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert "previous" in result.summary() and f"{result.num_scored} pool images scored" in result.summary()


def test_cancelled_round_changes_nothing(project):
    with Store.open(project, create=False) as store:
        before = (store.counts(), len(store.rounds()))
        models_before = set((project / "models").glob("*")) if (project / "models").exists() else set()
        with pytest.raises(RoundCancelled):
            run_round(store, TINY_SETTINGS.replace(iterations=50), should_stop=lambda: True)
        assert (store.counts(), len(store.rounds())) == before
    models_after = set((project / "models").glob("*")) if (project / "models").exists() else set()
    assert models_after == models_before  # the partial training was removed


def test_round_without_labels_says_so(project):
    with Store.open(project, create=False) as store:
        store.set_split(store.labeled_image_ids(), "pool")
        with pytest.raises(RoundError, match="No image is labeled yet"):
            run_round(store, TINY_SETTINGS)


def test_corrupt_pool_image_is_listed_and_skipped(project):
    bad = add_corrupt_pool_image(project)
    with Store.open(project, create=False) as store:
        result = run_round(store, TINY_SETTINGS)
        assert [u["image_id"] for u in result.unreadable] == [bad]
        assert "broken.png" in result.unreadable[0]["path"]
        assert "Cannot read image" in result.unreadable[0]["error"]
        scored = set(store.image_scores(result.model_version)["image_id"])
        assert bad not in scored and len(scored) == len(store.image_ids("pool")) - 1
        assert json.loads(store.meta(unreadable_key(result.model_version)))[0]["image_id"] == bad
        # the ranking lists it last, unscored
        ranking = store.pool_ranking()
        assert ranking.iloc[-1]["image_id"] == bad and np.isnan(ranking.iloc[-1]["score"])


def test_rescore_replaces_a_versions_scores(project):
    with Store.open(project, create=False) as store:
        mv = store.latest_model_version()
        before = store.image_scores(mv)
        scoring = rescore(store, mv, TINY_SETTINGS.replace(conf_threshold=0.999))
        after = store.image_scores(mv)
        assert len(after) == len(before)
        assert (after["num_detections"] == 0).all()  # nothing that confident after 3 iterations
        assert scoring.unreadable == []


def test_settings_round_trip_and_checks(project):
    with Store.open(project, create=False) as store:
        RoundSettings(iterations=123, num_components=2, aggregation="sum_cls").save(store)
        loaded = RoundSettings.load(store)
        assert (loaded.iterations, loaded.num_components, loaded.aggregation) == (123, 2, "sum_cls")
        with pytest.raises(RoundError, match="K = 0"):
            RoundSettings(num_components=0).save(store)
        with pytest.raises(RoundError, match="aggregation 'best'"):
            RoundSettings(aggregation="best").check()
        assert RoundSettings.load(store).iterations == 123  # the bad save wrote nothing


def test_new_architecture_starts_fresh(project):
    with Store.open(project, create=False) as store:
        result = run_round(store, TINY_SETTINGS.replace(num_components=2))
        assert store.model_version(result.model_version)["metrics"]["warm_start_from"] is None


def test_document_root_is_the_projects_own_media_folder_never_the_images_folders(project):
    with Store.open(project, create=False) as store:
        root = document_root(store)
        assert root == store.path.parent.absolute() / "label-studio" / "media"
        assert not any(root in Path(p).parents for p in store.images()["path"])
        # Images under two top-level folders once made the root '/': now it does not move.
        other = Path("/tmp") / f"almdn-top-{store.project_uuid[:8]}"
        other.mkdir(exist_ok=True)
        try:
            from PIL import Image

            Image.new("RGB", (16, 16), (1, 2, 3)).save(other / "x.png")
            store.add_images([other / "x.png"], split="pool")
            assert document_root(store) == root != Path("/")
        finally:
            (other / "x.png").unlink()
            other.rmdir()


def test_retrain_from_the_initial_weights_or_fine_tuned_and_described(project):
    from almdn.rounds import describe_training

    with Store.open(project, create=False) as store:
        first = store.latest_model_version()
        same = run_round(store, TINY_SETTINGS)
        how = describe_training(store, same.model_version)
        assert how.comparable and how.fine_tuned_from is None and how.previous == first
        assert how.sentence.startswith(f"Model version {same.model_version} was trained from the initial weights (seed 0) for 3 adamw iterations at batch 4")
        assert f"the same starting point and schedule as version {first}" in how.sentence and "0 added images" in how.sentence
        # the same start and schedule on the same labels: the same weights, so the same mAP
        assert same.metrics["map50"] == pytest.approx(store.model_version(first)["metrics"]["map50"], abs=1e-9)
        tuned = run_round(store, TINY_SETTINGS.replace(start_from="previous"))
        how = describe_training(store, tuned.model_version)
        assert not how.comparable and how.fine_tuned_from == same.model_version
        assert "fine-tuned from version" in how.sentence and "does not compare like with like" in how.sentence
        assert "fine-tuned from version" in tuned.summary()
        longer = run_round(store, TINY_SETTINGS.replace(iterations=4))
        how = describe_training(store, longer.model_version)
        assert not how.comparable and how.differences == {"iterations": (3, 4), "start": (f"fine-tuned from version {same.model_version}", "initial weights")}
        with pytest.raises(RoundError, match="start 'middle'"):
            TINY_SETTINGS.replace(start_from="middle").check()


def test_an_old_saved_warm_start_is_dropped(project):
    with Store.open(project, create=False) as store:
        store.set_meta("app.round_settings", json.dumps({"iterations": 7, "warm_start": True}))
        loaded = RoundSettings.load(store)
        assert loaded.iterations == 7 and loaded.start_from == "initial"
