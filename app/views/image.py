"""Image: one image's detections with their mixtures, its four uncertainties against the
pool, and why it ranks where it does."""

from __future__ import annotations

import common
import pandas as pd
import streamlit as st
from figures import class_spread_figure, mixture_figure
from presentation import as_text

from almdn.display import store_tables as views
from almdn.data.coco import DatasetError, decode_image
from almdn.user_errors import USER_ERRORS
from almdn.registry import DEFAULT_CONF_THRESHOLD, UNCERTAINTY_NAMES

st.title("Image")
store = common.store()
mv = common.scored_version()
if mv is None:
    st.info("No model yet, so there are no detections or uncertainties to show. Train the first model on the Train page.")
    st.stop()

table = common.pool_table()
order = table["image_id"].tolist()
current = int(st.session_state.get("image_id") or (order[0] if order else 0))
c1, c2, c3, c4 = st.columns([2, 1, 1, 5])
# A key per image: the input shows the image chosen elsewhere (Pool, Previous/Next).
image_id = int(c1.number_input("Image id", min_value=1, value=current, step=1, key=f"image-id-{current}"))
st.session_state["image_id"] = image_id
position = order.index(image_id) if image_id in order else None


def _go(target: int) -> None:
    st.session_state["image_id"] = int(target)


has_previous = bool(position)
has_next = position is not None and position < len(order) - 1
c2.button("Previous", icon=":material/arrow_back:", help="The image ranked just above", disabled=not has_previous, on_click=_go, args=(order[position - 1] if has_previous else 0,))
c3.button("Next", icon=":material/arrow_forward:", help="The image ranked just below", disabled=not has_next, on_click=_go, args=(order[position + 1] if has_next else 0,))

try:
    image = store.image(image_id)
except Exception as exc:  # StoreError: an id that is not in the project
    st.error(as_text(exc))
    st.stop()
c4.caption(as_text(f"{image['path']} · {image['width']}×{image['height']} px · split: {image['split']}"))

explanation = views.explain_image(store, image_id, mv, table=table, pool_detections=common.stored_detections())
st.info(as_text(explanation.sentence), icon=":material/help:")

#: Longest side the image is decoded at for the figure (a 179-megapixel photo is drawn from a
#: JPEG draft of about this size, not decoded and embedded at full resolution).
DISPLAY_SIDE = 1600

try:
    array = decode_image(image["path"], max_side=DISPLAY_SIDE)  # EXIF orientation applied, as stored
except DatasetError as exc:
    st.error(as_text(f"{exc} The rest of the app is unaffected; the image stays out of the ranking until it can be read."))
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def _mixture(checkpoint: str, path: str) -> list[dict]:
    return views.mixture_detections(common.detector(checkpoint), path)


@st.cache_data(show_spinner=False, max_entries=4)
def _scored_detections_of(path: str, rev: tuple, model_version: int):
    return common.store().detections(model_version)


def _scored_detections(model_version: int):
    """Every kept detection of the version's pool scoring: what its z-scores were taken over."""
    return _scored_detections_of(str(common.project_dir()), common.revision(), int(model_version))


info = store.model_version(mv)
try:
    all_detections = _mixture(str(info["checkpoint"]), str(image["path"]))
except USER_ERRORS as exc:  # e.g. the model's checkpoint was moved away
    st.error(as_text(exc))
    st.stop()
