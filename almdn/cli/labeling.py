"""The command line of a project and its Label Studio round trip.

``almdn project create|add|info|export|score|retrain``, ``almdn ls start|stop|status|connect``,
``almdn push --top-k K`` and ``almdn pull``. Every command works on one project folder:
``--project DIR`` (default: ``$ALMDN_PROJECT``, else the current folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from almdn.cli.errors import UserError, friendly, skipped_exit
from almdn.errors import InvalidChoice
from almdn.registry import LABEL_STUDIO_PORT
from almdn.projects.store import SPLITS


def _project_option(func):
    return click.option(
        "--project", "project_dir", type=click.Path(file_okay=False), default=lambda: os.environ.get("ALMDN_PROJECT", "."),
        show_default="$ALMDN_PROJECT or .", help="The project folder (holds almdn.sqlite).",
    )(func)


def _open(project_dir: str):
    from almdn.projects.store import Store

    return Store.open(project_dir, create=False)


# --------------------------------------------------------------------------- project


def _source_options(func):
    options = [
        click.option("--coco", "coco", multiple=True, help="A COCO json file, or a dataset folder with annotations/train.json (and test.json)."),
        click.option("--voc", "voc", multiple=True, help="A Pascal VOC year folder (Annotations/, JPEGImages/)."),
        click.option("--voc-set", default=None, help="Only this ImageSets/Main set of the VOC folders (e.g. trainval)."),
        click.option("--yolo", "yolo", multiple=True, help="A YOLO dataset folder (images/, labels/, data.yaml or classes.txt)."),
        click.option("--images", "images", multiple=True, help="A folder of unlabeled images (they go to the pool)."),
        click.option("--split", type=click.Choice(SPLITS), default=None, help="Split for the sources' images (default: labeled for annotated sources, pool for --images)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _sources(coco, voc, voc_set, yolo, images, split) -> list[tuple]:
    return [("coco", p, split) for p in coco] + [("voc", p, split, voc_set) for p in voc] + [("yolo", p, split) for p in yolo] + [("images", p, split) for p in images]


@click.group("project")
def project() -> None:
    """Create a project from datasets and look into it."""


@project.command("create")
@_project_option
@_source_options
@click.option("--classes", default=None, help="Comma-separated class names, in label order (before any dataset's own).")
@click.option("--name", default=None, help="Project name (default: the folder's name).")
@click.option("--init", "init", default=None, help="Where the project's models start: coco (torchvision's COCO-trained detector, for the architectures that have one), imagenet (ImageNet backbone; the default), none (random), or PATH to a torchvision state dict of the same architecture.")
@friendly
def project_create(project_dir, coco, voc, voc_set, yolo, images, split, classes, name, init) -> None:
    """Create a project (a folder with its store) from COCO / VOC / YOLO data or an image folder.

    A failed creation leaves no store behind, so the command can simply be run again."""
    from almdn.workflow import create_project

    class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    sources = _sources(coco, voc, voc_set, yolo, images, split)
    store, _ = create_project(project_dir, sources, classes=class_list, name=name, on_summary=lambda s: click.echo(str(s)), init=init)
    with store:
        click.echo(f"Project '{store.name}' in {store.path.parent}: " + _counts_line(store.counts()))


@project.command("add")
@_project_option
@_source_options
@friendly
def project_add(project_dir, coco, voc, voc_set, yolo, images, split) -> None:
    """Add more images (and labels) to a project; files already in it are left as they are."""
    from almdn.workflow import add_sources

    with _open(project_dir) as store:
        add_sources(store, _sources(coco, voc, voc_set, yolo, images, split), on_summary=lambda s: click.echo(str(s)))
        click.echo(_counts_line(store.counts()))


def _counts_line(c: dict) -> str:
    return (f"{c['images']} images ({c['labeled']} labeled, {c['pool']} pool, {c['test']} test), {c['classes']} classes, "
            f"{c['labels']} boxes, {c['model_versions']} model versions, {c['batches']} batches, {c['open_tasks']} open tasks.")


@project.command("info")
@_project_option
@friendly
def project_info(project_dir) -> None:
    """Counts, classes, model versions and Label Studio batches of a project."""
    with _open(project_dir) as store:
        click.echo(f"Project '{store.name}' ({store.path}): " + _counts_line(store.counts()))
        click.echo("Classes: " + ", ".join(store.classes()))
        for r in store.model_versions().itertuples(index=False):
            scored = f", scored {r.num_scored:.0f} images" if r.num_scored == r.num_scored and r.num_scored is not None else ""
            click.echo(f"Model version {r.model_version_id} '{r.name}': trained on {r.num_labeled} images{scored} ({r.checkpoint})")
        for b in store.batches().itertuples(index=False):
            click.echo(f"Batch {b.batch_id} ({b.created_at[:19]}): {b.status}, {b.tasks} tasks: {b.open} open, {b.annotated} annotated, {b.skipped} skipped, {b.deleted} deleted")


@project.command("export")
@_project_option
@click.option("--split", type=click.Choice(SPLITS), default="labeled", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="COCO json to write (default: <project>/exports/<split>.json).")
@friendly
def project_export(project_dir, split, out) -> None:
    """Write a split with its current labels as COCO json (almdn train --data reads it)."""
    from almdn.workflow import export_split

    with _open(project_dir) as store:
        path = export_split(store, split, out)
        click.echo(f"Wrote {len(store.image_ids(split))} images of '{split}' to {path}.")


@project.command("score")
@_project_option
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A model.pt trained on this project's labeled export.")
@click.option("--conf-threshold", type=float, default=None, help="Detections at or above this score are kept for scoring [default: the project's setting].")
@click.option("--aggregation", default=None, help="How the four z-scored uncertainties make one score (Tab. 2) [default: the project's setting].")
@click.option("--batch-size", type=int, default=None, help="[default: the project's setting]")
@click.option("--device", default=None, help="[default: the project's setting]")
@friendly
def project_score(project_dir, checkpoint, conf_threshold, aggregation, batch_size, device) -> None:
    """Record a model version and score every pool image with it (Sec. 3.3), with the
    project's saved settings (Settings page) unless an option says otherwise."""
    from almdn.projects.rounds import RoundSettings
    from almdn.workflow import score_checkpoint

    given = {"conf_threshold": conf_threshold, "aggregation": aggregation, "score_batch_size": batch_size, "device": device}
    with _open(project_dir) as store:
        settings = RoundSettings.load(store).replace(**{k: v for k, v in given.items() if v is not None}).check()
        done = score_checkpoint(store, checkpoint, settings, progress_bar=True)
    scoring = done.scoring
    click.echo(f"Model version {done.model_version}: scored {len(scoring.images)} pool images ({len(scoring.detections)} detections) in {scoring.seconds:.1f} s.")
    skipped_exit([u["path"] for u in scoring.unreadable])


