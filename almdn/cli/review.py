"""``almdn project review``: the review queue of the labeled images (issue 22).

Prints the labels that look wrong (missing box, wrong class, loose box, spurious label), ranked,
from :func:`almdn.workflow.review.find_label_errors` (which keeps the whole queue in the store), and
with ``--push`` sends those images to Label Studio for review (:func:`almdn.workflow.labeling.push_review`). The command joins the ``project`` group of
:mod:`almdn.cli.labeling` (registered by :mod:`almdn.cli`).
"""

from __future__ import annotations

import click

from almdn.cli.labeling import _open, _project_option, project  # the project commands' shared --project option and store opening
from almdn.cli.errors import friendly
from almdn.review.scoring import DEFAULT_SCORING, KINDS, SCORINGS


@project.command("review")
@_project_option
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only this kind of label error (default: every kind).")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=20, show_default=True, help="The highest N items of each kind.")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: score with the project's current model (quick, but it has learnt these labels); K >= 2: train K out-of-fold "
                   "models with the project's round settings, so that no model scores an image it was trained on (K trainings).")
@click.option("--scoring", type=click.Choice(SCORINGS), default=DEFAULT_SCORING, show_default=True, help="What ranks the items.")
@click.option("--conf-threshold", type=float, default=None, help="A detection at or above this score is confident [default: 0.5].")
@click.option("--push", "send", is_flag=True, help="Send the listed images to Label Studio as review tasks, their current labels "
              "as editable annotations (almdn pull brings the corrections back).")
@click.option("--include-test", is_flag=True, help="Review the test split's labels too, with the current model (never trained on them); "
              "only on this explicit request: a changed test label dates every earlier model's test mAP.")
@friendly
def project_review(project_dir, kind, top_k, folds, scoring, conf_threshold, send, include_test) -> None:
    """Print the labeled images' labels that look wrong, ranked: missing boxes (a confident
    detection no label matches), wrong classes, loose or shifted boxes, spurious labels. The
    whole queue is kept in the project (the app's Review page shows it); --push sends the
    listed images to Label Studio for review."""
    from almdn.display.review_tables import filter_kind, review_reasons
    from almdn.workflow.review import find_label_errors, queue_table

    extra = {"conf_threshold": conf_threshold} if conf_threshold is not None else {}
    with _open(project_dir) as store:
        stage = {"last": None}

        def progress(fraction: float, text: str | None = None) -> None:
            if text and text != stage["last"]:
                stage["last"] = text
                click.echo(f"{text} ...", err=True)

        full = find_label_errors(store, folds, scoring=scoring, progress=progress, include_test=include_test, **extra)
        queue = filter_kind(full, kind)
        queue = queue[queue["rank"] <= top_k]
        queue.attrs = full.attrs
        report = None
        if send and len(queue):
            from almdn.workflow.labeling import push_review

            ids = list(dict.fromkeys(int(i) for i in queue["image_id"]))
            report = push_review(store, project_dir, ids, why=review_reasons(full, ids), include_test=include_test)
    source = (f"{folds} out-of-fold models" if folds else f"model version {queue.attrs['model_version']} (in sample: it was trained on "
              "these labels, so it agrees with errors it learnt; --folds 4 avoids that)")
    what = f"'{kind}' items" if kind else "items of each kind"
    click.echo(f"Review queue of {queue.attrs['num_labeled']} labeled images, scored by {source}; the top {top_k} {what} by the {scoring} scoring:")
    click.echo(queue_table(queue))
    if report is not None:
        click.echo(str(report))
    elif send:
        click.echo("Nothing to send for review.")
