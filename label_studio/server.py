"""Start and stop a local Label Studio server in its own virtual environment.

The server (``label-studio==1.23.2``) lives in ``.venv-label-studio`` (made by
``scripts/setup_label_studio.sh``) because it does not resolve together with torch and
streamlit; the library only talks to it over HTTP.

A server belongs to a *home* folder (``<project>/label-studio``) that holds:

- ``data/``: the server's own database and uploads (``LABEL_STUDIO_BASE_DATA_DIR``);
- ``credentials.json``: the generated admin e-mail, password and API token, mode 0600;
- ``server.json``: the running server's pid, port and URL;
- ``server.log``: the server's output (never contains the credentials: they travel in the
  environment, and the API token only in request headers).

- ``media/``: the only folder the server may serve files from (its local-files document
  root): one symbolic link per image sent for labeling, nothing else.

Everything in the home is private to the user: folders 0700, files 0600 (the server runs
with umask 077), because the database holds the admin's API token.

The first start on a new data folder runs about 60 s of database migrations. To avoid paying
that for every project, :func:`prepare_template` migrates one data folder once (per machine,
under ``~/.cache/almdn``) and :class:`LocalServer` copies it; a restart reuses the folder and
takes a few seconds. A copy gets a fresh admin user with the project's own credentials; the
template's admin is disabled in every copy (no API token, no usable password, no session), so
no two projects' servers share a login.

Traps of the server this module avoids: ``--internal-host`` is
the bind address (we always bind 127.0.0.1); a busy port silently moves the server to the next
one unless ``--debug`` is given, so we check the port ourselves and pass ``--debug``; the
server reads un-prefixed ``HOST``/``PORT``/``USERNAME``/... from the environment, so the child's
environment is built from an allow-list (:func:`server_env`), never inherited.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from label_studio.errors import ServerError

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_PORT = 8080
HOST = "127.0.0.1"

#: The only variables of our environment the server's process inherits (plus ``LC_*``): an
#: allow-list, so nothing else of the user's environment (secrets, ``HOST``/``PORT``/
#: ``USERNAME``/``DATABASE_URL``... that Django settings read, ``PYTHONPATH``) reaches it. The
#: ``LABEL_STUDIO_*`` it needs are set by :func:`server_env` itself, never inherited.
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SSL_CERT_FILE", "SSL_CERT_DIR")




# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """Admin login and API token of a server. ``repr`` never shows the secrets."""

    username: str
    password: str
    token: str

    @classmethod
    def generate(cls) -> Credentials:
        # The server accepts legacy tokens of 6-40 characters; 40 hex digits = 160 bits.
        return cls(
            username=f"admin-{secrets.token_hex(4)}@almdn.local",
            password=secrets.token_urlsafe(24),
            token=secrets.token_hex(20),
        )

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***, token=***)"

    __str__ = __repr__

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``path`` with mode 0600 (created so, never readable by others even briefly)."""
        return write_secret_json(path, {"username": self.username, "password": self.password, "token": self.token})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        data = read_secret_json(path)
        try:
            return cls(username=str(data["username"]), password=str(data["password"]), token=str(data["token"]))
        except KeyError as exc:
            raise ServerError(f"The credentials file '{path}' lacks '{exc.args[0]}'; delete it and the data folder beside it to start over.") from None


