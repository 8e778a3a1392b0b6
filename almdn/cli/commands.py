"""The ``almdn`` command line: the same library functions the app calls."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# Spin-waiting OpenMP threads make torch 10-20x slower beside any other busy process on a
# small machine (measured on a 2-core CPU); set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from almdn.registry import (  # noqa: E402
    ARCH_NAMES, AUGMENT_POLICIES, CLASS_LOSSES, DEFAULT_AGGREGATION, DEFAULT_AUGMENT, DEFAULT_CLS_LOSS, DEFAULT_CONF_THRESHOLD,
    DEFAULT_NUM_COMPONENTS, HEAD_TYPES, OPTIMIZERS,
)

from almdn.cli.errors import UserError, friendly, skipped_exit  # noqa: E402


def _precision_options(func):
    """--amp and --channels-last: mixed precision on CUDA (autocast ignored with a note on the CPU, channels_last honoured for SSDs)."""
    func = click.option("--channels-last", is_flag=True, help="channels_last memory format (CUDA; SSD models on the CPU too: faster for MobileNetV2, float32 rounding differs).")(func)
    return click.option("--amp", default="off", show_default=True, type=click.Choice(["off", "bf16", "fp16"]), help="Mixed precision on CUDA (fp16 adds loss scaling).")(func)


def _join_torchrun(device: str):
    """Join the process group when started by torchrun (a context of rank 0 of 1 otherwise)."""
    from almdn.engine import distributed

    return distributed.init_from_env(device)


def _resolve_annotations(data: str, split: str) -> Path:
    """``data`` is a COCO json file, or a dataset folder with ``annotations/<split>.json``."""
    path = Path(data)
    if path.is_file():
        return path
    candidate = path / "annotations" / f"{split}.json"
    if candidate.is_file():
        return candidate
    raise UserError(f"No '{split}' annotations found: '{data}' is neither a COCO json file nor a folder with '{candidate.relative_to(path)}'.")


@click.group()
@click.version_option(package_name="almdn")
def main() -> None:
    """Active learning for object detection with mixture density networks."""


@main.command("demo-data")
@click.option("--out", default="data/demo", show_default=True, type=click.Path(), help="Folder to write the dataset to.")
@click.option("--num-train", default=3000, show_default=True, help="Images in the train pool.")
@click.option("--num-test", default=500, show_default=True, help="Held-out test images.")
@click.option("--image-size", default=128, show_default=True, help="Square image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@click.option("--kind", default="digits", show_default=True, type=click.Choice(["digits", "shapes"]),
              help="digits: MNIST digits on photographs; shapes: 10 drawn glyph classes on other photographs and textures, with a steeper long tail.")
@friendly
def demo_data(out: str, num_train: int, num_test: int, image_size: int, seed: int, kind: str) -> None:
    """Generate the demo dataset (digits or shapes on real photographs, COCO format) deterministically."""
    from almdn.data.demo import DemoConfig, describe, generate_demo_dataset

    config = DemoConfig(num_train=num_train, num_test=num_test, image_size=image_size, seed=seed, kind=kind)
    info = generate_demo_dataset(out, config)
    click.echo(f"Demo dataset ({kind}) in {info['root']}: {info['num_train_images']} train / {info['num_test_images']} test images.")
    for split, s in describe(info["root"])["splits"].items():
        size = s["box_size"]
        sizes = f", box side {size['min']:g}-{size['max']:g} px (median {size['median']:g})" if size else ""
        click.echo(f"{split}: {s['objects']} {kind}{sizes}, {s['empty_images']} empty images, {s['partly_hidden']} partly hidden, "
                   f"{s['low_contrast']} low-contrast, {s['near_duplicates']} near-duplicates.")


_image_root_option = click.option(
    "--image-root", default=None, type=click.Path(file_okay=False),
    help="Folder the COCO json's file_name entries are relative to (default: images/ beside the annotations folder, or images/ beside the json).",
)


def _model_options(func):
    options = [
        click.option("--arch", default="ssd_small", show_default=True, type=click.Choice(list(ARCH_NAMES))),
        click.option("--head", default="gmm", show_default=True, type=click.Choice(list(HEAD_TYPES))),
        click.option("-K", "--components", "components", default=DEFAULT_NUM_COMPONENTS, show_default=True, help="Mixture components K."),
        click.option("--loc-density", default="paper", show_default=True, type=click.Choice(["paper", "reference"])),
        click.option("--cls-loss", default=DEFAULT_CLS_LOSS, show_default=True, type=click.Choice(list(CLASS_LOSSES)), help="Classification loss: eq5 (the paper's Eq. 5) or type2 (mixture likelihood; keeps the class mixture from collapsing)."),
        click.option("--extras-dropout", default=0.0, show_default=True, help="Dropout on the extra layers (MC-dropout: 0.1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _anchor_options(func):
    """--image-size, --anchor-scales, --anchor-ratios, --fit-anchors (small objects; see
    almdn.models.anchors)."""
    options = [
        click.option("--image-size", type=int, default=None, help="Model input side in pixels (SSD: the square it resizes to; Faster R-CNN: the shorter side). Default: the architecture's; larger gives small objects a finer anchor grid."),
        click.option("--anchor-scales", default=None, help="Anchor sizes as fractions of the input side, increasing, comma-separated: SSD one per feature level plus one (e.g. ssd_mobilenet_v2: 7 values), Faster R-CNN one per FPN level. Default: the architecture's."),
        click.option("--anchor-ratios", default=None, help="Anchor aspect ratios (each r gives r:1 and 1:r boxes), comma-separated for every level, or per level separated by ';' (SSD). Default: the architecture's."),
        click.option("--fit-anchors", is_flag=True, help="Fit the anchor scales and ratios to the training boxes (SSD; as YOLO's autoanchor) and print the coverage before and after."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _anchor_build_options(image_size, anchor_scales, anchor_ratios) -> dict:
    """build_model keywords from the anchor options (only those given)."""
    from almdn.models.anchors import parse_anchor_ratios, parse_anchor_scales

    try:
        options = {"image_size": image_size, "anchor_scales": parse_anchor_scales(anchor_scales), "anchor_ratios": parse_anchor_ratios(anchor_ratios)}
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return {k: v for k, v in options.items() if v is not None}


@main.command()
@click.option("--data", required=True, help="Dataset folder (annotations/train.json) or a COCO json file.")
@click.option("--test-data", default=None, help="Test set for evaluation (default: the dataset folder's test split).")
@_image_root_option
@click.option("--out", required=True, type=click.Path(), help="Run folder: checkpoints, model.pt, metrics.json.")
@_model_options
@_anchor_options
@click.option("--preset", default="demo", show_default=True, type=click.Choice(["demo", "paper"]), help="Schedule defaults.")
@click.option("--iterations", type=int, default=None, help="SGD steps (overrides the preset).")
@click.option("--batch-size", type=int, default=None, help="Images per step; under torchrun the global batch, split evenly over the processes.")
@click.option("--lr", type=float, default=None)
@click.option("--warmup-iters", type=int, default=None)
@click.option("--milestones", default=None, help="Comma-separated iterations where lr drops by 10x.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--workers", default=0, show_default=True, help="Data-loading worker processes.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from the run folder's checkpoint.")
@click.option("--no-pretrained", is_flag=True, help="Do not load ImageNet backbone weights (same as --init none).")
@click.option("--init", "init", default="imagenet", show_default=True, help="Starting point: coco (torchvision's COCO-trained detector: ssd300_vgg16, ssdlite320_mobilenet_v3_large, frcnn_resnet50_fpn), imagenet (ImageNet backbone), none (random), or PATH to a torchvision state dict of the same architecture.")
@click.option("--optimizer", default=None, type=click.Choice(list(OPTIMIZERS)), help="Optimizer (default: the preset's).")
@click.option("--augment", default=DEFAULT_AUGMENT, show_default=True, type=click.Choice(list(AUGMENT_POLICIES)), help="Training augmentation: auto = SSD's recipe for SSD, flip for Faster R-CNN.")
@click.option("--no-hflip", is_flag=True, help="Never flip horizontally (for classes a mirror changes, such as digits).")
@_precision_options
@friendly
def train(data, test_data, image_root, out, arch, head, components, loc_density, cls_loss, extras_dropout, image_size, anchor_scales, anchor_ratios, fit_anchors, preset, iterations, batch_size, lr, warmup_iters, milestones, seed, device, workers, resume, no_pretrained, init, optimizer, augment, no_hflip, amp, channels_last) -> None:
    """Train a mixture-density SSD, then evaluate it on the test split.

    Multi-GPU / multi-process: torchrun --nproc_per_node N -m almdn.cli train ... (DDP; the
    batch size is the global batch; rank 0 writes the checkpoints and evaluates).
    """
    import dataclasses

    from almdn.engine import distributed

    from almdn.data.coco import CocoDetectionDataset
    from almdn.engine.checkpoint import checkpoint_model, read_checkpoint
    from almdn.engine.fit import build_starting_model, train_evaluate_save
    from almdn.engine.train import TrainConfig

    train_set = CocoDetectionDataset(_resolve_annotations(data, "train"), image_root=image_root)
    config = TrainConfig.demo(iterations or 900) if preset == "demo" else TrainConfig.paper()
    overrides = {"iterations": iterations, "batch_size": batch_size, "lr": lr, "warmup_iters": warmup_iters, "optimizer": optimizer}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if milestones:
        overrides["milestones"] = tuple(int(m) for m in milestones.split(","))
    config = dataclasses.replace(
        config, seed=seed, num_workers=workers, amp=amp, channels_last=channels_last, augment=augment, hflip=not no_hflip, **overrides
    )
    ctx = _join_torchrun(device)
    if config.batch_size % ctx.world_size:
        raise UserError(f"The batch size {config.batch_size} cannot be split evenly over {ctx.world_size} processes; choose a multiple of {ctx.world_size}.")
    out_dir = Path(out)
    ckpt = out_dir / "checkpoint.pt"
    if resume and ckpt.exists():
        model = checkpoint_model(read_checkpoint(ckpt), ckpt, weights=False)
        if ctx.is_main:
            click.echo(f"Resuming from {ckpt}.")
    else:
        try:
            started = build_starting_model(
                arch, train_set.classes, head=head, num_components=components, cls_loss=cls_loss, loc_density=loc_density,
                init="none" if no_pretrained else init, fit_anchors_to=train_set if fit_anchors else None, extras_dropout=extras_dropout,
                **_anchor_build_options(image_size, anchor_scales, anchor_ratios),
            )
        except ValueError as exc:  # an image size or anchors the architecture cannot take, no boxes to fit anchors to
            raise UserError(str(exc)) from None
        model = started.model
        for note in started.notes if ctx.is_main else ():
            click.echo(note)
    test_path = Path(test_data) if test_data else Path(data) / "annotations" / "test.json"
    test_set = CocoDetectionDataset(test_path, image_root=image_root, class_names=train_set.classes) if test_path.is_file() else None
    trained = train_evaluate_save(
        model, train_set, config, out_dir, test_set=test_set, device=device, resume=resume, eval_progress=True, summarize=_test_metrics,
        checkpoint_extra={"train_config": dataclasses.asdict(config)}, keep_resume_state=True,
    )
    if not ctx.is_main:
        distributed.shutdown()
        return
    if trained.evaluation is not None:
        click.echo(_metrics_line(trained.metrics))
        _echo_quality(trained.evaluation)
    click.echo(f"Model saved to {trained.checkpoint}.")
    distributed.shutdown()


def _echo_quality(metrics: dict) -> None:
    """The mixture-collapse and uncertainty-quality lines of an evaluation, with a warning
    when the class mixture has collapsed."""
    from almdn.engine.quality import collapse_warning, headline

    flat = headline(metrics)

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    click.echo(
        f"Class mixture: {fmt(flat['cls_collapsed_fraction'])} collapsed, {fmt(flat['cls_effective_components'])} effective components; "
        f"box mixture: {fmt(flat['box_collapsed_fraction'])} collapsed, {fmt(flat['box_effective_components'])} effective components."
    )
    click.echo(
        "AUROC for false vs true positives: "
        + ", ".join(f"{name} {fmt(flat['auroc_' + name])}" for name in ("cls_aleatoric", "cls_epistemic", "cls_entropy", "one_minus_score"))
    )
    click.echo(
        "Box uncertainty vs 1 - IoU (Spearman, true positives): "
        + ", ".join(f"{name} {fmt(flat['spearman_' + name])}" for name in ("loc_aleatoric", "loc_epistemic"))
    )
    warning = collapse_warning(metrics["mixture_collapse"])
    if warning:
        click.echo(f"Warning: {warning}")


def _test_metrics(full: dict) -> dict:
    """What ``almdn train`` keeps of an evaluation: its numbers (to 4 decimals) and the
    mixture-collapse and uncertainty-quality reports."""
    return {**{k: round(float(v), 4) for k, v in full.items() if isinstance(v, (int, float))},
            **{k: full[k] for k in ("mixture_collapse", "uncertainty_quality")}}


def _metrics_line(m: dict) -> str:
    return "mAP@0.5 {map50:.3f}  mAP@0.75 {map75:.3f}  mAP@[.5:.95] {map:.3f}  VOC07 mAP@0.5 {voc07_map50:.3f}".format(**m)


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="A model.pt from almdn train.")
@click.option("--data", required=True, help="Dataset folder or COCO json file.")
@click.option("--split", default="test", show_default=True)
@_image_root_option
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default=None, type=click.Path(), help="Also write the metrics, mixture-collapse and uncertainty-quality reports as JSON here.")
@click.option("--conf-threshold", default=DEFAULT_CONF_THRESHOLD, show_default=True, help="Detections at or above this score enter the collapse and uncertainty-quality reports.")
@friendly
def evaluate(checkpoint, data, split, image_root, device, out, conf_threshold) -> None:
    """mAP@0.5 / @0.75 (pycocotools) and VOC07 11-point mAP of a trained model, the collapse of
    its mixtures and how well its uncertainties predict its false positives."""
    from almdn.data.coco import CocoDetectionDataset
    from almdn.engine.checkpoint import load_model
    from almdn.engine.inference import evaluate as run_eval

    model = load_model(checkpoint, device="cpu")
    dataset = CocoDetectionDataset(_resolve_annotations(data, split), image_root=image_root, class_names=model.class_names)
    metrics = run_eval(model, dataset, device=device, progress=True, conf_threshold=conf_threshold)
    click.echo(_metrics_line(metrics))
    for label, ap in sorted(metrics["per_class_ap50"].items()):
        click.echo(f"  {model.class_names[int(label) - 1]:>12s}  AP@0.5 {ap:.3f}")
    _echo_quality(metrics)
    if out:
        Path(out).write_text(json.dumps(metrics, indent=2, default=float))


@main.command()
@click.option("--checkpoint", required=True, type=click.Path())
@click.option("--images", required=True, help="A folder of images, a COCO json file, or a dataset folder (the split --split names).")
@click.option("--split", default="train", show_default=True, help="Which split of a dataset folder to score (annotations/<split>.json).")
@_image_root_option
@click.option("--out", required=True, type=click.Path(), help="Folder for images.csv, detections.csv, detections.json.")
@click.option("--conf-threshold", default=DEFAULT_CONF_THRESHOLD, show_default=True, help="Detections at or above this score are kept for scoring.")
@click.option("--aggregation", default=DEFAULT_AGGREGATION, show_default=True, help="How the four z-scored uncertainties make the final score (Tab. 2): max_all, sum_all, alb, max_cls, ...")
@click.option("--no-detection", default="last", show_default=True, type=click.Choice(["last", "random"]), help="Where images without a kept detection go in the ranking.")
@click.option("--batch-size", default=32, show_default=True, help="Images per forward pass (per process under torchrun).")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", default=0, show_default=True, help="Data-loading worker processes (per process under torchrun).")
@_precision_options
@friendly
def score(checkpoint, images, split, image_root, out, conf_threshold, aggregation, no_detection, batch_size, device, workers, amp, channels_last) -> None:
    """Score every image: the four uncertainties per detection, raw and z-scored per image.

    Sharded: torchrun --nproc_per_node N -m almdn.cli score ... (each process scores its share
    of the pool; the z-scores use every process's detections; rank 0 writes the files).
    """
    import numpy as np

    from almdn.acquisition.methods import PoolInputs, paper_method
    from almdn.acquisition.scoring import kept_pool_detections
    from almdn.data.coco import CocoDetectionDataset
    from almdn.data.images import ImageFolderDataset
    from almdn.engine import distributed
    from almdn.engine.checkpoint import load_model
    from almdn.models.postprocess import MIXTURE_KEYS, mixture_records

    t0 = time.perf_counter()
    ctx = _join_torchrun(device)
    model = load_model(checkpoint, device="cpu")
    source = Path(images)
    if source.is_dir() and not (source / "annotations").is_dir():
        dataset = ImageFolderDataset.from_folder(source)
        names = [dataset.file_name(i) for i in range(len(dataset))]
    else:
        # The annotation file names the images; they are read like a folder's, so a broken
        # one is listed and skipped here too instead of stopping the run.
        annotations = _resolve_annotations(images, split)
        if source.is_dir() and ctx.is_main:  # a dataset folder has several splits: say which one this is
            click.echo(f"Scoring the '{split}' split of {source} ({annotations}); choose another with --split.")
        coco = CocoDetectionDataset(annotations, image_root=image_root, class_names=model.class_names)
        sizes = [(size[1], size[0]) if size else None for size in coco.image_sizes]  # (height, width) there
        dataset = ImageFolderDataset(coco.file_paths, sizes=sizes)
        dataset.image_ids = list(coco.image_ids)
        names = [str(p.relative_to(coco.image_root)) if p.is_relative_to(coco.image_root) else str(p) for p in coco.file_paths]
    if len(dataset) == 0:
        raise UserError(f"No images found in '{images}'.")
    detections, readable = kept_pool_detections(
        model, dataset, conf_threshold, batch_size, ctx.device, workers, amp, channels_last, progress=True, mixture=True
    )
    if not ctx.is_main:  # every rank holds the whole pool's detections; one writes them
        distributed.shutdown()
        return
    broken = [names[i] for i in np.flatnonzero(~readable)]
    ok = np.flatnonzero(readable).tolist()
    ids = [dataset.image_ids[i] for i in ok]
    try:
        method = paper_method(aggregation)
        table = method.score(PoolInputs(ids, detections=detections)).table
    except ValueError as exc:
        raise UserError(str(exc)) from None
    table.insert(1, "file_name", [names[i] for i in ok])
    order = method.select(table.set_index("image_id")["score"], len(table), no_detection=no_detection).image_ids
    table = table.set_index("image_id").loc[order].reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    detections.insert(4, "class_name", [model.class_names[int(label) - 1] for label in detections["label"]])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "images.csv", index=False)
    columns = detections.drop(columns=list(MIXTURE_KEYS))
    columns.to_csv(out_dir / "detections.csv", index=False)
    # detections.json: each detection's columns and its mixture (weights, sigmas, component
    # boxes, class weights and probabilities).
    mixtures = mixture_records({key: np.stack(detections[key].to_list()) for key in MIXTURE_KEYS}) if len(detections) else []
    by_image: dict[int, list[dict]] = {}
    for image_id, record, mixture in zip(detections["image_id"], columns.drop(columns="image_id").to_dict("records"), mixtures):
        by_image.setdefault(int(image_id), []).append({**record, **mixture})
    payload = {
        "checkpoint": str(checkpoint),
        "conf_threshold": conf_threshold,
        "images": [
            {"image_id": int(ids[j]), "file_name": names[i], "detections": by_image.get(int(ids[j]), [])} for j, i in enumerate(ok)
        ],
        "unreadable": broken,
    }
    (out_dir / "detections.json").write_text(json.dumps(payload, default=float))
    seconds = time.perf_counter() - t0
    click.echo(f"Scored {len(ok)} images ({len(detections)} detections >= {conf_threshold}) in {seconds:.1f} s; wrote {out_dir}/images.csv, detections.csv, detections.json.")
    distributed.shutdown()
    # Under torchrun a non-zero exit of one rank is reported by the launcher as a crash with a
    # traceback: there the skipped files are listed and the status stays 0.
    skipped_exit(broken, exit_status=ctx.world_size == 1)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="An experiment YAML (configs/*.yaml).")
@click.option("--out", default=None, type=click.Path(), help="Results folder (default: runs/<config name>).")
@click.option("--methods", default=None, help="Comma-separated subset of the config's methods (or others).")
@click.option("--seeds", default=None, help="Comma-separated seeds (default: the config's).")
@click.option("--transfer", "transfer", multiple=True, help="Also train this architecture on every acquired set (Tab. 7).")
@click.option("--device", default=None, help="auto, cpu, cuda, ... (default: the config's).")
@click.option("--report-only", is_flag=True, help="Only rewrite results.csv/md/html from the finished cycles.")
@friendly
def experiment(config_path, out, methods, seeds, transfer, device, report_only) -> None:
    """Run (or resume) an active-learning experiment and write its tables and figure."""
    from almdn.experiments.runner import Experiment, ExperimentConfig
    from almdn.experiments.report import write_report

    try:
        config = ExperimentConfig.from_yaml(config_path)
    except (ValueError, TypeError) as exc:
        raise UserError(f"Invalid experiment config '{config_path}': {exc}") from None
    if device:
        config.device = device
    if transfer:
        config.transfer = list(dict.fromkeys([*config.transfer, *transfer]))
    out_dir = Path(out or Path("runs") / config.name)
    method_list = methods.split(",") if methods else None
    seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    if not report_only:
        t0 = time.perf_counter()
        try:
            runner = Experiment(config, out_dir, progress=True, log=click.echo)
            runner.run(method_list, seed_list)
            for arch in config.transfer:
                runner.run_transfer(arch, method_list, seed_list)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        click.echo(f"Experiment finished in {(time.perf_counter() - t0) / 60:.1f} min.")
    try:
        paths = write_report(out_dir)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(paths["md"].read_text())
    click.echo(f"Wrote {paths['csv']}, {paths['md']}, {paths['html']}.")


# The project store and the Label Studio round trip: almdn project / ls / push / pull.
from almdn.cli import labeling as cli_labeling  # noqa: E402
from almdn.cli import review as cli_review  # noqa: E402,F401  (adds 'almdn project review' to cli_labeling's project group, issue 22)

for _command in cli_labeling.COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    sys.exit(main())
