"""The Label Studio round trip against a real server: push the top of the ranking, annotate,
pull; retries, deletions, skips, refusals (:mod:`almdn.workflow.labeling`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from almdn.projects.store import Store
from almdn.workflow.labeling import ensure_project, pull, push
from label_studio.client import IMAGE_KEY, LabelStudioClient, percent_to_pixels
from label_studio.errors import LabelStudioError, LabelStudioUnavailable
from label_studio.config import config_labels
from label_studio.server import free_port
from tests.label_studio_support import CLASSES, HEIGHT, WIDTH, annotator, ls_project, ls_server, proxy  # noqa: F401  (fixtures)


def store_state(store: Store) -> dict:
    """Everything a push or pull may write, to compare before and after a failure."""
    return {
        "tasks": store.tasks().drop(columns=["updated_at"]).to_dict("records"),
        "batches": store.batches().drop(columns=["updated_at"]).to_dict("records"),
        "annotations": store.annotations().to_dict("records"),
        "labels": store.labels().to_dict("records"),
        "splits": store.images()["split"].tolist(),
        "ls_projects": len(store.ls_projects()),
    }


# --------------------------------------------------------------------------- the round trip


def test_full_round_trip_push_annotate_pull(ls_project, annotator):
    p = ls_project
    from almdn.display.labeling_status import RANKING_FIELDS

    report = push(p.store, p.client, 3)
    top3 = p.ranked()[:3]
    assert [image for _, image in report.created] == top3
    assert report.batch_id == 1 and report.already == [] and report.adopted == []

    tasks = {t["data"][IMAGE_KEY]: t for t in annotator.tasks(report.project_id)}
    assert sorted(tasks) == sorted(top3)
    # Pre-annotations: the model version, the image score and every detection, in percent.
    first = tasks[top3[0]]
    [prediction] = first["predictions"]
    assert prediction["model_version"] == "model-a"
    detections = p.store.detections(image_ids=[top3[0]])
    # Label Studio's prediction score is a 0-1 confidence: the mean of the boxes' scores
    assert prediction["score"] == pytest.approx(detections["score"].mean()) and 0 <= prediction["score"] <= 1
    # the ranking travels in the task's data, for Label Studio's data manager
    scores = p.store.image_scores().set_index("image_id")
    data = first["data"]
    assert set(RANKING_FIELDS) <= set(data)
    assert data["rank"] == 1 and data["final_score"] == pytest.approx(scores.at[top3[0], "score"])
    assert data["class_epistemic"] == pytest.approx(scores.at[top3[0], "cls_epistemic"])
    assert data["box_aleatoric"] == pytest.approx(scores.at[top3[0], "loc_aleatoric"])
    assert data["predicted_classes"] == ", ".join(sorted(set(detections["class_name"]))) and data["model_version"] == "model-a"
    assert data["driven_by"].split(" of #")[0] in ("box aleatoric", "box epistemic", "class aleatoric", "class epistemic")
    assert len(prediction["result"]) == len(detections) == 2
    for result, det in zip(prediction["result"], detections.itertuples()):
        assert result["value"]["rectanglelabels"] == [det.class_name]
        assert percent_to_pixels(result["value"], WIDTH, HEIGHT) == pytest.approx((det.x1, det.y1, det.x2, det.y2), abs=1e-6)
    # The server shows the image itself, from the project's folder.
    image = p.server.api().get(first["data"]["image"])
    assert image.status_code == 200
    assert image.content == open(p.store.image(top3[0])["path"], "rb").read()

    drawn = {
        top3[0]: [("dog", (10.0, 20.0, 50.0, 60.0)), ("bird", (0.0, 0.0, 128.0, 96.0))],
        top3[1]: [("cat", (3.25, 7.5, 40.125, 33.0))],
        top3[2]: [],  # submitted with no box: the image has no objects
    }
    annotation_ids = {}
    for image_id, boxes in drawn.items():
        annotation_ids[image_id] = annotator.submit(report.project_id, tasks[image_id]["id"], boxes)["id"]

    pulled = pull(p.store, p.client)
    assert (pulled.new_annotations, pulled.updated_annotations, pulled.duplicates, pulled.problems) == (3, 0, 0, [])
    assert pulled.labeled_images == sorted(top3)
    assert pulled.batches == [{"batch_id": 1, "status": "done", "tasks": 3, "open": 0, "annotated": 3, "skipped": 0, "deleted": 0}]
    labels = p.store.labels()
    for image_id, boxes in drawn.items():
        mine = labels[labels["image_id"] == image_id]
        assert [(r.class_name, (r.x1, r.y1, r.x2, r.y2)) for r in mine.itertuples()] == boxes  # pixel boxes equal to what was drawn
        assert set(mine["ls_annotation_id"]) <= {annotation_ids[image_id]}
    row = labels.iloc[0]
    assert (row.origin, row.ls_url, row.ls_project_id) == ("label_studio", p.server.url, report.project_id)
    assert row.annotator.endswith("@almdn.local")
    assert p.store.images().set_index("image_id").loc[top3, "split"].tolist() == ["labeled"] * 3
    assert p.store.annotations().set_index("image_id").loc[top3[2], "num_labels"] == 0
    assert p.store.check_integrity() == []
    # The labeled set exports for training with the drawn boxes.
    from almdn.data.coco import CocoDetectionDataset

    dataset = CocoDetectionDataset(p.store.export_coco("labeled"), class_names=CLASSES)
    assert dataset.target(dataset.index_of(top3[0]))["boxes"].tolist() == [[10, 20, 50, 60], [0, 0, 128, 96]]


def test_push_twice_creates_no_new_tasks(ls_project, annotator):
    p = ls_project
    first = push(p.store, p.client, 3)
    second = push(p.store, p.client, 3)
    assert len(first.created) == 3
    assert (second.created, second.adopted, second.batch_id) == ([], [], None)
    assert sorted(second.already) == sorted(p.ranked()[:3])
    assert len(annotator.tasks(first.project_id)) == 3
    wider = push(p.store, p.client, 5)  # the top 5 now: only the two new ones are sent
    assert [i for _, i in wider.created] == p.ranked()[3:5]
    assert len(annotator.tasks(first.project_id)) == 5
    assert len(p.store.tasks()) == 5 and len(p.store.batches()) == 2
    # A second client for the same store finds the same project.
    again = LabelStudioClient(p.server.url, p.server.token, document_root=p.server.root)
    assert push(p.store, again, 5).created == []
    assert len(p.store.ls_projects()) == 1


def test_pull_twice_and_an_edited_annotation(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 2)
    task_id, image_id = report.created[0]
    annotation = annotator.submit(report.project_id, task_id, [("cat", (1.0, 2.0, 30.0, 40.0))])
    first = pull(p.store, p.client)
    second = pull(p.store, p.client)
    assert (first.new_annotations, second.new_annotations, second.duplicates) == (1, 0, 1)
    assert len(p.store.annotations()) == 1 and len(p.store.labels()) == 1

    annotator.update(annotation["id"], [("dog", (5.0, 6.0, 70.0, 80.0))])  # the annotator corrects it
    third = pull(p.store, p.client)
    assert (third.new_annotations, third.updated_annotations) == (0, 1)
    assert p.store.labels()[["class_name", "x1", "y1", "x2", "y2"]].values.tolist() == [["dog", 5, 6, 70, 80]]
    history = p.store.annotations(image_id)
    assert history["is_current"].tolist() == [0, 1] and set(history["ls_annotation_id"]) == {annotation["id"]}
    assert pull(p.store, p.client).updated_annotations == 0


def test_cancelled_task_is_skipped_not_labeled(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 2)
    (skipped_task, skipped_image), (done_task, done_image) = report.created
    annotator.skip(report.project_id, skipped_task)
    annotator.submit(report.project_id, done_task, [("bird", (8.0, 8.0, 16.0, 16.0))])
    pulled = pull(p.store, p.client)
    assert pulled.skipped_tasks == [skipped_task] and pulled.new_annotations == 1
    splits = p.store.images().set_index("image_id")["split"]
    assert (splits[skipped_image], splits[done_image]) == ("pool", "labeled")
    assert p.store.labels()["image_id"].tolist() == [done_image]
    assert p.store.tasks().set_index("task_id")["status"].to_dict() == {skipped_task: "skipped", done_task: "annotated"}
    assert p.store.batches()["status"].tolist() == ["done"]
    # The top 2 of the pool are now the skipped image and the next one: only the latter is sent.
    again = push(p.store, p.client, 2)
    assert again.already == [skipped_image] or skipped_image in again.already
    assert [i for _, i in again.created] == [i for i in p.ranked()[:2] if i != skipped_image]


def test_unknown_label_is_rejected_with_a_clear_message(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 2)
    (bad_task, bad_image), (good_task, good_image) = report.created
    bad = annotator.submit(report.project_id, bad_task, [("cat", (1.0, 1.0, 9.0, 9.0)), ("zebra", (10.0, 10.0, 20.0, 20.0))])
    annotator.submit(report.project_id, good_task, [("dog", (2.0, 2.0, 12.0, 12.0))])
    pulled = pull(p.store, p.client)
    [problem] = pulled.problems
    assert f"Annotation {bad['id']} of task {bad_task}" in problem
    assert "uses the label 'zebra', which is not one of the project's classes (bird, cat, dog)" in problem
    assert problem.endswith("then pull again.")
    # The good annotation is stored; none of the bad one (not even its valid box).
    assert p.store.labels()["image_id"].tolist() == [good_image]
    assert p.store.tasks().set_index("task_id").loc[bad_task, "status"] == "open"
    assert p.store.batches()["status"].tolist() == ["partial"]
    annotator.update(bad["id"], [("cat", (1.0, 1.0, 9.0, 9.0)), ("bird", (10.0, 10.0, 20.0, 20.0))])
    fixed = pull(p.store, p.client)
    assert fixed.problems == [] and fixed.new_annotations == 1
    assert sorted(p.store.labels()["image_id"].unique()) == sorted([bad_image, good_image])


def test_deleted_task_is_noticed_and_its_image_can_go_again(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 3)
    (t_done, i_done), (t_gone, i_gone), (t_open, _) = report.created
    annotator.submit(report.project_id, t_done, [("cat", (1.0, 1.0, 9.0, 9.0))])
    assert annotator.api.delete(f"/api/tasks/{t_gone}/").status_code == 204
    pulled = pull(p.store, p.client)
    assert pulled.deleted_tasks == [t_gone] and pulled.new_annotations == 1
    assert pulled.batches == [{"batch_id": 1, "status": "partial", "tasks": 3, "open": 1, "annotated": 1, "skipped": 0, "deleted": 1}]
    assert pull(p.store, p.client).deleted_tasks == []  # noticed once
    tasks = p.store.tasks()
    live = set(tasks[tasks["status"] != "deleted"]["image_id"])
    again = push(p.store, p.client, 3)
    sent = [i for _, i in again.created]
    assert i_gone in sent  # the deleted task's image goes again ...
    assert sent == [i for i in p.ranked()[:3] if i not in live]  # ... with the pool's next image, nothing else
    # Deleting an annotated task keeps its labels in the store.
    assert annotator.api.delete(f"/api/tasks/{t_done}/").status_code == 204
    assert pull(p.store, p.client).deleted_tasks == [t_done]
    assert p.store.labels()["image_id"].tolist() == [i_done]
    assert p.store.check_integrity() == []


def test_reused_task_id_after_a_deletion(ls_project, annotator):
    """Label Studio gives the id of a deleted task to the next one: ids alone are no identity."""
    p = ls_project
    first = push(p.store, p.client, 3)
    last_task, last_image = max(first.created)
    assert annotator.api.delete(f"/api/tasks/{last_task}/").status_code == 204
    other = next(i for i in p.ranked() if i not in {i for _, i in first.created})
    second = push(p.store, p.client, image_ids=[other])
    assert second.created == [(last_task, other)]  # the same id, another image
    tasks = p.store.tasks()
    assert tasks[tasks["task_id"] == last_task][["image_id", "status"]].values.tolist() == [[last_image, "deleted"], [other, "open"]]
    annotator.submit(second.project_id, last_task, [("bird", (3.0, 4.0, 50.0, 60.0))])
    pulled = pull(p.store, p.client)
    assert pulled.labeled_images == [other] and pulled.deleted_tasks == []
    assert p.store.labels()["image_id"].tolist() == [other]
    assert p.store.images().set_index("image_id").loc[last_image, "split"] == "pool"
    assert p.store.batches()["status"].tolist() == ["partial", "done"]


def test_project_deleted_on_the_server_is_replaced_and_its_tasks_noticed(ls_project, annotator):
    p = ls_project
    first = push(p.store, p.client, 2)
    annotator.submit(first.project_id, first.created[0][0], [("cat", (1.0, 1.0, 9.0, 9.0))])
    pull(p.store, p.client)
    assert annotator.api.delete(f"/api/projects/{first.project_id}/").status_code == 204
    again = push(p.store, p.client, 2)
    assert again.project_id != first.project_id
    # The open task of the lost project is deleted; its image goes to the new project.
    tasks = p.store.tasks()
    statuses = tasks[tasks["ls_project_id"] == first.project_id].set_index("task_id")["status"].to_dict()
    assert statuses[first.created[0][0]] == "annotated" and statuses[first.created[1][0]] == "deleted"
    assert first.created[1][1] in [i for _, i in again.created]
    assert len(p.store.labels()) == 1  # labels pulled from the lost project stay
    assert p.store.batches()["status"].tolist() == ["done", "sent"]


def test_server_down_during_push_leaves_the_store_untouched_and_the_retry_adopts(ls_project, proxy, annotator):
    p = ls_project
    client = LabelStudioClient(proxy.url, p.server.token, document_root=p.server.root)
    ensure_project(p.store, client)
    before = store_state(p.store)
    proxy.cut_on = b"/import"  # the server creates the tasks, the answer never arrives
    with pytest.raises(LabelStudioUnavailable) as info:
        push(p.store, client, 4)
    assert proxy.cuts == 1
    message = str(info.value)
    assert message.startswith(f"Label Studio at {proxy.url} stopped answering while importing tasks")
    assert "Nothing was written to the project store" in message and "\n" not in message
    assert store_state(p.store) == before
    project_id = int(p.store.ls_projects()["project_id"].iloc[0])
    assert len(annotator.tasks(project_id)) == 4  # the server did create them

    proxy.cut_on = None  # the network is back
    retry = push(p.store, client, 4)
    assert retry.created == [] and sorted(i for _, i in retry.adopted) == sorted(p.ranked()[:4])
    assert len(annotator.tasks(project_id)) == 4  # no duplicates
    assert p.store.batches()["tasks"].tolist() == [4]
    client.close()


def test_server_down_during_pull_writes_nothing_and_the_retry_succeeds(ls_project, proxy, annotator):
    p = ls_project
    client = LabelStudioClient(proxy.url, p.server.token, document_root=p.server.root, page_size=1)
    report = push(p.store, client, 3)  # through the proxy: a pull takes only the tasks pushed to that server
    for task_id, _ in report.created:
        annotator.submit(report.project_id, task_id, [("dog", (4.0, 4.0, 40.0, 40.0))])
    before = store_state(p.store)
    proxy.cut_on = b"page=2"  # the connection drops on the second page of tasks
    with pytest.raises(LabelStudioUnavailable, match="stopped answering while reading the annotations .*Nothing was written"):
        pull(p.store, client)
    assert store_state(p.store) == before
    proxy.cut_on = None
    pulled = pull(p.store, client)
    assert pulled.new_annotations == 3 and len(p.store.labels()) == 3
    client.close()


def test_dead_server_gives_one_clear_sentence(ls_project):
    p = ls_project
    port = free_port()
    dead = LabelStudioClient(f"http://127.0.0.1:{port}", "x" * 40, document_root=p.server.root, timeout=5)
    before = store_state(p.store)
    with pytest.raises(LabelStudioUnavailable) as info:
        push(p.store, dead, 2)
    assert str(info.value).startswith(f"Cannot reach Label Studio at http://127.0.0.1:{port} while finding the project")
    assert "start it (almdn ls start) or check the URL" in str(info.value)
    p.store.ls_project(f"http://127.0.0.1:{port}", 1, "x")
    with pytest.raises(LabelStudioUnavailable, match="Cannot reach Label Studio .* while reading the annotations"):
        pull(p.store, dead)
    after = store_state(p.store)
    assert after.pop("ls_projects") == before.pop("ls_projects") + 1 and after == before


def test_wrong_token_is_a_clear_error(ls_project):
    bad = LabelStudioClient(ls_project.server.url, "0" * 40)
    with pytest.raises(LabelStudioError, match=r"rejects the API token \(HTTP 401\).*connect again"):
        bad.version()
    with pytest.raises(LabelStudioError, match="rejects the API token"):
        push(ls_project.store, bad, 1)
    assert ls_project.store.tasks().empty


def test_remote_server_gets_uploaded_images(ls_project, annotator):
    p = ls_project
    remote = LabelStudioClient(p.server.url, p.server.token)  # no shared folder: upload
    report = push(p.store, remote, 2)
    for task in annotator.tasks(report.project_id):
        assert task["data"]["image"].startswith("/data/upload/")
        served = annotator.api.get(task["data"]["image"])
        assert served.status_code == 200
        assert served.content == open(p.store.image(task["data"][IMAGE_KEY])["path"], "rb").read()
    task_id, image_id = report.created[0]
    annotator.submit(report.project_id, task_id, [("cat", (0.0, 0.0, 64.0, 48.0))])
    assert pull(p.store, remote).labeled_images == [image_id]


def test_class_names_that_need_escaping_reach_the_server(ls_project, tmp_path):
    store = Store.open(tmp_path / "odd")
    store.add_classes(['a "quoted" & <odd> class', "plain"])
    store.add_images(list(ls_project.folder.glob("*.png"))[:1], split="pool")
    client = ls_project.client
    _, project_id = ensure_project(store, client)
    project = client._sdk.projects.get(project_id)
    assert config_labels(project.label_config) == ['a "quoted" & <odd> class', "plain"]
    store.add_classes(["late"])  # a class added later updates the server's interface
    ensure_project(store, client)
    assert config_labels(client._sdk.projects.get(project_id).label_config)[-1] == "late"
    store.close()


def test_push_explicit_images_and_refusals(ls_project):
    p = ls_project
    report = push(p.store, p.client, image_ids=[p.image_ids[-1]])  # an image without detections
    assert [i for _, i in report.created] == [p.image_ids[-1]]
    with pytest.raises(LabelStudioError, match="are not in the pool"):
        push(p.store, p.client, image_ids=[10_000])
    unwritable = p.folder.parent / "served-but-not-a-folder"
    unwritable.write_text("a file where the served folder should be")
    stranger = LabelStudioClient(p.server.url, p.server.token, document_root=unwritable)
    with pytest.raises(LabelStudioError, match=r"Cannot link the images into the folder the server serves .*; make it writable, then push again"):
        push(p.store, stranger, image_ids=[p.image_ids[0]])
    stranger.close()


def test_pull_before_any_push(ls_project):
    with pytest.raises(LabelStudioError, match="Nothing was pushed to Label Studio .* push first"):
        pull(ls_project.store, ls_project.client)


# --------------------------------------------------------------------------- what the server may serve (issue 14)


def test_only_links_to_pushed_images_are_served_never_their_neighbours(ls_project, annotator, tmp_path):
    """Images from two unrelated folders, an annotation file beside them: the project's
    served folder holds a link per pushed image and nothing else."""
    from PIL import Image

    p = ls_project
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (WIDTH, HEIGHT), (9, 9, 9)).save(elsewhere / "far.png")
    (p.folder / "annotations.json").write_text('{"secret": true}')
    [far] = p.store.add_images([elsewhere / "far.png"], split="pool")["added"]
    report = push(p.store, p.client, image_ids=[p.image_ids[0], far])
    served = p.server.root / f"almdn-{p.store.project_uuid[:12]}"
    files = sorted(str(f.relative_to(served)) for f in served.rglob("*") if not f.is_dir())
    assert files == sorted([f"{p.image_ids[0]}/pool_00000.png", f"{far}/far.png"])
    assert all((served / f).is_symlink() for f in files)
    api = p.server.api()
    for task in annotator.tasks(report.project_id):
        response = api.get(task["data"]["image"])
        assert response.status_code == 200 and response.content == Path(p.store.image(task["data"][IMAGE_KEY])["path"]).read_bytes()
    # The annotation file beside the images is out of reach, by any relative path.
    for d in (f"{served.name}/../{p.folder.parent.name}/images/annotations.json", f"{served.name}/{p.image_ids[0]}/annotations.json"):
        assert api.get("/data/local-files/", params={"d": d}).status_code == 404
    api.close()


def test_file_names_with_url_characters_are_percent_encoded(ls_project, annotator):
    from PIL import Image

    p = ls_project
    names = ["a#b.png", "c&d=1.png", "e+f g.png", "h%20i.png"]
    for k, name in enumerate(names):
        Image.new("RGB", (WIDTH, HEIGHT), (k, 50, 50)).save(p.folder / name)
    ids = p.store.add_images([p.folder / n for n in names], split="pool")["added"]
    report = push(p.store, p.client, image_ids=ids)
    api = p.server.api()
    tasks = {t["data"][IMAGE_KEY]: t for t in annotator.tasks(report.project_id)}
    for image_id, name in zip(ids, names):
        url = tasks[image_id]["data"]["image"]
        assert "#" not in url and "&d" not in url and "+" not in url and " " not in url
        response = api.get(url)
        assert response.status_code == 200, (name, url)
        assert response.content == (p.folder / name).read_bytes()
    api.close()


# --------------------------------------------------------------------------- issue 20: nothing lost, only our tasks


def test_put_back_refuses_when_the_skipped_task_has_a_submitted_annotation(ls_project, annotator):
    """An annotator skips, then labels the image after all: putting it back in the pool would
    delete that annotation unimported, so it is refused and nothing is deleted."""
    from almdn.workflow.labeling import return_skipped_to_pool

    p = ls_project
    report = push(p.store, p.client, 2)
    (task_id, image_id), (other_task, other_image) = report.created
    annotator.skip(report.project_id, task_id)
    annotator.skip(report.project_id, other_task)
    assert sorted(pull(p.store, p.client).skipped_tasks) == sorted([task_id, other_task])
    annotation = annotator.submit(report.project_id, task_id, [("cat", (2.0, 3.0, 40.0, 50.0))])  # after the pull
    before = store_state(p.store)
    with pytest.raises(LabelStudioError) as info:
        return_skipped_to_pool(p.store, p.client, [image_id, other_image])
    message = str(info.value)
    assert message.startswith(f"task {task_id} (image {image_id}) has a submitted annotation in Label Studio since the last pull") and "\n" not in message
    assert "almdn pull" in message
    assert store_state(p.store) == before  # nothing put back, not even the other image
    assert sorted(t["id"] for t in annotator.tasks(report.project_id)) == sorted([task_id, other_task])
    # The client refuses on its own as well.
    with pytest.raises(LabelStudioError, match="has a submitted annotation"):
        p.client.delete_task(task_id, image_id)
    pulled = pull(p.store, p.client)
    assert pulled.labeled_images == [image_id]
    assert p.store.labels()["ls_annotation_id"].tolist() == [annotation["id"]]
    assert return_skipped_to_pool(p.store, p.client, [other_image]) == 1
    assert [t["id"] for t in annotator.tasks(report.project_id)] == [task_id]


def _in_threads(*calls):
    """Run the calls at the same moment in threads; their results (or exceptions)."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(k, call):
        barrier.wait()
        try:
            results[k] = call()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_two_pushes_at_once_create_no_duplicate_tasks(ls_project, annotator):
    """Two tabs (or the app and the CLI) push the same top 3 at once: one labeling lock per
    project around the whole push, so the second finds the first's tasks."""
    p = ls_project
    stores = [Store.open(p.store.path) for _ in range(2)]
    clients = [LabelStudioClient(p.server.url, p.server.token, document_root=p.server.root) for _ in range(2)]
    ensure_project(p.store, p.client)
    try:
        results = _in_threads(*(lambda s=s, c=c: push(s, c, 3) for s, c in zip(stores, clients)))
    finally:
        for s, c in zip(stores, clients):
            s.close()
            c.close()
    assert not [r for r in results if isinstance(r, BaseException)], results
    project_id = results[0].project_id
    images = [t["data"][IMAGE_KEY] for t in annotator.tasks(project_id)]
    assert sorted(images) == sorted(p.ranked()[:3])  # three tasks, no duplicates
    assert sorted(len(r.created) for r in results) == [0, 3]
    assert len(p.store.tasks()) == 3 and len(p.store.batches()) == 1