# The same numbers as the store's (what the tables and the reason refer to).
all_detections = views.align_to_stored(all_detections, store.detections(mv, [image_id]))
kept_threshold = float(info["conf_threshold"]) if info.get("conf_threshold") == info.get("conf_threshold") and info.get("conf_threshold") is not None else DEFAULT_CONF_THRESHOLD
left, right = st.columns([3, 2])
with right:
    threshold = st.slider("Show detections with score at least", 0.0, 1.0, kept_threshold, 0.01,
                          help=f"Detections at or above {kept_threshold:.2f} count for the image's uncertainty (the model version's threshold).")
    detections = [d for d in all_detections if d["score"] >= threshold]
    default = None
    if len(explanation.uncertainties) and explanation.uncertainties["detection"].notna().any():
        top = explanation.uncertainties.dropna(subset=["z"]).sort_values("z", ascending=False)
        default = int(top.iloc[0]["detection"]) if len(top) and not pd.isna(top.iloc[0]["detection"]) else None
    options = [d["detection"] for d in detections]
    labels = {d["detection"]: f"#{d['detection']} '{d['class_name']}' score {d['score']:.2f}" for d in detections}
    selected = st.selectbox("Detection to explain", options, index=options.index(default) if default in options else 0,
                            format_func=labels.get, disabled=not options) if options else None
    chosen = next((d for d in detections if d["detection"] == selected), None)
    if chosen is not None:
        st.subheader(f"Detection #{selected}: its four uncertainties")
        own = views.detection_uncertainties(chosen, _scored_detections(mv))
        st.dataframe(own[["label", "value", "z", "percentile"]].rename(columns={"label": "uncertainty"}), hide_index=True, key="detection-uncertainties", column_config={
            "value": st.column_config.NumberColumn(format="%.4f", help="This detection's value"),
            "z": st.column_config.NumberColumn("z-score", format="%.2f", help="Standard deviations above the mean of the pool's kept detections (the scoring's z-score)"),
            "percentile": st.column_config.ProgressColumn("pool percentile", min_value=0, max_value=100, format="%.0f", help="Percent of the pool's kept detections at or below this value"),
        })
        if not chosen.get("stored", True):
            st.caption(f"Detection #{selected} is below the scoring threshold ({kept_threshold:.2f}): it does not count for the image's score.")
    st.subheader("The image's four uncertainties")
    if len(explanation.uncertainties):
        st.caption("Each is the largest over the image's kept detections (Sec. 3.3), from the detection named in the last column; "
                   "the final score combines their z-scores.")
        unc = explanation.uncertainties[["label", "value", "z", "percentile", "detection"]].rename(columns={"label": "uncertainty"})
        st.dataframe(unc, hide_index=True, key="image-uncertainties", column_config={
            "value": st.column_config.NumberColumn(format="%.4f", help="The image's value: the maximum over its kept detections"),
            "z": st.column_config.NumberColumn("z-score", format="%.2f"),
            "percentile": st.column_config.ProgressColumn("pool percentile", min_value=0, max_value=100, format="%.0f", help="Percent of the pool's images at or below this value"),
            "detection": st.column_config.NumberColumn("from detection", width="medium", format="#%d", help="The detection the value comes from"),
        })
    else:
        st.caption("Not in the pool: no pool percentiles.")
with left:
    if detections:
        figure = mixture_figure(array, detections, selected, frame=(int(image["width"]), int(image["height"])))
        st.plotly_chart(figure, key="mixture")
        left_out = figure.layout.meta["labels_left_out"]
        st.caption("White: detections (Eq. 7). Coloured: each mixture component's mean box of the selected detection, "
                   "opacity by its weight π; dotted: ±1σ of each edge from the component's variance."
                   + (f" {len(left_out)} labels found no free place; hover over a box to read it." if left_out else ""))
    else:
        st.image(array, width="stretch")
        st.caption(f"No detection with score ≥ {threshold:.2f}.")

if chosen is not None:
    st.plotly_chart(class_spread_figure(chosen, list(store.classes())), key="class-spread")
    comp = pd.DataFrame({
        "component": range(1, len(chosen["component_weights"]) + 1),
        "box weight π": chosen["component_weights"],
        "class weight π": chosen["class_weights"],
        "x1": [b[0] for b in chosen["component_boxes"]], "y1": [b[1] for b in chosen["component_boxes"]],
        "x2": [b[2] for b in chosen["component_boxes"]], "y2": [b[3] for b in chosen["component_boxes"]],
        "σ x (px)": [s[0] for s in chosen["component_sigmas"]], "σ y (px)": [s[1] for s in chosen["component_sigmas"]],
    })
    st.dataframe(comp, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.2f") for c in comp.columns if c != "component"})

if len(explanation.detections):
    st.subheader("Kept detections and their percentiles among the pool's detections")
    det = explanation.detections.copy()
    config = {name: st.column_config.NumberColumn(views.UNCERTAINTY_LABELS[name], format="%.4f") for name in UNCERTAINTY_NAMES}
    config.update({f"pct_{name}": st.column_config.NumberColumn(f"{views.UNCERTAINTY_LABELS[name]} pct.", format="%.0f") for name in UNCERTAINTY_NAMES})
    config["score"] = st.column_config.NumberColumn(format="%.2f")
    st.dataframe(det.drop(columns=["x1", "y1", "x2", "y2"]), hide_index=True, column_config=config)
