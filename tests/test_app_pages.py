"""Every page and action of the app under Streamlit's AppTest, on a real tiny project,
including the bad states: no model yet, Label Studio unreachable, a corrupt pool image, a
retrain already running."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
import pytest
from streamlit.testing.v1 import AppTest

from almdn.projects import jobs
from almdn.projects.sources import coco_records
from almdn.projects.rounds import RoundSettings
from almdn.workflow import run_round
from almdn.projects.store import Store
from almdn.acquisition.stored import DEFAULT_ACQUISITION, acquisition_scores, select_for_labeling
from label_studio.client import save_connection
from label_studio.server import free_port
from tests.app_support import APP, TINY_DEMO_SIZES, TINY_SETTINGS, add_corrupt_pool_image, built_project, project, write_small_box_dataset  # noqa: F401


def open_app(project_dir, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project_dir)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def charts(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def arr(values) -> list:
    """A plotly data array: a list, or plotly's typed-array encoding of a numpy array."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def wait_done(project_dir, timeout: float = 300) -> dict:
    job = jobs.latest_job(project_dir)
    assert job is not None
    return job.wait(timeout=timeout)


# --------------------------------------------------------------------------- Pool

#: Pages that only read the store: a fresh server draws them without importing torch (whose
#: import alone took 7-13 s cold on a 2-core machine) or building a model.
STORE_READING_PAGES = ("views/pool.py", "views/train.py", "views/history.py")


def test_pages_that_only_read_the_store_import_no_torch(project):
    import subprocess
    import sys

    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=120)
at.session_state["project_dir"] = {str(project)!r}
at.run()
assert not at.exception, [e.value for e in at.exception]
for page in {STORE_READING_PAGES!r}:
    at.switch_page(page).run()
    assert not at.exception, (page, [e.value for e in at.exception])
    print(page, "torch" in sys.modules, "torchvision" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=str(APP.parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("views/")]
    assert [line[0] for line in lines] == list(STORE_READING_PAGES)
    assert all(line[1:] == ["False", "False"] for line in lines), lines



def test_pool_page_ranks_sorts_and_filters(project):
    at = open_app(project)
    assert texts(at, "title") == ["Pool"]
    with Store.open(project, create=False) as store:
        pool = store.image_ids("pool")
        ranking = store.pool_ranking()
    table = at.dataframe[0].value
    assert table["rank"].tolist() == list(range(1, len(pool) + 1))
    assert table["image_id"].tolist() == ranking["image_id"].tolist()
    assert all(u.startswith("data:image/jpeg;base64,") for u in table["thumbnail"])
    assert at.metric[0].value == str(len(pool))

    at.selectbox(key="pool_sort").set_value("cls_epistemic").run()
    table = at.dataframe[0].value
    assert table["cls_epistemic"].is_monotonic_decreasing
    at.toggle(key="pool_z").set_value(True).run()
    z = at.dataframe[0].value
    assert z["cls_epistemic"].is_monotonic_decreasing
    assert not np.allclose(z["cls_epistemic"].to_numpy(), table["cls_epistemic"].to_numpy())  # z values, not raw
    at.toggle(key="pool_ascending").set_value(True).run()
    assert at.dataframe[0].value["cls_epistemic"].is_monotonic_increasing

    wanted = at.multiselect(key="pool_classes").options[0]
    at.multiselect(key="pool_classes").set_value([wanted]).run()
    filtered = at.dataframe[0].value
    assert 0 < len(filtered) <= len(pool)
    assert all(wanted in c.split(", ") for c in filtered["classes"])
    assert not at.exception


def test_pool_paginates(project):
    at = open_app(project)
    at.selectbox(key="pool_per_page").set_value(25).run()
    assert len(at.dataframe[0].value) == min(25, len(at.dataframe[0].value))
    assert at.number_input(key="pool_page").max == 1  # 22 pool images: one page of 25


def test_open_an_image_from_the_pool(project):
    at = open_app(project)
    third = at.dataframe[0].value["image_id"].iloc[2]
    at.selectbox(key="pool_open").set_value(int(third))
    at.button[0].click().run()
    assert texts(at, "title") == ["Image"]
    assert at.session_state["image_id"] == third
    assert any(f"Image {third} ranks 3 of" in t for t in texts(at, "info"))


def test_corrupt_pool_image_is_listed_and_skipped(project):
    bad = add_corrupt_pool_image(project)
    with Store.open(project, create=False) as store:
        run_round(store, TINY_SETTINGS)
    at = open_app(project)
    assert any("1 pool images could not be read and were skipped" in e.label for e in at.expander)
    assert bad in at.dataframe[1].value["image_id"].tolist()  # the list of unreadable files
    table = at.dataframe[-1].value
    assert table.iloc[-1]["image_id"] == bad and table.iloc[-1]["status"] == "unreadable"
    assert pd.isna(table.iloc[-1]["thumbnail"])  # no thumbnail for a file that cannot be decoded
    # its Image page says so in one sentence; the page does not break
    at.session_state["image_id"] = bad
    at.switch_page("views/image.py").run()
    assert not at.exception
    assert any("could not be read when the pool was scored" in t for t in texts(at, "info"))
    assert any(t.startswith(f"Cannot read image '") and "broken.png" in t for t in texts(at, "error"))


# --------------------------------------------------------------------------- Image


def test_image_page_draws_the_mixture_and_explains_the_rank(project):
    with Store.open(project, create=False) as store:
        ranking = store.pool_ranking()
        k = RoundSettings.load(store).num_components
    top = int(ranking.iloc[0]["image_id"])
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project)
    at.session_state["image_id"] = top
    at.run()
    at.switch_page("views/image.py").run()
    assert not at.exception
    assert any(t.startswith(f"Image {top} ranks 1 of {len(ranking)} pool images") for t in texts(at, "info"))
    figures = charts(at)
    assert len(figures) == 2  # the mixture on the image, the class spread
    mixture, spread = figures
    shapes = mixture["layout"]["shapes"]
    # per component of the selected detection: the mean box and its two +-sigma boxes (inner may vanish)
    assert len(shapes) >= 2 * k
    opacities = sorted({round(s["opacity"], 3) for s in shapes if s["line"]["color"] != "white"})
    assert len(opacities) > 1  # opacity follows the component weights
    assert [t["name"].split(" (")[0] for t in spread["data"]] == [*(f"component {i + 1}" for i in range(k)), "mixture"]
    assert len(arr(spread["data"][-1]["x"])) == 11  # background + 10 digit classes
    assert sum(arr(spread["data"][-1]["y"])) == pytest.approx(1.0, abs=1e-4)
    unc = at.dataframe[0].value
    assert unc["uncertainty"].tolist() == ["box aleatoric", "box epistemic", "class aleatoric", "class epistemic"]
    assert unc["percentile"].between(0, 100).all()
    # next in the ranking
    next_button = next(b for b in at.button if b.label == "Next")
    next_button.click().run()
    assert at.session_state["image_id"] == int(ranking.iloc[1]["image_id"])
    assert any("ranks 2 of" in t for t in texts(at, "info"))