def write_secret_json(path: str | os.PathLike[str], data: dict) -> Path:
    """Write JSON to ``path`` atomically with mode 0600 from the moment the file exists."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_secret_text(path, json.dumps(data))


def write_secret_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask; an old tmp keeps its mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def read_secret_json(path: str | os.PathLike[str]) -> dict:
    """Read a 0600 JSON file; tighten its mode first if someone loosened it."""
    path = Path(path)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServerError(f"No credentials at '{path}'; start the server first (almdn ls start) or connect to one (almdn ls connect).") from None
    except (OSError, ValueError) as exc:
        raise ServerError(f"Cannot read the credentials file '{path}' ({type(exc).__name__}); delete it and connect again.") from None
    if not isinstance(data, dict):
        raise ServerError(f"The credentials file '{path}' is not a JSON object; delete it and connect again.")
    return data


# --------------------------------------------------------------------------- locating the server


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def find_executable(executable: str | os.PathLike[str] | None = None) -> Path:
    """The ``label-studio`` program: as given, ``$ALMDN_LABEL_STUDIO``, or the repo's venv."""
    candidates = [executable, os.environ.get("ALMDN_LABEL_STUDIO"), repo_root() / ".venv-label-studio" / "bin" / "label-studio"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServerError(
        "The Label Studio server is not installed; run 'bash scripts/setup_label_studio.sh' "
        "(or set ALMDN_LABEL_STUDIO to a label-studio program), then try again."
    )


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS considers free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def health(url: str, timeout: float = 2.0) -> bool:
    """True if the server at ``url`` answers ``/health`` with status UP."""
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        return response.status_code == 200 and response.json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _is_label_studio(pid: int) -> bool:
    """Whether ``pid`` runs label-studio (a stale state file must never make us signal
    whatever process reuses its pid). Without /proc, trust the state file."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"label-studio" in f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True


def server_env(data_dir: Path, credentials: Credentials, document_root: Path | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server process's whole environment: :data:`ENV_ALLOWED` and ``LC_*`` taken from
    ``environ`` (default: ours), then the settings the server needs."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in ENV_ALLOWED or k.startswith("LC_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=credentials.username,
        LABEL_STUDIO_PASSWORD=credentials.password,
        LABEL_STUDIO_USER_TOKEN=credentials.token,
        # Without it the token given above answers 401 (it is a "legacy" token).
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        # Nobody else on this machine may sign up on the loopback server.
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        LOG_LEVEL="WARNING",
        DEBUG="false",
        PYTHONUNBUFFERED="1",
    )
    if document_root is not None:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(document_root)
    return env


def make_private(path: Path) -> None:
    """Folders 0700 and files 0600 under ``path`` (and ``path`` itself)."""
    os.chmod(path, 0o700 if path.is_dir() else 0o600)
    if path.is_dir():
        for folder, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(folder, d), 0o700)
            for f in files:
                if not os.path.islink(os.path.join(folder, f)):
                    os.chmod(os.path.join(folder, f), 0o600)


def disable_other_admins(data_dir: Path, keep: str | None = None) -> int:
    """In a stopped server's database: delete every API token, session and JWT refresh token,
    and disable every user but ``keep`` (unusable password). A template copied to many
    projects must not carry a login that works on all of them. Returns the users disabled."""
    import sqlite3

    db = data_dir / "label_studio.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        with conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in ("authtoken_token", "django_session", "token_blacklist_blacklistedtoken", "token_blacklist_outstandingtoken"):
                if table in tables:
                    conn.execute(f"DELETE FROM {table}")
            # Django treats a password starting with "!" as unusable; random so no two are alike.
            return conn.execute(
                "UPDATE htx_user SET is_active = 0, password = '!' || hex(randomblob(20)) WHERE email IS NOT ?", (keep,)
            ).rowcount
    finally:
        conn.close()


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


# --------------------------------------------------------------------------- the server


class LocalServer:
    """A Label Studio server on 127.0.0.1 whose state lives in ``home``.

    Args:
        home: the server's folder (data, credentials, state, log); created if missing.
        port: TCP port on 127.0.0.1; a busy port is an error, never silently another port.
        document_root: folder whose sub-folders may be served as local files (images);
            None disables local-file serving.
        template: a data folder made by :func:`prepare_template`; copied when ``home`` has no
            data yet, so a new project starts in seconds instead of a minute.
        executable: the ``label-studio`` program (default: :func:`find_executable`).
        settings: extra ``LABEL_STUDIO_*`` variables of the server's environment (e.g.
            ``LABEL_STUDIO_TASK_API_PAGE_SIZE_MAX``); nothing is inherited from ours.
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        document_root: str | os.PathLike[str] | None = None,
        template: str | os.PathLike[str] | None = None,
        executable: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        bad = [k for k in (settings or {}) if not k.startswith("LABEL_STUDIO_")]
        if bad:
            raise ValueError(f"server settings must be LABEL_STUDIO_* variables, not {bad}")
        self.settings = dict(settings or {})
        self.home = Path(home).absolute()
        self.port = int(port)
        self.document_root = Path(document_root).resolve() if document_root is not None else None
        self.template = Path(template) if template is not None else None
        self.executable = executable
        self._process: subprocess.Popen | None = None

    # paths
    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials.json"

    @property
    def state_path(self) -> Path:
        return self.home / "server.json"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def credentials(self) -> Credentials:
        return Credentials.load(self.credentials_path)

    # state
    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def status(self) -> dict:
        """``{"running", "healthy", "url", "pid", "port", "document_root"}`` of this home's server."""
        state = self._read_state()
        if not state:
            return {"running": False, "healthy": False, "url": None, "pid": None, "port": None, "document_root": None}
        alive = _pid_alive(int(state["pid"])) and _is_label_studio(int(state["pid"]))
        return {
            "running": alive,
            "healthy": alive and health(state["url"]),
            "url": state["url"],
            "pid": state["pid"],
            "port": state["port"],
            "document_root": state.get("document_root"),
        }

    def start(self, timeout: float = 240.0) -> float:
        """Start the server (a no-op if this home's server already runs); returns the seconds
        until it answered. Raises :class:`ServerError` on a busy port or a failed start."""
        t0 = time.perf_counter()
        state = self._read_state()
        if state and _pid_alive(int(state["pid"])) and _is_label_studio(int(state["pid"])):
            if int(state["port"]) != self.port:
                raise ServerError(f"This project's Label Studio already runs at {state['url']}; stop it first (almdn ls stop) to use port {self.port}.")
            if self.document_root is not None and state.get("document_root") != str(self.document_root):
                raise ServerError(
                    f"This project's Label Studio already runs at {state['url']} serving '{state.get('document_root')}'; "
                    "stop it (almdn ls stop) and start it again to serve the project's images."
                )
            self._wait_healthy(int(state["pid"]), t0, timeout)
            return time.perf_counter() - t0
        if not port_is_free(self.port):
            raise ServerError(f"Port {self.port} on {HOST} is already in use by another program; choose another port (--port) or stop that program.")
        executable = find_executable(self.executable)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        if self.credentials_path.exists():
            credentials = self.credentials()
        else:
            if self.data_dir.exists():
                raise ServerError(f"'{self.data_dir}' has a Label Studio database but no credentials file; delete the folder to start over.")
            credentials = Credentials.generate()
            credentials.save(self.credentials_path)
        if not self.data_dir.exists() and self.template is not None and (self.template / "READY").exists():
            tmp = self.home / f".data-copy-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.template / "data", tmp)
            # Django's SECRET_KEY signs sessions: every copy gets its own.
            write_secret_text(tmp / ".env", f"SECRET_KEY={secrets.token_urlsafe(50)}\n")
            # The template's admin must not log in here (a template made by an older almdn kept its token).
            disable_other_admins(tmp)
            make_private(tmp)
            os.replace(tmp, self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        make_private(self.data_dir)  # also a data folder made by an older almdn (0755 / 0644)
        if self.document_root is not None:
            self.document_root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self._process = subprocess.Popen(
                [str(executable), "start", "--no-browser", "--internal-host", HOST, "--port", str(self.port), "--debug"],
                cwd=self.home,
                env={**server_env(self.data_dir, credentials, self.document_root), **self.settings},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the server and its children only
                umask=0o077,  # the database it creates holds the API token: private to the user
            )
        finally:
            log.close()
        state = {
            "pid": self._process.pid,
            "port": self.port,
            "url": self.url,
            "document_root": str(self.document_root) if self.document_root else None,
            "version": LABEL_STUDIO_VERSION,
            "started_at": time.time(),
        }
        write_secret_json(self.state_path, state)
        try:
            self._wait_healthy(self._process.pid, t0, timeout)
            self._check_token(credentials)
        except BaseException:
            self.stop()
            raise
        return time.perf_counter() - t0

    def _wait_healthy(self, pid: int, t0: float, timeout: float) -> None:
        while time.perf_counter() - t0 < timeout:
            if health(self.url, timeout=2.0):
                return
            exited = self._process.poll() is not None if self._process is not None and self._process.pid == pid else not _pid_alive(pid)
            if exited:
                tail = _log_tail(self.log_path)
                with contextlib.suppress(FileNotFoundError):
                    self.state_path.unlink()
                raise ServerError(f"Label Studio stopped while starting (its log '{self.log_path}' ends: {tail or 'nothing'}); fix that and start it again.")
            time.sleep(0.25)
        raise ServerError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s; see '{self.log_path}', then start it again.")

    def _check_token(self, credentials: Credentials) -> None:
        response = httpx.get(self.url + "/api/current-user/whoami", headers={"Authorization": f"Token {credentials.token}"}, timeout=10)
        if response.status_code != 200:
            raise ServerError(
                f"Label Studio at {self.url} rejects the stored API token (HTTP {response.status_code}); delete '{self.home}' to start "
                "this project's server from scratch (its labeling data are lost unless pulled)."
            )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop this home's server; True if one was running."""
        state = self._read_state()
        pid = int(state["pid"]) if state else (self._process.pid if self._process else None)
        was_running = pid is not None and _pid_alive(pid) and _is_label_studio(pid)
        if was_running:
            # The server runs in its own session: signal its process group, i.e. exactly the
            # processes this module started.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                if self._process is not None and self._process.pid == pid:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._process.wait(timeout=0.2)
                else:
                    time.sleep(0.2)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                if self._process is not None and self._process.pid == pid:
                    self._process.wait(timeout=10)
        self._process = None
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return was_running


# --------------------------------------------------------------------------- the template


def media_root(project_dir: str | os.PathLike[str]) -> Path:
    """The local-files document root of a project's own server: ``<project>/label-studio/media``,
    which holds nothing but links to the images pushed for labeling."""
    return Path(project_dir).absolute() / "label-studio" / "media"


def default_template_dir() -> Path:
    """Per-machine cache of the migrated data folder (``$ALMDN_LABEL_STUDIO_TEMPLATE`` overrides)."""
    if os.environ.get("ALMDN_LABEL_STUDIO_TEMPLATE"):
        return Path(os.environ["ALMDN_LABEL_STUDIO_TEMPLATE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "almdn" / f"label-studio-{LABEL_STUDIO_VERSION}-template"


def prepare_template(path: str | os.PathLike[str] | None = None, executable: str | os.PathLike[str] | None = None, timeout: float = 300.0) -> Path:
    """Make (once) a migrated Label Studio data folder at ``path/data``; returns ``path``.

    Starts a throw-away server on a free port, waits for its migrations, stops it. The admin it
    creates has credentials that are generated here and never stored. Safe to call from
    several processes at once (a lock file serializes them).
    """
    import fcntl

    path = Path(path) if path is not None else default_template_dir()
    if (path / "READY").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "READY").exists():
            return path
        build = path.parent / f".{path.name}.build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        server = LocalServer(build, port=free_port(), executable=executable)
        try:
            server.start(timeout=timeout)
            server.stop()
            server.credentials_path.unlink()  # the template admin's secrets are never kept
            disable_other_admins(server.data_dir)  # nor a token or login that copies would share
            make_private(build)
            (build / "READY").write_text(LABEL_STUDIO_VERSION + "\n")
            shutil.rmtree(path, ignore_errors=True)
            os.replace(build, path)
        finally:
            server.stop()
            shutil.rmtree(build, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m label_studio.server template [PATH]``: build the migrated template."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["template"]:
        t0 = time.perf_counter()
        where = prepare_template(argv[1] if len(argv) > 1 else None)
        print(f"Label Studio template ready at {where} ({time.perf_counter() - t0:.0f} s).")
        return 0
    print("usage: python -m label_studio.server template [PATH]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
