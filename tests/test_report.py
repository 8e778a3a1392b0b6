"""Experiment tables and figure from hand-made cycle records."""

import json

import numpy as np
import pandas as pd
import pytest

from almdn.experiments.report import comparison_with_random, curves, labels_to_reach, overlap_table, write_report


def _write(out, method, seed, cycle, n, map50, **extra):
    path = out / "runs" / method.replace(":", "-") / f"seed-{seed}" / f"cycle-{cycle}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"method": method, "seed": seed, "cycle": cycle, "num_labeled": n, "map50": map50, "map75": map50 / 2, "map": map50 / 3,
              "voc07_map50": map50, "parameters": 1_500_000, "eval_s_per_image": 0.01, "acquisition_s_per_image": 0.02, **extra}
    path.write_text(json.dumps(record))


@pytest.fixture
def experiment(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"name": "t", "initial": 100, "budget": 100, "cycles": 3, "model": {}, "train": {}, "transfer": []}))
    curves_by_method = {"random": [[0.10, 0.20, 0.30], [0.12, 0.22, 0.28]], "almdn": [[0.10, 0.26, 0.34], [0.12, 0.28, 0.36]]}
    for method, seeds in curves_by_method.items():
        for seed, values in enumerate(seeds):
            for cycle, value in enumerate(values):
                # almdn picks crowded images: 3 boxes per image against random's 2
                _write(out, method, seed, cycle, 100 * (cycle + 1), value, num_boxes=(3 if method == "almdn" and cycle else 2) * 100 * (cycle + 1),
                       cls_collapsed_fraction=0.3, auroc_cls_epistemic=0.6 + 0.01 * cycle, unscored_fraction=0.25 if method == "almdn" else 0.0)
    return out


def test_curves_are_mean_and_sample_std_over_seeds(experiment):
    from almdn.experiments.runner import read_records

    c = curves(read_records(experiment), "map50").set_index(["method", "cycle"])
    assert c.loc[("random", 2), "mean"] == pytest.approx(0.29)
    assert c.loc[("random", 2), "std"] == pytest.approx(np.std([0.30, 0.28], ddof=1))
    assert c.loc[("almdn", 1), "num_labeled"] == 200


def test_labels_to_reach_interpolates_between_cycles():
    curve = pd.DataFrame({"num_labeled": [100, 200, 300], "mean": [0.1, 0.2, 0.4]})
    assert labels_to_reach(curve, 0.3) == pytest.approx(250)
    assert labels_to_reach(curve, 0.05) == 100
    assert np.isnan(labels_to_reach(curve, 0.5))


def test_comparison_with_random_gives_gains_and_label_savings(experiment):
    from almdn.experiments.runner import read_records

    (row,) = comparison_with_random(read_records(experiment))
    assert row["method"] == "almdn"
    assert row["gain_per_cycle"] == pytest.approx([6.0, 6.0])  # points of mAP@0.5
    # random's final mean 0.29 is reached between 200 (0.27) and 300 (0.35) labels: 225
    assert row["labels_to_random_final"] == pytest.approx(225)
    assert row["fraction_of_random_labels"] == pytest.approx(0.75)
    # in boxes: almdn's curve is at 600 boxes (0.27) and 900 boxes (0.35) -> 0.29 at 675 boxes,
    # against random's 600 at the end: it costs more boxes although fewer images
    assert row["boxes_to_random_final"] == pytest.approx(675)
    assert row["fraction_of_random_boxes"] == pytest.approx(1.125)


def test_overlap_of_single_uncertainty_selections(tmp_path):
    folder = tmp_path / "runs" / "almdn" / "seed-0"
    folder.mkdir(parents=True)
    # top-2 by each: alb {1, 2}, epb {1, 3}, alc {3, 4}, epc {1, 2}
    pd.DataFrame({
        "image_id": [1, 2, 3, 4],
        "z_loc_aleatoric": [3, 2, 1, 0], "z_loc_epistemic": [3, 0, 2, 1],
        "z_cls_aleatoric": [0, 1, 3, 2], "z_cls_epistemic": [2, 3, 0, np.nan],
    }).to_csv(folder / "cycle-0.scores.csv", index=False)
    table = overlap_table(tmp_path, "almdn", budget=2)
    assert table.loc["u_alb", "u_alb"] == 100
    assert table.loc["u_alb", "u_epb"] == 50
    assert table.loc["u_alb", "u_alc"] == 0
    assert table.loc["u_alb", "u_epc"] == 100
    assert (table.to_numpy() == table.to_numpy().T).all()


def test_report_shows_boxes_quality_and_unscored_fractions_per_cycle(experiment):
    write_report(experiment)
    md = (experiment / "results.md").read_text()
    assert "## Labeled boxes per cycle" in md and "| almdn | 200 | 600 | 900 |" in md
    assert "boxes to reach it" in md and "| 675 | 113% |" in md
    assert "## Mixture collapse and uncertainty quality" in md and "| almdn | 3 | 0.300 |" in md
    assert "## Pool images the score could not rank" in md and "| almdn | 25.0 | 25.0 | 25.0 |" in md
    html = (experiment / "results.html").read_text()
    assert "labeled boxes" in html


def test_write_report_makes_the_csv_markdown_and_figure(experiment):
    paths = write_report(experiment)
    md = paths["md"].read_text()
    assert "| random | 11.00±1.41 | 21.00±1.41 | 29.00±1.41 | 1.500 | 0.0100 | 0.0200 | 2 |" in md
    assert "| almdn | +6.00, +6.00 | +6.00 | 225 | 75% |" in md
    assert len(pd.read_csv(paths["csv"])) == 12
    html = paths["html"].read_text()
    assert "plotly" in html and "mAP@0.75" in html