def test_two_pulls_at_once_store_each_label_once(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 3)
    for k, (task_id, _) in enumerate(report.created):
        annotator.submit(report.project_id, task_id, [("dog", (4.0 + k, 4.0, 40.0, 40.0))])
    stores = [Store.open(p.store.path) for _ in range(2)]
    clients = [LabelStudioClient(p.server.url, p.server.token, document_root=p.server.root) for _ in range(2)]
    try:
        results = _in_threads(*(lambda s=s, c=c: pull(s, c) for s, c in zip(stores, clients)))
    finally:
        for s, c in zip(stores, clients):
            s.close()
            c.close()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(r.new_annotations for r in results) == [0, 3]
    assert sorted(r.duplicates for r in results) == [0, 3]
    assert len(p.store.annotations()) == 3 and len(p.store.labels()) == 3
    assert p.store.check_integrity() == []


def test_the_lock_is_one_file_in_the_project_folder_across_processes(ls_project):
    """Another process holding the project's labeling lock (the CLI while the app pulls) makes
    a push wait, and a push that waits too long is one sentence."""
    import subprocess
    import sys
    import time

    from almdn.workflow.labeling import LOCK_FILE, project_lock

    p = ls_project
    lock = p.store.path.parent / LOCK_FILE
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)\nfcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(3)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LabelStudioError, match="has held its labeling lock for over 1 s; wait for it to finish"):
            with project_lock(p.store, timeout=1.0):
                pass
        t0 = time.monotonic()
        report = push(p.store, p.client, 1)  # waits for the other process, then pushes
        assert time.monotonic() - t0 > 0.5 and len(report.created) == 1
    finally:
        holder.wait(10)
    assert oct(lock.stat().st_mode & 0o777) == "0o600"


