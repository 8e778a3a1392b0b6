import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
#: What a run of the app or an experiment writes into the working directory by default; no
#: test may create or change them in the checkout (tests write under temporary folders only).
CHECKOUT_OUTPUTS = ("projects", "runs", "data")


def checkout_outputs_state(repo: Path = REPO, names=CHECKOUT_OUTPUTS) -> dict[str, tuple]:
    """A cheap fingerprint of ``repo/<name>`` for each name: absent, or its entries two levels
    deep with their modification times (a new project, run or dataset shows at that depth)."""
    state = {}
    for name in names:
        root = repo / name
        if not root.exists():
            state[name] = ()
            continue
        entries = [(str(p.relative_to(root)), p.stat().st_mtime_ns) for p in (root, *root.iterdir()) if p.exists()]
        entries += [(str(q.relative_to(root)), q.stat().st_mtime_ns) for p in root.iterdir() if p.is_dir() for q in p.iterdir() if q.exists()]
        state[name] = tuple(sorted(entries))
    return state


@pytest.fixture(scope="session", autouse=True)
def _projects_in_a_temporary_folder(tmp_path_factory):
    """The app's default projects folder (``./projects``) is a temporary one for the whole
    suite: a test that opens the app without choosing a project must not create the demo
    project in the checkout."""
    previous = os.environ.get("ALMDN_PROJECTS")
    os.environ["ALMDN_PROJECTS"] = str(tmp_path_factory.mktemp("projects"))
    yield
    if previous is None:
        os.environ.pop("ALMDN_PROJECTS", None)
    else:
        os.environ["ALMDN_PROJECTS"] = previous


@pytest.fixture(autouse=True)
def _checkout_left_as_found(request):
    """Fail the test that created or changed ``projects/``, ``runs/`` or ``data/`` in the checkout."""
    before = checkout_outputs_state()
    yield
    after = checkout_outputs_state()
    changed = [name for name in CHECKOUT_OUTPUTS if before[name] != after[name]]
    if changed:
        pytest.fail(f"{request.node.nodeid} wrote into the checkout's {', '.join(n + '/' for n in changed)}: tests must write under temporary folders only", pytrace=False)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo dataset (60 train / 20 test images), generated once per session."""
    from almdn.data.demo import DemoConfig, generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "tiny", DemoConfig(num_train=60, num_test=20, seed=3), progress=False)
