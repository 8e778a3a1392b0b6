"""Train: retrain on the labeled set in the background, watch it learn, compare with the
previous model."""

from __future__ import annotations

import common
import streamlit as st
from presentation import as_text

from almdn.projects import jobs
from almdn.display import store_tables as views
from almdn.user_errors import USER_ERRORS
from almdn.projects.rounds import START_CHOICES, RoundSettings, describe_training

st.title("Train")
store = common.store()
project = common.project_dir()
curve = views.learning_curve(store)
labeled = len(store.labeled_image_ids())

# ----------------------------------------------------------------- latest vs previous
if curve.empty:
    st.info(f"No model yet. Retrain trains the first one on the {labeled} labeled images, evaluates it and ranks the pool.")
else:
    last = curve.iloc[-1]
    prev = curve.iloc[-2] if len(curve) > 1 else None
    cols = st.columns(4)
    comparable = describe_training(store, int(last["model_version"])).comparable

    def delta(key: str):
        if prev is None or last[key] is None or prev[key] is None:
            return None
        return f"{last[key] - prev[key]:+.3f} vs v{int(prev['model_version'])}" + ("" if comparable else " (not like for like)")

    cols[0].metric(f"Model version {int(last['model_version'])}", str(last["name"]), help=str(last["created_at"]))
    cols[1].metric("mAP@0.5 (test)", "–" if last["map50"] is None else f"{last['map50']:.3f}", delta=delta("map50"))
    cols[2].metric("mAP@0.75 (test)", "–" if last["map75"] is None else f"{last['map75']:.3f}", delta=delta("map75"))
    cols[3].metric("Trained on", f"{int(last['num_labeled'])} images", delta=f"{labeled - int(last['num_labeled']):+d} labeled since" if labeled != int(last["num_labeled"]) else None, delta_color="off")
    how = describe_training(store, int(last["model_version"]))
    if prev is not None and prev["map50"] is not None and last["map50"] is not None:
        st.caption(f"New mAP@0.5 {last['map50']:.3f} next to the previous model's {prev['map50']:.3f} (v{int(prev['model_version'])}, "
                   f"{int(prev['num_labeled'])} labeled images).")
    # How the version was trained decides what its mAP change means: say it next to the numbers.
    (st.info if how.comparable or how.previous is None else st.warning)(how.sentence, icon=":material/info:")
    quality = views.model_quality(store)
    latest = quality[quality["model_version"] == int(last["model_version"])]
    if not latest.empty:
        q = latest.iloc[0]

        def number(value, fmt: str) -> str:
            return "–" if value is None or value != value else format(value, fmt)

        qcols = st.columns(3)
        qcols[0].metric("Class mixture collapsed", number(q["cls_collapsed_fraction"], ".0%"),
                        help="Share of test detections whose largest class-mixture weight is above 0.99.")
        qcols[1].metric("Effective components (class / box)", f"{number(q['cls_effective_components'], '.2f')} / {number(q['box_effective_components'], '.2f')}",
                        help="exp(entropy of the mixture weights): 1 when collapsed, K when uniform.")
        qcols[2].metric("AUROC of class epistemic", number(q["auroc_cls_epistemic"], ".3f"),
                        help="How well the class epistemic uncertainty tells false from true positives on the test split (0.5 = no information).")
    warning = views.quality_warning(store)
    if warning:
        st.warning(warning, icon=":material/warning:")

# ----------------------------------------------------------------- retrain
st.subheader("Retrain")
settings = RoundSettings.load(store)
st.caption(f"{settings.arch} with the {settings.head} mixture head, K = {settings.num_components}, {settings.cls_loss} class loss; "
           f"{settings.iterations} {settings.optimizer} iterations at batch {settings.batch_size}, lr {settings.lr:g}, augmentation {settings.augment}; starting from {START_CHOICES[settings.start_from]}; "
           f"scoring keeps detections with score ≥ {settings.conf_threshold:.2f}, {settings.aggregation}. Change them on the Settings page.")
running = jobs.active_job(project)
common.job_status_line("warning", suffix=" Only one job runs at a time: wait for it or cancel it below.", key="train-status")
if st.button("Retrain", type="primary", icon=":material/model_training:", disabled=running is not None or labeled == 0,
             help="Train a new model version on the labeled set, evaluate it on the test split and re-score the pool."):
    try:
        jobs.start_job(project, "retrain", {"project_dir": str(project)})
        st.rerun()
    except jobs.JobAlreadyRunning as exc:
        st.warning(as_text(exc))
    except USER_ERRORS as exc:  # may quote class names: shown as text
        st.error(as_text(exc))
if labeled == 0:
    st.caption("Label some images first (Label page): there is nothing to train on.")
common.job_panel(kinds=("retrain", "demo"), key="train")

# ----------------------------------------------------------------- versions
if not curve.empty:
    st.subheader("Model versions")
    st.dataframe(curve, hide_index=True, column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("map50", "map75", "map", "voc07_map50")})