def test_image_page_detection_choice_and_threshold(project):
    with Store.open(project, create=False) as store:
        top = int(store.pool_ranking().iloc[0]["image_id"])
        n_kept = len(store.detections(image_ids=[top]))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project)
    at.session_state["image_id"] = top
    at.run()
    at.switch_page("views/image.py").run()
    choice = next(s for s in at.selectbox if s.label == "Detection to explain")
    assert len(choice.options) == n_kept  # threshold 0: every kept detection can be explained
    second = choice.options[1]
    choice.set_value(int(second.split(" ")[0][1:])).run()
    assert not at.exception
    assert charts(at)[1]["layout"]["title"]["text"] == f"Class spread of detection {second.split(' ')[0]}"
    next(s for s in at.slider if s.label == "Show detections with score at least").set_value(0.99).run()
    assert not at.exception
    assert any(c.startswith("No detection with score ≥ 0.99") for c in texts(at, "caption"))
    assert len(charts(at)) == 0


# --------------------------------------------------------------------------- no model yet


@pytest.fixture
def unscored_project(tmp_path_factory, tmp_path):
    """A project with labeled, pool and test images but no model."""
    data = built_project(tmp_path_factory) / "data" / "annotations"
    records, classes = coco_records(data / "train.json")
    test, _ = coco_records(data / "test.json")
    folder = tmp_path / "fresh"
    with Store.open(folder, name="fresh") as store:
        store.add_classes(classes)
        store.add_images(records[:6], split="labeled")
        store.add_images([r.path for r in records[6:]], split="pool")
        store.add_images(test, split="test")
        TINY_SETTINGS.save(store)
    yield folder
    job = jobs.active_job(folder)
    if job is not None:
        job.cancel()
        job.wait(60)


def test_no_model_yet(unscored_project):
    at = open_app(unscored_project)
    assert any(t.startswith("No model yet: the 24 pool images are not ranked.") for t in texts(at, "info"))
    for page, expected in (("views/image.py", "No model yet"), ("views/label.py", "No model yet"), ("views/history.py", "No model yet"),
                           ("views/train.py", "No model yet. Retrain trains the first one on the 6 labeled images")):
        at.switch_page(page).run()
        assert not at.exception, page
        assert any(t.startswith(expected) for t in texts(at, "info")), (page, texts(at, "info"))


def test_retrain_trains_the_first_model_then_shows_its_map(unscored_project):
    at = open_app(unscored_project, "views/train.py")
    retrain = next(b for b in at.button if b.label == "Retrain")
    assert not retrain.disabled
    retrain.click().run()
    state = wait_done(unscored_project)
    assert state["status"] == "done" and state["kind"] == "retrain"
    at.run()
    assert not at.exception
    assert any("finished: Model version 1" in t for t in texts(at, "success"))
    assert at.metric[0].label == "Model version 1"
    assert at.metric[1].label == "mAP@0.5 (test)" and at.metric[1].value == f"{state['result']['metrics']['map50']:.3f}"
    # a second retrain: the new mAP next to the previous one
    next(b for b in at.button if b.label == "Retrain").click().run()
    state = wait_done(unscored_project)
    at.run()
    old, new = state["result"]["previous_metrics"]["map50"], state["result"]["metrics"]["map50"]
    assert at.metric[1].delta == f"{new - old:+.3f} vs v1"
    assert any(f"New mAP@0.5 {new:.3f} next to the previous model's {old:.3f}" in c for c in texts(at, "caption"))
    at.switch_page("views/pool.py").run()
    assert len(at.dataframe[0].value) == 24


# --------------------------------------------------------------------------- Train: a retrain already running


