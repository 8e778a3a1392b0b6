"""Label: pick a batch, send exactly the previewed images to Label Studio with the model's boxes,
bring labels back, and resend or release what the annotators skipped."""

from __future__ import annotations

import time

import common
import pandas as pd
import streamlit as st

from presentation import ACQUISITION_LABELS, as_text

from almdn import workflow
from almdn.display import labeling_status as labeling
from almdn.acquisition.stored import ACQUISITION_METHODS, DEFAULT_ACQUISITION, select_for_labeling
from almdn.user_errors import USER_ERRORS
from almdn.projects.rounds import plural

st.title("Label")
store = common.store()
project = common.project_dir()
status = labeling.server_status(project)

# ----------------------------------------------------------------- the server
if status.reachable:
    st.success(f"Label Studio {'(local) ' if status.local else ''}answers at {status.url}.", icon=":material/check_circle:")
    st.link_button("Open Label Studio", status.url)
    common.label_studio_login(status, key="label-login")
else:
    st.warning(status.sentence(), icon=":material/cloud_off:")
    st.page_link(common.PAGE_SETTINGS, label="Settings", icon=":material/settings:")


def _show_pull(report) -> None:
    if report.new_annotations or report.updated_annotations:
        st.success(as_text(f"Imported from Label Studio: {report}"), icon=":material/download_done:")
    for problem in report.problems:  # may quote Label Studio label names: shown as text
        st.warning(as_text(problem))
    for notice in report.notices:  # annotations deleted in Label Studio, tasks almdn did not push
        st.warning(as_text(notice), icon=":material/report:")


# New labels are imported on page load (at most every 15 s per session, the server is polled).
if status.reachable and labeling.has_open_tasks(store) and time.monotonic() - st.session_state.get("last_pull", 0.0) > 15:
    st.session_state["last_pull"] = time.monotonic()
    with common.sentence_on_error():
        _show_pull(workflow.pull(store, project))


def _send(image_ids: tuple[int, ...], method: str, model_version: int, why: tuple[str, ...] = ()) -> None:
    """Send exactly the images that were previewed (the button carries them and why each was chosen), once."""
    if st.session_state.get("label_sent"):
        return  # a second click on the same preview: it was sent already
    try:
        report = workflow.push(common.store(), project, image_ids=list(image_ids), model_version=model_version, method=method,
                               why=dict(zip(image_ids, why)))
    except USER_ERRORS as exc:
        st.session_state["label_send_error"] = str(exc)
        return
    st.session_state["label_sent"] = {"project": str(project), "ids": list(image_ids), "report": str(report)}
    st.session_state.pop("label_preview", None)  # sent: the store's tasks say why now
    st.session_state["last_pull"] = time.monotonic()


def _thumbnails(image_ids: list[int], table) -> None:
    rows = table.loc[[i for i in image_ids if i in table.index]]
    captions = [f"#{i} · rank {int(r['rank'])}" + (f" · {r['score']:.2f}" if r["score"] == r["score"] else "") for i, r in rows.iterrows()]
    shown = [(u, c) for u, c in zip(common.thumbnails(rows["path"].tolist()), captions) if u is not None]
    if shown:
        st.image([u for u, _ in shown], caption=[c for _, c in shown], width=96)


# ----------------------------------------------------------------- choose a batch
st.subheader("Choose the next batch")
mv = common.scored_version()
sent = st.session_state.get("label_sent")
if sent and sent["project"] != str(project):
    sent = None
error = st.session_state.pop("label_send_error", None)
if error:
    st.error(as_text(error))
if sent:
    st.success(as_text(sent["report"]), icon=":material/send:")
    st.caption(f"Sent: {plural(len(sent['ids']), 'image')} ({', '.join(f'#{i}' for i in sent['ids'])}), exactly the preview.")
    if mv is not None:  # images labeled since have left the pool: the ids above name them
        _thumbnails(sent["ids"], common.pool_table().set_index("image_id"))
    if st.button("Preview the next batch", type="primary", icon=":material/refresh:"):
        st.session_state.pop("label_sent", None)
        st.rerun()
elif mv is None:
    st.info("No model yet, so the pool is not ranked: train the first model on the Train page, then choose a batch here.")
