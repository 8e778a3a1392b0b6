"""The project and Label Studio commands: almdn project create|add|info|export|score,
almdn ls start|stop|status|connect, almdn push, almdn pull."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from almdn.acquisition.stored import DEFAULT_ACQUISITION, select_for_labeling
from almdn.cli import main
from almdn.projects.store import Store
from label_studio.client import IMAGE_KEY
from label_studio.server import LocalServer, free_port
from tests.label_studio_support import TEMPLATE, Annotator, ls_server, write_pool_images  # noqa: F401  (fixtures)
from tests.app_support import project, write_small_box_dataset  # noqa: F401  (project: a fixture)
from tests.test_project import make_coco_dataset


def run(*args: str, env: dict | None = None, ok: bool = True):
    result = CliRunner().invoke(main, list(args), env=env)
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_create_info_add_export(tmp_path):
    data = make_coco_dataset(tmp_path / "coco")
    project = str(tmp_path / "p")
    out = run("project", "create", "--project", project, "--coco", str(data), "--classes", "car").output
    assert "annotations/train.json: 3 images added to 'labeled' with 3 boxes." in out
    assert "annotations/test.json: 2 images added to 'test' with 2 boxes." in out
    assert "5 images (3 labeled, 0 pool, 2 test), 2 classes" in out
    write_pool_images(tmp_path / "pool", 4, size=(64, 64))
    out = run("project", "add", "--project", project, "--images", str(tmp_path / "pool")).output
    assert "4 images added to 'pool' with 0 boxes." in out
    info = run("project", "info", "--project", project).output
    assert "Classes: car, bus" in info and "9 images (3 labeled, 4 pool, 2 test)" in info
    out = run("project", "export", "--project", project, "--split", "test", "--out", str(tmp_path / "t.json")).output
    assert out.strip() == f"Wrote 2 images of 'test' to {tmp_path / 't.json'}."
    assert [c["name"] for c in json.loads((tmp_path / "t.json").read_text())["categories"]] == ["car", "bus"]
    again = run("project", "create", "--project", project, ok=False)
    assert again.exit_code == 1 and "already holds a project; add sources with 'almdn project add'" in again.output


def test_user_errors_are_one_sentence_without_traceback(tmp_path):
    missing = run("project", "info", "--project", str(tmp_path / "none"), ok=False)
    assert missing.exit_code == 1 and "No project store at" in missing.output and "Traceback" not in missing.output
    run("project", "create", "--project", str(tmp_path / "p"), "--classes", "a")
    bad = run("project", "add", "--project", str(tmp_path / "p"), "--voc", str(tmp_path), ok=False)
    assert bad.exit_code == 1 and "is not a Pascal VOC folder" in bad.output
    push = run("push", "--project", str(tmp_path / "p"), "--top-k", "3", ok=False)
    assert push.exit_code == 1
    assert push.output.strip().startswith("Error: Project") and "is not connected to Label Studio; start a local server (almdn ls start)" in push.output
    assert len(push.output.strip().splitlines()) == 1


@pytest.fixture
def scored_project(tmp_path, ls_server):
    """A project in the server's document root, scored by a real (untrained) model."""
    from almdn.engine.checkpoint import save_checkpoint
    from almdn.models import build_model

    images = ls_server.root / f"cli-{tmp_path.name}" / "pool"
    write_pool_images(images, 6, size=(128, 128))
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(images), "--classes", "cat,dog")
    model = build_model("ssd_small", num_classes=2, class_names=["cat", "dog"], pretrained=False)
    save_checkpoint(tmp_path / "model.pt", model, metrics={"map50": 0.0})
    out = run("project", "score", "--project", project, "--checkpoint", str(tmp_path / "model.pt"), "--conf-threshold", "0.0").output
    assert "Model version 1: scored 6 pool images" in out
    return project


