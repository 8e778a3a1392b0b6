"""History: the active-learning curve, the labels per class, the pool's uncertainties."""

from __future__ import annotations

import common
import streamlit as st
from figures import aleatoric_epistemic_figure, labels_figure, learning_curve_figure, reliability_figure, uncertainty_histograms

from presentation import as_text

from almdn.display import store_tables as views

st.title("History")
store = common.store()
curve = views.learning_curve(store)
if curve.empty:
    st.info("No model yet: the curve starts with the first model (Train page).")
else:
    st.plotly_chart(learning_curve_figure(curve), key="curve")
quality = views.model_quality(store)
if not quality.empty:
    st.subheader("Do the uncertainties predict the model's mistakes?")
    st.caption(
        "On the test split, per model version: how many class-mixture components are really used (collapsed: one component holds "
        "over 99 % of the weight), the AUROC of each class signal for telling false from true positives (0.5 = no information, "
        "1 = perfect) and, among true positives, the Spearman correlation of each box uncertainty with 1 - IoU."
    )
    st.dataframe(quality.rename(columns=views.QUALITY_COLUMNS), hide_index=True,
                 column_config={label: st.column_config.NumberColumn(format="%.3f") for label in views.QUALITY_COLUMNS.values()})
    warning = views.quality_warning(store)
    if warning:
        st.warning(warning, icon=":material/warning:")
    table = views.reliability(store)
    if table is not None:
        st.plotly_chart(reliability_figure(table), key="reliability")
st.plotly_chart(labels_figure(views.labels_per_class(store)), key="labels")
detections = common.stored_detections()
if detections.empty:
    st.info("No scored detections in the pool yet: the uncertainty plots appear once a model has scored it.")
else:
    st.plotly_chart(uncertainty_histograms(detections), key="histograms")
    st.plotly_chart(aleatoric_epistemic_figure(detections), key="scatter")
review = store.review_summary()
if review["sent"] or review["corrected_images"]:
    st.subheader("Label review")
    cols = st.columns(5)
    for col, (key, title) in zip(cols, [("sent", "Review tasks sent"), ("open", "Still open"), ("unchanged", "Reviewed, unchanged"),
                                         ("corrected_images", "Images corrected"), ("corrected_labels", "Labels corrected")]):
        col.metric(title, review[key])
stale = store.stale_model_versions()
if not stale.empty:
    names = ", ".join(stale["name"].astype(str))
    st.warning(as_text(f"The test labels of {int(stale['changed_test_images'].max())} images changed by review after model versions {names} were evaluated: "
               "their test mAP no longer measures the current test split; retrain to compare."), icon=":material/warning:")
rounds = store.rounds()
if not rounds.empty:
    st.subheader("Rounds")
    st.dataframe(rounds, hide_index=True)
