"""History: the active-learning curve, the labels per class, the pool's uncertainties."""

from __future__ import annotations

import common
import streamlit as st
from figures import aleatoric_epistemic_figure, labels_figure, learning_curve_figure, reliability_figure, uncertainty_histograms

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
rounds = store.rounds()
if not rounds.empty:
    st.subheader("Rounds")
    st.dataframe(rounds, hide_index=True)