@project.command("retrain")
@_project_option
@friendly
def project_retrain(project_dir) -> None:
    """Run a round, as the app's Retrain does: train a model version on the labeled images with
    the project's saved settings (Settings page), evaluate it on the test split, record it and
    score the pool with it."""
    from almdn.workflow import run_round

    def say(fraction: float, stage: str | None) -> None:  # each stage as the app's job panel words it
        if stage:
            click.echo(f"Retrain: {stage} ({100 * fraction:.0f} %)")

    with _open(project_dir) as store:
        result = run_round(store, progress=say, on_warning=lambda warning: click.echo(f"Warning: {warning}", err=True))
    click.echo(result.summary())
    skipped_exit([u["path"] for u in result.unreadable])


# --------------------------------------------------------------------------- Label Studio server


@click.group("ls")
def ls() -> None:
    """A local Label Studio server for the project, or a connection to a remote one."""


@ls.command("start")
@_project_option
@click.option("--port", default=LABEL_STUDIO_PORT, show_default=True, help="Port on 127.0.0.1.")
@click.option("--template/--no-template", default=True, show_default=True, help="Copy a migrated data folder (made once per machine) instead of migrating a new one.")
@friendly
def ls_start(project_dir, port, template) -> None:
    """Start the project's Label Studio on 127.0.0.1 (credentials stay in the project folder)."""
    from label_studio.server import LocalServer

    from almdn.display.labeling_status import label_studio_home
    from almdn.workflow import start_label_studio

    def say(fraction: float, stage: str | None) -> None:
        if stage:
            click.echo(stage[0].upper() + stage[1:] + "...")

    started = start_label_studio(project_dir, port, template, progress=say)
    server = LocalServer(label_studio_home(project_dir))
    login = server.credentials()
    click.echo(f"Label Studio runs at {started.url} (ready in {started.seconds:.1f} s).")
    # The login is this project's own admin on a loopback server: the user needs it to open the
    # server's page (the API token stays unprinted; the app's Label page shows the same login).
    click.echo(f"Log in as {login.username} with the password {login.password} (also in {server.credentials_path}).")


