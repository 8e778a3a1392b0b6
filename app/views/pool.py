"""Pool: the unlabeled images ranked by how much the model would learn from them."""

from __future__ import annotations

import common
import streamlit as st
from presentation import page_of

from almdn.display import store_tables as views
from almdn.registry import UNCERTAINTY_NAMES

st.title("Pool")
store = common.store()
mv = common.scored_version()
if mv is None:
    n_pool = len(store.image_ids("pool"))
    st.info(f"No model yet: the {n_pool} pool images are not ranked. Train the first model on the Train page; it scores the pool when it is done.")
    st.page_link(common.PAGE_TRAIN, label="Train", icon=":material/model_training:")
    st.stop()

table = common.pool_table()
info = store.model_version(mv)
map50 = info["metrics"].get("map50")
cols = st.columns(4)
cols[0].metric("Pool images", f"{len(table):,}")
cols[1].metric("Ranked by model", f"v{mv}", help=f"{info['name']}, trained on {info['num_labeled']} labeled images")
cols[2].metric("Its mAP@0.5", "–" if map50 is None else f"{map50:.3f}")
cols[3].metric("Sent to Label Studio", f"{int(table['task_status'].notna().sum()):,}")

bad = table[table["status"] == "unreadable"]
if len(bad):
    with st.expander(f":material/warning: {len(bad)} pool images could not be read and were skipped when scoring", expanded=False):
        errors = {int(u["image_id"]): u.get("error", "") for u in views.unreadable_images(store, mv)}
        st.dataframe(
            bad.assign(error=[errors.get(int(i), "") for i in bad["image_id"]])[["image_id", "path", "error"]],
            hide_index=True,
        )

LABELS = {"score": "final score", **views.UNCERTAINTY_LABELS}
with st.container(border=True):
    c1, c2, c3, c4, c5 = st.columns([2, 1.3, 1.3, 2.4, 2])
    sort_by = c1.selectbox("Sort by", views.SORT_KEYS, format_func=LABELS.get, key="pool_sort")
    z_scored = c2.toggle("z-score", value=False, key="pool_z", disabled=sort_by == "score", help="Sort an uncertainty by its z-score over the pool's detections instead of its raw value.")
    ascending = c3.toggle("lowest first", value=False, key="pool_ascending")
    classes = c4.multiselect("Predicted class", views.pool_classes(table), key="pool_classes", placeholder="any class")
    max_det = int(table["num_detections"].max()) if len(table) else 0
    det_range = c5.slider("Detections", 0, max(max_det, 1), (0, max(max_det, 1)), key="pool_detections")

shown = views.filter_pool(table, classes, det_range[0], det_range[1])
shown = views.sort_pool(shown, sort_by, z_scored, descending=not ascending)
p1, p2, p3 = st.columns([1, 1, 4])
per_page = p1.selectbox("Per page", (25, 50, 100, 200), index=1, key="pool_per_page")
pages = max(1, -(-len(shown) // per_page))
if st.session_state.get("pool_page", 1) > pages:
    st.session_state["pool_page"] = pages  # fewer pages after filtering
page = p2.number_input(f"Page (of {pages})", min_value=1, max_value=pages, key="pool_page")
rows, _ = page_of(shown, page, per_page)
p3.caption(f"{len(shown):,} of {len(table):,} pool images match; showing {len(rows)} ({(page - 1) * per_page + 1}–{(page - 1) * per_page + len(rows)}).")

view = rows[["rank", "image_id", "file", "score", "driven_by", *UNCERTAINTY_NAMES, "num_detections", "classes", "status", "task_status"]].copy()
# Why an image was chosen: its Label Studio task's reason, or the Label page's current preview.
preview = st.session_state.get("label_preview") or {}
previewed = preview.get("why", {}) if preview.get("project") == str(common.project_dir()) and preview.get("model_version") == mv else {}
view["why"] = [
    (w if isinstance(w, str) and s not in (None, "deleted") else None) or (f"(preview, {preview['method']}) {previewed[int(i)]}" if int(i) in previewed else None)
    for i, s, w in zip(rows["image_id"], rows["task_status"], rows["task_why"] if "task_why" in rows else [None] * len(rows))
]
if z_scored:
    for name in UNCERTAINTY_NAMES:
        view[name] = rows[f"z_{name}"]
view.insert(0, "thumbnail", common.thumbnails(rows["path"].tolist()))
number = st.column_config.NumberColumn
event = st.dataframe(
    view,
    hide_index=True,
    row_height=64,
    height=min(40 + 64 * len(view), 900),
    on_select="rerun",
    selection_mode="single-row",
    # A fresh key after each visit to an image: a kept selection would open it again.
    key=f"pool_table-{st.session_state.get('pool_opened', 0)}",
    column_config={
        "thumbnail": st.column_config.ImageColumn("image", width="small"),
        "rank": number("rank", help="1 = most informative by the final score"),
        "image_id": number("id"),
        "score": number("final score", format="%.2f", help="A z-score, not a raw uncertainty: how many standard deviations the driving uncertainty "
                        "lies above the mean of the pool's detections (max of the four z-scored uncertainties, Sec. 3.3)"),
        "driven_by": st.column_config.TextColumn("driven by", width="medium", help="The uncertainty whose z-score is the final score, and the detection it comes from"),
        **{name: number(views.UNCERTAINTY_LABELS[name] + (" (z)" if z_scored else ""), format="%.3f") for name in UNCERTAINTY_NAMES},
        "num_detections": number("detections"),
        "classes": st.column_config.TextColumn("predicted classes"),
        "task_status": st.column_config.TextColumn("Label Studio"),
        "why": st.column_config.TextColumn("why chosen", width="large", help="For the images sent to Label Studio or in the Label page's preview: "
                                           "why the acquisition method chose them"),
    },
)
selected = event.selection.rows if event is not None and hasattr(event, "selection") else []
o1, o2 = st.columns([1, 5])
choice = o1.selectbox("Open image", rows["image_id"].tolist(), key="pool_open", format_func=lambda i: f"#{i}")
if o2.button("Show its mixture and why it ranks there", icon=":material/image_search:") or selected:
    st.session_state["image_id"] = int(rows.iloc[selected[0]]["image_id"]) if selected else int(choice)
    st.session_state["pool_opened"] = st.session_state.get("pool_opened", 0) + 1
    st.switch_page(common.PAGE_IMAGE)