def test_score_connect_push_pull(scored_project, ls_server):
    project = scored_project
    with Store.open(project) as store:
        assert store.model_versions()["num_scored"].tolist() == [6]
        assert store.model_version(1)["metrics"] == {"map50": 0.0}
    env = {"LABEL_STUDIO_API_KEY": ls_server.token}
    out = run("ls", "connect", "--project", project, ls_server.url, env=env).output
    assert "Connected to Label Studio 1.23.2" in out and ls_server.token not in out
    connection = os.path.join(project, "label-studio", "connection.json")
    assert stat.S_IMODE(os.stat(connection).st_mode) == 0o600
    # Remote mode: the images are uploaded with their tasks.
    out = run("push", "--project", project, "--top-k", "3").output
    assert out.startswith("Pushed 3 new tasks to Label Studio project") and "(batch 1)" in out
    out = run("push", "--project", project, "--top-k", "3").output
    assert out.startswith("Pushed 0 new tasks") and "3 of the top 3 images already have a task" in out

    annotator = Annotator(ls_server)
    with Store.open(project) as store:
        project_id = int(store.ls_projects()["project_id"].iloc[0])
    tasks = annotator.tasks(project_id)
    # without --method, push sends the batch the Label page proposes by default
    with Store.open(project) as store:
        expected = select_for_labeling(store, 3, DEFAULT_ACQUISITION, exclude_sent=False).image_ids
    assert sorted(t["data"][IMAGE_KEY] for t in tasks) == sorted(int(i) for i in expected)
    assert {t["data"]["selected_by"] for t in tasks} == {DEFAULT_ACQUISITION}
    annotator.submit(project_id, tasks[0]["id"], [("dog", (1.0, 2.0, 30.0, 40.0))], size=(128, 128))
    annotator.submit(project_id, tasks[1]["id"], [("zebra", (1.0, 2.0, 30.0, 40.0))], size=(128, 128))
    annotator.close()
    pulled = run("pull", "--project", project, ok=False)
    assert pulled.exit_code == 1
    assert "Pulled 1 new and 0 updated annotations" in pulled.output and "1 annotation rejected" in pulled.output
    assert "uses the label 'zebra', which is not one of the project's classes (cat, dog)" in pulled.output
    assert "batch 1: partial, 1 annotated, 0 skipped, 0 deleted, 2 open of 3" in pulled.output
    assert "Error: 1 annotation was not imported (see above); everything else was stored." in pulled.output
    with Store.open(project) as store:
        assert store.labels()["image_id"].tolist() == [tasks[0]["data"][IMAGE_KEY]]
    info = run("project", "info", "--project", project).output
    assert "Batch 1" in info and "partial, 3 tasks: 2 open, 1 annotated" in info


def test_ls_start_status_stop(scored_project, ls_server, monkeypatch):
    project = scored_project
    monkeypatch.setenv("ALMDN_LABEL_STUDIO_TEMPLATE", str(TEMPLATE))  # the session's migrated template
    port = free_port()
    out = run("ls", "start", "--project", project, "--port", str(port)).output
    assert f"Label Studio runs at http://127.0.0.1:{port}" in out
    try:
        home = os.path.join(project, "label-studio")
        credentials = os.path.join(home, "credentials.json")
        assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
        saved = json.load(open(credentials))
        token = saved["token"]
        assert token not in out
        # the login the user needs to open the server's page (issue 15)
        assert f"Log in as {saved['username']} with the password {saved['password']} (also in {credentials})." in out
        status = run("ls", "status", "--project", project).output
        assert f"Local Label Studio: running at http://127.0.0.1:{port}" in status and "healthy" in status
        # push and pull reach the local server with the stored credentials, images in place.
        out = run("push", "--project", project, "--top-k", "2").output
        assert out.startswith("Pushed 2 new tasks")
        assert "Pulled 0 new" in run("pull", "--project", project).output
    finally:
        stopped = run("ls", "stop", "--project", project).output
    assert stopped.strip() == "Label Studio stopped."
    assert "not running" in run("ls", "status", "--project", project).output
    assert not LocalServer(os.path.join(project, "label-studio")).status()["running"]


# --------------------------------------------------------------------------- bad inputs and faults (issue 14)


def one_sentence(result, code: int = 1) -> str:
    """The output of a refused command: the exit status, no traceback, one line."""
    assert result.exit_code == code, result.output + repr(result.exception)
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError, KeyError))
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def untrained_model(path, classes=("cat", "dog")):
    from almdn.engine.checkpoint import save_checkpoint
    from almdn.models import build_model

    return save_checkpoint(path, build_model("ssd_small", num_classes=len(classes), class_names=list(classes), pretrained=False), metrics={"map50": 0.0})


