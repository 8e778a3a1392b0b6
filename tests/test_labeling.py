"""The app's side of Label Studio without a server: connection states, a server that is down,
batch progress. (The round trip with a real server: tests/test_app_e2e.py.)"""

from __future__ import annotations

import pytest

from almdn import workflow
from almdn.display import labeling_status as labeling
from almdn.projects.store import Store
from label_studio.client import LabelStudioUnavailable, save_connection
from label_studio.server import free_port
from tests.app_support import project  # noqa: F401


def test_not_connected(project):
    status = labeling.server_status(project)
    assert not status.connected and not status.reachable
    assert status.message.startswith("Not connected to Label Studio")


def test_unreachable_server_is_one_sentence_and_push_writes_nothing(project):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    save_connection(project, url, token="0123456789abcdef")
    status = labeling.server_status(project, timeout=0.5)
    assert status.connected and not status.reachable and status.url == url
    assert status.message == f"Label Studio at {url} does not answer; check that the server runs and that its URL is right on the Settings page. Everything else in the app keeps working."
    with Store.open(project, create=False) as store:
        before = store.counts()
        with pytest.raises(LabelStudioUnavailable, match=f"Cannot reach Label Studio at {url}"):
            workflow.push(store, project, image_ids=store.image_ids("pool")[:3])
        assert store.counts() == before


def test_a_local_server_that_stopped_says_to_start_it(project):
    save_connection(project, f"http://127.0.0.1:{free_port()}", token="0123456789abcdef")
    # a local connection keeps its token in the server's credentials file
    from label_studio.server import Credentials

    Credentials.generate().save(project / "label-studio" / "credentials.json")
    save_connection(project, f"http://127.0.0.1:{free_port()}", local=True, document_root=str(project))
    status = labeling.server_status(project, timeout=0.5)
    assert status.local and "start it again on the Settings page" in status.message


def test_damaged_connection_file(project):
    (project / "label-studio").mkdir()
    (project / "label-studio" / "connection.json").write_text("{not json")
    status = labeling.server_status(project)
    assert not status.connected and "Cannot read the credentials file" in status.message


def test_batch_progress(project):
    with Store.open(project, create=False) as store:
        assert labeling.batch_table(store).empty and not labeling.has_open_tasks(store)
        ids = store.image_ids("pool")[:3]
        row = store.ls_project("http://127.0.0.1:1", 5, "t")
        batch = store.record_batch(row, [(11, ids[0]), (12, ids[1]), (13, ids[2])], 1, 3)
        assert labeling.has_open_tasks(store)
        store.record_pull(row, "http://127.0.0.1:1", [], {11: "annotated", 12: "skipped"}, [])
        table = labeling.batch_table(store).set_index("batch_id")
        assert table.loc[batch, "finished"] == 2 and table.loc[batch, "progress"] == pytest.approx(2 / 3)
        assert table.loc[batch, "status"] == "partial"


def test_status_sentences_do_not_send_the_settings_page_to_itself(project):
    status = labeling.server_status(project)
    assert status.sentence() == "Not connected to Label Studio; start a local one or connect to a server on the Settings page."
    assert status.sentence(on_settings_page=True) == "Not connected to Label Studio; start a local one or connect to a server."


def test_a_local_servers_login_is_in_its_status(project):
    from label_studio.server import Credentials

    login = Credentials.generate()
    login.save(project / "label-studio" / "credentials.json")
    save_connection(project, f"http://127.0.0.1:{free_port()}", local=True, document_root=str(project))
    status = labeling.server_status(project, timeout=0.5)
    assert (status.username, status.password) == (login.username, login.password)
    assert login.password not in repr(status)


def test_ranking_data_and_skipped_images(project):
    with Store.open(project, create=False) as store:
        mv = store.latest_model_version(scored=True)
        ranking = store.pool_ranking(mv)
        top = [int(i) for i in ranking["image_id"].iloc[:2]]
        data = labeling.ranking_data(store, mv, top, "entropy")
        first = data[top[0]]
        assert list(first) == list(labeling.RANKING_FIELDS)
        assert first["rank"] == 1 and first["final_score"] == pytest.approx(ranking["score"].iloc[0], abs=1e-6)
        assert first["class_epistemic"] == pytest.approx(ranking["cls_epistemic"].iloc[0], abs=1e-6)
        assert first["selected_by"] == "entropy" and first["model_version"] == "model-1"
        assert labeling.skipped_images(store).empty
        row = store.ls_project("http://127.0.0.1:1", 5, "t")
        store.record_batch(row, [(11, top[0]), (12, top[1])], mv, 2)
        store.record_pull(row, "http://127.0.0.1:1", [], {11: "skipped"}, [])
        assert labeling.skipped_images(store)["image_id"].tolist() == [top[0]]