@ls.command("stop")
@_project_option
@friendly
def ls_stop(project_dir) -> None:
    """Stop the project's local Label Studio."""
    from almdn.workflow import stop_label_studio

    stopped = stop_label_studio(project_dir)
    click.echo("Label Studio stopped." if stopped else "The project's Label Studio was not running.")


@ls.command("status")
@_project_option
@friendly
def ls_status(project_dir) -> None:
    """Is the project's server running, and what is out for labeling."""
    from almdn.display.labeling_status import local_server_running, server_status

    state = local_server_running(project_dir)
    if state["running"]:
        click.echo(f"Local Label Studio: running at {state['url']} (pid {state['pid']}, {'healthy' if state['healthy'] else 'not answering'}).")
    else:
        click.echo("Local Label Studio: not running.")
    connection = server_status(project_dir)
    if connection.connected and not connection.local:
        click.echo(f"Connected to {connection.url}: {'answering' if connection.reachable else 'not answering'}.")
    with _open(project_dir) as store:
        for b in store.batches().itertuples(index=False):
            click.echo(f"Batch {b.batch_id}: {b.status}, {b.open} open / {b.tasks} tasks.")


@ls.command("connect")
@_project_option
@click.argument("url")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the API token from this file (else from $LABEL_STUDIO_API_KEY, else a hidden prompt); a token is never taken on the command line, where `ps` shows it.")
@friendly
def ls_connect(project_dir, url, token_file) -> None:
    """Use a Label Studio server at URL (images are uploaded with their tasks)."""
    from almdn.display.labeling_status import label_studio_home
    from almdn.workflow import connect_label_studio

    token = _api_token(token_file)
    version = connect_label_studio(project_dir, url, token)
    click.echo(f"Connected to Label Studio {version} at {url.rstrip('/')}; the token is stored in {label_studio_home(project_dir) / 'connection.json'} (mode 0600).")