else:
    c1, c2 = st.columns([1, 3])
    n_pool = len(store.image_ids("pool"))
    k = int(c1.number_input("K images", min_value=1, max_value=max(1, n_pool), value=min(10, max(1, n_pool)), key="label_k"))
    method = c2.selectbox("Acquisition method", ACQUISITION_METHODS, index=ACQUISITION_METHODS.index(DEFAULT_ACQUISITION),
                          format_func=ACQUISITION_LABELS.get, key="label_method")
    selection = None
    with common.sentence_on_error():
        selection = select_for_labeling(store, k, method, mv)
    if selection is not None:
        if selection.message:
            st.info(selection.message)
        table = common.pool_table().set_index("image_id")
        reasons = selection.why()
        chosen = [i for i in selection.image_ids if i in table.index]
        # the Pool page shows why the previewed images were chosen
        st.session_state["label_preview"] = {"project": str(project), "model_version": int(mv), "method": method, "why": {int(i): reasons[i] for i in chosen}}
        st.caption(f"Preview: {plural(len(chosen), 'image')} by {method} (images already sent to Label Studio are left out); "
                   f"{selection.by_score} chosen by their score. Send sends exactly these.")
        if chosen:
            _thumbnails(chosen, table)
            rows = table.loc[chosen]
            st.dataframe(
                pd.DataFrame({"image_id": chosen, "file": rows["file"].tolist(), "rank": rows["rank"].tolist(), "score": rows["score"].tolist(),
                              "why": [reasons[i] for i in chosen]}),
                hide_index=True,
                key="label_preview_table",
                column_config={"image_id": st.column_config.NumberColumn("id"), "rank": st.column_config.NumberColumn("rank", help="by the final score"),
                               "score": st.column_config.NumberColumn("final score", format="%.2f"),
                               "why": st.column_config.TextColumn("why", width="large", help="Why the method chose the image: its uncertainty driver, "
                                                                  "the region or cluster it covers, the rare class it adds")},
            )
        st.button(f"Send {plural(len(chosen), 'image')} to Label Studio", type="primary", disabled=not (status.reachable and chosen),
                  help=None if status.reachable else status.sentence(), on_click=_send,
                  args=(tuple(int(i) for i in chosen), method, int(mv), tuple(reasons[i] for i in chosen)))

# ----------------------------------------------------------------- skipped images
skipped = labeling.skipped_images(store)
notice = st.session_state.pop("label_skipped_notice", None)
if notice:
    st.success(as_text(notice))
if not skipped.empty:
    st.subheader("Skipped in Label Studio")
    st.caption(f"The annotators skipped {plural(len(skipped), 'image')}. Send them again (the same task opens again, with the model's boxes) "
               "or put them back into the pool (their task is deleted; a later batch may choose them again by their score).")
    ids = [int(i) for i in skipped["image_id"]]
    files = dict(zip(ids, skipped["path"]))
    choice = st.multiselect("Skipped images", ids, default=ids, key="skipped_choice", format_func=lambda i: f"#{i} {files[i].rsplit('/', 1)[-1]}")
    b1, b2 = st.columns(2)
    resend = b1.button("Send again", icon=":material/replay:", disabled=not (status.reachable and choice), key="skipped_resend")
    release = b2.button("Put back in the pool", icon=":material/undo:", disabled=not (status.reachable and choice), key="skipped_release")
    if resend or release:
        with common.sentence_on_error():
            if resend:
                n = workflow.resend_skipped(store, project, choice)
                st.session_state["label_skipped_notice"] = f"{plural(n, 'skipped task')} open again in Label Studio."
            else:
                n = workflow.return_skipped_to_pool(store, project, choice)
                st.session_state["label_skipped_notice"] = f"{plural(n, 'image')} back in the pool; {'its task was' if n == 1 else 'their tasks were'} deleted in Label Studio."
            st.session_state.pop("skipped_choice", None)
            st.rerun()

# ----------------------------------------------------------------- batches
st.subheader("Batches in Label Studio")
batches = labeling.batch_table(store)
if batches.empty:
    st.caption("Nothing sent yet.")
else:
    st.dataframe(
        batches[["batch_id", "purpose", "created_at", "model_version_id", "tasks", "annotated", "skipped", "deleted", "open", "progress", "status"]],
        hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("finished", min_value=0, max_value=1, format="percent"),
                       "model_version_id": st.column_config.NumberColumn("model version"),
                       "purpose": st.column_config.TextColumn("purpose", help="label: pool images to label; review: labeled images sent back to correct (Review page)")},
    )
    if st.button("Import finished labels now", icon=":material/download:", disabled=not status.reachable):
        with common.sentence_on_error():
            report = workflow.pull(store, project)
            st.session_state["last_pull"] = time.monotonic()
            if not (report.new_annotations or report.updated_annotations):
                st.info(as_text(f"No new labels: {report}"))
            _show_pull(report)
    counts = store.counts()
    st.caption(f"{plural(counts['labeled'], 'image')} {'is' if counts['labeled'] == 1 else 'are'} labeled; "
               f"{plural(counts['open_tasks'], 'task')} {'is' if counts['open_tasks'] == 1 else 'are'} still open in Label Studio. "
               "Retrain on the Train page once a batch is done.")
