"""The built-in demo project, at test size."""

from __future__ import annotations

import json

from almdn.projects.demo_project import create_demo_project, default_projects_root, is_ready
from almdn.projects.store import Store
from tests.app_support import built_project, tiny_config


def test_demo_project_has_its_splits_a_scored_model_and_unlabeled_pool(tmp_path_factory):
    folder = built_project(tmp_path_factory)
    config = tiny_config()
    assert is_ready(folder)
    with Store.open(folder, create=False) as store:
        counts = store.counts()
        assert counts["labeled"] == config.initial
        assert counts["pool"] == config.data.num_train - config.initial
        assert counts["test"] == config.data.num_test
        assert store.classes() == [str(d) for d in range(10)]
        # pool images carry no labels: the annotators label them
        assert store.labels(split="pool").empty
        assert not store.labels(split="labeled").empty
        assert store.latest_model_version(scored=True) == 1
        assert len(store.image_scores(1)) == counts["pool"]
        assert json.loads(store.meta("app.round_settings"))["iterations"] == config.settings.iterations
    # the pool's true boxes stay in the dataset's own COCO file (a simulated annotator's oracle)
    train = json.loads((folder / "data" / "annotations" / "train.json").read_text())
    assert len(train["images"]) == config.data.num_train


def test_creating_again_resumes_and_adds_nothing(tmp_path_factory, tmp_path):
    folder = tmp_path / "demo"
    config = tiny_config()
    stages = []
    create_demo_project(folder, config, progress=lambda f, s=None: stages.append(s))
    assert stages[0].startswith("generating the demo dataset") and "training the initial model" in stages
    with Store.open(folder, create=False) as store:
        before = store.counts()
    stages.clear()
    summary = create_demo_project(folder, config, progress=lambda f, s=None: stages.append(s))
    assert "training the initial model" not in stages
    assert summary["round"] is None and summary["counts"] == before


def test_not_ready_without_a_store(tmp_path, monkeypatch):
    assert not is_ready(tmp_path / "nothing")
    monkeypatch.setenv("ALMDN_PROJECTS", str(tmp_path / "p"))
    assert default_projects_root() == tmp_path / "p"


def test_relabel_replaces_the_initial_labels_in_the_import_transaction(tmp_path):
    import dataclasses

    def relabel(store, records, classes):
        store.set_meta("test.relabeled", str(len(records)))
        return [dataclasses.replace(r, boxes=[dataclasses.replace(b, class_name=classes[0]) for b in r.boxes]) for r in records]

    config = tiny_config()
    create_demo_project(tmp_path / "relabeled", config, name="relabeled demo", relabel=relabel)
    with Store.open(tmp_path / "relabeled", create=False) as store:
        labels = store.labels(split="labeled")
        assert store.meta("test.relabeled") == str(config.initial)
        assert store.name == "relabeled demo"
        assert set(labels["class_name"]) == {"0"} and len(labels) > config.initial
        assert store.counts()["pool"] == config.data.num_train - config.initial