def test_a_failed_create_leaves_no_store_and_the_retry_works(tmp_path):
    from tests.test_records import png_header, truncated_jpeg

    pool = tmp_path / "pool"
    write_pool_images(pool, 3, size=(32, 32))
    for name, make in (("bomb.png", lambda p: png_header(p, 60000, 60000)), ("half.jpg", truncated_jpeg)):
        bad = tmp_path / f"bad-{name}"
        bad.mkdir()
        make(bad / name)
        project = tmp_path / f"p-{name.split('.')[0]}"
        result = run("project", "create", "--project", str(project), "--images", str(pool), "--images", str(bad), ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        line = result.output.strip().splitlines()[-1]  # after the first source's summary line
        assert line.startswith("Error: ") and f"'{bad / name}'" in line
        assert "60000x60000 pixels" in line if name == "bomb.png" else "truncated or damaged" in line
        assert not project.exists()  # no empty store (nor folder) left behind
        out = run("project", "create", "--project", str(project), "--images", str(pool)).output
        assert "3 images added to 'pool'" in out


def test_create_with_a_starting_point(tmp_path):
    from almdn.projects.rounds import RoundSettings

    write_pool_images(tmp_path / "pool", 2, size=(32, 32))
    project = tmp_path / "p"
    run("project", "create", "--project", str(project), "--images", str(tmp_path / "pool"), "--classes", "cat", "--init", "none")
    with Store.open(project) as store:
        assert RoundSettings.load(store).init == "none"
    line = one_sentence(run("project", "create", "--project", str(tmp_path / "q"), "--images", str(tmp_path / "pool"), "--init", "imagenett", ok=False))
    assert line == "Error: Invalid settings: starting point 'imagenett' is neither coco, imagenet, none nor a weights file."
    assert not (tmp_path / "q").exists()


def test_duplicates_by_content_are_added_once(tmp_path):
    pool = tmp_path / "pool"
    write_pool_images(pool, 4, size=(32, 32))
    (tmp_path / "link").symlink_to(pool)
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(pool))
    out = run("project", "add", "--project", project, "--images", str(pool / ".." / "pool"), "--images", str(tmp_path / "link")).output
    assert out.count("0 images added to 'pool' with 0 boxes, 4 already in the project") == 2
    assert "(4 of them by identical content under another path)" in out
    assert "4 images (0 labeled, 4 pool, 0 test)" in out


def test_project_score_refuses_a_crafted_checkpoint(tmp_path):
    from tests.test_checkpoint import crafted_checkpoint

    write_pool_images(tmp_path / "pool", 2, size=(32, 32))
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(tmp_path / "pool"), "--classes", "a,b")
    marker = tmp_path / "created-by-the-checkpoint"
    line = one_sentence(run("project", "score", "--project", project, "--checkpoint", str(crafted_checkpoint(tmp_path / "evil.pt", marker)), ok=False))
    assert "could run code when opened; almdn refuses to load it" in line
    assert not marker.exists()
    with Store.open(project) as store:
        assert store.counts()["model_versions"] == 0


def test_project_score_lists_and_skips_unreadable_images_with_exit_status_3(tmp_path):
    pool = tmp_path / "pool"
    write_pool_images(pool, 3, size=(64, 64))
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(pool), "--classes", "cat,dog")
    (pool / "pool_00001.png").write_bytes(b"gone bad after the import")
    result = run("project", "score", "--project", project, "--checkpoint", str(untrained_model(tmp_path / "m.pt")), "--conf-threshold", "0.0", ok=False)
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "Model version 1: scored 2 pool images" in result.output
    assert f"Skipped unreadable image: {pool / 'pool_00001.png'}" in result.output
    assert "1 unreadable images were skipped (listed above); the others were scored." in result.output


KILL_DURING_SCORING = """
import os, signal, sys
from almdn.projects.store import Store

def killed(self, *args, **kwargs):  # kill -9 the moment the version is recorded, before its scores
    os.kill(os.getpid(), signal.SIGKILL)

Store.write_scores = killed
from almdn.cli import main
main(sys.argv[1:])
"""


