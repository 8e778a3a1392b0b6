"""The suite's own guard (tests/conftest.py): a test that writes into the checkout's
``projects/``, ``runs/`` or ``data/`` is caught, and the app's default projects folder is a
temporary one while the tests run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import REPO, checkout_outputs_state


def test_the_default_projects_folder_is_temporary_during_the_suite():
    from almdn.projects.demo_project import default_projects_root

    root = default_projects_root()
    assert not root.is_relative_to(REPO), root
    assert os.environ["ALMDN_PROJECTS"] == str(root)


def test_a_new_or_changed_output_folder_changes_the_fingerprint(tmp_path: Path):
    empty = checkout_outputs_state(tmp_path)
    assert empty == {"projects": (), "runs": (), "data": ()}
    (tmp_path / "projects" / "demo").mkdir(parents=True)
    created = checkout_outputs_state(tmp_path)
    assert created["projects"] != empty["projects"] and created["runs"] == ()
    (tmp_path / "data" / "demo-al").mkdir(parents=True)
    before = checkout_outputs_state(tmp_path)
    time.sleep(0.01)
    (tmp_path / "data" / "demo-al" / "train.json").write_text("{}")
    assert checkout_outputs_state(tmp_path)["data"] != before["data"]
    assert checkout_outputs_state(tmp_path) == checkout_outputs_state(tmp_path)