def test_retrain_already_running_and_cancel(project):
    job = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 100_000}})
    deadline = time.monotonic() + 120
    while not job.metrics() and time.monotonic() < deadline:
        time.sleep(0.2)
    at = open_app(project, "views/train.py")
    assert any("A retrain is running" in t and "Only one job runs at a time" in t for t in texts(at, "warning"))
    assert next(b for b in at.button if b.label == "Retrain").disabled
    assert any("training on 8 images" in p.proto.text for p in at.get("progress"))
    assert len(charts(at)) == 1  # the live loss curve
    loss = charts(at)[0]["data"][0]
    assert loss["name"] == "loss" and len(arr(loss["x"])) >= 1 and arr(loss["x"])[0] == 10  # logged every 10 iterations
    # starting it another way (a second tab) is refused in one sentence
    with pytest.raises(jobs.JobAlreadyRunning, match="already running"):
        jobs.start_job(project, "retrain", {"project_dir": str(project)})
    # the other pages keep working meanwhile
    at.switch_page("views/pool.py").run()
    assert not at.exception and texts(at, "title") == ["Pool"]
    at.switch_page("views/train.py").run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert job.wait(timeout=120)["status"] == "cancelled"
    at.run()
    assert any("was cancelled; nothing was changed" in t for t in texts(at, "info"))
    assert not next(b for b in at.button if b.label == "Retrain").disabled
    with Store.open(project, create=False) as store:
        assert store.latest_model_version() == 1


# --------------------------------------------------------------------------- Label


def test_label_page_without_label_studio(project):
    at = open_app(project, "views/label.py")
    assert any(t.startswith("Not connected to Label Studio") for t in texts(at, "warning"))
    send = next(b for b in at.button if b.label.startswith("Send"))
    assert send.disabled
    # the preview still works: the top-K by the default method (DEFAULT_ACQUISITION)
    assert at.selectbox(key="label_method").value == DEFAULT_ACQUISITION == "entropy_weighted"
    with Store.open(project, create=False) as store:
        top = select_for_labeling(store, 10, DEFAULT_ACQUISITION).image_ids
        scores = acquisition_scores(store, DEFAULT_ACQUISITION)
        assert scores[top[0]] == scores.max()
        paper_rank = int(store.pool_ranking().set_index("image_id").loc[top[0], "rank"])
    assert at.get("image")[0].proto.imgs[0].caption.startswith(f"#{top[0]} · rank {paper_rank}")
    at.number_input(key="label_k").set_value(3).run()
    assert len(at.get("image")[0].proto.imgs) == 3
    at.selectbox(key="label_method").set_value("random").run()
    assert not at.exception and len(at.get("image")[0].proto.imgs) == 3


def test_label_page_preview_says_why_each_image_was_chosen_and_the_pool_page_shows_it(project):
    at = open_app(project, "views/label.py")
    at.number_input(key="label_k").set_value(4).run()
    at.selectbox(key="label_method").set_value("almdn+kcenter_balanced").run()
    assert not at.exception and not at.error, texts(at, "error")
    preview = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert len(preview) == 4 and preview["image_id"].is_unique and all(isinstance(w, str) and w for w in preview["why"])
    at.switch_page("views/pool.py").run()
    pool = at.dataframe[0].value.set_index("image_id")
    assert all(pool.loc[int(i), "why"].endswith(w) for i, w in zip(preview["image_id"], preview["why"]))
    assert pool["why"].notna().sum() == 4


