"""The local Label Studio server: credentials kept private, busy port, fast restart, and a
push that fails while the server is down and succeeds once it is back."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from almdn.workflow import push
from label_studio.client import LabelStudioUnavailable
from label_studio.server import Credentials, LocalServer, ServerError, free_port, health, port_is_free, read_secret_json, write_secret_json
from tests.label_studio_support import TEMPLATE, ls_project, ls_server  # noqa: F401  (fixtures)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_session_server_answers_on_loopback_only(ls_server):
    assert health(ls_server.url)
    status = ls_server.server.status()
    assert status["running"] and status["healthy"] and status["url"].startswith("http://127.0.0.1:")
    # Bound to 127.0.0.1: the same port on another local address is free.
    with socket.socket() as s:
        s.bind(("127.0.0.2", ls_server.server.port))
    print(f"\n[label studio] template {ls_server.template_seconds:.1f} s, first start (template copy) {ls_server.start_seconds:.1f} s")


def test_credentials_are_private_and_never_shown(ls_server):
    server = ls_server.server
    credentials = server.credentials()
    assert mode(server.credentials_path) == 0o600
    assert mode(server.data_dir / ".env") == 0o600  # the copy's own Django secret key
    assert (server.data_dir / ".env").read_text() != (TEMPLATE / "data" / ".env").read_text()
    assert not (TEMPLATE / "credentials.json").exists()  # the template admin's secrets were never kept
    assert credentials.token not in repr(credentials) and credentials.password not in str(credentials)
    log = server.log_path.read_text(errors="replace")
    assert "Starting development server" in log or "Quit the server" in log
    assert credentials.token not in log and credentials.password not in log
    # Not on the command line of the server either (where `ps` would show it).
    pid = server.status()["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert credentials.token.encode() not in f.read()


def test_secret_files_are_created_0600_and_tightened(tmp_path):
    os.umask(0o022)
    path = write_secret_json(tmp_path / "c.json", {"username": "u", "password": "p", "token": "t" * 40})
    assert mode(path) == 0o600
    os.chmod(path, 0o644)
    assert read_secret_json(path)["token"] == "t" * 40
    assert mode(path) == 0o600
    generated = Credentials.generate()
    assert 6 <= len(generated.token) <= 40 and generated.token != Credentials.generate().token


def test_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        assert not port_is_free(port)
        server = LocalServer(tmp_path / "home", port=port, template=TEMPLATE)
        with pytest.raises(ServerError, match=f"Port {port} on 127.0.0.1 is already in use by another program; choose another port"):
            server.start()
    assert not server.state_path.exists() and not server.status()["running"]


def test_missing_server_program_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ALMDN_LABEL_STUDIO", raising=False)
    monkeypatch.setattr("label_studio.server.repo_root", lambda: tmp_path)  # no .venv-label-studio there
    with pytest.raises(ServerError, match="Label Studio server is not installed; run 'bash scripts/setup_label_studio.sh'"):
        LocalServer(tmp_path / "home", port=free_port(), executable=tmp_path / "nothing").start()


def test_server_that_dies_while_starting_reports_its_log(tmp_path):
    program = tmp_path / "label-studio"
    program.write_text("#!/bin/sh\necho 'boom: cannot start'\nexit 3\n")
    program.chmod(0o755)
    server = LocalServer(tmp_path / "home", port=free_port(), executable=program)
    with pytest.raises(ServerError, match="Label Studio stopped while starting .*boom: cannot start"):
        server.start(timeout=30)
    assert not server.status()["running"]


def test_start_is_idempotent(ls_server):
    pid = ls_server.server.status()["pid"]
    seconds = ls_server.server.start()
    assert seconds < 5 and ls_server.server.status()["pid"] == pid


def test_push_while_the_server_is_stopped_then_after_a_fast_restart(ls_server, ls_project):
    p = ls_project
    first = push(p.store, p.client, 2)
    before = (len(p.store.tasks()), len(p.store.batches()))
    assert ls_server.server.stop()
    assert not ls_server.server.status()["running"] and not health(ls_server.url)
    with pytest.raises(LabelStudioUnavailable, match=f"Cannot reach Label Studio at {ls_server.url} while finding the project"):
        push(p.store, p.client, 4)
    assert (len(p.store.tasks()), len(p.store.batches())) == before
    t0 = time.perf_counter()
    seconds = ls_server.server.start()
    ls_server.restarts.append(seconds)
    print(f"\n[label studio] restart on the migrated data folder: {seconds:.1f} s")
    assert seconds < 45 and time.perf_counter() - t0 < 60
    again = push(p.store, p.client, 4)  # the retry succeeds; the project survived the restart
    assert again.project_id == first.project_id
    assert len(again.created) == 2 and sorted(again.already) == sorted(i for _, i in first.created)


def test_every_project_server_has_its_own_admin_and_private_files(ls_server):
    """The template's admin (and any token it had) is disabled in every copy; the data folder
    is 0700 and the database, which holds the token, 0600."""
    import sqlite3

    server = ls_server.server
    db = server.data_dir / "label_studio.sqlite3"
    assert mode(server.home) == 0o700 and mode(server.data_dir) == 0o700 and mode(db) == 0o600
    assert all(mode(f) == 0o600 for f in server.data_dir.rglob("*") if f.is_file() and not f.is_symlink())
    assert all(mode(d) == 0o700 for d in server.data_dir.rglob("*") if d.is_dir())
    conn = sqlite3.connect(db)
    tokens = [r[0] for r in conn.execute("SELECT key FROM authtoken_token")]
    active = [r[0] for r in conn.execute("SELECT email FROM htx_user WHERE is_active = 1")]
    conn.close()
    assert tokens == [ls_server.token] and active == [server.credentials().username]
    # The template holds no token and no active user that copies could share ...
    conn = sqlite3.connect(TEMPLATE / "data" / "label_studio.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM authtoken_token").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM htx_user WHERE is_active = 1").fetchone()[0] == 0
    conn.close()
    assert mode(TEMPLATE) == 0o700 and mode(TEMPLATE / "data" / "label_studio.sqlite3") == 0o600


def test_a_template_made_by_an_older_almdn_gives_its_token_to_no_copy(tmp_path):
    """A template whose admin kept a token (as earlier versions left it): the copy disables it."""
    import shutil
    import sqlite3

    import httpx

    old = tmp_path / "old-template"
    shutil.copytree(TEMPLATE, old)
    conn = sqlite3.connect(old / "data" / "label_studio.sqlite3")
    with conn:
        user = conn.execute("SELECT id FROM htx_user ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE htx_user SET is_active = 1 WHERE id = ?", (user,))
        conn.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (?, '2026-01-01 00:00:00', ?)", ("t" * 40, user))
    conn.close()
    server = LocalServer(tmp_path / "home", port=free_port(), template=old)
    server.start()
    try:
        whoami = lambda token: httpx.get(server.url + "/api/current-user/whoami", headers={"Authorization": f"Token {token}"}, timeout=10).status_code
        assert whoami("t" * 40) == 401
        assert whoami(server.credentials().token) == 200
    finally:
        server.stop()


def test_server_environment_is_an_allow_list(ls_server, tmp_path):
    """The child gets PATH, HOME, the locale... and the settings it needs, nothing else of the
    user's environment (issue 20): no secrets, no HOST/PORT/DATABASE_URL Django would read."""
    from label_studio.server import ENV_ALLOWED, server_env

    credentials = Credentials.generate()
    user = {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t", "DATABASE_URL": "postgres://x", "HOST": "0.0.0.0", "PORT": "80",
            "PYTHONPATH": "/evil", "LABEL_STUDIO_PASSWORD": "theirs", "DJANGO_SETTINGS_MODULE": "evil", "HTTPS_PROXY": "http://proxy"}
    env = server_env(tmp_path / "data", credentials, tmp_path / "root", environ=user)
    assert {k: env[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")} == {k: user[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    for name in ("AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "HOST", "PORT", "PYTHONPATH", "DJANGO_SETTINGS_MODULE", "HTTPS_PROXY"):
        assert name not in env
    assert env["LABEL_STUDIO_PASSWORD"] == credentials.password and env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "data")
    # The running server's own environment holds nothing beyond the allow-list and those settings.
    pid = int(ls_server.server.status()["pid"])
    with open(f"/proc/{pid}/environ", "rb") as f:
        names = {item.split(b"=", 1)[0].decode() for item in f.read().split(b"\0") if item}
    ours = set(server_env(tmp_path, credentials, tmp_path, environ={}))
    # the server program itself may add variables of its own once running (Django's settings module)
    extra = names - ours - set(ENV_ALLOWED) - {n for n in names if n.startswith("LC_")}
    assert extra <= {"DJANGO_SETTINGS_MODULE"}, extra
    assert not any(os.environ.get(n) and n not in ENV_ALLOWED for n in ("VIRTUAL_ENV", "PYTHONPATH") if n in names)
