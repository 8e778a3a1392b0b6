"""Review: the labeled images whose labels look wrong (missing boxes, wrong classes, loose boxes,
spurious labels), ranked, each drawn with its labels and the model's detections; send the
chosen ones back to Label Studio to be corrected, and bring the corrections in."""

from __future__ import annotations

import common
import streamlit as st
from figures import review_figure
from presentation import as_text

from almdn.data.coco import DatasetError, decode_image
from almdn.display import review_tables as tables
from almdn.projects import jobs
from almdn.review.folds import DEFAULT_FOLDS
from almdn.review.scoring import KIND_NAMES, KINDS
from almdn.user_errors import USER_ERRORS

st.title("Review")
store = common.store()
project = common.project_dir()
labeled = len(store.labeled_image_ids())
has_model = store.latest_model_version() is not None
st.caption("The model looks at the images already labeled and flags labels that look wrong: a confident detection no label covers "
           "(missing box), a label the model confidently calls another class (wrong class), a box the model places elsewhere while "
           "sure of its box (loose or shifted), and a label no detection covers at all (spurious).")

# ----------------------------------------------------------------- find label errors
SOURCES = {"in_sample": "current model (fast; it has learnt these labels, so it misses some errors)",
           "out_of_fold": "out of fold: k new models (finds more errors; k trainings)"}
source = st.radio("Score the labels with", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="review-source")
folds = 0
if source == "out_of_fold":
    folds = int(st.number_input("k (folds)", min_value=2, max_value=10, value=DEFAULT_FOLDS, step=1, key="review-folds",
                                help="Each of k models trains on the other folds' images with the project's round settings and scores only its own fold."))
running = jobs.active_job(project)
blocked = labeled == 0 or (folds == 0 and not has_model)
if st.button("Find label errors", type="primary", icon=":material/rule:", disabled=running is not None or blocked):
    try:
        jobs.start_job(project, "review", {"project_dir": str(project), "folds": folds})
        st.rerun()
    except jobs.JobAlreadyRunning as exc:
        st.warning(as_text(exc))
    except USER_ERRORS as exc:
        st.error(as_text(exc))
if labeled == 0:
    st.info("No labeled image yet: there are no labels to review. Label some on the Label page first.")
elif folds == 0 and not has_model:
    st.info("No model yet to review the labels with: train one on the Train page, or review out of fold.")
common.job_status_line("warning", suffix=" Only one job runs at a time.", key="review-status")
common.job_panel(kinds=("review",), show_loss=False, key="review")

# ----------------------------------------------------------------- the queue
kept = store.latest_review_queue()
if kept is None:
    st.info("No review yet: Find label errors ranks the labeled images by how wrong their labels look.")
    st.stop()
queue, detections = kept
st.caption(as_text(tables.queue_caption(queue)))
kind = st.selectbox("Kind", [None, *KINDS], format_func=lambda k: "every kind" if k is None else KIND_NAMES[k], key="review-kind")
images = tables.review_images(queue, kind)
if images.empty:
    st.success("No label looks wrong" + (f" of the kind '{KIND_NAMES[kind]}'." if kind else "."), icon=":material/check_circle:")
    st.stop()
st.dataframe(images, hide_index=True, key="review-table",
             column_config={"review_score": st.column_config.NumberColumn("review score", format="%.3f"),
                            "relabeled": st.column_config.CheckboxColumn("relabeled since", help="Its labels changed after the queue was computed.")})

ids = images["image_id"].astype(int).tolist()
shown = int(st.selectbox("Image", ids, format_func=lambda i: f"#{images.set_index('image_id').at[i, 'rank']}: {images.set_index('image_id').at[i, 'file_name']}",
                         key="review-image"))
image = store.image(shown)
overlay = tables.image_overlay(queue, store.labels([shown]), detections, shown)
try:
    array = decode_image(image["path"], max_side=1600)
except DatasetError as exc:
    st.error(as_text(f"{exc} The rest of the review is unaffected."))
else:
    st.plotly_chart(review_figure(array, overlay, frame=(int(image["width"]), int(image["height"]))), key="review-figure")
st.caption("Green: its labels; white dashed: the model's detections; red: what was flagged.")
for item in overlay["items"]:
    st.markdown(f"- {as_text(item['reason'])}")
with st.expander("Label versions of this image"):
    st.dataframe(store.label_versions(shown)[["annotation_id", "provenance", "num_labels", "imported_at", "is_current"]], hide_index=True)

# ----------------------------------------------------------------- send for review
st.subheader("Send for review")
chosen = st.multiselect("Images to send to Label Studio with their labels, to be corrected", ids, default=ids[: min(10, len(ids))],
                        format_func=lambda i: images.set_index("image_id").at[i, "file_name"], key="review-chosen")
if st.session_state.get("review-report"):
    st.success(as_text(st.session_state.pop("review-report")), icon=":material/outgoing_mail:")
if st.button("Send for review", icon=":material/send:", disabled=not chosen):
    from almdn.workflow.labeling import push_review

    with common.sentence_on_error():
        report = push_review(store, project, chosen, why=tables.review_reasons(queue, chosen))
        st.session_state["review-report"] = str(report)
        st.rerun()
if st.button("Pull the corrected labels", icon=":material/download:"):
    from almdn.workflow.labeling import pull

    with common.sentence_on_error():
        report = pull(store, project)
        st.info(as_text(str(report)))
        for notice in report.notices:
            st.warning(as_text(notice), icon=":material/report:")
