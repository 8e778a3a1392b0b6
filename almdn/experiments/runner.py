"""Active-learning experiments: the paper's protocol (Sec. 4), resumable.

For every seed the same initial labeled set is drawn from the pool. Each cycle a detector is
trained from scratch on the labeled set, evaluated on the test split, and (except in the last
cycle) the acquisition method scores the rest of the pool and the top-B images join the
labeled set. Every finished (method, seed, cycle) is written to
``<out>/runs/<method>/seed-<s>/cycle-<c>.json`` and never recomputed.

Trained models live in ``<out>/models/<key>/`` where the key hashes everything that determines
the model (architecture, head, training schedule, seed, the labeled image ids). Methods that
train the same model share it: at cycle 0 every gmm-based method (almdn, random, entropy,
core-set and the ensemble's first member) trains on the same initial set and gets the same
model, as in the paper's tables, where their first column is identical. A training interrupted
midway resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from almdn.acquisition.batch import BatchInputs, class_mass, score_drivers
from almdn.acquisition.methods import Method, get_method
from almdn.acquisition.scoring import acquisition_features, detections_frame, score_with_models
from almdn.data.coco import CocoDetectionDataset, write_coco
from almdn.engine.checkpoint import load_model
from almdn.engine.fit import build_starting_model, train_evaluate_save
from almdn.engine.inference import kept_mask, predict
from almdn.engine.quality import headline
from almdn.engine.train import TrainConfig
from almdn.registry import DEFAULT_CONF_THRESHOLD, DEFAULT_LOW_THRESHOLD, DEFAULT_NUM_COMPONENTS, UNCERTAINTY_NAMES

METRIC_KEYS = ("map50", "map75", "map", "voc07_map50")
#: Flat mixture-collapse and uncertainty-quality numbers recorded per cycle (:func:`almdn.engine.quality.headline`).
QUALITY_KEYS = (
    "cls_collapsed_fraction", "cls_effective_components", "box_collapsed_fraction", "box_effective_components",
    "auroc_cls_aleatoric", "auroc_cls_epistemic", "auroc_cls_entropy", "auroc_one_minus_score",
    "spearman_loc_aleatoric", "spearman_loc_epistemic", "auroc_iou75_loc_aleatoric", "auroc_iou75_loc_epistemic",
)


@dataclass
class ExperimentConfig:
    """One active-learning experiment (see ``configs/*.yaml``).

    Attributes:
        name: a label for reports.
        data: where the images are: ``{"format": "coco", "train": <json>, "test": <json>}``
            (optional ``"image_root"``), ``{"format": "voc", "root": <VOC2007 folder>,
            "train_split": "trainval", "test_split": "test"}``, ``{"format": "yolo", "root": <dir>,
            "train_split": "train", "test_split": "val"}``, or ``{"format": "demo", "root": <dir>,
            ...DemoConfig fields}`` to generate the demo dataset there if it is missing.
        model: build_model keywords shared by every method (``arch``, ``num_components``,
            ``pretrained``, ``image_size``, ...), and ``init``: the starting point, ``coco``,
            ``imagenet``, ``none`` or a PATH to a torchvision state dict (``almdn train --init``);
            small objects: ``anchor_scales``, ``anchor_ratios`` (build_model's) and
            ``fit_anchors: true`` (fit an SSD's anchors to each cycle's labeled boxes,
            :mod:`almdn.models.anchors`); each method adds its head variant.
        train: TrainConfig fields, plus ``preset`` ("demo" or "paper") they override, and
            optionally ``iterations_per_image``: the schedule grows with the labeled set,
            ``max(iterations, iterations_per_image x labeled images)`` iterations (warm-up and
            decay scaled with it), so a larger labeled set is not trained for fewer epochs.
        initial: size of the initial labeled set.
        budget: B, images labeled per cycle.
        cycles: trained models per run (the first on the initial set).
        seeds: independent trials (different initial sets and initialisations).
        methods: acquisition methods (see :mod:`almdn.acquisition.methods`).
        conf_threshold: detections kept for scoring (and for the uncertainty-quality report).
        low_threshold: detections a score-weighted method reads (``almdn_weighted``, ``entropy_weighted``).
        no_detection: policy for pool images without a kept detection ("last" or "random").
        mc_passes, mc_dropout, ensemble_size: the multi-pass baselines' settings.
        transfer: architectures trained on each acquired set afterwards (Tab. 7), with
            ``transfer_head``.
        device, batch_size: inference settings.
    """

    name: str = "experiment"
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "ssd_small", "num_components": DEFAULT_NUM_COMPONENTS})
    train: dict[str, Any] = field(default_factory=lambda: {"preset": "demo"})
    initial: int = 200
    budget: int = 100
    cycles: int = 4
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: ["almdn", "random"])
    conf_threshold: float = DEFAULT_CONF_THRESHOLD
    low_threshold: float = DEFAULT_LOW_THRESHOLD
    no_detection: str = "last"
    mc_passes: int = 25
    mc_dropout: float = 0.1
    ensemble_size: int = 3
    transfer: list[str] = field(default_factory=list)
    transfer_head: str = "gmm"
    device: str = "auto"
    batch_size: int = 32

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown setting(s) {', '.join(sorted(unknown))} in '{path}'.")
        return cls(**raw)

    def train_config(self, seed: int, num_labeled: int | None = None) -> TrainConfig:
        settings = dict(self.train)
        preset = settings.pop("preset", "demo")
        per_image = settings.pop("iterations_per_image", None)
        if per_image is not None and num_labeled is not None:
            settings["iterations"] = max(int(settings.get("iterations", 0)), round(float(per_image) * num_labeled))
        base = TrainConfig.demo(settings.get("iterations", 900)) if preset == "demo" else TrainConfig.paper()
        if "milestones" in settings:
            settings["milestones"] = tuple(settings["milestones"])
        return dataclasses.replace(base, seed=seed, **settings)


# ----------------------------------------------------------------------------- data
def load_datasets(config: ExperimentConfig, progress: bool = True, cache_dir: str | Path | None = None) -> tuple[CocoDetectionDataset, CocoDetectionDataset]:
    """The train pool (every image labeled: the labels are the oracle) and the test split.

    VOC and YOLO folders are converted once to COCO files in ``cache_dir``."""
    data = dict(config.data)
    fmt = data.pop("format", "coco")
    if fmt == "demo":
        from almdn.data.demo import DemoConfig, generate_demo_dataset

        root = data.pop("root", "data/demo")
        info = generate_demo_dataset(root, DemoConfig(**data), progress=progress)
        return CocoDetectionDataset(info["train_annotations"]), CocoDetectionDataset(info["test_annotations"])
    if fmt == "coco":
        train_set = CocoDetectionDataset(data["train"], image_root=data.get("image_root"))
        test_set = CocoDetectionDataset(data["test"], image_root=data.get("test_image_root", data.get("image_root")), class_names=train_set.classes)
        return train_set, test_set
    if fmt in ("voc", "yolo"):
        return _converted_datasets(fmt, data, cache_dir)
    raise ValueError(f"Unknown data format '{fmt}' (expected 'coco', 'voc', 'yolo' or 'demo').")


def _converted_datasets(fmt: str, data: dict[str, Any], cache_dir: Path | None) -> tuple[CocoDetectionDataset, CocoDetectionDataset]:
    """Read a Pascal VOC folder (``root``, ``train_split``, ``test_split``: image sets) or a YOLO
    folder (``root``, ``train_split``, ``test_split``: sub-folders) once into COCO files under
    ``cache_dir``. Boxes VOC marks ``difficult`` are left out, as SSD training does."""
    from almdn.data.records import image_size

    if cache_dir is None:
        raise ValueError("an output folder is needed to convert VOC / YOLO data")
    splits = {"train": data.get("train_split", "trainval" if fmt == "voc" else "train"), "test": data.get("test_split", "test" if fmt == "voc" else "val")}
    if fmt == "voc":
        from almdn.data.voc import read_voc, voc_class_names

        records = {k: read_voc(data["root"], v) for k, v in splits.items()}
        classes = voc_class_names(records["train"] + records["test"])
    else:
        from almdn.data.yolo import read_yolo, read_yolo_names

        classes = read_yolo_names(data["root"])
        records = {k: read_yolo(data["root"], v, classes) for k, v in splits.items()}
    paths = {}
    for split, recs in records.items():
        path = Path(cache_dir) / "data" / f"{split}.json"
        paths[split] = path
        if path.exists():
            continue
        images, annotations = [], []
        for image_id, r in enumerate(recs, start=1):
            width, height = (r.width, r.height) if r.width and r.height else image_size(r.path)
            images.append({"id": image_id, "file_name": str(Path(r.path).resolve()), "width": width, "height": height})
            for b in r.boxes or []:
                if b.difficult:
                    continue
                w, h = b.x2 - b.x1, b.y2 - b.y1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": classes.index(b.class_name) + 1, "bbox": [b.x1, b.y1, w, h], "area": w * h, "iscrowd": 0})
        write_coco(path, images, annotations, [{"id": i + 1, "name": n} for i, n in enumerate(classes)])
    train_set = CocoDetectionDataset(paths["train"], image_root="/")
    return train_set, CocoDetectionDataset(paths["test"], image_root="/", class_names=train_set.classes)


def initial_labeled_set(image_ids: Sequence[int], size: int, seed: int) -> list[int]:
    """The seed's initial labeled set: a uniform sample, the same for every method."""
    if size > len(image_ids):
        raise ValueError(f"The initial labeled set ({size}) is larger than the pool ({len(image_ids)} images).")
    chosen = np.random.default_rng(seed).choice(len(image_ids), size=size, replace=False)
    return sorted(int(image_ids[i]) for i in chosen)


# --------------------------------------------------------------------------- models
def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)


def _cycle_metrics(full: dict[str, Any]) -> dict[str, Any]:
    """What a cycle records of its evaluation: the mAPs, the flat quality numbers and the two
    reports they come from."""
    return {**{k: float(full[k]) for k in METRIC_KEYS}, **headline(full), "mixture_collapse": full["mixture_collapse"], "uncertainty_quality": full["uncertainty_quality"]}


@dataclass
class ModelSpec:
    """Everything that determines a trained model."""

    build: dict[str, Any]
    train: dict[str, Any]
    labeled_ids: list[int]

    def key(self) -> str:
        blob = json.dumps({"build": self.build, "train": self.train, "labeled": sorted(self.labeled_ids)}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ModelCache:
    """Trained, evaluated models under ``root/<key>/`` (model.pt, metrics.json, spec.json)."""

    def __init__(
        self, root: Path, train_set: CocoDetectionDataset, test_set: CocoDetectionDataset, device: str, log: Callable[[str], None],
        conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    ):
        self.root, self.train_set, self.test_set, self.device, self.log = Path(root), train_set, test_set, device, log
        self.conf_threshold = conf_threshold

    def get(self, spec: ModelSpec, progress: bool = True) -> tuple[Any, dict]:
        """The model of ``spec`` and its test metrics, trained and evaluated if not cached."""
        folder = self.root / spec.key()
        model_path, metrics_path = folder / "model.pt", folder / "metrics.json"
        if model_path.exists() and metrics_path.exists():
            return load_model(model_path, device="cpu"), json.loads(metrics_path.read_text())
        _write_json(folder / "spec.json", dataclasses.asdict(spec))
        build = dict(spec.build)
        subset = self.train_set.subset([self.train_set.index_of(i) for i in spec.labeled_ids])
        # the initial weights are a function of the seed; init: coco | imagenet | none | PATH
        # (almdn.models.pretrained); fit_anchors: the SSD's anchors fitted to the labeled boxes
        started = build_starting_model(
            build.pop("arch", "ssd_small"), list(self.train_set.classes), init=build.pop("init", None),
            fit_anchors_to=subset if build.pop("fit_anchors", False) else None, seed=spec.train["seed"], **build,
        )
        model = started.model
        for note in started.notes:
            self.log(f"  {note}")
        config = TrainConfig(**{**spec.train, "milestones": tuple(spec.train["milestones"])})
        self.log(f"  training {spec.build.get('arch')}/{spec.build.get('head')} on {len(subset)} images ({folder.name})")
        trained = train_evaluate_save(
            model, subset, config, folder, test_set=self.test_set, device=self.device, resume=True, progress=progress,
            conf_threshold=self.conf_threshold, summarize=_cycle_metrics,
        )
        return model.eval(), trained.metrics


# --------------------------------------------------------------------------- runner
class Experiment:
    """Runs and resumes one experiment in ``out_dir``."""

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool = True, log: Callable[[str], None] = print):
        self.config, self.out, self.progress, self.log = config, Path(out_dir), progress, log
        self.train_set, self.test_set = load_datasets(config, progress, cache_dir=self.out)
        self.all_ids = [int(i) for i in self.train_set.image_ids]
        self.cache = ModelCache(self.out / "models", self.train_set, self.test_set, config.device, log, config.conf_threshold)
        self._boxes = {int(i): int(len(t["boxes"])) for i, t in zip(self.train_set.image_ids, self.train_set.targets())}
        self._check_same_protocol()
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(self.out / "config.json", dataclasses.asdict(config))

    #: Settings a results folder is tied to; methods, seeds, transfer and device may change.
    PROTOCOL_KEYS = ("data", "model", "train", "initial", "budget", "cycles", "conf_threshold", "low_threshold", "no_detection", "mc_passes", "mc_dropout", "ensemble_size", "transfer_head")

    def _check_same_protocol(self) -> None:
        """Refuse to mix results of different protocols in one folder (cached models are keyed
        by model, schedule and labeled ids, not by the dataset)."""
        path = self.out / "config.json"
        if not path.exists():
            return
        old, new = json.loads(path.read_text()), json.loads(json.dumps(dataclasses.asdict(self.config), default=list))
        changed = [k for k in self.PROTOCOL_KEYS if k in old and old[k] != new[k]]
        if changed:
            raise ValueError(f"'{self.out}' holds an experiment with different {', '.join(changed)}; choose another output folder.")

    def record_path(self, method: str, seed: int, cycle: int) -> Path:
        return self.out / "runs" / method.replace(":", "-") / f"seed-{seed}" / f"cycle-{cycle}.json"

    def _spec(self, method: Method, seed: int, member: int, labeled: list[int], build_overrides: dict | None = None) -> ModelSpec:
        build = {**self.config.model, **method.model_variant, **(build_overrides or {})}
        train_seed = seed + 1000 * member  # ensemble members: independent inits and data orders
        return ModelSpec(build, dataclasses.asdict(self.config.train_config(train_seed, len(labeled))), sorted(labeled))

    def run(self, methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> None:
        """Every (method, seed) run of the config (or the given subset), skipping finished cycles."""
        for seed in seeds if seeds is not None else self.config.seeds:
            for name in methods if methods is not None else self.config.methods:
                self.run_one(name, seed)

    def run_one(self, name: str, seed: int) -> list[dict]:
        cfg = self.config
        method = get_method(name, cfg.mc_dropout, cfg.ensemble_size)
        labeled = initial_labeled_set(self.all_ids, cfg.initial, seed)
        records = []
        for cycle in range(cfg.cycles):
            path = self.record_path(name, seed, cycle)
            if path.exists():
                record = json.loads(path.read_text())
            else:
                self.log(f"[{name} seed {seed}] cycle {cycle + 1}/{cfg.cycles}: {len(labeled)} labeled images")
                record = self._cycle(method, seed, cycle, labeled)
                _write_json(path, record)
                self.log(f"[{name} seed {seed}] cycle {cycle + 1}: mAP@0.5 {record['map50']:.4f}  mAP@0.75 {record['map75']:.4f}")
            records.append(record)
            labeled = sorted(set(record["labeled_ids"]) | set(record.get("selected_ids", [])))
        return records

    def _cycle(self, method: Method, seed: int, cycle: int, labeled: list[int]) -> dict:
        cfg = self.config
        # The last cycle only evaluates the first model: the other members would score nothing.
        members = method.members if cycle + 1 < cfg.cycles else 1
        specs = [self._spec(method, seed, m, labeled) for m in range(members)]
        trained = [self.cache.get(spec, self.progress) for spec in specs]
        models = [m for m, _ in trained]
        metrics = trained[0][1]  # the detector the method labels for is its first (only) model
        record = {
            "method": method.name,
            "seed": seed,
            "cycle": cycle,
            "num_labeled": len(labeled),
            "num_boxes": sum(self._boxes[i] for i in labeled),
            "labeled_ids": labeled,
            **{k: metrics[k] for k in METRIC_KEYS},
            # the first model's mixture collapse and uncertainty quality on the test split
            **{k: metrics.get(k) for k in QUALITY_KEYS},
            "model_keys": [s.key() for s in specs],
            "parameters": metrics["parameters"] * method.members,  # the method's size: all its members
            "train_seconds": sum(m["train_seconds"] for _, m in trained),
            "eval_s_per_image": metrics["eval_s_per_image"],
        }
        if cycle + 1 < cfg.cycles:
            labeled_set = set(labeled)
            pool_ids = [i for i in self.all_ids if i not in labeled_set]
            pool = self.train_set.subset([self.train_set.index_of(i) for i in pool_ids])
            predictions, predict_seconds = None, 0.0
            if method.reads_predictions:  # one forward pass per model, shared by the methods on it
                predictions, predict_seconds = self._cached_predictions(specs[0].key(), models[0], pool, pool_ids)
            result = score_with_models(
                method,
                models,
                pool,
                pool_ids,
                labeled=self.train_set.subset([self.train_set.index_of(i) for i in labeled]),
                budget=cfg.budget,
                seed=seed * 1000 + cycle,
                conf_threshold=cfg.conf_threshold,
                low_threshold=cfg.low_threshold,
                mc_passes=cfg.mc_passes,
                batch_size=cfg.batch_size,
                device=cfg.device,
                predictions=predictions,
            )
            inputs = None
            if method.batch is not None:
                inputs = self._batch_inputs(method, specs[0].key(), models[0], pool, pool_ids, labeled, result, predictions)
            selection = method.select(result.scores, cfg.budget, labeled, cfg.no_detection, seed=seed * 1000 + cycle, batch_inputs=inputs)
            # the second stage's reasons are part of the record (a top-B batch's rank is its score)
            reasons = selection.reasons if method.batch is not None else None
            if selection.message:
                self.log(f"[{method.name} seed {seed}] {selection.message}")
            scores_path = self.record_path(method.name, seed, cycle).with_suffix(".scores.csv")
            scores_path.parent.mkdir(parents=True, exist_ok=True)
            result.table.to_csv(scores_path, index=False)
            record.update(
                unscored_fraction=float(result.scores.isna().mean()) if len(result.scores) else 0.0,
                selected_ids=selection.image_ids,
                selected_by_score=selection.by_score,
                **({"selected_reasons": reasons} if reasons is not None else {}),
                acquisition_seconds=result.seconds + predict_seconds,
                acquisition_s_per_image=(result.seconds + predict_seconds) / max(len(pool_ids), 1),
            )
        return record

    def _batch_inputs(self, method: Method, key: str, model, pool, pool_ids: list[int], labeled: list[int], result, predictions) -> BatchInputs:
        """What the method's second stage reads: the scores and their drivers, and as its
        policy needs them the embeddings (cached per model), the predicted class mass and the
        labeled objects per class (the oracle's labels of the labeled set), the detection features."""
        cfg, needs = self.config, method.batch.needs
        num_classes = len(self.train_set.classes)
        inputs = BatchInputs(result.scores, drivers=score_drivers(result.table).reindex(result.scores.index), class_names=list(self.train_set.classes))
        kept = None
        if predictions is not None:
            kept = [kept_mask(p["scores"], cfg.conf_threshold) for p in predictions]
        if "class_mass" in needs:
            # the detections the stage-1 score read (a score-weighted method's faint ones too), so
            # that an image without a sure detection still has the classes it may hold
            threshold = method.detection_threshold(cfg.conf_threshold, cfg.low_threshold)
            inputs.class_mass = class_mass(detections_frame(predictions, pool_ids, threshold), pool_ids, num_classes)
            counts = np.zeros(num_classes)
            targets = self.train_set.targets()
            labels = np.concatenate([np.asarray(targets[self.train_set.index_of(i)]["labels"]) for i in labeled] or [np.zeros(0)])
            np.add.at(counts, labels.astype(int) - 1, 1.0)
            inputs.labeled_counts = counts
        if "embeddings" in needs or "detection_features" in needs:
            path = self.out / "models" / key / "pool_features.pt"
            cached = torch.load(path, weights_only=True) if path.exists() else None  # tensors only: never run a pickled object
            want_det = "detection_features" in needs
            if cached is None or cached["pool_ids"] != pool_ids or cached["labeled_ids"] != labeled or (want_det and cached.get("det") is None):
                labeled_set = self.train_set.subset([self.train_set.index_of(i) for i in labeled])
                boxes = [p["boxes"][k] for p, k in zip(predictions, kept)] if want_det else None
                emb, det = acquisition_features(model, pool, boxes, cfg.batch_size, cfg.device)
                lab, _ = acquisition_features(model, labeled_set, None, cfg.batch_size, cfg.device)
                cached = {"pool_ids": pool_ids, "labeled_ids": labeled, "emb": torch.from_numpy(emb), "labeled": torch.from_numpy(lab),
                          "det": None if det is None else [torch.from_numpy(d) for d in det]}
                tmp = path.with_name(path.name + ".tmp")
                torch.save(cached, tmp)
                os.replace(tmp, path)
            inputs.embeddings, inputs.labeled_embeddings = cached["emb"].numpy(), cached["labeled"].numpy()
            if want_det:
                inputs.detection_features = [d.numpy() for d in cached["det"]]
                inputs.detection_labels = [p["labels"][k].numpy() for p, k in zip(predictions, kept)]
                inputs.detection_scores = [p["scores"][k].double().numpy() for p, k in zip(predictions, kept)]
        return inputs

    def _cached_predictions(self, key: str, model, pool, pool_ids: list[int]) -> tuple[list[dict], float]:
        """The first model's pool detections and the seconds computing them took, computed
        once per model (almdn and entropy on the same model read the same forward pass, and
        each reports its full cost)."""
        path = self.out / "models" / key / "pool_predictions.pt"
        if path.exists():
            payload = torch.load(path, weights_only=True)  # cached tensors only: never run a pickled object
            if payload["pool_ids"] == pool_ids:
                return payload["predictions"], payload["seconds"]
        t0 = time.perf_counter()
        preds = predict(model, pool, batch_size=self.config.batch_size, device=self.config.device)
        seconds = time.perf_counter() - t0
        keep = ("boxes", "scores", "labels", *UNCERTAINTY_NAMES, "cls_entropy", "predicted_loss")
        preds = [{k: v for k, v in p.items() if k in keep} for p in preds]
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"pool_ids": pool_ids, "predictions": preds, "seconds": seconds}, tmp)
        os.replace(tmp, path)
        return preds, seconds

    # ------------------------------------------------------------------ transfer (Tab. 7)
    def run_transfer(self, arch: str, methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> None:
        """Train ``arch`` on every acquired labeled set of the finished runs (Tab. 7)."""
        cfg = self.config
        for seed in seeds if seeds is not None else cfg.seeds:
            for name in methods if methods is not None else cfg.methods:
                for cycle in range(cfg.cycles):
                    path = self.record_path(name, seed, cycle)
                    out = path.with_suffix(f".transfer-{arch}.json")
                    if not path.exists() or out.exists():
                        continue
                    record = json.loads(path.read_text())
                    method = Method(name, "transfer", head=cfg.transfer_head)
                    # another architecture keeps its own default input size (and anchors: their count is per architecture)
                    overrides = {"arch": arch} if arch == cfg.model.get("arch") else {
                        "arch": arch, "image_size": None, **{k: None for k in ("anchor_scales", "anchor_ratios") if k in cfg.model}
                    }
                    spec = self._spec(method, seed, 0, record["labeled_ids"], overrides)
                    _, metrics = self.cache.get(spec, self.progress)
                    _write_json(out, {"method": name, "seed": seed, "cycle": cycle, "arch": arch, "num_labeled": record["num_labeled"], **{k: metrics[k] for k in METRIC_KEYS}})

    def records(self) -> pd.DataFrame:
        """Every finished cycle record of this experiment, one row each."""
        return read_records(self.out)


def read_records(out_dir: str | Path, suffix: str = "") -> pd.DataFrame:
    """The cycle records under ``out_dir/runs`` (``suffix=".transfer-<arch>"`` for Tab. 7's)."""
    pattern = re.compile(rf"cycle-\d+{re.escape(suffix)}\.json")
    paths = sorted(p for p in (Path(out_dir) / "runs").glob("*/seed-*/cycle-*.json") if pattern.fullmatch(p.name))
    return pd.DataFrame([json.loads(p.read_text()) for p in paths])
