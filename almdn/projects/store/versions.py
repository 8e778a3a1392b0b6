"""What the store keeps of the models: rounds, model versions and the labeled set each was
trained on, the scores and detections of a scoring, image embeddings, the pool's ranking."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from almdn.registry import DEFAULT_AGGREGATION, UNCERTAINTY_NAMES
from almdn.projects.store.schema import Z_NAMES, StoreError, _finite, now  # _finite: the package's own helper

if TYPE_CHECKING:
    import pandas as pd

#: An image score's columns after its detection count: the four raw uncertainties, their
#: z-values, the final score, the score-weighted class entropy (schema 7).
_IMAGE_SCORE_COLUMNS = (*UNCERTAINTY_NAMES, *Z_NAMES, "score", "entropy_weighted")

class VersionsMixin:
    """Rounds, model versions (and the labeled set each was trained on), their scores, detections
    and embeddings, and the pool's ranking."""

    # ------------------------------------------------------------------ rounds and model versions

    def start_round(self, note: str = "") -> int:
        """Begin a new active-learning round; returns its id."""
        with self.transaction() as conn:
            return int(conn.execute("INSERT INTO rounds (started_at, note) VALUES (?, ?)", (now(), note)).lastrowid)

    def rounds(self) -> pd.DataFrame:
        """Rounds with their model versions and batches counted."""
        return self._frame(
            """SELECT r.id AS round_id, r.started_at, r.note,
                      (SELECT COUNT(*) FROM model_versions m WHERE m.round_id = r.id) AS model_versions,
                      (SELECT COUNT(*) FROM batches b WHERE b.round_id = r.id) AS batches
               FROM rounds r ORDER BY r.id"""
        )

    def record_model_version(
        self,
        checkpoint: str | os.PathLike[str],
        metrics: dict[str, Any] | None = None,
        labeled_image_ids: Iterable[int] | None = None,
        name: str | None = None,
        round_id: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> int:
        """Record a trained model: its checkpoint, metrics and the labeled set it was trained
        on (default: the current ``labeled`` split). ``class_names`` (the model's) must equal
        the store's class list when given. Returns the model version id."""
        if class_names is not None and list(class_names) != self.classes():
            raise StoreError(
                f"The model's classes {list(class_names)} differ from the project's {self.classes()}; "
                "train it on the project's export (almdn project export) so labels match."
            )
        with self.transaction() as conn:
            ids = [int(i) for i in (labeled_image_ids if labeled_image_ids is not None else [r[0] for r in conn.execute("SELECT id FROM images WHERE split = 'labeled'")])]
            if round_id is None:
                round_id = conn.execute("SELECT MAX(id) FROM rounds").fetchone()[0]
            number = conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] + 1
            cursor = conn.execute(
                "INSERT INTO model_versions (name, checkpoint, metrics, round_id, num_labeled, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name or f"model-{number}", str(checkpoint), json.dumps(metrics or {}, default=float), round_id, len(ids), now()),
            )
            mv = int(cursor.lastrowid)
            conn.executemany("INSERT INTO model_version_images (model_version_id, image_id) VALUES (?, ?)", [(mv, i) for i in ids])
        return mv

    def model_versions(self) -> pd.DataFrame:
        """Model versions with checkpoint, metrics (dict), round, labeled-set size and scoring."""
        frame = self._frame(
            """SELECT m.id AS model_version_id, m.name, m.checkpoint, m.metrics, m.round_id, m.num_labeled, m.created_at,
                      s.aggregation, s.conf_threshold, s.low_threshold, s.num_images AS num_scored, s.scored_at
               FROM model_versions m LEFT JOIN scorings s ON s.model_version_id = m.id ORDER BY m.id"""
        )
        frame["metrics"] = [json.loads(m) for m in frame["metrics"]]
        return frame

    def model_version(self, model_version: int | str) -> dict[str, Any]:
        frame = self.model_versions()
        key = "name" if isinstance(model_version, str) else "model_version_id"
        hit = frame[frame[key] == model_version]
        if hit.empty:
            raise StoreError(f"Model version {model_version!r} is not in the store; see the list with almdn project info.")
        return hit.iloc[0].to_dict()

    def training_set(self, model_version: int) -> list[int]:
        """The labeled image ids a model version was trained on (the review queue tells
        in-sample scores apart by it)."""
        return [r[0] for r in self._query("SELECT image_id FROM model_version_images WHERE model_version_id = ? ORDER BY image_id", (int(model_version),))]

    def latest_model_version(self, scored: bool = False) -> int | None:
        """The newest model version (with scores if ``scored``), or None."""
        sql = "SELECT MAX(model_version_id) FROM scorings" if scored else "SELECT MAX(id) FROM model_versions"
        return self._query(sql)[0][0]

    # ------------------------------------------------------------------ scores

    def write_scores(self, model_version: int, images: pd.DataFrame, detections: pd.DataFrame, aggregation: str = DEFAULT_AGGREGATION, conf_threshold: float | None = None,
                     low_threshold: float | None = None, class_mass: pd.DataFrame | None = None) -> None:
        """Store one scoring of the pool by ``model_version`` (replacing an earlier one).

        Args:
            images: :func:`almdn.acquisition.scoring.image_scores` output: ``image_id``,
                ``num_detections``, the four raw uncertainties, their ``z_`` values, ``score``
                (NaN for images without a kept detection) and, where the scoring made it,
                ``entropy_weighted`` (:func:`almdn.workflow.score_pool`), made from the
                detections above ``low_threshold`` (None: not made).
            detections: :func:`almdn.acquisition.scoring.detections_frame` output:
                ``image_id``, ``detection``, ``label`` (1..C), ``score``, ``x1..y2`` (pixels),
                the four uncertainties and ``cls_entropy``.
            class_mass: per image and class, the summed confidence of its detections above
                ``low_threshold`` (``image_id``, ``class_id`` 1..C, ``mass``; rows with mass 0
                are left out), what a score-weighted two-stage method balances by; None: not made.
        """
        mv = int(model_version)
        missing = [c for c in ("image_id", "num_detections", *UNCERTAINTY_NAMES, *Z_NAMES, "score") if c not in images.columns]
        if missing:
            raise StoreError(f"The image scores lack columns {missing}; pass the table image_scores() returns.")
        missing = [c for c in ("image_id", "detection", "label", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES) if c not in detections.columns]
        if missing:
            raise StoreError(f"The detections lack columns {missing}; pass the table detections_frame() returns.")
        if "entropy_weighted" not in images.columns:
            images = images.assign(entropy_weighted=float("nan"))
        image_rows = [
            (mv, int(r.image_id), int(r.num_detections), *(_finite(getattr(r, c)) for c in _IMAGE_SCORE_COLUMNS))
            for r in images.itertuples(index=False)
        ]
        has_entropy = "cls_entropy" in detections.columns
        det_rows = [
            (mv, int(r.image_id), int(r.detection), int(r.label), float(r.score), float(r.x1), float(r.y1), float(r.x2), float(r.y2),
             *(_finite(getattr(r, c)) for c in UNCERTAINTY_NAMES), _finite(r.cls_entropy) if has_entropy else None)
            for r in detections.itertuples(index=False)
        ]
        mass_rows = [] if class_mass is None else [
            (mv, int(r.image_id), int(r.class_id), float(r.mass)) for r in class_mass.itertuples(index=False) if r.mass > 0
        ]
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE id = ?", (mv,)).fetchone() is None:
                raise StoreError(f"Model version {mv} is not in the store; record it first (record_model_version).")
            n_classes = conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0]
            bad = sorted({row[3] for row in det_rows if not 1 <= row[3] <= n_classes} | {row[2] for row in mass_rows if not 1 <= row[2] <= n_classes})
            if bad:
                raise StoreError(f"Detections have labels {bad[:5]} outside the project's {n_classes} classes; score with a model trained on this project.")
            for table in ("image_scores", "detections", "class_mass", "scorings", "embeddings"):  # a rescore's embeddings follow (write_embeddings)
                conn.execute(f"DELETE FROM {table} WHERE model_version_id = ?", (mv,))
            cols = ", ".join(("model_version_id", "image_id", "num_detections", *_IMAGE_SCORE_COLUMNS))
            conn.executemany(f"INSERT INTO image_scores ({cols}) VALUES ({', '.join('?' * (3 + len(_IMAGE_SCORE_COLUMNS)))})", image_rows)
            cols = ", ".join(("model_version_id", "image_id", "detection", "class_id", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy"))
            conn.executemany(f"INSERT INTO detections ({cols}) VALUES ({', '.join('?' * (10 + len(UNCERTAINTY_NAMES)))})", det_rows)
            conn.executemany("INSERT INTO class_mass (model_version_id, image_id, class_id, mass) VALUES (?, ?, ?, ?)", mass_rows)
            conn.execute(
                "INSERT INTO scorings (model_version_id, aggregation, conf_threshold, low_threshold, num_images, num_detections, class_mass_kept, scored_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (mv, aggregation, conf_threshold, None if low_threshold is None else float(low_threshold), len(image_rows), len(det_rows),
                 int(class_mass is not None), now()),
            )

    def write_embeddings(self, model_version: int, image_ids: Sequence[int], embeddings: Any) -> None:
        """Keep the image embeddings a scoring of ``model_version`` computed (pool and labeled
        images, one row each, ``(N, D)``, stored float32), replacing earlier ones."""
        import io

        import numpy as np

        ids = np.asarray([int(i) for i in image_ids], dtype=np.int64)
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(len(ids), -1)
        buffer = io.BytesIO()
        np.savez(buffer, image_ids=ids, embeddings=vectors)
        with self.transaction() as conn:
            conn.execute("DELETE FROM embeddings WHERE model_version_id = ?", (int(model_version),))
            conn.execute("INSERT INTO embeddings (model_version_id, num_images, dim, data) VALUES (?, ?, ?, ?)",
                         (int(model_version), len(ids), int(vectors.shape[1]), buffer.getvalue()))

    def embeddings(self, model_version: int) -> tuple[Any, Any] | None:
        """``(image_ids (N,), embeddings (N, D) float32)`` kept by the scoring of
        ``model_version``, or None (scored before embeddings were kept, or by a model without them)."""
        import io

        import numpy as np

        rows = self._query("SELECT data FROM embeddings WHERE model_version_id = ?", (int(model_version),))
        if not rows:
            return None
        with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as archive:
            return archive["image_ids"], archive["embeddings"]

    def _scored_version(self, model_version: int | None) -> int:
        mv = self.latest_model_version(scored=True) if model_version is None else int(model_version)
        if mv is None:
            raise StoreError("No model version has scored the pool yet; score it first (almdn project score --checkpoint MODEL).")
        if not self._query("SELECT 1 FROM scorings WHERE model_version_id = ?", (mv,)):
            raise StoreError(f"Model version {mv} has not scored the pool; score it first (almdn project score).")
        return mv

    def image_scores(self, model_version: int | None = None) -> pd.DataFrame:
        """The scores of every image scored by ``model_version`` (default: the latest scored)."""
        mv = self._scored_version(model_version)
        cols = ", ".join(f"s.{c}" for c in ("num_detections", *_IMAGE_SCORE_COLUMNS))
        return self._frame(f"SELECT s.image_id, {cols} FROM image_scores s WHERE s.model_version_id = ? ORDER BY s.image_id", (mv,))

    def detections(self, model_version: int | None = None, image_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Kept detections of ``model_version`` with class names and their four uncertainties."""
        mv = self._scored_version(model_version)
        where, params = "", [mv]
        if image_ids is not None:
            ids = [int(i) for i in image_ids]
            where = f"AND d.image_id IN ({', '.join('?' * len(ids))})" if ids else "AND 0"
            params += ids
        cols = ", ".join(f"d.{c}" for c in (*UNCERTAINTY_NAMES, "cls_entropy"))
        return self._frame(
            f"""SELECT d.image_id, d.detection, d.class_id AS label, c.name AS class_name, d.score, d.x1, d.y1, d.x2, d.y2, {cols}
                FROM detections d JOIN classes c ON c.id = d.class_id WHERE d.model_version_id = ? {where}
                ORDER BY d.image_id, d.detection""",
            params,
        )

    def class_mass(self, model_version: int | None = None, image_ids: Sequence[int] | None = None) -> Any:
        """``(N, C)``: per image of ``image_ids`` (default: every scored image, in id order) and
        class, the summed confidence of its detections above the scoring's low threshold, as
        :func:`almdn.acquisition.batch.class_mass` makes it from those detections; None when the
        scoring did not keep it (made before schema 8)."""
        import numpy as np

        mv = self._scored_version(model_version)
        if not self._query("SELECT class_mass_kept FROM scorings WHERE model_version_id = ?", (mv,))[0][0]:
            return None
        if image_ids is None:
            image_ids = [r[0] for r in self._query("SELECT image_id FROM image_scores WHERE model_version_id = ? ORDER BY image_id", (mv,))]
        n_classes = self._query("SELECT COUNT(*) FROM classes")[0][0]
        mass = np.zeros((len(image_ids), n_classes))
        row = {int(i): j for j, i in enumerate(image_ids)}
        for image_id, class_id, value in self._query("SELECT image_id, class_id, mass FROM class_mass WHERE model_version_id = ?", (mv,)):
            if image_id in row:
                mass[row[image_id], class_id - 1] = value
        return mass

    def pool_ranking(self, model_version: int | None = None) -> pd.DataFrame:
        """Pool images by informativeness under ``model_version`` (default: latest scored).

        One row per pool image: ``rank`` (1 = most informative), image_id, path, score, the
        raw and z-scored uncertainties, num_detections, ``task_status`` (the status of its
        newest Label Studio task, None if never sent) and ``task_why`` (why that task's image
        was chosen, None if not recorded). Images without a kept detection (NaN
        score) come after every scored image; ties keep image-id order. Unscored pool images
        (added after the scoring) are listed last with NaN score.
        """
        mv = self._scored_version(model_version)
        cols = ", ".join(f"s.{c}" for c in (*UNCERTAINTY_NAMES, *Z_NAMES))
        frame = self._frame(
            f"""SELECT i.id AS image_id, i.path, s.score, s.num_detections, {cols},
                       (SELECT t.status FROM tasks t WHERE t.image_id = i.id ORDER BY t.id DESC LIMIT 1) AS task_status,
                       (SELECT t.selected_why FROM tasks t WHERE t.image_id = i.id ORDER BY t.id DESC LIMIT 1) AS task_why
                FROM images i LEFT JOIN image_scores s ON s.image_id = i.id AND s.model_version_id = ?
                WHERE i.split = 'pool'
                ORDER BY s.score IS NULL, s.score DESC, i.id""",
            (mv,),
        )
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame
