"""History: the active-learning curve, the labels per class, the pool's uncertainties."""

from __future__ import annotations

import common
import streamlit as st
from figures import aleatoric_epistemic_figure, labels_figure, learning_curve_figure, uncertainty_histograms

from almdn import views

st.title("History")
store = common.store()
curve = views.learning_curve(store)
if curve.empty:
    st.info("No model yet: the curve starts with the first model (Train page).")
else:
    st.plotly_chart(learning_curve_figure(curve), key="curve")
st.plotly_chart(labels_figure(views.labels_per_class(store)), key="labels")
detections = common.pool_detections()
if detections.empty:
    st.info("No scored detections in the pool yet: the uncertainty plots appear once a model has scored it.")
else:
    st.plotly_chart(uncertainty_histograms(detections), key="histograms")
    st.plotly_chart(aleatoric_epistemic_figure(detections), key="scatter")
rounds = store.rounds()
if not rounds.empty:
    st.subheader("Rounds")
    st.dataframe(rounds, hide_index=True)
