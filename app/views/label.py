"""Label: pick a batch, send it to Label Studio with the model's boxes, bring labels back."""

from __future__ import annotations

import time

import common
import streamlit as st

from almdn import labeling, views

st.title("Label")
store = common.store()
project = common.project_dir()
status = labeling.server_status(project)

# ----------------------------------------------------------------- the server
if status.reachable:
    st.success(f"Label Studio {'(local) ' if status.local else ''}answers at {status.url}.", icon=":material/check_circle:")
    st.link_button("Open Label Studio", status.url)
else:
    st.warning(status.message, icon=":material/cloud_off:")
    st.page_link(common.PAGE_SETTINGS, label="Settings", icon=":material/settings:")


def _show_pull(report) -> None:
    if report.new_annotations or report.updated_annotations:
        st.success(f"Imported from Label Studio: {report}", icon=":material/download_done:")
    for problem in report.problems:
        st.warning(problem)


# New labels are imported on page load (at most every 15 s per session, the server is polled).
if status.reachable and labeling.has_open_tasks(store) and time.monotonic() - st.session_state.get("last_pull", 0.0) > 15:
    st.session_state["last_pull"] = time.monotonic()
    with common.sentence_on_error():
        _show_pull(labeling.pull_labels(store, project))

# ----------------------------------------------------------------- choose a batch
st.subheader("Choose the next batch")
mv = common.scored_version()
if mv is None:
    st.info("No model yet, so the pool is not ranked: train the first model on the Train page, then choose a batch here.")
else:
    c1, c2 = st.columns([1, 3])
    k = int(c1.number_input("K images", min_value=1, max_value=max(1, len(store.image_ids("pool"))), value=min(10, max(1, len(store.image_ids("pool")))), key="label_k"))
    method = c2.selectbox("Acquisition method", views.ACQUISITION_METHODS, format_func=views.ACQUISITION_LABELS.get, key="label_method")
    selection = None
    with common.sentence_on_error():
        selection = views.select_for_labeling(store, k, method, mv)
    if selection is not None:
        if selection.message:
            st.info(selection.message)
        table = common.pool_table().set_index("image_id")
        chosen = [i for i in selection.image_ids if i in table.index]
        st.caption(f"Preview: {len(chosen)} images by {method} (images already sent to Label Studio are left out); "
                   f"{selection.by_score} chosen by their score.")
        if chosen:
            rows = table.loc[chosen]
            captions = [f"#{i} · rank {int(r['rank'])}" + (f" · {r['score']:.2f}" if r["score"] == r["score"] else "") for i, r in rows.iterrows()]
            shown = [(u, c) for u, c in zip(common.thumbnails(rows["path"].tolist()), captions) if u is not None]
            if shown:
                st.image([u for u, _ in shown], caption=[c for _, c in shown], width=96)
        send = st.button(f"Send {len(chosen)} images to Label Studio", type="primary", disabled=not (status.reachable and chosen),
                         help=None if status.reachable else status.message)
        if send:
            with common.sentence_on_error():
                report = labeling.push_batch(store, project, chosen, mv)
                st.success(str(report), icon=":material/send:")
                st.session_state["last_pull"] = time.monotonic()

# ----------------------------------------------------------------- batches
st.subheader("Batches in Label Studio")
batches = labeling.batch_table(store)
if batches.empty:
    st.caption("Nothing sent yet.")
else:
    st.dataframe(
        batches[["batch_id", "created_at", "model_version_id", "tasks", "annotated", "skipped", "deleted", "open", "progress", "status"]],
        hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("finished", min_value=0, max_value=1, format="percent"),
                       "model_version_id": st.column_config.NumberColumn("model version")},
    )
    if st.button("Import finished labels now", icon=":material/download:", disabled=not status.reachable):
        with common.sentence_on_error():
            report = labeling.pull_labels(store, project)
            st.session_state["last_pull"] = time.monotonic()
            if not (report.new_annotations or report.updated_annotations):
                st.info(f"No new labels: {report}")
            _show_pull(report)
    counts = store.counts()
    st.caption(f"{counts['labeled']} images are labeled; {counts['open_tasks']} tasks are still open in Label Studio. "
               "Retrain on the Train page once a batch is done.")
