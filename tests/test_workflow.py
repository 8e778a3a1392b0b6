"""The use cases (:mod:`almdn.workflow`): a round, scoring the pool into the store, creating a
project; and that the CLI and the app store the same thing for the same model and pool."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from almdn.projects import jobs
from almdn.display import store_tables as views
from almdn.cli import main
from almdn.errors import Cancelled, UserError
from almdn.projects.rounds import RoundError, unreadable_key
from almdn.projects.store import STORE_FILE, UNCERTAINTY_NAMES, Z_NAMES, Store
from almdn.workflow import create_project, document_root, rescore, run_round
from tests.app_support import TINY_SETTINGS, add_corrupt_pool_image, project, write_small_box_dataset  # noqa: F401
from tests.store_support import move_to_pool


# --------------------------------------------------------------------------- a round


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
        with pytest.raises(Cancelled):
            run_round(store, TINY_SETTINGS.replace(iterations=50), should_stop=lambda: True)
        assert (store.counts(), len(store.rounds())) == before
    models_after = set((project / "models").glob("*")) if (project / "models").exists() else set()
    assert models_after == models_before  # the partial training was removed


def test_round_without_labels_says_so(project):
    with Store.open(project, create=False) as store:
        move_to_pool(store, store.labeled_image_ids())
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


def test_a_cancelled_round_is_the_one_cancellation_jobs_catch():
    assert Cancelled is jobs.JobCancelled


# --------------------------------------------------------------------------- the CLI and the app score alike


def test_the_cli_and_the_app_store_the_same_scores_for_the_same_model_and_pool(project):
    """The app retrains in a background job (jobs -> workflow.run_round -> score_pool); the CLI
    records the same model's checkpoint with ``almdn project score``. Both store the same
    per-image and per-detection scores and list the same unreadable file."""
    bad = add_corrupt_pool_image(project)
    job = jobs.start_job(project, "retrain", {"settings": dataclasses.asdict(TINY_SETTINGS)})
    state = job.wait(timeout=600)
    assert state["status"] == "done", state
    by_app = int(state["result"]["model_version"])
    with Store.open(project, create=False) as store:
        checkpoint = str(store.model_version(by_app)["checkpoint"])
    result = CliRunner().invoke(main, [
        "project", "score", "--project", str(project), "--checkpoint", checkpoint, "--conf-threshold", str(TINY_SETTINGS.conf_threshold),
        "--aggregation", TINY_SETTINGS.aggregation, "--batch-size", str(TINY_SETTINGS.score_batch_size),
    ])
    assert result.exit_code == 3, result.output  # the unreadable image was skipped and listed
    with Store.open(project, create=False) as store:
        by_cli = store.latest_model_version(scored=True)
        assert by_cli == by_app + 1
        app_images, cli_images = (store.image_scores(mv).sort_values("image_id").reset_index(drop=True) for mv in (by_app, by_cli))
        assert app_images["image_id"].tolist() == cli_images["image_id"].tolist() and bad not in app_images["image_id"].tolist()
        assert app_images["num_detections"].tolist() == cli_images["num_detections"].tolist()
        for column in ("score", *UNCERTAINTY_NAMES, *Z_NAMES, "entropy_weighted"):
            assert cli_images[column].to_numpy(dtype=float) == pytest.approx(app_images[column].to_numpy(dtype=float), rel=1e-5, abs=1e-6, nan_ok=True)
        app_dets, cli_dets = (store.detections(mv).sort_values(["image_id", "detection"]).reset_index(drop=True) for mv in (by_app, by_cli))
        assert app_dets[["image_id", "detection", "class_name"]].equals(cli_dets[["image_id", "detection", "class_name"]])
        for column in ("score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES):
            assert cli_dets[column].to_numpy(dtype=float) == pytest.approx(app_dets[column].to_numpy(dtype=float), rel=1e-5, abs=1e-5)
        # both record the file they could not read (the CLI once skipped that), so the Pool page says "unreadable"
        assert [u["image_id"] for u in views.unreadable_images(store, by_app)] == [u["image_id"] for u in views.unreadable_images(store, by_cli)] == [bad]
        table = views.pool_table(store, by_cli).set_index("image_id")
        assert table.at[bad, "status"] == "unreadable"
        assert pd.Series(store.model_version(by_cli)["metrics"]).get("map50") == pytest.approx(store.model_version(by_app)["metrics"]["map50"])


# --------------------------------------------------------------------------- creating a project


def test_create_project_refuses_an_existing_one_and_leaves_nothing_behind_on_failure(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(images / f"{i}.png")
    store, summaries = create_project(tmp_path / "p", [("images", images, None)], classes=["cat"])
    store.close()
    assert summaries[0].added == 2
    with pytest.raises(UserError, match="already holds a project"):
        create_project(tmp_path / "p", [("images", images, None)])
    assert (tmp_path / "p" / STORE_FILE).exists()  # the existing project is untouched
    (images / "1.png").write_bytes(b"broken")
    with pytest.raises(UserError, match="1.png"):
        create_project(tmp_path / "new" / "q", [("images", images, None)])
    assert not (tmp_path / "new" / "q").exists()  # the folder it made is gone, the retry starts clean
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        create_project(tmp_path / "kept", [("images", images, None)])
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]  # a folder it did not make keeps its files


# --------------------------------------------------------------------------- small objects (issue 12)


def test_creating_or_adding_labeled_boxes_warns_when_few_have_an_anchor(tmp_path, tmp_path_factory):
    from almdn.models.anchors import AnchorCoverageWarning
    from almdn.workflow import add_sources

    trees = write_small_box_dataset(tmp_path / "trees")
    found = []
    store, _ = create_project(tmp_path / "p", [("coco", trees, None)], on_warning=found.append)
    store.close()
    # 8-24 px boxes in 300 px photos, at the rounds' default 128 px input: the numbers, and what
    # to change in the round settings (not almdn train's options)
    assert len(found) == 1 and found[0].startswith("Only 6% of 240 boxes have an anchor with IoU >= 0.5 (median best IoU 0.28)")
    assert "Fit anchors to the labeled boxes" in found[0] and "Input image size" in found[0] and "--fit-anchors" not in found[0]
    # without a callback it is an AnchorCoverageWarning (what the CLI prints)
    with pytest.warns(AnchorCoverageWarning, match="Only 6% of 240 boxes"):
        create_project(tmp_path / "q", [("coco", trees, None)])[0].close()
    # a demo-like dataset (objects of 10-60 px in 128 px images) is covered: no warning
    demo = tmp_path_factory.getbasetemp() / "demo-like"
    if not demo.exists():
        from almdn.data.demo import DemoConfig, generate_demo_dataset

        generate_demo_dataset(demo, DemoConfig(num_train=20, num_test=4, seed=1), progress=False)
    quiet = []
    store, _ = create_project(tmp_path / "demo", [("coco", demo, None)], on_warning=quiet.append)
    assert quiet == []
    # adding labeled boxes checks the project's labeled boxes again; images for the pool do not
    pool = tmp_path / "pool"
    pool.mkdir()
    (trees / "images" / "000.jpg").rename(pool / "000.jpg")
    add_sources(store, [("images", pool, None)], on_warning=quiet.append)
    assert quiet == []
    store.close()


def test_the_coverage_check_follows_the_round_settings_and_never_fails_an_import(tmp_path, monkeypatch):
    from almdn.projects.rounds import RoundSettings
    from almdn.workflow.project import anchor_coverage_warning, labeled_boxes

    trees = write_small_box_dataset(tmp_path / "trees")
    store, _ = create_project(tmp_path / "p", [("coco", trees, None)], min_anchor_coverage=None)  # None: no check
    with store:
        boxes = labeled_boxes(store)
        assert len(boxes) == 240 and boxes.image_hw.unique().tolist() == [300.0]
        default = anchor_coverage_warning(store)
        larger = anchor_coverage_warning(store, RoundSettings(image_size=256))
        fitted = anchor_coverage_warning(store, RoundSettings(fit_anchors=True))
        assert "Only 6% of 240" in default and "at the model's 128x128 input" in default
        assert "Only 15% of 240" in larger and "at the model's 256x256 input" in larger
        # fitted as a round fits them: more boxes covered, and only the input size is left to advise
        assert "Only 27% of 240" in fitted and "already fitted" in fitted and "Fit anchors to" not in fitted
        assert anchor_coverage_warning(store, min_coverage=0.05) is None  # the threshold is a parameter

        def broken(*args, **kwargs):
            raise RuntimeError("no model today")

        monkeypatch.setattr("almdn.models.build_model", broken)
        assert anchor_coverage_warning(store) == "Anchor coverage was not checked (RuntimeError: no model today)."
    found = []
    store, summaries = create_project(tmp_path / "q", [("coco", trees, None)], on_warning=found.append)
    store.close()
    assert summaries[0].labels == 240 and found == ["Anchor coverage was not checked (RuntimeError: no model today)."]


def test_a_rounds_result_carries_the_coverage_warning_and_the_settings_act_on_it(tmp_path):
    from almdn.projects.jobs import JobContext
    from almdn.models.anchors import AnchorCoverageWarning
    from almdn.projects.rounds import RoundSettings
    from almdn.workflow import retrain_job

    trees = write_small_box_dataset(tmp_path / "trees")
    store, _ = create_project(tmp_path / "p", [("coco", trees, None)], min_anchor_coverage=None)
    with store:
        TINY_SETTINGS.save(store)
        found = []
        plain = run_round(store, TINY_SETTINGS, on_warning=found.append)
        assert plain.warnings == found and len(found) == 1 and found[0].startswith("Only 6% of 240 boxes")
        fitted = run_round(store, TINY_SETTINGS.replace(fit_anchors=True, image_size=160), on_warning=found.append)
        assert len(fitted.warnings) == 1 and "already fitted" in fitted.warnings[0] and "160x160 input" in fitted.warnings[0]
        info = store.model_version(fitted.model_version)
        assert info["metrics"]["anchor_fit"].startswith("Anchors fitted to 240 boxes: coverage ")
        assert info["metrics"]["settings"]["image_size"] == 160
        assert RoundSettings.load(store).fit_anchors is False  # the saved settings were not touched
    # the app's retrain job: the warning is in the job's result (the Train page shows it)
    with pytest.warns(AnchorCoverageWarning):  # and in the job's log
        result = retrain_job(JobContext(), project_dir=str(tmp_path / "p"))
    assert result["warnings"] == [plain.warnings[0]]


# --------------------------------------------------------------------------- where a project's models start (issue 12)


def test_a_project_created_with_a_starting_point_keeps_it_and_a_bad_one_leaves_nothing(tmp_path):
    from PIL import Image

    from almdn.projects.rounds import RoundSettings

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(images / "a.png")
    store, _ = create_project(tmp_path / "p", [("images", images, None)], classes=["cat"], init="none")
    with store:
        assert RoundSettings.load(store).init == "none"
    with pytest.raises(RoundError, match="starting point 'nowhere.pt' is neither coco, imagenet, none nor a weights file"):
        create_project(tmp_path / "q", [("images", images, None)], init="nowhere.pt")
    with pytest.raises(RoundError, match="starting point 'coco' needs one of .*ssd_mobilenet_v2_small starts from imagenet or none"):
        create_project(tmp_path / "r", [("images", images, None)], init="coco")  # the default architecture has no COCO detector
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()


def test_a_rounds_initial_weights_follow_the_starting_point(project):
    import torch

    from almdn.workflow.training import _initial_model  # the round's model builder, checked without training

    with Store.open(project, create=False) as store:
        classes = store.classes()
        imagenet, _, _ = _initial_model(store, TINY_SETTINGS.replace(init="imagenet"), classes)
        again, _, _ = _initial_model(store, TINY_SETTINGS.replace(init="imagenet"), classes)
        none, _, _ = _initial_model(store, TINY_SETTINGS.replace(init="none"), classes)
    first = next(imagenet.backbone.parameters())
    assert torch.equal(first, next(again.backbone.parameters()))  # a function of the seed and the starting point
    assert not torch.equal(first, next(none.backbone.parameters()))  # random backbone, not ImageNet's


def test_describe_training_names_a_changed_starting_point(project):
    from almdn.projects.rounds import describe_training

    with Store.open(project, create=False) as store:
        first = store.latest_model_version()
        other = run_round(store, TINY_SETTINGS.replace(init="none"))
        how = describe_training(store, other.model_version)
        assert not how.comparable and how.differences["init"] == ("imagenet", "none")
        assert how.previous == first


# --------------------------------------------------------------------------- embeddings kept by the scoring (issue 19)


def test_scoring_keeps_the_confident_detections_and_the_faint_ones_weighted_entropy_from_one_pass(project):
    from almdn.acquisition.baselines import mean_entropy_scores
    from almdn.acquisition.batch import class_mass
    from almdn.acquisition.scoring import kept_pool_detections
    from almdn.data.images import ImageFolderDataset
    from almdn.engine.checkpoint import load_model
    from almdn.workflow import score_pool, write_scoring

    with Store.open(project, create=False) as store:
        model = load_model(store.model_version(1)["checkpoint"], device="cpu")
        pool = store.images("pool")
        dataset = ImageFolderDataset(pool["path"].tolist())
        dataset.image_ids = pool["image_id"].tolist()
        faint = kept_pool_detections(model, dataset, 0.05, 16, "cpu").detections
        conf = float(faint.groupby("image_id")["score"].max().median())  # some images keep a detection, others none
        settings = dataclasses.replace(TINY_SETTINGS, conf_threshold=conf, low_threshold=0.05)
        scoring = score_pool(store, model, settings, embeddings=False)
        kept = kept_pool_detections(model, dataset, conf, 16, "cpu").detections
        # the kept detections are exactly a pass at the confidence threshold: the same rows, numbered alike
        assert 0 < len(kept) < len(faint)
        assert scoring.detections[["image_id", "detection", "label", "score"]].equals(kept[["image_id", "detection", "label", "score"]])
        weighted = scoring.images.set_index("image_id")["entropy_weighted"]
        assert weighted.to_numpy() == pytest.approx(mean_entropy_scores(faint, dataset.image_ids, score_weighted=True).to_numpy(), nan_ok=True)
        # an image without a confident detection still has a weighted entropy to be ranked by
        unsure = scoring.images.loc[scoring.images["num_detections"] == 0, "image_id"]
        assert len(unsure) and weighted.loc[unsure].notna().all()
        write_scoring(store, 1, scoring, settings)
        assert store.model_version(1)["low_threshold"] == 0.05
        assert store.image_scores(1)["entropy_weighted"].to_numpy() == pytest.approx(weighted.to_numpy(), nan_ok=True)
        # the classes of the faint detections, which entropy_weighted+balance balances by (schema 8)
        ids = dataset.image_ids
        expected = class_mass(faint, ids, len(store.classes()))
        assert store.class_mass(1, ids) == pytest.approx(expected)
        assert expected[[ids.index(i) for i in unsure]].sum(axis=1).min() > 0  # unsure images hold classes too


def test_scoring_keeps_the_embeddings_of_acquisition_features_in_one_pass(project):
    import torch

    from almdn.acquisition.scoring import acquisition_features
    from almdn.data.images import ImageFolderDataset
    from almdn.engine.checkpoint import load_model
    from almdn.workflow import score_pool, write_scoring

    with Store.open(project, create=False) as store:
        model = load_model(store.model_version(1)["checkpoint"], device="cpu")
        scoring = score_pool(store, model, TINY_SETTINGS)
        pool, labeled = store.images("pool"), store.images("labeled")
        assert scoring.embedding_ids == pool["image_id"].tolist() + labeled["image_id"].tolist()
        expected = np.concatenate([acquisition_features(model, ImageFolderDataset(t["path"].tolist()), None, 16, "cpu")[0] for t in (pool, labeled)])
        assert scoring.embeddings.dtype == np.float32 and scoring.embeddings == pytest.approx(expected, rel=1e-4, abs=1e-5)
        write_scoring(store, 1, scoring, TINY_SETTINGS)
        ids, vectors = store.embeddings(1)
        assert ids.tolist() == scoring.embedding_ids and np.array_equal(vectors, scoring.embeddings)

        class NoTrunk(torch.nn.Module):  # a detector without an SSD trunk (as Faster R-CNN)
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, images):
                return self.inner(images)

        plain = score_pool(store, NoTrunk(model), TINY_SETTINGS)
        assert plain.embeddings is None and "No image embeddings kept for NoTrunk" in plain.embeddings_note
        write_scoring(store, 1, plain, TINY_SETTINGS)
        assert store.embeddings(1) is None  # a rescore without embeddings leaves none stale