def _api_token(token_file: Path | None) -> str:
    """The API token of ``almdn ls connect``: from ``token_file``, ``$LABEL_STUDIO_API_KEY`` or
    a hidden prompt (never an argument: the command line is visible to every local user)."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise InvalidChoice(f"Cannot read the token file '{token_file}' ({exc.strerror or type(exc).__name__}); give a readable file.") from None
    else:
        token = os.environ.get("LABEL_STUDIO_API_KEY", "").strip() or click.prompt("API token", hide_input=True).strip()
    if not token:
        raise InvalidChoice("The API token is empty; set $LABEL_STUDIO_API_KEY, give --token-file, or type it at the prompt.")
    return token


# --------------------------------------------------------------------------- push and pull


@click.command("push")
@_project_option
@click.option("--top-k", "top_k", required=True, type=click.IntRange(min=1), help="Send the K most informative pool images (those already sent count).")
@click.option("--model-version", type=int, default=None, help="Rank by this model version (default: the latest scored).")
@click.option("--method", default=None, metavar="METHOD",
              help="Acquisition method: entropy_weighted, almdn, almdn:<aggregation>, entropy, random, or a two-stage one (almdn+kcenter_balanced, almdn+kcenter, "
                   "almdn+balance, almdn+power, typiclust, entropy_weighted+balance); default: the Label page's default (almdn.acquisition.stored.DEFAULT_ACQUISITION, "
                   "chosen by the demo protocol). Each task's data says why its image was chosen.")
@friendly
def push(project_dir, top_k, model_version, method) -> None:
    """Send K pool images chosen by --method to Label Studio, with the model's detections."""
    from almdn.acquisition.stored import DEFAULT_ACQUISITION
    from almdn.workflow import push as push_batch

    method = method or DEFAULT_ACQUISITION  # the same batch the app's Label page proposes

    with _open(project_dir) as store:
        click.echo(str(push_batch(store, project_dir, top_k, model_version=model_version, method=method)))


@click.command("pull")
@_project_option
@friendly
def pull(project_dir) -> None:
    """Bring finished annotations from Label Studio into the project."""
    from almdn.workflow import pull as pull_labels

    with _open(project_dir) as store:
        report = pull_labels(store, project_dir)
    click.echo(str(report))
    for b in report.batches:
        click.echo(f"  batch {b['batch_id']}: {b['status']}, {b['annotated']} annotated, {b['skipped']} skipped, {b['deleted']} deleted, {b['open']} open of {b['tasks']}")
    for problem in report.problems:
        click.echo(problem, err=True)
    for notice in report.notices:  # annotations deleted in Label Studio, tasks almdn did not push
        click.echo(f"Note: {notice}", err=True)
    if report.problems:
        n = len(report.problems)
        raise UserError(f"{n} annotation{'' if n == 1 else 's'} {'was' if n == 1 else 'were'} not imported (see above); everything else was stored.")


@click.command("app")
@_project_option
@click.option("--port", default=8501, show_default=True, help="Port of the app.")
@click.option("--serve-to-network-without-login", "expose", default=None, metavar="ADDRESS",
              help="Listen on ADDRESS instead of 127.0.0.1. The app has no login and can read files and start jobs: anyone who reaches ADDRESS can.")
def app(project_dir, port, expose) -> None:
    """Run the Streamlit app on 127.0.0.1 (from any folder: the settings are passed here, not read from .streamlit/)."""
    import subprocess
    import sys

    app_dir = Path(__file__).resolve().parents[2] / "app"
    main_py = app_dir / "main.py"
    # app/serve.py is `streamlit run` with the pages' libraries imported before the server answers
    args = [sys.executable, str(app_dir / "serve.py"), "run", str(main_py), "--server.address", expose or "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    if expose:
        args += ["--", "--serve-to-network-without-login"]
    env = {**os.environ, "ALMDN_PROJECT": str(Path(project_dir).absolute()), "OMP_WAIT_POLICY": "PASSIVE"}
    click.echo(f"almdn app at http://{expose or '127.0.0.1'}:{port} (Ctrl-C stops it).")
    from almdn.projects.demo_project import default_projects_root, is_ready

    project = Path(project_dir).absolute()
    if project == default_projects_root() / "demo" and not is_ready(project):
        # The app creates the demo project, but only once a browser opens the page.
        click.echo("First run: the demo project (data, a first model, the scored pool; a few minutes on a CPU) is created when that page is "
                   "first opened in a browser; the page shows its progress.")
    raise SystemExit(subprocess.call(args, env=env))


COMMANDS = (project, ls, push, pull, app)
