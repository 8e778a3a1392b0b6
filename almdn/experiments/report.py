"""Tables and figures of an experiment, in the layout of the paper's.

From the cycle records of :mod:`almdn.experiments.runner`: ``results.csv`` (one row per method, seed and
cycle), ``results.md`` (Tab. 4: mAP@0.5 and @0.75 per cycle as mean ± std over seeds with the
parameter count and forward times; Tab. 2: the aggregation functions; Tab. 3: overlap of the
images each single uncertainty selects; Tab. 7: transfer to another architecture; and how the
paper's method compares with random sampling) and ``results.html`` (a plotly figure).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from almdn.acquisition.aggregation import SHORT_NAMES
from almdn.experiments.runner import QUALITY_KEYS, read_records

CSV_COLUMNS = [
    "method", "seed", "cycle", "num_labeled", "num_boxes", "map50", "map75", "map", "voc07_map50",
    "parameters", "train_seconds", "eval_s_per_image", "acquisition_s_per_image", "selected_by_score", "unscored_fraction",
    *QUALITY_KEYS,
]


#: The methods every other is paired with by seed in the report: random, entropy (Tab. 4's
#: baselines) and entropy_weighted (the default since the 5-seed demo protocol: a method that
#: claims to help must beat it on the same seeds).
PAIRED_BASELINES = ("random", "entropy", "entropy_weighted")


def curves(records: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds of ``metric`` per method and cycle, with the
    mean labeled images (and boxes, where recorded) at each cycle."""
    if "num_boxes" not in records:
        records = records.assign(num_boxes=np.nan)
    grouped = records.groupby(["method", "cycle"])
    table = grouped.agg(
        num_labeled=("num_labeled", "mean"), num_boxes=("num_boxes", "mean"), mean=(metric, "mean"), std=(metric, "std"), seeds=("seed", "nunique")
    )
    return table.reset_index()


def _fmt(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" if np.isnan(std) else f"{100 * mean:.2f}±{100 * std:.2f}"


def _method_order(methods) -> list[str]:
    preferred = ["random", "entropy", "coreset", "llal", "mc_dropout", "ensemble", "typiclust", "almdn", "almdn_eq5", "almdn_type2", "almdn_weighted", "almdn_eff"]
    return sorted(methods, key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))