def test_label_studio_unreachable_is_one_sentence_and_the_rest_works(project):
    url = f"http://127.0.0.1:{free_port()}"
    save_connection(project, url, token="0123456789abcdef")
    at = open_app(project, "views/label.py")
    assert f"Label Studio at {url} does not answer; check that the server runs and that its URL is right on the Settings page. Everything else in the app keeps working." in texts(at, "warning")
    assert next(b for b in at.button if b.label.startswith("Send")).disabled
    for page in ("views/pool.py", "views/image.py", "views/train.py", "views/history.py", "views/settings.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, page


# --------------------------------------------------------------------------- History


def test_history_page_curves_and_distributions(project):
    with Store.open(project, create=False) as store:
        run_round(store, TINY_SETTINGS)
        n_labels = len(store.labels(split="labeled"))
        n_detections = len(store.detections(2))
    at = open_app(project, "views/history.py")
    curve, reliability, labels, histograms, scatter = charts(at)
    assert reliability["layout"]["title"]["text"] == "Reliability of the scores (test split)"
    assert sum(int(n[2:]) for n in reliability["data"][0]["text"]) == state_kept(project)
    quality = at.dataframe[0].value
    assert list(quality["model_version"]) == [1, 2] and "AUROC cls epistemic" in quality.columns
    assert curve["data"][0]["name"] == "mAP@0.5" and arr(curve["data"][0]["x"]) == [8, 8]
    assert curve["data"][1]["name"] == "mAP@0.75"
    assert arr(curve["layout"]["xaxis"]["tickvals"]) == [8]  # labeled images are whole numbers: no 7.5 tick
    assert histograms["layout"]["yaxis"]["title"]["text"] == "detections"
    assert sum(arr(labels["data"][0]["y"])) == n_labels
    assert [len(arr(t["x"])) for t in histograms["data"]] == [n_detections] * 4
    assert len(scatter["data"]) == 2 and len(arr(scatter["data"][0]["x"])) == n_detections
    assert len(at.dataframe[1].value) == 2  # the rounds


def state_kept(project) -> int:
    """Test-split detections of the latest model version that entered its quality report."""
    with Store.open(project, create=False) as store:
        return int(store.model_version(store.latest_model_version())["metrics"]["uncertainty_quality"]["num_kept"])


def test_train_and_history_pages_warn_when_the_class_mixture_has_collapsed(project):
    with Store.open(project, create=False) as store:
        mv = store.latest_model_version()
        metrics = dict(store.model_version(mv)["metrics"])
        collapsed = {**metrics["mixture_collapse"], "cls_collapsed_fraction": 0.97, "cls_effective_components": 1.01}
        checkpoint = store.model_version(mv)["checkpoint"]
        store.record_model_version(checkpoint, {**metrics, "mixture_collapse": collapsed}, class_names=store.classes())
    for page in ("views/train.py", "views/history.py"):
        at = open_app(project, page)
        assert not at.exception
        assert any("The class mixture has collapsed: in 97% of the detections" in w for w in texts(at, "warning")), page
    at = open_app(project, "views/train.py")
    assert next(m for m in at.metric if m.label == "Class mixture collapsed").value == "97%"


# --------------------------------------------------------------------------- Settings


def test_settings_save_model_and_thresholds(project):
    at = open_app(project, "views/settings.py")
    form_inputs = {n.label: n for n in at.number_input}
    form_inputs["K (mixture components)"].set_value(2)
    form_inputs["Iterations per retrain"].set_value(7)
    next(s for s in at.slider if s.label == "Confidence threshold for scoring").set_value(0.25)
    next(s for s in at.slider if s.label == "Low threshold (entropy_weighted)").set_value(0.1)
    next(s for s in at.selectbox if s.label == "Aggregation (Tab. 2)").set_value("sum_cls")
    next(s for s in at.selectbox if s.label == "Class loss").set_value("eq5")
    next(s for s in at.selectbox if s.label == "Augmentation").set_value("none")
    next(t for t in at.text_input if t.label == "Models start from").set_value("none")
    next(b for b in at.button if b.label == "Save").click().run()
    assert "Saved; the next retrain uses these settings." in texts(at, "success")
    with Store.open(project, create=False) as store:
        saved = RoundSettings.load(store)
    assert (saved.num_components, saved.iterations, saved.conf_threshold, saved.low_threshold, saved.aggregation) == (2, 7, 0.25, 0.1, "sum_cls")
    assert (saved.cls_loss, saved.augment, saved.init) == ("eq5", "none", "none")
    # a starting point this architecture cannot take: one sentence, nothing saved
    at = open_app(project, "views/settings.py")
    next(t for t in at.text_input if t.label == "Models start from").set_value("coco")
    next(b for b in at.button if b.label == "Save").click().run()
    assert any("starting point 'coco' needs one of" in e for e in texts(at, "error"))
    with Store.open(project, create=False) as store:
        assert RoundSettings.load(store).init == "none"


def test_settings_connect_errors_are_one_sentence(project):
    at = open_app(project, "views/settings.py")
    next(b for b in at.button if b.label == "Connect").click().run()
    assert "Give both the server's URL and your API token." in texts(at, "error")
    url = f"http://127.0.0.1:{free_port()}"
    at.text_input[0].set_value(url)
    at.text_input[1].set_value("0123456789abcdef")
    next(b for b in at.button if b.label == "Connect").click().run()
    errors = texts(at, "error")
    assert len(errors) == 1 and errors[0].startswith(f"Cannot reach Label Studio at {url}") and "\n" not in errors[0]
    assert not (project / "label-studio" / "connection.json").exists()  # nothing saved for a server that is not there


# --------------------------------------------------------------------------- Projects and the demo set-up


def test_projects_create_from_coco_and_bad_paths(project, tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("ALMDN_PROJECTS", str(tmp_path / "projects"))
    data = built_project(tmp_path_factory) / "data"
    at = open_app(project, "views/projects.py")
    assert next(t for t in at.text_input if t.label == "Dataset path").placeholder.startswith("/data/coco-dataset")
    at.selectbox(key="create-kind").set_value("voc").run()  # the example path follows the source
    assert next(t for t in at.text_input if t.label == "Dataset path").placeholder == "/data/VOCdevkit/VOC2007"
    at.selectbox(key="create-kind").set_value("coco").run()
    inputs = {t.label: t for t in at.text_input}
    inputs["Name"].set_value("digits")
    inputs["Dataset path"].set_value(str(tmp_path / "missing"))
    next(b for b in at.button if b.label == "Create").click().run()
    assert texts(at, "error") == [f"'{tmp_path / 'missing'}' does not exist; give the path of the dataset on this machine."]
    inputs = {t.label: t for t in at.text_input}
    inputs["Dataset path"].set_value(str(data / "images"))  # a folder of images, but asked to read it as COCO
    next(b for b in at.button if b.label == "Create").click().run()
    assert len(texts(at, "error")) == 1 and "annotations/train.json" in texts(at, "error")[0]
    inputs = {t.label: t for t in at.text_input}
    inputs["Dataset path"].set_value(str(data))
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert any("images added to 'labeled'" in t and "images added to 'test'" in t for t in texts(at, "success"))
    assert texts(at, "warning") == []  # the demo's objects have anchors that fit them (issue 12's check is quiet)
    created = tmp_path / "projects" / "digits"
    assert at.session_state["project_dir"] == str(created)
    with Store.open(created, create=False) as store:
        assert store.counts()["labeled"] == 30 and store.counts()["test"] == 8
    at.switch_page("views/pool.py").run()
    assert any(t.startswith("No model yet") for t in texts(at, "info"))


def test_small_objects_are_warned_at_creation_acted_on_in_settings_and_warned_after_a_retrain(project, tmp_path, monkeypatch):
    """Issue 12's small objects: the Projects page shows the coverage warning of the labeled
    boxes, the Settings page carries what it asks for and re-checks on saving, and the Train
    page shows the warning a retrain's result carries."""
    monkeypatch.setenv("ALMDN_PROJECTS", str(tmp_path / "projects"))
    trees = write_small_box_dataset(tmp_path / "trees")
    at = open_app(project, "views/projects.py")
    at.selectbox(key="create-kind").set_value("coco").run()
    inputs = {t.label: t for t in at.text_input}
    inputs["Name"].set_value("trees")
    inputs["Dataset path"].set_value(str(trees))
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert any("20 images added to 'labeled' with 240 boxes" in t for t in texts(at, "success"))
    warnings = texts(at, "warning")
    assert len(warnings) == 1 and warnings[0].startswith("Only 6% of 240 boxes have an anchor with IoU >= 0.5") and "Settings page" in warnings[0]
    created = tmp_path / "projects" / "trees"
    at.switch_page("views/settings.py").run()
    next(n for n in at.number_input if n.label.startswith("Input image size")).set_value(256)
    next(b for b in at.button if b.label == "Save").click().run()
    assert "Saved; the next retrain uses these settings." in texts(at, "success")
    # checked again for what was saved: a 256 px input alone covers 15% of the boxes
    after = [w for w in texts(at, "warning") if w.startswith("Only ")]
    assert len(after) == 1 and after[0].startswith("Only 15% of 240 boxes") and "at the model's 256x256 input" in after[0]
    jobs.start_job(created, "retrain", {"project_dir": str(created), "settings": {"iterations": 3, "batch_size": 4, "conf_threshold": 0.0}})
    state = wait_done(created)
    assert state["status"] == "done" and state["result"]["warnings"] == after
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert any("finished: Model version 1" in t for t in texts(at, "success"))
    assert after[0] in texts(at, "warning")
    # anchors fitted to the boxes at 256 px cover 69% of them: saved, and the warning is gone
    at.switch_page("views/settings.py").run()
    next(t for t in at.toggle if t.label == "Fit anchors to the labeled boxes").set_value(True)
    next(b for b in at.button if b.label == "Save").click().run()
    with Store.open(created, create=False) as store:
        saved = RoundSettings.load(store)
    assert (saved.image_size, saved.fit_anchors) == (256, True)
    assert "Saved; the next retrain uses these settings." in texts(at, "success")
    assert not [w for w in texts(at, "warning") if w.startswith("Only ")]


def test_projects_open_and_add_images(project, tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("ALMDN_PROJECTS", str(tmp_path / "projects"))
    at = open_app(project, "views/projects.py")
    # a folder without a project
    form_path = next(t for t in at.text_input if t.label == "Or a project folder")
    form_path.set_value(str(tmp_path / "empty"))
    next(b for b in at.button if b.label == "Open folder").click().run()
    assert texts(at, "error") == [f"'{tmp_path / 'empty'}' holds no almdn project (almdn.sqlite); create one below."]
    # add a folder of new images to the open project's pool
    incoming = tmp_path / "incoming" / "batch"
    incoming.mkdir(parents=True)
    with Store.open(project, create=False) as store:
        pool_before = len(store.image_ids("pool"))
        for i, path in enumerate(store.images("test")["path"].iloc[:3]):
            # new images (a changed pixel): byte-identical copies would be recognised as already there
            pixels = np.array(Image.open(path).convert("RGB"))
            pixels[0, 0] = 255 - pixels[0, 0]
            Image.fromarray(pixels).save(incoming / f"new{i}.png")
    next(t for t in at.text_input if t.label == "Path").set_value(str(incoming))
    next(b for b in at.button if b.label == "Add").click().run()
    assert any(t.startswith(f"{incoming}: 3 images added to 'pool'") for t in texts(at, "success")), texts(at, "success") + texts(at, "error")
    with Store.open(project, create=False) as store:
        assert len(store.image_ids("pool")) == pool_before + 3
    at.switch_page("views/pool.py").run()
    assert (at.dataframe[0].value["status"] == "not scored").sum() == 3
    # open another project by its folder; the URL remembers it (a reload keeps it)
    other = tmp_path / "other"
    with Store.open(other, name="other") as store:
        store.add_classes(["a"])
    at.switch_page("views/projects.py").run()
    next(t for t in at.text_input if t.label == "Or a project folder").set_value(str(other))
    next(b for b in at.button if b.label == "Open folder").click().run()
    assert at.session_state["project_dir"] == str(other) and at.query_params["project"] in (str(other), [str(other)])
    assert "other" in [m.value.strip("*") for m in at.sidebar.markdown]


def test_a_damaged_store_is_one_sentence(tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "almdn.sqlite").write_bytes(b"this is not a database" * 100)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(folder)
    at.run()
    assert not at.exception
    errors = texts(at, "error")
    assert len(errors) == 1 and errors[0].startswith(f"The project store '{folder / 'almdn.sqlite'}' is damaged (file is not a database); restore it from a backup")


def test_a_missing_checkpoint_is_one_sentence_on_the_image_page(project):
    with Store.open(project, create=False) as store:
        result = run_round(store, TINY_SETTINGS)
    Path(result.checkpoint).unlink()
    at = open_app(project, "views/image.py")
    assert any(t.startswith(f"No checkpoint at '{result.checkpoint}'") for t in texts(at, "error"))
    at.switch_page("views/pool.py").run()  # the rest keeps working
    assert not at.exception and len(at.dataframe[0].value) == 22


def test_missing_project_points_to_the_projects_page(tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(tmp_path / "nowhere")
    at.run()
    assert not at.exception
    assert texts(at, "warning") == [f"There is no project at '{tmp_path / 'nowhere'}'; create or open one on the Projects page."]


def test_first_run_sets_up_the_demo_project_with_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("ALMDN_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.setenv("ALMDN_DEMO_SIZES", TINY_DEMO_SIZES)
    monkeypatch.delenv("ALMDN_PROJECT", raising=False)
    demo = tmp_path / "projects" / "demo"
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    assert texts(at, "title") == ["Setting up the demo project"]
    job = jobs.latest_job(demo, "demo")
    assert job is not None
    at.run()  # a reload while it runs: the same job is followed, no second one is started
    assert len([p for p in (demo / "jobs").iterdir() if p.is_dir()]) == 1
    assert job.wait(timeout=300)["status"] == "done"
    at.run()
    assert not at.exception
    assert texts(at, "title") == ["Pool"]
    with Store.open(demo, create=False) as store:
        assert store.counts()["pool"] == 18 and store.latest_model_version(scored=True) == 1


# --------------------------------------------------------------------------- where the app listens (issue 14)


def test_the_app_refuses_a_non_loopback_address_unless_the_risk_is_named(project, monkeypatch):
    from streamlit import config as st_config

    previous = (st_config.get_option("server.address"), st_config.get_option("browser.gatherUsageStats"))
    monkeypatch.delenv("ALMDN_SERVE_TO_NETWORK_WITHOUT_LOGIN", raising=False)
    try:
        for address in (None, "0.0.0.0", "::", "192.168.1.20"):  # None: no config file found, streamlit listens everywhere
            st_config.set_option("server.address", address)
            st_config.set_option("browser.gatherUsageStats", True)
            at = AppTest.from_file(str(APP), default_timeout=120)
            at.session_state["project_dir"] = str(project)
            at.run()
            assert not at.exception
            [error] = texts(at, "error")
            assert error.startswith("The almdn app refuses to serve on ") and "it has no login" in error and "--serve-to-network-without-login" in error
            assert not at.dataframe and not texts(at, "title")  # no page was drawn
            assert st_config.get_option("browser.gatherUsageStats") is False
        monkeypatch.setenv("ALMDN_SERVE_TO_NETWORK_WITHOUT_LOGIN", "1")  # the named risk, accepted
        at = open_app(project)
        assert not texts(at, "error") and len(at.dataframe) == 1
        monkeypatch.delenv("ALMDN_SERVE_TO_NETWORK_WITHOUT_LOGIN")
        for address in ("127.0.0.1", "localhost", "::1"):
            st_config.set_option("server.address", address)
            assert not texts(open_app(project), "error")
    finally:
        st_config.set_option("server.address", previous[0])
        st_config.set_option("browser.gatherUsageStats", previous[1])


# --------------------------------------------------------------------------- issue 15: the labeling loop


def _live_percent(text: str) -> int:
    import re

    return int(re.search(r"\((\d+) %", text).group(1))


def test_every_status_line_shows_the_jobs_live_progress(project):
    from tests.app_support import rerun_fragments

    job = jobs.start_job(project, "retrain", {"project_dir": str(project), "settings": {"iterations": 2000}})
    at = open_app(project, "views/train.py")  # drawn while the job is at its start
    deadline = time.monotonic() + 180
    while round(100 * (job.read().get("progress") or 0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    now = round(100 * float(job.read()["progress"]))
    assert now >= 2, "the training did not get going"
    # What the browser's one-second timer redraws: the banner, the sidebar line and the bar alike.
    rerun_fragments(at)
    banner = [w for w in texts(at, "warning") if "A retrain is running" in w]
    sidebar = [c.value for c in at.sidebar.caption if "A retrain is running" in c.value]
    bars = [p.proto.text for p in at.get("progress")]
    assert banner and sidebar and bars, (texts(at, "warning"), [c.value for c in at.sidebar.caption], bars)
    for line in (banner[0], sidebar[0], bars[0]):
        assert _live_percent(line) >= now, line  # not the "0 %, starting" of the page's first run
    assert "training on 8 images" in banner[0] and "Only one job runs at a time" in banner[0]
    job.cancel()
    assert job.wait(timeout=120)["status"] == "cancelled"


def _label_rects(figure: dict) -> list[tuple[float, float, float, float]]:
    """The data-unit rectangles of the mixture figure's labels, as figures.place_labels sized them."""
    import sys

    sys.path.insert(0, str(APP.parent))
    from figures import LABEL_MIN_PLOT_WIDTH, label_extent

    xr, yr = figure["layout"]["xaxis"]["range"], figure["layout"]["yaxis"]["range"]
    w, h = xr[1] - xr[0], yr[0] - yr[1]
    scale = min((figure["layout"]["height"] - 10) / h, LABEL_MIN_PLOT_WIDTH / w)
    rects = []
    for a in figure["layout"].get("annotations", []):
        lw, lh = (v / scale for v in label_extent(a["text"]))
        rects.append((a["x"] - lw / 2, a["y"] - lh / 2, a["x"] + lw / 2, a["y"] + lh / 2))
    return rects


def _frame(at: AppTest, columns: list[str]) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if d.value.columns.tolist() == columns)


def test_image_page_shows_the_selected_detections_uncertainties_and_legible_labels(project):
    with Store.open(project, create=False) as store:
        top = int(store.pool_ranking().iloc[0]["image_id"])
        stored = store.detections(image_ids=[top]).set_index("detection")
        image_row = store.image_scores().set_index("image_id").loc[top]
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project)
    at.session_state["image_id"] = top
    at.run()
    at.switch_page("views/image.py").run()
    assert not at.exception
    subheaders = texts(at, "subheader")
    choice = next(s for s in at.selectbox if s.label == "Detection to explain")
    for option in (choice.value, choice.options[-1]):  # the default (the strongest) and another one
        detection = int(str(option).split(" ")[0].lstrip("#")) if isinstance(option, str) else int(option)
        choice = next(s for s in at.selectbox if s.label == "Detection to explain")
        choice.set_value(detection).run()
        assert f"Detection #{detection}: its four uncertainties" in texts(at, "subheader")
        own = _frame(at, ["uncertainty", "value", "z", "percentile"])
        assert own["uncertainty"].tolist() == ["box aleatoric", "box epistemic", "class aleatoric", "class epistemic"]
        # the selected detection's own values, not the image's maxima
        assert own["value"].tolist() == pytest.approx([stored.loc[detection, n] for n in ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic")], rel=1e-4)
    assert "The image's four uncertainties" in subheaders
    image = _frame(at, ["uncertainty", "value", "z", "percentile", "detection"])
    assert image["value"].tolist() == pytest.approx([image_row[n] for n in ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic")], rel=1e-6)
    # the z-score of the detection an image value comes from is the image's z-score
    source = int(image["detection"].iloc[3])
    choice = next(s for s in at.selectbox if s.label == "Detection to explain")
    choice.set_value(source).run()
    own = _frame(at, ["uncertainty", "value", "z", "percentile"])
    assert own["z"].iloc[3] == pytest.approx(image_row["z_cls_epistemic"], rel=1e-4)
    # labels: one per drawn detection unless it found no room, none overlapping, white on dark
    mixture = charts(at)[0]
    annotations = mixture["layout"]["annotations"]
    left_out = mixture["layout"]["meta"]["labels_left_out"]
    assert len(annotations) + len(left_out) == len(stored) and len(annotations) >= min(len(stored), 5)
    assert all(a["bgcolor"] == "rgba(0,0,0,0.75)" and a["font"]["color"] == "white" for a in annotations)
    rects = _label_rects(mixture)
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[2] <= b[0] + 1e-6 or b[2] <= a[0] + 1e-6 or a[3] <= b[1] + 1e-6 or b[3] <= a[1] + 1e-6, (a, b)


def test_image_page_draws_a_faster_rcnn_model_version(project, tmp_path):
    """A Faster R-CNN model version (trained elsewhere, recorded and scored into the store) is
    drawn like an SSD's: its detections carry their mixtures, the page reads no model internals."""
    import torch

    from almdn.acquisition.scoring import image_scores, kept_pool_detections
    from almdn.data.images import ImageFolderDataset
    from almdn.engine.checkpoint import load_model, save_checkpoint
    from almdn.models import MixtureFasterRCNN, build_model

    k = 2
    with Store.open(project, create=False) as store:
        classes = store.classes()
        torch.manual_seed(0)
        model = build_model("frcnn_mobilenet_v2", len(classes), num_components=k, class_names=classes, pretrained=False,
                            image_size=128, score_thresh=0.0, detections_per_img=20).eval()
        checkpoint = save_checkpoint(tmp_path / "frcnn.pt", model)
        pool = store.images("pool")
        dataset = ImageFolderDataset(pool["path"].tolist(), sizes=list(zip(pool["width"], pool["height"])))
        dataset.image_ids = [int(i) for i in pool["image_id"]]
        detections, readable = kept_pool_detections(model, dataset, conf_threshold=0.0, batch_size=8)
        assert readable.all()
        mv = store.record_model_version(checkpoint, {}, class_names=classes)
        store.write_scores(mv, image_scores(detections, dataset.image_ids), detections, conf_threshold=0.0)
        top = int(store.pool_ranking(mv).iloc[0]["image_id"])
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["project_dir"] = str(project)
    at.session_state["image_id"] = top
    at.run()
    at.switch_page("views/image.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not texts(at, "error")
    assert isinstance(load_model(checkpoint), MixtureFasterRCNN)
    assert any(t.startswith(f"Image {top} ranks 1 of") for t in texts(at, "info"))
    mixture, spread = charts(at)  # the mixture on the image, the class spread
    shapes = mixture["layout"]["shapes"]
    assert len(shapes) >= 2 * k  # per component: its mean box and its +-sigma boxes
    assert [t["name"].split(" (")[0] for t in spread["data"]] == [*(f"component {i + 1}" for i in range(k)), "mixture"]
    assert sum(arr(spread["data"][-1]["y"])) == pytest.approx(1.0, abs=1e-4)
    components = _frame(at, ["component", "box weight π", "class weight π", "x1", "y1", "x2", "y2", "σ x (px)", "σ y (px)"])
    assert len(components) == k
    assert components["box weight π"].sum() == pytest.approx(1.0, abs=1e-4)
    assert (components[["σ x (px)", "σ y (px)"]] > 0).all().all()

def test_pool_page_says_which_uncertainty_and_detection_drive_each_score(project):
    from almdn.display import store_tables as views

    at = open_app(project)
    table = at.dataframe[0].value
    assert "driven_by" in table.columns
    with Store.open(project, create=False) as store:
        for _, row in table.head(5).iterrows():
            explanation = views.explain_image(store, int(row["image_id"]))
            # the sentence's strongest uncertainty and detection are the table's
            top = explanation.uncertainties.dropna(subset=["z"]).sort_values("z", ascending=False).iloc[0]
            assert row["driven_by"].startswith(f"{top['label']} of #{int(top['detection'])} '")
            assert row["score"] == pytest.approx(top["z"])


def test_retrain_compares_like_with_like_and_says_how_the_version_was_trained(project):
    with Store.open(project, create=False) as store:
        first = store.latest_model_version()
        second = run_round(store)  # the project's settings as saved, defaults for the rest
        info = store.model_version(second.model_version)["metrics"]
        # the default is the paper's retrain (the initial weights), not a fine-tune of version 1
        assert info["warm_start_from"] is None and info["settings"]["iterations"] == TINY_SETTINGS.iterations
        assert RoundSettings.load(store).start_from == "initial"
    at = open_app(project, "views/train.py")
    infos = texts(at, "info")
    assert any(t.startswith(f"Model version {second.model_version} was trained from the initial weights (seed 0) for {TINY_SETTINGS.iterations} ")
               and f"the same starting point and schedule as version {first}" in t for t in infos), infos
    assert at.metric[1].delta.endswith(f"vs v{first}")
    # fine-tuning is an explicit, labelled choice on the Settings page
    at.switch_page("views/settings.py").run()
    start = next(s for s in at.selectbox if s.label == "Each retrain starts from")
    assert start.value == "initial"
    start.set_value("previous")
    next(b for b in at.button if b.label == "Save").click().run()
    with Store.open(project, create=False) as store:
        assert RoundSettings.load(store).start_from == "previous"
        third = run_round(store)
    at.switch_page("views/train.py").run()
    warnings = texts(at, "warning")
    assert any(t.startswith(f"Model version {third.model_version} was fine-tuned from version {second.model_version} for another ")
               and "does not compare like with like" in t for t in warnings), warnings
    assert at.metric[1].delta.endswith("(not like for like)")
    assert "starting from the previous model version (fine-tune)" in " ".join(texts(at, "caption"))


# --------------------------------------------------------------------------- the Host header (issue 20)


def test_host_header_allow_list():
    import sys

    sys.path.insert(0, str(APP.parent))
    import common

    for host in ("127.0.0.1:8501", "localhost:8501", "LOCALHOST:8501", "[::1]:8501"):
        assert common.host_refusal(host, 8501) is None, host
    for host in ("evil.example:8501", "127.0.0.1.evil.example:8501", "localhost:8502", "127.0.0.1", "localhost", "", None,
                 "127.0.0.2:8501", "[::1]", "localhost:8501:1", "0.0.0.0:8501", "127.0.0.1:08501x"):
        refusal = common.host_refusal(host, 8501)
        assert refusal is not None and "shows nothing of the project" in refusal and "\n" not in refusal, host
    assert common.host_refusal("127.0.0.1", 80) is None  # no port: the scheme's default
    assert common.host_refusal(None, 8501, has_request=False) is None  # no HTTP request behind the run (AppTest)


def _rendered(port: int, host: str, timeout: float = 120.0) -> str:
    """Everything a browser would receive for one run of the app's page when its request
    carries ``host``: the websocket Streamlit renders over, spoken the way the browser does."""
    import socket

    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port))  # the rebound name resolves here
    texts = []
    with connect(f"ws://{host}/_stcore/stream", sock=sock, subprotocols=["streamlit"], open_timeout=60) as ws:
        message = BackMsg()
        message.rerun_script.query_string = ""
        message.rerun_script.page_script_hash = ""
        ws.send(message.SerializeToString())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            forward = ForwardMsg()
            forward.ParseFromString(ws.recv(timeout=timeout))
            texts.append(str(forward))
            if forward.WhichOneof("type") == "script_finished":
                break
    return "\n".join(texts)


def test_a_foreign_host_header_gets_one_sentence_and_nothing_of_the_project(tmp_path):
    """DNS rebinding: a site the user visits points its own name at 127.0.0.1 and reads the
    login-less app. A real `streamlit run` server; the request carries a foreign Host."""
    import httpx
    from scripts.app_screenshots import streamlit_server

    name = "secret-project-4f2a"
    with Store.open(tmp_path / "p", name=name) as store:
        store.add_classes(["cat"])
    with streamlit_server(tmp_path / "p") as url:
        port = int(url.rsplit(":", 1)[1])
        # Streamlit's HTML and websocket answer any Host (they are the same for every app) ...
        assert httpx.get(url, headers={"Host": f"evil.example:{port}"}, timeout=30).status_code == 200
        # ... but what the page renders is only the refusal.
        foreign = _rendered(port, f"evil.example:{port}")
        assert "requested as \\'evil.example:" in foreign and "shows nothing of the project" in foreign
        assert name not in foreign and str(tmp_path) not in foreign
        wrong_port = _rendered(port, f"localhost:{port + 1}")
        assert "shows nothing of the project" in wrong_port and name not in wrong_port
        own = _rendered(port, f"127.0.0.1:{port}")
        assert name in own and "shows nothing of the project" not in own