def test_pull_takes_only_tasks_this_project_pushed(ls_project, annotator):
    """Anyone who can write to the Label Studio project can create tasks that carry our
    project's id: one for a test image, one for a pool image never pushed, one for an image
    id the store does not have. None is imported; the pull names them."""
    from almdn.data.records import BoxRecord
    from label_studio.client import PROJECT_KEY

    p = ls_project
    test_image = p.image_ids[-2]
    p.store.add_labels(test_image, [BoxRecord("cat", 1.0, 1.0, 20.0, 20.0)], split="test")
    report = push(p.store, p.client, 1)
    [(our_task, our_image)] = report.created
    never_pushed = next(i for i in p.ranked() if i != our_image)
    image_url = annotator.tasks(report.project_id)[0]["data"]["image"]
    forged = []
    for image_id in (test_image, never_pushed, 10_000):
        body = [{"data": {"image": image_url, PROJECT_KEY: p.store.project_uuid, IMAGE_KEY: image_id}}]
        response = annotator.api.post(f"/api/projects/{report.project_id}/import", params={"return_task_ids": "true"}, json=body)
        assert response.status_code == 201, response.text
        [task_id] = response.json()["task_ids"]
        annotator.submit(report.project_id, task_id, [("dog", (0.0, 0.0, 128.0, 96.0))])
        forged.append((task_id, image_id))
    annotator.submit(report.project_id, our_task, [("bird", (5.0, 5.0, 30.0, 30.0))])
    labels_before = p.store.labels(image_ids=[test_image])[["class_name", "x1", "y1", "x2", "y2"]].values.tolist()

    pulled = pull(p.store, p.client)
    assert pulled.labeled_images == [our_image] and pulled.new_annotations == 1 and pulled.problems == []
    assert sorted((t, i) for t, i, _ in pulled.foreign_tasks) == sorted(forged)
    reasons = {i: why for _, i, why in pulled.foreign_tasks}
    assert reasons[test_image] == f"image {test_image} is a test image"
    assert reasons[never_pushed] == f"image {never_pushed} was never pushed as this task"
    assert reasons[10_000] == "image 10000 is not in the project"
    text = str(pulled)
    assert "3 tasks almdn did not push ignored" in text and all(str(t) in text for t, _ in forged)
    assert any("nothing of them imported" in n for n in pulled.notices)
    # ground truth of the test split untouched; the never-pushed image still in the pool
    assert p.store.labels(image_ids=[test_image])[["class_name", "x1", "y1", "x2", "y2"]].values.tolist() == labels_before == [["cat", 1.0, 1.0, 20.0, 20.0]]
    splits = p.store.images().set_index("image_id")["split"]
    assert (splits[test_image], splits[never_pushed]) == ("test", "pool")
    assert sorted(p.store.tasks()["task_id"]) == [our_task]
    # A second push does not adopt the forged task of the pool image: it sends its own.
    again = push(p.store, p.client, image_ids=[never_pushed])
    assert again.adopted == [] and len(again.created) == 1


