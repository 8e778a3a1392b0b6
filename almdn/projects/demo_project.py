"""The built-in demo project: what ``streamlit run app/main.py`` opens on first run.

It is created in steps, each reported as progress, each skipped when already done (so an
interrupted set-up resumes):

1. generate a small demo dataset (digits on real photographs, :mod:`almdn.data.demo`) with
   the easier generator settings of ``configs/demo.yaml``, so that a short CPU training gives
   a detector that finds digits;
2. create the project store: a random ``initial`` images of the train split are the labeled
   set (with their boxes), the rest of it is the unlabeled pool (boxes dropped: annotators
   label them), the test split is the test set;
3. train the initial model version, evaluate it and score the pool (:func:`almdn.workflow.run_round`).

The pool's true boxes stay in the dataset's COCO file, so a simulated annotator (the tests,
a demo without people) can label what the app sends out.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from almdn.projects.rounds import RoundSettings
from almdn.projects.store import STORE_FILE, Store

if TYPE_CHECKING:
    from almdn.data.demo import DemoConfig
    from almdn.data.records import ImageRecord

DEMO_NAME = "demo"
#: Store meta key marking a finished import of the demo data.
_IMPORTED_KEY = "demo.imported"


def default_projects_root() -> Path:
    """Where the app keeps its projects: ``$ALMDN_PROJECTS``, else ``./projects``."""
    return Path(os.environ.get("ALMDN_PROJECTS") or "projects").absolute()


#: The demo project's scoring threshold: lower than the default, for its young first model.
DEMO_CONF_THRESHOLD: float = 0.3


@dataclass
class DemoProjectConfig:
    """Sizes of the demo project.

    The defaults keep the first run within 5 minutes on a 2-core CPU: 1,300 train + 200 test
    images of 128 px generate in seconds; the first model is the SSD on ImageNet MobileNetV2
    (``ssd_mobilenet_v2_small``), 400 AdamW iterations at batch 32 with SSD's augmentation
    (no horizontal flip: a mirrored digit is another digit or none) on the 500-image initial
    set, leaving 800 images in the pool (``bench/demo_detector.py`` measures it). A confidence
    threshold of :data:`DEMO_CONF_THRESHOLD` (0.3, below the default
    :data:`almdn.registry.DEFAULT_CONF_THRESHOLD`) keeps enough of the young model's detections to
    rank most of the pool.
    """

    data: DemoConfig = field(default_factory=lambda: _demo_config(
        num_train=1300, num_test=200, seed=0,
        # configs/demo.yaml's easier settings: the detector learns them in a short training.
        low_contrast_fraction=0.0, occlusion_fraction=0.0, truncation_fraction=0.0, clutter_fraction=0.0, min_size=20,
    ))
    initial: int = 500
    settings: RoundSettings = field(
        default_factory=lambda: RoundSettings(
            arch="ssd_mobilenet_v2_small", iterations=400, batch_size=32, lr=0.002, optimizer="adamw", augment="ssd", hflip=False,
            zoom_out_max=2.0, conf_threshold=DEMO_CONF_THRESHOLD,
        )
    )
    seed: int = 0


def _demo_config(**fields: Any) -> DemoConfig:
    # Imported on use: the app's first page reads this module, and the generator pulls in torch.
    from almdn.data.demo import DemoConfig

    return DemoConfig(**fields)


def demo_data_dir(project_dir: str | os.PathLike[str]) -> Path:
    return Path(project_dir) / "data"


def is_ready(project_dir: str | os.PathLike[str]) -> bool:
    """True when the demo project has its store, its data and a scored model version."""
    path = Path(project_dir) / STORE_FILE
    if not path.exists():
        return False
    with Store.open(project_dir, create=False) as store:
        return store.meta(_IMPORTED_KEY) == "1" and store.latest_model_version(scored=True) is not None


def create_demo_project(
    project_dir: str | os.PathLike[str],
    config: DemoProjectConfig | None = None,
    progress: Callable[[float, str | None], None] = lambda fraction, stage=None: None,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    name: str = DEMO_NAME,
    relabel: Callable[[Store, list[ImageRecord], list[str]], list[ImageRecord]] | None = None,
) -> dict[str, Any]:
    """Create (or finish creating) the demo project in ``project_dir``; returns a summary.

    ``relabel(store, records, classes)`` may replace the initial labeled set's records before
    they are stored, inside the import's transaction (``scripts/review_demo.py`` plants label
    errors there and notes them in the store's meta); ``name`` is the project's name.
    Progress: data 0-15 %, store 15-20 %, initial model 20-100 %.
    """
    from almdn.data.demo import generate_demo_dataset
    from almdn.projects.sources import coco_records
    from almdn.workflow import run_round

    config = config or DemoProjectConfig()
    project_dir = Path(project_dir)
    progress(0.0, f"generating the demo dataset ({config.data.num_train} pool + {config.data.num_test} test images)")
    info = generate_demo_dataset(demo_data_dir(project_dir), config.data, progress=False)
    progress(0.15, "creating the project store")
    store = Store.open(project_dir, name=name)
    try:
        if store.meta(_IMPORTED_KEY) != "1":
            train_records, classes = coco_records(info["train_annotations"])
            test_records, _ = coco_records(info["test_annotations"])
            rng = np.random.default_rng(config.seed)
            initial = set(rng.choice(len(train_records), size=min(config.initial, len(train_records)), replace=False).tolist())
            labeled = [r for i, r in enumerate(train_records) if i in initial]
            pool = [dataclasses.replace(r, boxes=None) for i, r in enumerate(train_records) if i not in initial]
            with store.transaction():  # all or nothing: a half-imported demo is never seen
                store.add_classes(classes)
                if relabel is not None:
                    labeled = relabel(store, labeled, classes)
                store.add_images(labeled, split="labeled", source=f"{name} (initial labeled set)")
                store.add_images(pool, split="pool", source="demo (pool)")
                store.add_images(test_records, split="test", source="demo (test)")
                store.set_meta(_IMPORTED_KEY, "1")
                if store.meta("app.round_settings") is None:
                    config.settings.save(store)
        result = None
        if store.latest_model_version(scored=True) is None:
            progress(0.2, "training the initial model")
            result = run_round(
                store, RoundSettings.load(store),
                progress=lambda f, stage=None: progress(0.2 + 0.8 * f, stage),
                on_metrics=on_metrics, should_stop=should_stop, note=f"initial model of the {name} project",
            )
        counts = store.counts()
    finally:
        store.close()
    summary = f"Demo project ready: {counts['labeled']} labeled, {counts['pool']} pool and {counts['test']} test images"
    if result is not None:
        summary += "; " + result.summary()
    return {"counts": counts, "round": result.to_dict() if result is not None else None, "summary": summary}


def demo_job(context, project_dir: str | None = None, **sizes: Any) -> dict[str, Any]:
    """:func:`create_demo_project` as a background job (:mod:`almdn.projects.jobs`).

    ``sizes`` may override ``num_train``, ``num_test``, ``initial``, ``iterations`` and
    ``batch_size`` (the tests use tiny ones)."""
    config = DemoProjectConfig()
    data = {k: sizes.pop(k) for k in ("num_train", "num_test") if k in sizes}
    if data:
        config.data = dataclasses.replace(config.data, **data)
    if "initial" in sizes:
        config.initial = int(sizes.pop("initial"))
    train = {k: sizes.pop(k) for k in ("iterations", "batch_size") if k in sizes}
    if train:
        config.settings = config.settings.replace(**train)
    if sizes:
        raise TypeError(f"unknown demo settings {sorted(sizes)}")
    # a cancelled round ends the job as cancelled: both are almdn.errors.Cancelled
    return create_demo_project(project_dir or context.folder.parent.parent, config, progress=context.progress, on_metrics=context.log_metrics, should_stop=context.cancelled)
