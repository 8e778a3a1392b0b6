"""The project store: schema and migrations, images and labels with provenance, model
versions and scores, batches; crash safety and concurrent readers on a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from almdn.data.coco import CocoDetectionDataset, DatasetError
from almdn.data.records import BoxRecord, ImageRecord
from almdn.errors import UserError
from almdn.projects.store import MIGRATIONS, SCHEMA_VERSION, UNCERTAINTY_NAMES, Z_NAMES, Store, StoreError, _statements, file_sha256
from tests.store_support import move_to_pool

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int, size=(64, 48), start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img{i:05d}.png"
        # Distinct content per folder and index: the store dedupes identical files.
        Image.new("RGB", size, (i % 256, (i // 256) % 256, zlib.crc32(folder.name.encode()) % 256)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "project")
    s.add_classes(["cat", "dog", "bird"])
    yield s
    s.close()


def test_new_store_has_current_schema_in_wal_mode(tmp_path):
    s = Store.open(tmp_path / "p", name="demo")
    assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert s.path == tmp_path / "p" / "almdn.sqlite"
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.name == "demo" and len(s.project_uuid) == 32
    uuid = s.project_uuid
    s.close()
    again = Store.open(tmp_path / "p")
    assert again.project_uuid == uuid  # reopening creates nothing new
    again.close()


def test_open_missing_store_without_create_names_the_path(tmp_path):
    with pytest.raises(StoreError, match="No project store at .*almdn create|No project store at"):
        Store.open(tmp_path / "nothing", create=False)


def test_migration_from_an_older_store_keeps_its_data(tmp_path):
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('project_uuid', 'u1'), ('name', 'old'), ('created_at', 'x')")
    conn.execute("INSERT INTO classes (name) VALUES ('cat')")
    conn.execute("INSERT INTO images (path, width, height, size_bytes, sha256, split, added_at) VALUES ('/a.png', 10, 8, 5, 'h', 'labeled', 't')")
    conn.execute("INSERT INTO annotations (image_id, origin, imported_at, is_current) VALUES (1, 'import', 't', 1)")
    conn.execute("INSERT INTO labels (annotation_id, image_id, class_id, x1, y1, x2, y2) VALUES (1, 1, 1, 1, 2, 3, 4)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    s = Store.open(db)
    assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s.project_uuid == "u1"
    labels = s.labels()
    assert labels[["x1", "y1", "x2", "y2"]].values.tolist() == [[1, 2, 3, 4]]
    mv = s.record_model_version("m.pt", labeled_image_ids=[1])  # tables of later migrations work
    assert s.training_set(mv) == [1]
    assert s.check_integrity() == []
    s.close()


def test_store_from_a_newer_almdn_is_refused(tmp_path):
    db = tmp_path / "new.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this almdn understands"):
        Store.open(db)


def test_uncertainty_columns_match_the_models():
    from almdn.models import UNCERTAINTY_NAMES as MODEL_NAMES

    assert tuple(MODEL_NAMES) == UNCERTAINTY_NAMES


def test_add_images_records_size_hash_and_labels(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 3, size=(64, 48))
    result = store.add_images(
        [ImageRecord(paths[0], boxes=[BoxRecord("dog", 1, 2, 30, 40, difficult=True)], source_id="a"), ImageRecord(paths[1], boxes=[])],
        split="labeled", source="train.json",
    )
    assert result == {"added": [1, 2], "existing": [], "duplicates": [], "labels": 1}
    store.add_images([paths[2]], split="pool")
    images = store.images()
    first = images.iloc[0]
    digest, size = file_sha256(paths[0])
    assert (first.width, first.height, first.sha256, first.size_bytes) == (64, 48, digest, size)
    assert images["split"].tolist() == ["labeled", "labeled", "pool"]
    assert images["num_labels"].tolist()[:2] == [1, 0] and pd.isna(images["num_labels"].iloc[2])
    labels = store.labels()
    assert labels[["class_name", "x1", "y1", "x2", "y2", "difficult", "origin", "source"]].values.tolist() == [["dog", 1, 2, 30, 40, 1, "import", "train.json"]]
    # The same files again add nothing.
    again = store.add_images([paths[0], paths[2]], split="pool")
    assert again == {"added": [], "existing": [1, 3], "duplicates": [], "labels": 0}
    assert store.labeled_image_ids() == [1, 2]


def test_unlabeled_image_cannot_enter_the_labeled_split(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 1)
    with pytest.raises(StoreError, match="has no labels and cannot go to the 'labeled' split"):
        store.add_images([paths[0]], split="labeled")
    store.add_images([paths[0]], split="pool")
    assert store.images()["split"].tolist() == ["pool"]


def test_broken_file_stops_the_import_and_changes_nothing(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 4)
    store.add_images(paths[:1], split="pool")
    broken = tmp_path / "imgs" / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="broken.png"):
        store.add_images([paths[1], broken, paths[2]], split="pool")
    with pytest.raises(DatasetError, match=r"is 64x48 pixels but its annotations say 60x48"):
        store.add_images([ImageRecord(paths[3], width=60, height=48, boxes=[])], split="labeled")
    assert store.image_ids() == [1]


def test_unknown_class_rolls_back_the_whole_import(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 3)
    records = [ImageRecord(p, boxes=[BoxRecord("cat", 0, 0, 5, 5)]) for p in paths[:2]]
    records.append(ImageRecord(paths[2], boxes=[BoxRecord("zebra", 0, 0, 5, 5)]))
    with pytest.raises(StoreError, match="'zebra'.*not in the project's classes"):
        store.add_images(records, split="labeled")
    assert store.counts()["images"] == 0 and store.counts()["labels"] == 0


def test_add_labels_keeps_history_and_moves_the_image(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 1)
    store.add_images([ImageRecord(paths[0], boxes=[BoxRecord("cat", 0, 0, 10, 10)])], split="labeled")
    move_to_pool(store, [1])
    new = store.add_labels(1, [BoxRecord("bird", 5, 6, 20, 30)], annotator="ann@example.org")
    assert store.images()["split"].tolist() == ["labeled"]
    assert store.labels()[["class_name", "x1", "annotator", "annotation_id"]].values.tolist() == [["bird", 5, "ann@example.org", new]]
    history = store.annotations(1)
    assert history["is_current"].tolist() == [0, 1] and history["num_labels"].tolist() == [1, 1]
    with pytest.raises(StoreError, match="outside the 64x48 image"):
        store.add_labels(1, [BoxRecord("cat", 0, 0, 65, 10)])


def test_export_coco_is_read_by_the_training_dataset(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 3)
    store.add_images([
        ImageRecord(paths[0], boxes=[BoxRecord("dog", 1.5, 2, 30, 40), BoxRecord("cat", 3, 4, 10, 12)]),
        ImageRecord(paths[1], boxes=[]),
    ], split="labeled")
    store.add_images([paths[2]], split="pool")
    out = store.export_coco("labeled")
    dataset = CocoDetectionDataset(out, class_names=store.classes())
    assert dataset.classes == ["cat", "dog", "bird"]
    assert dataset.image_ids == [1, 2]
    target = dataset.target(0)
    assert target["boxes"].tolist() == [[1.5, 2, 30, 40], [3, 4, 10, 12]]
    assert target["labels"].tolist() == [2, 1]
    assert len(dataset.target(1)["boxes"]) == 0
    image, _ = dataset[0]
    assert image.shape == (3, 48, 64)


def _scores(ids, dets_per_image, seed=0):
    """Real scoring tables from almdn.acquisition.scoring on synthetic predictions."""
    from almdn.acquisition.scoring import detections_frame, image_scores

    rng = np.random.default_rng(seed)
    predictions = []
    for n in dets_per_image:
        boxes = torch.tensor(rng.uniform(0, 20, (n, 2)), dtype=torch.float32)
        predictions.append({
            "boxes": torch.cat([boxes, boxes + 10], dim=1),
            "labels": torch.tensor(rng.integers(1, 4, n)),
            "scores": torch.tensor(rng.uniform(0.6, 1.0, n), dtype=torch.float32),
            **{name: torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32) for name in (*UNCERTAINTY_NAMES, "cls_entropy")},
        })
    detections = detections_frame(predictions, ids, 0.5)
    return image_scores(detections, ids), detections


def test_scores_round_trip_and_pool_ranking(store, tmp_path):
    paths = write_images(tmp_path / "imgs", 5)
    store.add_images([ImageRecord(paths[0], boxes=[])], split="labeled")
    store.add_images(paths[1:], split="pool")
    pool = store.image_ids("pool")
    assert pool == [2, 3, 4, 5]
    mv = store.record_model_version("runs/m.pt", {"map50": 0.4}, name="first", class_names=["cat", "dog", "bird"])
    assert store.training_set(mv) == [1]
    images, detections = _scores(pool, [2, 0, 3, 1])
    store.write_scores(mv, images, detections, conf_threshold=0.5)

    stored = store.image_scores(mv)
    np.testing.assert_allclose(stored[["score", *UNCERTAINTY_NAMES, *Z_NAMES]].to_numpy(dtype=float), images[["score", *UNCERTAINTY_NAMES, *Z_NAMES]].to_numpy(dtype=float), rtol=1e-12)
    assert stored["num_detections"].tolist() == [2, 0, 3, 1]
    dets = store.detections(mv)
    assert len(dets) == 6
    np.testing.assert_allclose(dets[["x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES]].to_numpy(dtype=float), detections[["x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES]].to_numpy(dtype=float), rtol=1e-6)
    assert dets["class_name"].tolist() == [["cat", "dog", "bird"][k - 1] for k in detections["label"]]

    ranking = store.pool_ranking()
    scored = images.dropna(subset=["score"]).sort_values("score", ascending=False)["image_id"].tolist()
    assert ranking["image_id"].tolist() == scored + [3]  # the image without detections comes last
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert store.model_version("first")["metrics"] == {"map50": 0.4}
    assert store.model_versions()["num_scored"].tolist() == [4]

    # a scoring without the score-weighted entropy (schema 6's writer) stores none and no low threshold
    assert stored["entropy_weighted"].isna().all() and store.model_version(mv)["low_threshold"] is None
    assert store.class_mass(mv) is None  # nor the faint detections' class mass (schema 7's writer)

    # Scoring again replaces, never duplicates.
    images2, detections2 = _scores(pool, [1, 1, 1, 1], seed=1)
    store.write_scores(mv, images2.assign(entropy_weighted=[0.25, np.nan, 1.5, 0.75]), detections2, low_threshold=0.05)
    assert len(store.detections(mv)) == 4
    assert store.image_scores(mv)["entropy_weighted"].tolist()[::2] == [0.25, 1.5] and np.isnan(store.image_scores(mv)["entropy_weighted"].iloc[1])
    assert store.model_version(mv)["low_threshold"] == 0.05
    # the faint detections' class mass: zero where no row, in the order asked for; a rescore replaces it
    mass = pd.DataFrame({"image_id": [pool[0], pool[2], pool[2]], "class_id": [3, 1, 2], "mass": [0.4, 1.25, 0.0]})
    store.write_scores(mv, images2, detections2, low_threshold=0.05, class_mass=mass)
    assert store.class_mass(mv).tolist() == [[0, 0, 0.4], [0, 0, 0], [1.25, 0, 0], [0, 0, 0]]
    assert store.class_mass(mv, [pool[2], pool[0]]).tolist() == [[1.25, 0, 0], [0, 0, 0.4]]
    assert store._conn.execute("SELECT COUNT(*) FROM class_mass").fetchone()[0] == 2  # zero mass is no row
    store.write_scores(mv, images2, detections2, low_threshold=0.05, class_mass=mass.iloc[:1])
    assert store.class_mass(mv).sum() == pytest.approx(0.4)
    with pytest.raises(StoreError, match="outside the project's 3 classes"):
        store.write_scores(mv, images2, detections2, class_mass=mass.assign(class_id=[4, 1, 2]))


def test_scores_with_a_label_outside_the_classes_are_refused(store, tmp_path):
    store.add_images(write_images(tmp_path / "imgs", 1), split="pool")
    mv = store.record_model_version("m.pt")
    images, detections = _scores([1], [1])
    detections["label"] = 7
    with pytest.raises(StoreError, match="outside the project's 3 classes"):
        store.write_scores(mv, images, detections)
    with pytest.raises(StoreError, match="differ from the project's"):
        store.record_model_version("m.pt", class_names=["cat", "dog"])


def test_batches_tasks_and_pull_records(store, tmp_path):
    store.add_images(write_images(tmp_path / "imgs", 3), split="pool")
    row = store.ls_project("http://127.0.0.1:1", 5, "t")
    assert store.ls_project("http://127.0.0.1:1", 5, "t") == row
    store.start_round("first")
    batch = store.record_batch(row, [(11, 1), (12, 2), (13, 3)], None, 3)
    assert store.batches()[["batch_id", "status", "tasks", "open", "round_id"]].values.tolist() == [[batch, "sent", 3, 3, 1]]
    annotation = {"image_id": 1, "task_id": 11, "annotation_id": 7, "boxes": [BoxRecord("cat", 1, 1, 5, 5)], "annotator": "a@b", "created_at": "c", "updated_at": "u1", "lead_time": 2.0}
    out = store.record_pull(row, "http://127.0.0.1:1", [annotation], {(11, 1): "annotated", (12, 2): "skipped"}, [])
    assert out == {"new": 1, "updated": 0, "duplicates": 0, "labeled_images": [1], "skipped_tasks": [12], "deleted_tasks": [], "deleted_annotations": [],
                   "reviewed_unchanged": [], "corrected_images": [], "test_labels_changed": []}
    assert store.batches()[["status", "open", "annotated", "skipped"]].values.tolist() == [["partial", 1, 1, 1]]
    assert store.image_ids("labeled") == [1]
    labels = store.labels()
    assert labels[["ls_project_id", "ls_task_id", "ls_annotation_id", "annotator"]].values.tolist() == [[5, 11, 7, "a@b"]]
    out = store.record_pull(row, "http://127.0.0.1:1", [], {}, [13])  # a bare id: the live task with it
    assert out["deleted_tasks"] == [13]
    assert store.batches()["status"].tolist() == ["done"]
    # Label Studio reuses a deleted task's id: the new task (another image) is a new row.
    store.record_pull(row, "http://127.0.0.1:1", [], {}, [], adopted=[(13, 2)])
    assert store.tasks()[["task_id", "image_id", "status"]].values.tolist()[-2:] == [[13, 3, "deleted"], [13, 2, "open"]]
    # Idempotent inside the transaction (issue 20): two live tasks never share an id, and the
    # same annotation version twice (a second pull that read before the first committed)
    # inserts nothing, with no IntegrityError.
    store.record_pull(row, "x", [], {}, [], adopted=[(13, 1)])
    assert store.tasks()[["task_id", "image_id", "status"]].values.tolist()[-1] == [13, 2, "open"]
    again = store.record_pull(row, "x", [annotation], {}, [])
    assert (again["new"], again["updated"], again["duplicates"], again["labeled_images"]) == (0, 0, 1, [])
    assert len(store.annotations()) == 1
    edited = store.record_pull(row, "x", [{**annotation, "updated_at": "u2"}], {}, [])
    assert (edited["new"], edited["updated"]) == (0, 1)
    # An annotation deleted on the server is marked once; its labels stay current.
    marked = store.record_pull(row, "x", [], {}, [], deleted_annotations=[7, 7])
    assert marked["deleted_annotations"] == [7] and store.record_pull(row, "x", [], {}, [], deleted_annotations=[7])["deleted_annotations"] == []
    assert store.annotations()["deleted_on_server_at"].notna().all() and len(store.labels()) == 1
    assert store.check_integrity() == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from almdn.data.records import BoxRecord, ImageRecord
    from almdn.projects.store import Store
    from pathlib import Path

    store = Store.open(sys.argv[1])
    paths = sorted(Path(sys.argv[2]).glob("*.png"))
    records = [ImageRecord(p, boxes=[BoxRecord("cat", 0, 0, 5, 5)]) for p in paths]

    def crash():
        # Called by SQLite every 10 virtual-machine steps: once the import has written
        # argv[3] rows (inside its one transaction), die hard.
        if store._conn.total_changes >= int(sys.argv[3]):
            assert store._conn.in_transaction
            os._exit(17)
        return 0

    store._conn.set_progress_handler(crash, 10)
    store.add_images(records, split="labeled", source="crash")
    print("not reached")
    """
)