def test_kill_9_between_version_and_scores_leaves_no_orphan_version(tmp_path):
    import subprocess
    import sys

    write_pool_images(tmp_path / "pool", 2, size=(64, 64))
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(tmp_path / "pool"), "--classes", "cat,dog")
    script = tmp_path / "kill.py"
    script.write_text(KILL_DURING_SCORING)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, str(script), "project", "score", "--project", project, "--checkpoint", str(untrained_model(tmp_path / "m.pt"))],
                          cwd=repo, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo})
    assert proc.returncode == -9, proc.stderr
    with Store.open(project) as store:
        assert store.counts()["model_versions"] == 0 and store.check_integrity() == []
    assert "Model version" not in run("project", "info", "--project", project).output


def test_store_faults_are_one_sentence_and_write_nothing(tmp_path):
    from tests.test_store import corrupt_images_table

    write_pool_images(tmp_path / "pool", 40, size=(32, 32))
    project = tmp_path / "p"
    run("project", "create", "--project", str(project), "--images", str(tmp_path / "pool"))
    corrupt_images_table(project / "almdn.sqlite")
    before = (project / "almdn.sqlite").read_bytes()
    write_pool_images(tmp_path / "more", 2, size=(48, 48))
    for args in (("project", "export", "--split", "pool"), ("project", "add", "--images", str(tmp_path / "more")), ("project", "info")):
        line = one_sentence(run(*args[:2], "--project", str(project), *args[2:], ok=False))
        assert line.startswith(f"Error: The project store '{project / 'almdn.sqlite'}' is damaged (") and "restore it from a backup" in line
    assert (project / "almdn.sqlite").read_bytes() == before


def test_clipped_and_dropped_boxes_are_one_note_not_warnings(tmp_path):
    from almdn.data.coco import write_coco
    from PIL import Image

    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(tmp_path / "images" / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 20, "height": 20})
        annotations.append({"id": 2 * i, "image_id": i, "category_id": 1, "bbox": [15, 15, 10, 10]})  # spills over: clipped
        annotations.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [30, 30, 5, 5] if i < 2 else [2, 2, 8, 8]})  # outside: dropped
    data = write_coco(tmp_path / "annotations" / "train.json", images, annotations, [{"id": 1, "name": "thing"}])
    result = run("project", "create", "--project", str(tmp_path / "p"), "--coco", str(data))
    notes = [line for line in result.output.splitlines() if line.startswith("Note: ")]
    assert notes == [f"Note: In '{data}': 4 boxes clipped to their image and 2 empty boxes (zero width or height, or outside the image) dropped, in 4 images (im0.png, im1.png, im2.png, ...)."]
    # no Python warning; the anchor coverage of these 6 corner boxes (issue 12) is a line of its own
    assert "warnings.warn" not in result.output and "UserWarning" not in result.output
    assert [line[:14] for line in result.output.splitlines() if "Warning" in line] == ["Warning: Only "]
    assert "4 images added to 'labeled' with 6 boxes" in result.output


def test_create_and_add_warn_in_one_line_when_few_labeled_boxes_have_an_anchor(tmp_path):
    """Small objects (issue 12): the labeled boxes are checked for the project's rounds when
    they come in, before anyone trains."""
    trees = write_small_box_dataset(tmp_path / "trees")
    result = run("project", "create", "--project", str(tmp_path / "p"), "--coco", str(trees))
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: Only 6% of 240 boxes have an anchor with IoU >= 0.5 (median best IoU 0.28); ")
    assert "the app's Settings page" in warnings[0] and "warnings.warn" not in result.output
    assert "20 images (20 labeled, 0 pool, 0 test)" in result.output  # created all the same
    # adding more labeled boxes checks again; a dataset whose boxes fit the anchors is quiet
    run("project", "create", "--project", str(tmp_path / "q"), "--classes", "car")
    added = run("project", "add", "--project", str(tmp_path / "q"), "--coco", str(trees)).output
    assert sum(line.startswith("Warning: Only 6% of 240 boxes") for line in added.splitlines()) == 1
    quiet = run("project", "create", "--project", str(tmp_path / "r"), "--coco", str(make_coco_dataset(tmp_path / "coco"))).output
    assert "Warning" not in quiet