def map_table(records: pd.DataFrame, metric: str, methods: list[str] | None = None) -> str:
    """Tab. 4 layout: mAP per cycle (mean ± std over seeds, in %), parameters, forward time."""
    c = curves(records, metric)
    cycles = sorted(c["cycle"].unique())
    methods = _method_order(methods or c["method"].unique())
    labels = {cy: int(round(c.loc[c["cycle"] == cy, "num_labeled"].median())) for cy in cycles}
    head = ["method", *[f"cycle {cy + 1} ({labels[cy]} img)" for cy in cycles], "params (M)", "detector forward (s/img)", "acquisition (s/pool img)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        rows = c[c["method"] == m].set_index("cycle")
        rec = records[records["method"] == m]
        cells = [_fmt(rows.loc[cy, "mean"], rows.loc[cy, "std"]) if cy in rows.index else "" for cy in cycles]
        acq = rec["acquisition_s_per_image"].mean() if "acquisition_s_per_image" in rec else float("nan")
        cells += [f"{rec['parameters'].mean() / 1e6:.3f}", f"{rec['eval_s_per_image'].mean():.4f}", "" if np.isnan(acq) else f"{acq:.4f}", str(int(rows["seeds"].max()))]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overlap_table(out_dir: str | Path, method: str, budget: int) -> pd.DataFrame | None:
    """Tab. 3: % overlap of the top-``budget`` pool images by each single uncertainty (its
    z-scored image value), averaged over every scored (seed, cycle) of ``method``."""
    folder = Path(out_dir) / "runs" / method.replace(":", "-")
    mats = []
    for path in sorted(folder.glob("seed-*/cycle-*.scores.csv")):
        table = pd.read_csv(path)
        cols = [f"z_{SHORT_NAMES[s]}" for s in SHORT_NAMES]
        if not set(cols) <= set(table.columns):
            return None
        tops = {s: set(table.sort_values(f"z_{SHORT_NAMES[s]}", ascending=False, kind="stable", na_position="last")["image_id"].head(budget)) for s in SHORT_NAMES}
        mats.append([[100.0 * len(tops[a] & tops[b]) / max(budget, 1) for b in SHORT_NAMES] for a in SHORT_NAMES])
    if not mats:
        return None
    names = [f"u_{s}" for s in SHORT_NAMES]
    return pd.DataFrame(np.mean(mats, axis=0), index=names, columns=names)


def labels_to_reach(curve: pd.DataFrame, target: float, cost: str = "num_labeled") -> float:
    """Labeled images (``cost="num_boxes"``: labeled boxes) at which a mean curve first reaches
    ``target`` (linear interpolation between cycles); NaN if it never does."""
    xs, ys = curve[cost].to_numpy(float), curve["mean"].to_numpy(float)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return float("nan")


def comparison_with_random(records: pd.DataFrame) -> list[dict]:
    """For each method: its mean mAP@0.5 gain over random per cycle after the first, and the
    labels it needs to reach random's final mean mAP@0.5 (as a fraction of random's), in
    images and in boxes (a user paying per box pays for crowded images)."""
    c = curves(records, "map50")
    rand = c[c["method"] == "random"].sort_values("cycle")
    if rand.empty:
        return []
    target, rand_labels = float(rand["mean"].iloc[-1]), float(rand["num_labeled"].iloc[-1])
    rand_boxes = float(rand["num_boxes"].iloc[-1])
    out = []
    for m in _method_order(c["method"].unique()):
        if m == "random":
            continue
        cur = c[c["method"] == m].sort_values("cycle")
        joined = cur.merge(rand, on="cycle", suffixes=("", "_random"))
        later = joined[joined["cycle"] > 0]
        gains = (100 * (later["mean"] - later["mean_random"])).tolist()
        reach = labels_to_reach(cur, target)
        reach_boxes = labels_to_reach(cur, target, "num_boxes")
        out.append({
            "method": m,
            "gain_per_cycle": gains,
            "mean_gain": float(np.mean(gains)) if gains else float("nan"),
            "min_gain": float(np.min(gains)) if gains else float("nan"),
            "labels_to_random_final": reach,
            "fraction_of_random_labels": reach / rand_labels if rand_labels else float("nan"),
            "boxes_to_random_final": reach_boxes,
            "fraction_of_random_boxes": reach_boxes / rand_boxes if rand_boxes else float("nan"),
        })
    return out


def t_interval(differences, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t interval (NaN bounds with fewer
    than 2 pairs)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def paired_differences(records: pd.DataFrame, baseline: str, metric: str = "map50") -> pd.DataFrame:
    """Per method and cycle: ``metric`` minus the baseline's on the same seed (the same initial
    set, pool, test split and schedule), in points, with the 95% t-interval over the seeds both
    have finished. Columns: method, cycle, seeds, mean, low, high."""
    base = records[records["method"] == baseline].set_index(["seed", "cycle"])[metric]
    rows = []
    for m in _method_order(records["method"].unique()):
        if m == baseline:
            continue
        cur = records[records["method"] == m].set_index(["seed", "cycle"])[metric]
        joined = pd.concat([cur.rename("m"), base.rename("b")], axis=1, join="inner")
        for cycle, group in joined.groupby(level="cycle"):
            mean, low, high = t_interval(100 * (group["m"] - group["b"]))
            rows.append({"method": m, "cycle": int(cycle), "seeds": len(group), "mean": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["method", "cycle", "seeds", "mean", "low", "high"])


def _area(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the piecewise-linear curve y(x) over [lo, hi] (area / width); NaN if x does not cover it."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    if hi <= lo or lo < x[0] - 1e-9 or hi > x[-1] + 1e-9:
        return float("nan")
    grid = np.linspace(lo, hi, 201)
    values = np.interp(grid, x, y)
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)) / (hi - lo))


def learning_curve_areas(records: pd.DataFrame, metric: str = "map50") -> pd.DataFrame:
    """Per method and seed, the area under the ``metric``-vs-labeled-images curve and under the
    ``metric``-vs-labeled-boxes curve, each as the curve's mean height in % over a range every
    method of that seed covers (boxes: from the largest first-cycle count to the smallest final
    count, so a method that bought more boxes is not credited for them)."""
    rows = []
    for seed, by_seed in records.groupby("seed"):
        cycles = by_seed.groupby("method")["cycle"].max()
        complete = by_seed[by_seed["method"].isin(cycles[cycles == cycles.max()].index)]
        if complete.empty:
            continue
        span = complete.groupby("method").agg(img_lo=("num_labeled", "min"), img_hi=("num_labeled", "max"), box_lo=("num_boxes", "min"), box_hi=("num_boxes", "max"))
        img = (span["img_lo"].max(), span["img_hi"].min())
        box = (span["box_lo"].max(), span["box_hi"].min())
        for m, g in complete.groupby("method"):
            rows.append({
                "method": m, "seed": int(seed),
                "auc_images": 100 * _area(g["num_labeled"].to_numpy(float), g[metric].to_numpy(float), *img),
                "auc_boxes": 100 * _area(g["num_boxes"].to_numpy(float), g[metric].to_numpy(float), *box) if "num_boxes" in g else float("nan"),
            })
    return pd.DataFrame(rows, columns=["method", "seed", "auc_images", "auc_boxes"])


def paired_table(records: pd.DataFrame, baseline: str, metric: str = "map50") -> str:
    """Markdown: per method, the paired difference from ``baseline`` at every cycle after the
    first and in the two learning-curve areas, mean [95% interval] (seeds)."""
    diffs = paired_differences(records, baseline, metric)
    areas = learning_curve_areas(records, metric)
    if diffs.empty:
        return ""
    cycles = sorted(c for c in diffs["cycle"].unique() if c > 0)
    cell = lambda mean, low, high, n: "" if np.isnan(mean) else (f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] ({n})" if np.isfinite(low) else f"{mean:+.2f} ({n})")  # noqa: E731
    labels = records.groupby("cycle")["num_labeled"].median()
    head = ["method", *[f"cycle {c + 1} ({int(labels[c])} img)" for c in cycles], "area, mAP vs images", "area, mAP vs boxes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_area = areas[areas["method"] == baseline].set_index("seed")
    for m in diffs["method"].unique():
        d = diffs[diffs["method"] == m].set_index("cycle")
        cells = [cell(d.loc[c, "mean"], d.loc[c, "low"], d.loc[c, "high"], int(d.loc[c, "seeds"])) if c in d.index else "" for c in cycles]
        mine = areas[areas["method"] == m].set_index("seed")
        for col in ("auc_images", "auc_boxes"):
            paired = (mine[col] - base_area[col]).dropna()
            cells.append(cell(*t_interval(paired), len(paired)))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_profile(records: pd.DataFrame, coco: dict) -> pd.DataFrame:
    """What each method selected, from the pool's ground truth (the oracle's labels): objects
    per selected image, the share of empty images, the share of objects from the rarer half of
    the classes (by pool frequency) and, for the demo data, the share of near-duplicates (NaN
    on data that records none)."""
    per_image = pd.Series(0, index=[im["id"] for im in coco["images"]], dtype=float)
    counts = pd.Series([a["image_id"] for a in coco["annotations"]]).value_counts()
    per_image.loc[counts.index] = counts.to_numpy()
    frequency = pd.Series([a["category_id"] for a in coco["annotations"]]).value_counts()
    rare = set(frequency.index[len(frequency) // 2 :])  # the less frequent half of the classes
    rare_per_image = pd.Series([a["image_id"] for a in coco["annotations"] if a["category_id"] in rare]).value_counts()
    duplicates = {im["id"] for im in coco["images"] if im.get("near_duplicate_of") is not None}
    # Only the demo generator records near-duplicates: on other data the share is unknown (NaN, "n/a"), not 0.
    dup_share = (lambda ids: 100 * np.mean([i in duplicates for i in ids])) if duplicates else (lambda ids: float("nan"))
    rows = []
    for method, group in records.groupby("method"):
        selected = [i for ids in group.get("selected_ids", pd.Series(dtype=object)).dropna() for i in ids]
        if not selected:
            continue
        objects = per_image.reindex(selected).fillna(0)
        rows.append({
            "method": method,
            "selected images": len(selected),
            "objects per image": objects.mean(),
            "empty images %": 100 * (objects == 0).mean(),
            "rare-class objects %": 100 * rare_per_image.reindex(selected).fillna(0).sum() / max(objects.sum(), 1),
            "near-duplicates %": dup_share(selected),
        })
    pool = per_image
    rows.append({
        "method": "(whole pool)", "selected images": len(pool), "objects per image": pool.mean(), "empty images %": 100 * (pool == 0).mean(),
        "rare-class objects %": 100 * rare_per_image.sum() / max(pool.sum(), 1), "near-duplicates %": dup_share(list(pool.index)),
    })
    return pd.DataFrame(rows)


def figure(records: pd.DataFrame, title: str) -> go.Figure:
    """mAP@0.5 and mAP@0.75 against labeled images, and mAP@0.5 against labeled boxes, mean ±
    std over seeds per method."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mAP@0.5", "mAP@0.75", "mAP@0.5 against labeled boxes"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    for col, (metric, cost) in enumerate((("map50", "num_labeled"), ("map75", "num_labeled"), ("map50", "num_boxes")), start=1):
        c = curves(records, metric)
        for i, m in enumerate(_method_order(c["method"].unique())):
            cur = c[c["method"] == m].sort_values("cycle")
            fig.add_trace(
                go.Scatter(
                    x=cur[cost], y=100 * cur["mean"], error_y={"type": "data", "array": 100 * cur["std"].fillna(0)},
                    mode="lines+markers", name=m, legendgroup=m, showlegend=col == 1, line={"color": palette[i % len(palette)]},
                ),
                row=1, col=col,
            )
        fig.update_xaxes(title_text="labeled boxes" if cost == "num_boxes" else "labeled images", row=1, col=col)
        fig.update_yaxes(title_text="%", row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", height=450, width=1400)
    return fig


def write_report(out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write results.csv, results.md and results.html into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    if not (out / "config.json").exists():
        raise ValueError(f"No experiment in '{out}': run the experiment first (almdn experiment --config ... --out {out}).")
    config = json.loads((out / "config.json").read_text())
    records = read_records(out)
    if records.empty:
        raise ValueError(f"No finished cycles in '{out}' yet: run the experiment first.")
    title = title or f"Active learning: {config.get('name', out.name)}"
    cols = [c for c in CSV_COLUMNS if c in records.columns]
    records.sort_values(["method", "seed", "cycle"])[cols].to_csv(out / "results.csv", index=False)

    budget = int(config["budget"])
    train = config.get("train", {})
    md = [
        f"# {title}",
        "",
        f"Initial labeled set {config['initial']}, budget {budget} per cycle, {config['cycles']} cycles, "
        f"seeds {', '.join(map(str, sorted(records['seed'].unique())))}; model {json.dumps(config.get('model', {}))}; "
        f"training {json.dumps(train)}; every cycle retrains from scratch. "
        "mAP in %, mean ± std (ddof 1) over seeds. Detector forward: inference seconds per test image; "
        "acquisition: seconds per pool image for the whole scoring pass (all passes / members).",
        "",
        _compute_line(records),
        "",
        "## mAP@0.5 (Tab. 4 layout)",
        "",
        map_table(records, "map50"),
        "",
        "## mAP@0.75",
        "",
        map_table(records, "map75"),
    ]
    if "num_boxes" in records:
        md += ["", "## Labeled boxes per cycle (mean over seeds)", "", cost_table(records)]
    comparison = comparison_with_random(records)
    if comparison:
        md += [
            "", "## Against random sampling (mAP@0.5)", "",
            "| method | gain per cycle after the first (points) | mean gain | images to reach random's final mAP | fraction of random's images | boxes to reach it | fraction of random's boxes |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in comparison:
            gains = ", ".join(f"{g:+.2f}" for g in row["gain_per_cycle"])
            md.append(
                f"| {row['method']} | {gains} | {row['mean_gain']:+.2f} | {_reach(row['labels_to_random_final'])} | {_percent(row['fraction_of_random_labels'])} "
                f"| {_reach(row['boxes_to_random_final'])} | {_percent(row['fraction_of_random_boxes'])} |"
            )
    for baseline in PAIRED_BASELINES:
        if baseline in set(records["method"]) and (table := paired_table(records, baseline)):
            md += [
                "", f"## Paired by seed: each method minus {baseline} (mAP@0.5 points)", "",
                "Mean difference over the seeds both finished, [95% t-interval], (seeds). Areas: the mean height of the mAP curve "
                "over the labeled images (or labeled boxes) every method of a seed covers.", "", table,
            ]
    if "cls_collapsed_fraction" in records:
        md += ["", "## Mixture collapse and uncertainty quality of each cycle's model (test split, mean over seeds)", "", quality_table(records)]
    if "unscored_fraction" in records:
        md += ["", "## Pool images the score could not rank (no detection above its threshold), %", "", _per_cycle_table(records, "unscored_fraction", 100.0)]
    aggregations = [m for m in records["method"].unique() if m.startswith("almdn:")]
    if aggregations:
        md += ["", "## Aggregation functions (Tab. 2), mAP@0.5", "", map_table(records, "map50", ["random", "almdn", *aggregations])]
    for method in ("almdn", "almdn_eff"):
        overlap = overlap_table(out, method, budget)
        if overlap is not None:
            md += ["", f"## Overlap of the images each uncertainty selects (Tab. 3), {method}, %", "", "| | " + " | ".join(overlap.columns) + " |", "|---|" + "---|" * len(overlap.columns)]
            md += [f"| {idx} | " + " | ".join(f"{v:.0f}" for v in row) + " |" for idx, row in overlap.iterrows()]
    pool_annotations = _pool_annotations(out, config)
    if pool_annotations is not None and "selected_ids" in records:
        profile = selection_profile(records, pool_annotations)
        profile = profile.set_index("method").loc[[m for m in [*_method_order(profile["method"][:-1]), "(whole pool)"]]].reset_index()
        md += ["", "## What each method selected (from the pool's ground truth)", "", "| " + " | ".join(profile.columns) + " |", "|" + "---|" * len(profile.columns)]
        md += ["| " + " | ".join(table_cell(v) for v in row) + " |" for row in profile.itertuples(index=False)]
    for arch in config.get("transfer", []) or []:
        transfer = read_records(out, f".transfer-{arch}")
        if not transfer.empty:
            transfer["eval_s_per_image"], transfer["parameters"] = np.nan, np.nan
            md += ["", f"## Transfer: {arch} trained on each acquired set (Tab. 7), mAP@0.5", "", _transfer_table(transfer)]
    (out / "results.md").write_text("\n".join(md) + "\n")
    figure(records, title).write_html(out / "results.html", include_plotlyjs="cdn")
    return {"csv": out / "results.csv", "md": out / "results.md", "html": out / "results.html"}


def table_cell(value) -> str:
    """A selection-profile cell: one decimal, "n/a" where the data cannot tell."""
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.1f}"
    return str(value)


def _reach(value: float) -> str:
    return "not reached" if np.isnan(value) else f"{value:.0f}"


def _percent(value: float) -> str:
    return "" if np.isnan(value) else f"{100 * value:.0f}%"


def _per_cycle_table(records: pd.DataFrame, column: str, scale: float = 1.0, digits: int = 1) -> str:
    """Mean of ``column`` over seeds, one row per method, one column per cycle."""
    table = records.groupby(["method", "cycle"])[column].mean().unstack("cycle")
    cycles = list(table.columns)
    lines = ["| method | " + " | ".join(f"cycle {c + 1}" for c in cycles) + " |", "|---|" + "---|" * len(cycles)]
    for m in _method_order(table.index):
        cells = ["" if pd.isna(v) else f"{scale * v:.{digits}f}" for v in table.loc[m]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(records: pd.DataFrame) -> str:
    """Labeled boxes per method and cycle (mean over seeds): what a user paying per box pays."""
    return _per_cycle_table(records, "num_boxes", digits=0)


def quality_table(records: pd.DataFrame) -> str:
    """Per method and cycle, mean over seeds: the class mixture's collapsed fraction and
    effective components, the AUROC of each class signal for false vs true positives, and the
    Spearman correlation of each box uncertainty with 1 - IoU among true positives."""
    columns = [
        ("cls_collapsed_fraction", "class collapsed"), ("cls_effective_components", "class eff. K"),
        ("box_effective_components", "box eff. K"),
        ("auroc_cls_aleatoric", "AUROC cls al"), ("auroc_cls_epistemic", "AUROC cls ep"),
        ("auroc_cls_entropy", "AUROC entropy"), ("auroc_one_minus_score", "AUROC 1-score"),
        ("spearman_loc_aleatoric", "ρ box al"), ("spearman_loc_epistemic", "ρ box ep"),
    ]
    present = [(k, label) for k, label in columns if k in records]
    grouped = records.groupby(["method", "cycle"])[[k for k, _ in present]].mean()
    lines = ["| method | cycle | " + " | ".join(label for _, label in present) + " |", "|---|---|" + "---|" * len(present)]
    for m in _method_order(grouped.index.get_level_values(0).unique()):
        for cycle, row in grouped.loc[m].iterrows():
            lines.append(f"| {m} | {cycle + 1} | " + " | ".join("" if pd.isna(row[k]) else f"{row[k]:.3f}" for k, _ in present) + " |")
    return "\n".join(lines)


def _compute_line(records: pd.DataFrame) -> str:
    """How much computing the finished cycles took (shared cycle-0 models counted once), from
    the cycle records: the trained models are not committed, a fresh checkout has the records."""
    trained: dict[tuple[str, ...], float] = {}
    if "model_keys" in records and "train_seconds" in records:
        for keys, seconds in zip(records["model_keys"], records["train_seconds"]):
            if isinstance(keys, list) and keys and seconds == seconds:
                trained.setdefault(tuple(keys), float(seconds))  # a record's models, by what determines them
    models = sum(len(keys) for keys in trained)
    train = sum(trained.values())
    acquisition = float(records.get("acquisition_seconds", pd.Series(dtype=float)).fillna(0).sum())
    return (
        f"Compute: {models} models trained in {train / 60:.1f} min in total (models shared between methods counted once), "
        f"{acquisition / 60:.1f} min of pool scoring, {len(records)} (method, seed, cycle) results."
    )


def _pool_annotations(out: Path, config: dict) -> dict | None:
    """The pool's COCO annotations, when the experiment's data is where the config says."""
    data = config.get("data", {})
    fmt = data.get("format", "coco")
    candidates = {"coco": Path(str(data.get("train", ""))), "demo": Path(str(data.get("root", "data/demo"))) / "annotations" / "train.json"}
    path = candidates.get(fmt, out / "data" / "train.json")
    return json.loads(path.read_text()) if path.is_file() else None


def _transfer_table(transfer: pd.DataFrame) -> str:
    c = curves(transfer, "map50")
    cycles = sorted(c["cycle"].unique())
    lines = ["| method | " + " | ".join(f"cycle {cy + 1}" for cy in cycles) + " |", "|---|" + "---|" * len(cycles)]
    for m in _method_order(c["method"].unique()):
        rows = c[c["method"] == m].set_index("cycle")
        lines.append(f"| {m} | " + " | ".join(_fmt(rows.loc[cy, "mean"], rows.loc[cy, "std"]) if cy in rows.index else "" for cy in cycles) + " |")
    return "\n".join(lines)


__all__ = ["comparison_with_random", "cost_table", "curves", "figure", "labels_to_reach", "map_table", "overlap_table", "quality_table", "write_report"]