def test_report_without_finished_cycles_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "t", "initial": 1, "budget": 1, "cycles": 1}))
    with pytest.raises(ValueError, match="run the experiment first"):
        write_report(tmp_path)


def test_selection_profile_from_the_pool_ground_truth():
    from almdn.experiments.report import selection_profile

    coco = {
        "images": [{"id": i} for i in range(1, 7)] + [{"id": 7, "near_duplicate_of": 1}],
        # class 1 frequent (5 objects), class 2 rare (1 object); image 3 and 6 empty
        "annotations": [{"image_id": i, "category_id": c} for i, c in [(1, 1), (1, 1), (2, 1), (4, 1), (5, 1), (7, 2)]],
    }
    records = pd.DataFrame([{"method": "m", "selected_ids": [1, 3, 7]}, {"method": "m", "selected_ids": [2]}])
    table = selection_profile(records, coco).set_index("method")
    assert table.loc["m", "selected images"] == 4
    assert table.loc["m", "objects per image"] == pytest.approx(4 / 4)
    assert table.loc["m", "empty images %"] == pytest.approx(25)
    assert table.loc["m", "rare-class objects %"] == pytest.approx(25)  # 1 of the 4 selected objects
    assert table.loc["m", "near-duplicates %"] == pytest.approx(25)
    assert table.loc["(whole pool)", "empty images %"] == pytest.approx(100 * 2 / 7)
    assert table.loc["(whole pool)", "near-duplicates %"] == pytest.approx(100 / 7)
    # data without the demo's near-duplicate records: unknown, not 0
    plain = {"images": [{"id": i} for i in range(1, 8)], "annotations": coco["annotations"]}
    unknown = selection_profile(records, plain).set_index("method")["near-duplicates %"]
    assert unknown.isna().all()
    from almdn.experiments.report import table_cell

    assert [table_cell(v) for v in (float("nan"), 25.0, 4)] == ["n/a", "25.0", "4"]


def test_paired_differences_by_seed_with_a_t_interval(experiment):
    from scipy import stats

    from almdn.experiments.runner import read_records
    from almdn.experiments.report import learning_curve_areas, paired_differences, paired_table, t_interval

    records = read_records(experiment)
    diffs = paired_differences(records, "random").set_index("cycle")
    # almdn - random per seed: cycle 2: +6, +6; cycle 3: +4, +8 points
    assert diffs.loc[1, "mean"] == pytest.approx(6.0) and diffs.loc[1, "seeds"] == 2
    half = stats.t.ppf(0.975, 1) * np.std([4.0, 8.0], ddof=1) / np.sqrt(2)
    assert (diffs.loc[2, "low"], diffs.loc[2, "high"]) == pytest.approx((6.0 - half, 6.0 + half))
    assert t_interval([1.0]) [0] == 1.0 and np.isnan(t_interval([1.0])[1])
    areas = learning_curve_areas(records).set_index(["method", "seed"])
    # seed 0, random: mean height of 10, 20, 30 % over 100..300 images = 20
    assert areas.loc[("random", 0), "auc_images"] == pytest.approx(20.0)
    # boxes: the range both cover is 200..600 (random's final count): almdn reaches 26-34 there
    assert areas.loc[("random", 0), "auc_boxes"] == pytest.approx(20.0)
    assert areas.loc[("almdn", 0), "auc_boxes"] < areas.loc[("almdn", 0), "auc_images"] + 30
    table = paired_table(records, "random")
    assert "| almdn | +6.00" in table and "(2)" in table


def test_report_pairs_with_random_and_entropy(experiment):
    write_report(experiment)
    md = (experiment / "results.md").read_text()
    assert "## Paired by seed: each method minus random" in md
    assert "minus entropy" not in md  # no entropy runs here


def test_report_pairs_every_method_with_the_default_entropy_weighted_where_it_ran(experiment):
    for seed, values in enumerate([[0.10, 0.25, 0.33], [0.12, 0.27, 0.35]]):
        for cycle, value in enumerate(values):
            _write(experiment, "entropy_weighted", seed, cycle, 100 * (cycle + 1), value, num_boxes=200 * (cycle + 1))
    write_report(experiment)
    md = (experiment / "results.md").read_text()
    section = md.split("## Paired by seed: each method minus entropy_weighted (mAP@0.5 points)")[1].split("\n## ")[0]
    # almdn - entropy_weighted per seed: cycle 2: +1, +1 points
    assert "| almdn | +1.00" in section and "| random |" in section
    assert "minus entropy (mAP" not in md  # plain entropy did not run


def test_compute_line_counts_each_model_once_from_the_cycle_records(tmp_path):
    """The trained models are not committed: the compute line comes from the records, a
    cycle-0 model shared by two methods counted once."""
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"name": "t", "initial": 100, "budget": 100, "cycles": 2, "model": {}, "train": {}}))
    for method in ("random", "almdn"):
        _write(out, method, 0, 0, 100, 0.1, num_boxes=200, model_keys=["shared"], train_seconds=30.0, acquisition_seconds=6.0)
        _write(out, method, 0, 1, 200, 0.2, num_boxes=400, model_keys=[f"{method}-1"], train_seconds=45.0)
    write_report(out)
    assert "Compute: 3 models trained in 2.0 min in total" in (out / "results.md").read_text()
    assert "0.2 min of pool scoring, 4 (method, seed, cycle) results" in (out / "results.md").read_text()
