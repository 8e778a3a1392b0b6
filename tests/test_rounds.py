"""A project's round settings, and how a model version was trained in words."""

from __future__ import annotations

import json

import pytest

from almdn.projects.rounds import RoundError, RoundSettings
from almdn.projects.store import Store
from almdn.workflow import run_round
from tests.app_support import TINY_SETTINGS, project  # noqa: F401


def test_settings_round_trip_and_checks(project):
    with Store.open(project, create=False) as store:
        RoundSettings(iterations=123, num_components=2, aggregation="sum_cls").save(store)
        loaded = RoundSettings.load(store)
        assert (loaded.iterations, loaded.num_components, loaded.aggregation) == (123, 2, "sum_cls")
        with pytest.raises(RoundError, match="K = 0"):
            RoundSettings(num_components=0).save(store)
        with pytest.raises(RoundError, match="aggregation 'best'"):
            RoundSettings(aggregation="best").check()
        with pytest.raises(RoundError, match="ssd300_vgg16 takes only 300 px"):
            RoundSettings(arch="ssd300_vgg16", image_size=256).check()
        RoundSettings(arch="ssd300_vgg16", image_size=300).check()
        assert RoundSettings.load(store).iterations == 123  # the bad save wrote nothing
        with pytest.raises(RoundError, match="the low threshold 1.5 is outside"):
            RoundSettings(low_threshold=1.5).check()
        # a scoring weights the detections down to the low threshold, never above the confidence one
        assert RoundSettings().scoring_low_threshold == 0.05 and RoundSettings(conf_threshold=0.0).scoring_low_threshold == 0.0


def test_retrain_from_the_initial_weights_or_fine_tuned_and_described(project):
    from almdn.projects.rounds import describe_training

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