def test_an_annotation_deleted_in_label_studio_is_flagged_and_its_labels_stay(ls_project, annotator):
    p = ls_project
    report = push(p.store, p.client, 2)
    (task_id, image_id), (other_task, _) = report.created
    annotation = annotator.submit(report.project_id, task_id, [("cat", (1.0, 2.0, 30.0, 40.0))])
    annotator.submit(report.project_id, other_task, [("dog", (1.0, 2.0, 30.0, 40.0))])
    pull(p.store, p.client)
    assert annotator.api.delete(f"/api/annotations/{annotation['id']}/").status_code == 204
    pulled = pull(p.store, p.client)
    assert pulled.deleted_annotations == [annotation["id"]]
    assert "1 pulled annotation deleted in Label Studio (labels kept, marked)" in str(pulled)
    [notice] = pulled.notices
    assert notice.startswith(f"1 annotation pulled earlier was deleted in Label Studio ({annotation['id']})") and "\n" not in notice
    labels = p.store.labels(image_ids=[image_id])
    assert labels[["class_name", "x1", "y1", "x2", "y2"]].values.tolist() == [["cat", 1.0, 2.0, 30.0, 40.0]]
    marks = p.store.annotations().set_index("ls_annotation_id")["deleted_on_server_at"]
    assert marks.notna().tolist() == [True, False] or marks[annotation["id"]] is not None
    assert pull(p.store, p.client).deleted_annotations == []  # flagged once


