"""The use cases of almdn, one function each; the CLI (:mod:`almdn.cli`,
:mod:`almdn.cli.labeling`), the background jobs (:mod:`almdn.projects.jobs`) and the app (``app/``)
are thin callers of these, so they cannot drift apart.

================================  =============================================================
create a project                  :func:`create_project` (nothing left behind on failure)
add images (and labels)           :func:`add_sources`; both check the labeled boxes for small
                                  objects (:func:`anchor_coverage_warning`)
export a split as COCO            :func:`export_split`
score the pool into the store     :func:`score_pool` + :func:`write_scoring`; :func:`rescore`,
                                  :func:`score_checkpoint` (a model trained elsewhere)
run a round                       :func:`run_round` (as a job: :func:`retrain_job`)
start / stop a local Label Studio :func:`start_label_studio` (as a job:
                                  :func:`start_label_studio_job`), :func:`stop_label_studio`
connect to a Label Studio server  :func:`connect_label_studio`
push a batch                      :func:`push` (the top K, or exactly a previewed batch)
pull the finished labels          :func:`pull` (reviews too)
send labels back for review       :func:`push_review`
skipped images                    :func:`resend_skipped`, :func:`return_skipped_to_pool`
================================  =============================================================

Everything a user can get wrong ends in an :class:`almdn.errors.UserError` (or a
:class:`label_studio.errors.LabelStudioError`): one sentence, nothing half-written.
"""

from almdn.workflow.labeling import (
    PullReport,
    PushReport,
    connect_label_studio,
    document_root,
    label_studio_job,
    pull,
    push,
    push_review,
    resend_skipped,
    return_skipped_to_pool,
    start_label_studio,
    start_label_studio_job,
    stop_label_studio,
)
from almdn.workflow.project import add_sources, anchor_coverage_warning, create_project, export_split
from almdn.workflow.scoring import PoolScoring, rescore, score_checkpoint, score_pool, write_scoring
from almdn.workflow.training import retrain_job, run_round

__all__ = [
    "PoolScoring", "PullReport", "PushReport", "add_sources", "anchor_coverage_warning", "connect_label_studio", "create_project", "document_root", "export_split",
    "label_studio_job", "pull", "push", "push_review", "rescore", "resend_skipped", "retrain_job", "return_skipped_to_pool", "run_round", "score_checkpoint",
    "score_pool", "start_label_studio", "start_label_studio_job", "stop_label_studio", "write_scoring",
]
