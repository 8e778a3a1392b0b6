"""Label Studio's formats without a server: rectangles in percent and back, task payloads,
annotations to pixel boxes (:mod:`label_studio.client`)."""

from __future__ import annotations

import math

import pytest

from label_studio.client import IMAGE_KEY, PROJECT_KEY, annotation_boxes, percent_to_pixels, pixels_to_percent, prediction_region, task_payload
from tests.label_studio_support import CLASSES, HEIGHT, WIDTH, ls_server, region  # noqa: F401  (ls_server: a fixture)


def test_percent_to_pixels_is_exact_for_drawn_boxes():
    for box in [(0, 0, WIDTH, HEIGHT), (10, 20, 50, 60), (1, 1, 2, 2), (127, 95, 128, 96)]:
        value = pixels_to_percent(box, WIDTH, HEIGHT)
        assert percent_to_pixels(value, WIDTH, HEIGHT) == tuple(float(v) for v in box)
    fractional = (10.37, 20.5, 33.125, 61.999)
    back = percent_to_pixels(pixels_to_percent(fractional, WIDTH, HEIGHT), WIDTH, HEIGHT)
    assert back == pytest.approx(fractional, abs=1e-6)


def test_rotated_rectangle_becomes_its_bounding_box_and_is_clipped():
    # 90 degrees clockwise about the top-left corner (10, 10): a 20 x 10 box turns into 10 x 20 to the left.
    value = {"x": 10 / WIDTH * 100, "y": 10 / HEIGHT * 100, "width": 20 / WIDTH * 100, "height": 10 / HEIGHT * 100, "rotation": 90}
    assert percent_to_pixels(value, WIDTH, HEIGHT) == pytest.approx((0.0, 10.0, 10.0, 30.0))
    spill = {"x": 90.0, "y": 90.0, "width": 20.0, "height": 20.0, "rotation": 0}
    assert percent_to_pixels(spill, WIDTH, HEIGHT) == pytest.approx((0.9 * WIDTH, 0.9 * HEIGHT, WIDTH, HEIGHT))


def test_float_fields_are_plain_floats():
    # Guard against -0.0 or numpy types leaking into the store from the conversion.
    x1, y1, x2, y2 = percent_to_pixels({"x": 0.0, "y": -0.0, "width": 10.0, "height": 10.0}, WIDTH, HEIGHT)
    assert all(type(v) is float for v in (x1, y1, x2, y2))
    assert math.copysign(1.0, y1) == 1.0


def test_task_payload_ties_the_task_to_the_image_and_carries_the_prediction():
    boxes = [prediction_region("mv1-0", (10, 20, 50, 60), "dog", 0.8, WIDTH, HEIGHT), prediction_region("mv1-1", (0, 0, 5, 5), "cat", 0.4, WIDTH, HEIGHT)]
    # extra data can never re-point a task at another image; NaN becomes null
    task = task_payload(7, "/data/x.png", "x.png", "uuid-1", {"rank": 1, "final_score": float("nan"), IMAGE_KEY: 99}, "model-a", boxes)
    assert task["data"][IMAGE_KEY] == 7 and task["data"][PROJECT_KEY] == "uuid-1" and task["data"]["final_score"] is None
    [prediction] = task["predictions"]
    assert prediction["model_version"] == "model-a" and prediction["score"] == pytest.approx(0.6)
    assert percent_to_pixels(prediction["result"][0]["value"], WIDTH, HEIGHT) == pytest.approx((10, 20, 50, 60))
    assert "predictions" not in task_payload(7, "/data/x.png", "x.png", "uuid-1")


def test_annotation_boxes_take_pixels_or_say_why_not():
    ann = {"id": 3, "result": [region(CLASSES[0], (10.0, 20.0, 50.0, 60.0)), {"type": "relation"}]}
    boxes, problem = annotation_boxes(ann, 5, "a.png", WIDTH, HEIGHT, set(CLASSES))
    assert problem is None and [b[:5] for b in boxes] == [(CLASSES[0], 10.0, 20.0, 50.0, 60.0)] and boxes[0][5] == ann["result"][0]["id"]
    _, problem = annotation_boxes({"id": 4, "result": [region("zebra", (1.0, 1.0, 9.0, 9.0))]}, 5, "a.png", WIDTH, HEIGHT, set(CLASSES))
    assert problem.startswith("Annotation 4 of task 5 (image 'a.png') uses the label 'zebra'")
    _, problem = annotation_boxes(ann, 5, "a.png", WIDTH * 2, HEIGHT, set(CLASSES))
    assert "was drawn on a" in problem


# --------------------------------------------------------------------------- listing against a real server


@pytest.fixture(scope="module")
def capped_server(ls_server, tmp_path_factory):
    """A second real server whose task API answers at most 2 tasks per page, whatever the
    client asks for (Label Studio's TASK_API_PAGE_SIZE_MAX)."""
    from label_studio.server import LocalServer, free_port
    from tests.label_studio_support import TEMPLATE

    server = LocalServer(tmp_path_factory.mktemp("ls-capped"), port=free_port(), document_root=ls_server.root, template=TEMPLATE,
                         settings={"LABEL_STUDIO_TASK_API_PAGE_SIZE_MAX": "2"})
    server.start()
    yield server
    server.stop()


def test_listing_reads_every_page_until_total_when_the_server_caps_the_page_size(capped_server, ls_server, tmp_path):
    """Pages shorter than asked for are no end of the listing: only `total` is (issue 20).
    A truncated listing would make push duplicate tasks and pull skip annotations."""
    from almdn.projects.store import Store
    from almdn.workflow.labeling import pull, push
    from label_studio.client import LabelStudioClient
    from tests.label_studio_support import Annotator, write_pool_images

    store = Store.open(tmp_path / "project", name="capped")
    store.add_classes(CLASSES)
    ids = store.add_images(write_pool_images(ls_server.root / f"capped-{tmp_path.name}", 5), split="pool")["added"]
    import types

    import httpx

    token = capped_server.credentials().token
    client = LabelStudioClient(capped_server.url, token, document_root=ls_server.root, page_size=100)
    annotator = Annotator(types.SimpleNamespace(api=lambda: httpx.Client(base_url=capped_server.url, headers={"Authorization": f"Token {token}"}, timeout=60)))
    try:
        report = push(store, client, image_ids=ids)
        assert len(report.created) == 5
        raw = annotator.api.get("/api/tasks", params={"project": report.project_id, "page_size": 100}).json()
        assert raw["total"] == 5 and len(raw["tasks"]) == 2  # the server really caps the page
        listed = client.our_tasks(report.project_id, store.project_uuid, "id,data")
        assert sorted(listed) == sorted(ids) and all(len(ts) == 1 for ts in listed.values())
        # the same images again: nothing new (a truncated listing would have sent 3 again)
        again = push(store, client, image_ids=ids)
        assert again.created == [] and sorted(again.already) == sorted(ids)
        for task_id, _ in report.created:
            annotator.submit(report.project_id, task_id, [("cat", (1.0, 1.0, 20.0, 20.0))])
        pulled = pull(store, client)
        assert pulled.new_annotations == 5 and pulled.deleted_tasks == [] and sorted(pulled.labeled_images) == sorted(ids)
    finally:
        client.close()
        annotator.close()
        store.close()