def test_adopting_an_interrupted_push_is_reported_by_pull(ls_project, proxy, annotator):
    """The tasks of a push whose answer was lost are the only orphans a pull adopts."""
    p = ls_project
    client = LabelStudioClient(proxy.url, p.server.token, document_root=p.server.root)
    ensure_project(p.store, client)
    proxy.cut_on = b"/import"
    with pytest.raises(LabelStudioUnavailable):
        push(p.store, client, 2)
    proxy.cut_on = None
    project_id = int(p.store.ls_projects()["project_id"].iloc[0])
    tasks = annotator.tasks(project_id)
    annotator.submit(project_id, tasks[0]["id"], [("cat", (1.0, 1.0, 9.0, 9.0))])
    pulled = pull(p.store, client)
    assert sorted(pulled.adopted_tasks) == sorted(t["id"] for t in tasks) and pulled.foreign_tasks == []
    assert "2 tasks of an interrupted push adopted" in str(pulled) and pulled.new_annotations == 1
    client.close()


def test_a_pushed_task_says_why_its_image_was_chosen(ls_project, annotator):
    from almdn.acquisition.stored import select_for_labeling

    p = ls_project
    expected = select_for_labeling(p.store, 3, "almdn+balance", exclude_sent=False)
    report = push(p.store, p.client, 3, method="almdn+balance")
    assert [i for _, i in report.created] == expected.image_ids
    tasks = {t["data"][IMAGE_KEY]: t["data"] for t in annotator.tasks(report.project_id)}
    for image_id, why in expected.why().items():
        assert tasks[image_id]["selected_by"] == "almdn+balance" and tasks[image_id]["selected_why"] == why
    recorded = p.store.tasks().set_index("image_id")["selected_why"].to_dict()
    assert recorded == expected.why()
    ranking = p.store.pool_ranking().set_index("image_id")
    assert ranking.loc[expected.image_ids, "task_why"].tolist() == expected.reasons
