"""Run the app under ``streamlit run`` and photograph every page in a real headless Chromium.

    .venv/bin/python scripts/app_screenshots.py --project projects/demo --out assets/screenshots

Starts ``streamlit run app/main.py --server.headless true --server.address 127.0.0.1`` (through
``app/serve.py``, as ``make demo`` does) on a
free port, opens each page in the Debian Chromium (``/usr/bin/chromium``, driven by Python
Playwright, which downloads nothing), waits until the page's own text is drawn (Streamlit
renders in the browser after the page loads), saves a full-window screenshot of a tall window
(Streamlit scrolls inside its own container, so a full-page screenshot would cut it) and stops
the server. The browser test (tests/test_app_browser.py) runs the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@dataclass(frozen=True)
class PageShot:
    """A page of the app, a text that is on it once it is drawn, and the screenshot's name."""

    url_path: str
    wait_for: str
    name: str
    query: str = ""


#: Every page, with text that only appears once its content (not just its title) is drawn.
PAGES = (
    PageShot("", "Open image", "pool"),
    PageShot("image", "The image's four uncertainties", "image"),
    PageShot("label", "Choose the next batch", "label"),
    PageShot("review", "Score the labels with", "review"),
    PageShot("train", "Retrain", "train"),
    PageShot("history", "Labeled boxes per class", "history"),
    PageShot("settings", "Model, training and thresholds", "settings"),
    PageShot("projects", "Create a project", "projects"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def streamlit_server(project: str | os.PathLike[str] | None, env: dict[str, str] | None = None, port: int | None = None, timeout: float = 120.0,
                     address: str | None = "127.0.0.1"):
    """``streamlit run app/main.py`` on ``address`` (None: whatever .streamlit/config.toml
    says); yields its URL; stops it (its whole process group: the server and nothing else)."""
    port = port or _free_port()
    child_env = {**os.environ, **(env or {}), "OMP_WAIT_POLICY": "PASSIVE"}
    if project is not None:
        child_env["ALMDN_PROJECT"] = str(Path(project).absolute())
    # The server's log goes to the system's temporary folder (named in any error), never into the checkout.
    log = tempfile.NamedTemporaryFile(prefix=f"almdn-streamlit-{port}-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "app" / "serve.py"), "run", str(REPO / "app" / "main.py"), "--server.headless", "true",
         *(["--server.address", address] if address else []), "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {process.returncode} before answering on {url} (log: {log.name})")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s (log: {log.name})")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def _trim_bottom(path: Path, margin: int = 32) -> None:
    """Cut the empty space under the page's content (the window is tall on purpose)."""
    import numpy as np
    from PIL import Image

    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image).astype(np.int16)
    main = pixels[:, image.width // 4:]  # right of the sidebar
    background = main[-1, -1]
    rows = np.nonzero((np.abs(main - background).max(axis=2) > 12).any(axis=1))[0]
    bottom = min(image.height, int(rows[-1]) + margin) if len(rows) else image.height
    if bottom < image.height:
        image.crop((0, 0, image.width, bottom)).save(path, optimize=True)


def screenshots(url: str, out_dir: str | os.PathLike[str], pages=PAGES, width: int = 1400, height: int = 2000, wait_s: float = 10.0, settle_s: float = 1.5,
                trim: bool = False) -> dict[str, dict]:
    """Load every page in headless Chromium and save ``<out_dir>/<name>.png``.

    Returns per page: the seconds until its text was drawn, the page's visible text, and the
    file. Raises if a page does not show its text within ``wait_s`` seconds, or shows a Python
    exception.
    """
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            page = context.new_page()
            for shot in pages:
                t0 = time.perf_counter()
                page.goto(f"{url}/{shot.url_path}{shot.query}", wait_until="domcontentloaded")
                page.get_by_text(shot.wait_for, exact=False).first.wait_for(state="visible", timeout=wait_s * 1000)
                seconds = time.perf_counter() - t0
                # Streamlit keeps drawing charts and images after the text: let it finish.
                with contextlib.suppress(Exception):
                    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=wait_s * 1000)
                page.wait_for_timeout(settle_s * 1000)
                text = page.inner_text("body")
                if page.locator("[data-testid='stException']").count():
                    raise RuntimeError(f"page '{shot.url_path}' shows an exception: {page.locator('[data-testid=stException]').first.inner_text()[:300]}")
                path = out / f"{shot.name}.png"
                page.screenshot(path=str(path))
                if trim:
                    _trim_bottom(path)
                results[shot.name] = {"seconds": seconds, "text": text, "file": path}
        finally:
            browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="The project folder the app opens.")
    parser.add_argument("--out", default="assets/screenshots")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    with streamlit_server(args.project) as url:
        results = screenshots(url, args.out, width=args.width, height=args.height, trim=True)
    for name, r in results.items():
        print(f"{name:10s} drawn in {r['seconds']:.2f} s -> {r['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