def test_a_crash_in_the_middle_of_an_import_leaves_the_store_as_it_was(store, tmp_path):
    kept = write_images(tmp_path / "first", 5)
    store.add_images([ImageRecord(p, boxes=[BoxRecord("dog", 1, 1, 9, 9)]) for p in kept], split="labeled")
    write_images(tmp_path / "second", 300)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(store.path), str(tmp_path / "second"), "200"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 17, proc.stderr  # killed by the handler, not finished
    assert "not reached" not in proc.stdout

    after = Store.open(store.path)
    assert after.check_integrity() == []
    assert after.counts()["images"] == 5 and after.counts()["labels"] == 5
    assert after.labels()["class_name"].unique().tolist() == ["dog"]
    # The store still works: the import succeeds when retried.
    result = after.add_images([ImageRecord(p, boxes=[BoxRecord("cat", 0, 0, 5, 5)]) for p in sorted((tmp_path / "second").glob("*.png"))], split="labeled")
    assert len(result["added"]) == 300
    assert after.counts()["labels"] == 305
    after.close()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from almdn.data.records import BoxRecord, ImageRecord
    from almdn.projects.store import Store
    from pathlib import Path

    store = Store.open(sys.argv[1])
    paths = sorted(Path(sys.argv[2]).glob("*.png"))
    for start in range(0, len(paths), 50):
        # Every image comes with exactly one box: a reader must always see as many boxes as images.
        store.add_images([ImageRecord(p, boxes=[BoxRecord("cat", 0, 0, 5, 5)]) for p in paths[start:start + 50]], split="labeled")
    print("done")
    """
)


def test_concurrent_readers_see_consistent_snapshots_while_a_writer_imports(store, tmp_path):
    write_images(tmp_path / "many", 1000, size=(16, 16))
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    seen: list[list[tuple[int, int]]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(k: int) -> None:
        try:
            with Store.open(store.path) as mine:
                while not stop.is_set():
                    with mine.snapshot() as conn:
                        images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                        labels = conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                    seen[k].append((images, labels))
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        proc = subprocess.run([sys.executable, str(script), str(store.path), str(tmp_path / "many")], capture_output=True, text=True, cwd=REPO, timeout=300)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert not errors, errors
    for observations in seen:
        assert observations, "a reader never got to read"
        assert all(images == labels for images, labels in observations)  # never half an import
        assert all(images % 50 == 0 for images, _ in observations)  # whole transactions only
        counts = [images for images, _ in observations]
        assert counts == sorted(counts)  # time never runs backwards
    assert any(0 < images < 1000 for obs in seen for images, _ in obs), "readers saw no intermediate state"
    assert store.counts()["images"] == 1000


def test_concurrent_writers_queue_instead_of_failing(store, tmp_path):
    write_images(tmp_path / "a", 100, size=(8, 8))
    write_images(tmp_path / "b", 100, size=(8, 8), start=100)
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(store.path), str(tmp_path / d)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in ("a", "b")]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    assert store.counts()["images"] == 200 and store.check_integrity() == []


def test_meta_and_rounds(store):
    store.set_meta("note", "x")
    store.set_meta("note", "y")
    assert store.meta("note") == "y"
    assert store.rounds().empty
    r1 = store.start_round("warm start")
    r2 = store.start_round()
    assert (r1, r2) == (1, 2) and store.rounds()["round_id"].max() == 2
    assert store.rounds()["note"].tolist() == ["warm start", ""]
    assert json.loads(json.dumps(store.counts()))["classes"] == 3


# --------------------------------------------------------------------------- faults (issue 14)


def test_same_content_through_dotdot_a_symlink_or_a_copy_is_added_once(store, tmp_path):
    paths = write_images(tmp_path / "pool", 4)
    first = store.add_images(paths, split="pool")
    (tmp_path / "link").symlink_to(tmp_path / "pool")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "same.png").write_bytes(paths[0].read_bytes())
    again = store.add_images(
        [tmp_path / "pool" / ".." / "pool" / p.name for p in paths] + [tmp_path / "link" / p.name for p in paths] + [tmp_path / "copy" / "same.png"],
        split="pool",
    )
    assert again["added"] == [] and again["existing"] == first["added"] * 2 + first["added"][:1]
    assert len(again["duplicates"]) == 5  # the symlinked and copied paths; ../ normalises to the stored path
    assert store.counts()["images"] == 4 and store.images()["sha256"].nunique() == 4


def corrupt_images_table(path: Path) -> None:
    """Overwrite the images table's root page with garbage (as a bad disk sector would)."""
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'images'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(bytes(range(256)) * (page_size // 256 - 1))


def test_a_damaged_page_is_found_on_open_and_named_in_one_sentence(store, tmp_path):
    store.add_images(write_images(tmp_path / "pool", 40), split="pool")
    path = store.path
    store.close()
    corrupt_images_table(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"The project store '{path}' is damaged \(.*\); restore it from a backup or create the project again"):
        Store.open(path, create=False)
    assert path.read_bytes() == before  # nothing written into a damaged file


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v chattr"], capture_output=True).returncode != 0, reason="needs chattr")
def test_read_only_and_immutable_stores_are_one_sentence(tmp_path):
    s = Store.open(tmp_path / "p")
    s.add_classes(["a"])
    path = s.path
    s.close()
    path.chmod(0o444)
    with pytest.raises(StoreError, match=rf"The project store '{path}' is read-only \(mode 444\); make it writable \(chmod u\+w"):
        Store.open(path, create=False)
    path.chmod(0o644)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("the file system has no immutable flag")
    try:
        with pytest.raises(StoreError, match=rf"The project store '{path}' is read-only \(the file is immutable\); .*chattr -i"):
            Store.open(path, create=False)
    finally:
        subprocess.run(["chattr", "-i", str(path)])
    assert Store.open(path, create=False).classes() == ["a"]


def test_the_same_bytes_with_different_labels_are_reported_not_dropped(store, tmp_path):
    [a] = write_images(tmp_path / "a", 1)
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "copy.png"
    b.write_bytes(a.read_bytes())
    cat, dog = BoxRecord("cat", 1, 1, 10, 10), BoxRecord("dog", 5, 5, 20, 20)
    # Two files with the same bytes in one import: the second one's labels would be dropped.
    with pytest.raises(DatasetError, match=rf"'{b}' and '{a}' are the same image \(identical bytes\) in test with different labels; keep one of them"):
        store.add_images([ImageRecord(a, boxes=[cat]), ImageRecord(b, boxes=[dog])], split="labeled", source="test")
    assert store.counts()["images"] == 0
    # The same file listed twice (two VOC files naming one image, say) with different labels.
    with pytest.raises(DatasetError, match=rf"'{a}' is listed twice in test with different labels"):
        store.add_images([ImageRecord(a, boxes=[cat]), ImageRecord(tmp_path / "a" / ".." / "a" / a.name, boxes=[dog])], split="labeled", source="test")
    assert store.counts()["images"] == 0
    # With the same labels it is one image, added once.
    result = store.add_images([ImageRecord(a, boxes=[cat]), ImageRecord(b, boxes=[BoxRecord("cat", 1.0, 1.0, 10.0, 10.0)])], split="labeled", source="test")
    assert len(result["added"]) == 1 and result["duplicates"] == [str(b)]
    # A copy arriving later with other labels than the stored image's: reported as well.
    (tmp_path / "c").mkdir()
    c = tmp_path / "c" / "again.png"
    c.write_bytes(a.read_bytes())
    with pytest.raises(DatasetError, match=rf"'{c}' and '{a}' \(image {result['added'][0]}, already in the project\) are the same image \(identical bytes\) but their labels differ"):
        store.add_images([ImageRecord(c, boxes=[dog])], split="labeled")
    assert store.counts() == {**store.counts(), "images": 1, "labels": 1}
    # Re-importing the same path is still a no-op (its stored labels may be newer, from Label Studio).
    assert store.add_images([ImageRecord(a, boxes=[dog])], split="labeled")["existing"] == result["added"]


@pytest.mark.parametrize("box", [(float("nan"), 1, 5, 5), (1, 1, float("inf"), 5), (1, 1, 70, 5), (-1, 1, 5, 5), (5, 5, 5, 9)])
def test_every_box_is_checked_against_its_decoded_image_before_anything_is_written(store, tmp_path, box):
    [a] = write_images(tmp_path / "a", 1, size=(64, 48))
    with pytest.raises(UserError, match=r"is empty or outside the 64x48 image; fix the box"):
        store.add_images([ImageRecord(a, boxes=[BoxRecord("cat", *box)])], split="labeled")
    assert store.counts()["images"] == 0


def test_the_stored_size_is_the_size_browsers_show(store, tmp_path):
    from tests.test_records import exif_jpeg

    path = exif_jpeg(tmp_path / "portrait.jpg", size=(200, 100), orientation=6)
    [image_id] = store.add_images([path])["added"]
    assert (store.image(image_id)["width"], store.image(image_id)["height"]) == (100, 200)
    with pytest.raises(DatasetError, match=r"is 100x200 pixels \(its EXIF orientation turns it; .*\) but its annotations say 200x100"):
        store.add_images([ImageRecord(tmp_path / "portrait.jpg", 200, 100, [])], split="labeled")


@pytest.mark.parametrize("name", ["red\x1b[31m", "tab\there", "x" * 201, "bell\x07"])
def test_class_names_with_control_characters_are_refused(store, name):
    with pytest.raises(StoreError, match="over 200 characters or holds control characters"):
        store.add_classes([name])
    # Markdown is just text: stored as written (the app shows it literally).
    assert store.add_classes(["[link](http://x) ![img](http://x/a.png) **b**"])[-1] == "[link](http://x) ![img](http://x/a.png) **b**"


def test_project_folder_store_and_exports_are_private_whatever_the_umask(tmp_path):
    """0700 folders and 0600 files: the store holds annotators' e-mails (issue 20)."""
    import stat

    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    old = os.umask(0o022)
    try:
        store = Store.open(tmp_path / "deep" / "project")
        store.add_classes(["cat"])
        [image] = store.add_images(write_images(tmp_path / "imgs", 1), split="pool")["added"]
        store.add_labels(image, [BoxRecord("cat", 1, 1, 5, 5)])
        export = store.export_coco("labeled")
        project = tmp_path / "deep" / "project"
        assert mode(project) == 0o700
        assert mode(project / "almdn.sqlite") == 0o600
        assert mode(project / "almdn.sqlite-wal") == 0o600  # SQLite gives its side files the store's mode
        assert mode(export.parent) == 0o700 and mode(export) == 0o600
        store.close()
    finally:
        os.umask(old)