def test_almdn_app_listens_on_loopback_only_from_any_folder(tmp_path):
    """`almdn app` started outside the repository (where no .streamlit/config.toml is found)."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "almdn.cli", "app", "--project", str(tmp_path / "p"), "--port", str(port)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": repo}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        hex_port = f"{port:04X}"
        listening = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in list(f)[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and local.endswith(":" + hex_port):
                        listening.add(local.rsplit(":", 1)[0])
        assert listening == {"0100007F"}, listening  # 127.0.0.1 only, IPv4 and IPv6 alike
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_ls_connect_takes_no_token_on_the_command_line(tmp_path, ls_server):
    """A token in argv shows in `ps` to every local user: --token is no option (issue 20);
    the token comes from a file, $LABEL_STUDIO_API_KEY or a hidden prompt."""
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(write_pool_images(tmp_path / "imgs", 1)[0].parent), "--classes", "cat")
    refused = run("ls", "connect", "--project", project, "--token", ls_server.token, ls_server.url, ok=False)
    assert refused.exit_code == 2 and "No such option '--token'" in refused.output
    assert not os.path.exists(os.path.join(project, "label-studio", "connection.json"))
    token_file = tmp_path / "token"
    token_file.write_text(ls_server.token + "\n")
    out = run("ls", "connect", "--project", project, "--token-file", str(token_file), ls_server.url, env={"LABEL_STUDIO_API_KEY": ""}).output
    assert "Connected to Label Studio" in out and ls_server.token not in out
    token_file.write_text("\n")
    empty = run("ls", "connect", "--project", project, "--token-file", str(token_file), ls_server.url, ok=False)
    assert empty.exit_code == 1 and "The API token is empty" in empty.output and "Traceback" not in empty.output
    prompted = CliRunner().invoke(main, ["ls", "connect", "--project", project, ls_server.url], input=ls_server.token + "\n", env={"LABEL_STUDIO_API_KEY": ""})
    assert prompted.exit_code == 0 and "Connected to Label Studio" in prompted.output and ls_server.token not in prompted.output


def test_project_score_starts_from_the_projects_saved_settings(tmp_path):
    """Issue 21: `almdn project score` built fresh settings and ignored the project's saved
    threshold and aggregation; an option given on the command line still wins."""
    from almdn.projects.rounds import RoundSettings

    images = tmp_path / "pool"
    write_pool_images(images, 4, size=(128, 128))
    project = str(tmp_path / "p")
    run("project", "create", "--project", project, "--images", str(images), "--classes", "cat,dog")
    with Store.open(project) as store:
        RoundSettings.load(store).replace(conf_threshold=0.0, aggregation="sum_all").save(store)
    checkpoint = untrained_model(tmp_path / "m.pt")
    run("project", "score", "--project", project, "--checkpoint", str(checkpoint))
    run("project", "score", "--project", project, "--checkpoint", str(checkpoint), "--aggregation", "max_cls")
    with Store.open(project) as store:
        versions = store.model_versions()
    assert versions["conf_threshold"].tolist() == [0.0, 0.0]
    assert versions["aggregation"].tolist() == ["sum_all", "max_cls"]


def test_project_retrain_runs_the_apps_round_from_the_command_line(project):
    """Issue 21: `almdn project retrain` is the app's Retrain (workflow.run_round with the
    project's saved settings): the same stages, the same result sentence, a new model version
    trained on the labeled set and the pool's scores stored."""
    with Store.open(project, create=False) as store:
        before = store.model_versions()["model_version_id"].tolist()
        labeled, pool = store.labeled_image_ids(), store.image_ids("pool")
    out = run("project", "retrain", "--project", str(project)).output
    assert f"Retrain: exporting {len(labeled)} labeled images (0 %)" in out and f"Retrain: scoring {len(pool)} pool images (90 %)" in out
    with Store.open(project, create=False) as store:
        versions = store.model_versions()
        new = int(versions["model_version_id"].iloc[-1])
        assert new not in before and len(versions) == len(before) + 1
        assert int(versions["num_labeled"].iloc[-1]) == len(labeled)
        scored = store.image_scores(new)
        assert sorted(scored["image_id"].tolist()) == sorted(pool) and scored["score"].notna().any()
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"Model version {new} (") and f"trained from the initial weights on {len(labeled)} labeled images" in last
    assert last.endswith(f"; {len(pool)} pool images scored.")
