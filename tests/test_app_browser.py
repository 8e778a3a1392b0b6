"""The app under ``streamlit run`` in a real headless Chromium: every page loads, draws its
content and is photographed; the server binds 127.0.0.1 by default."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.app_support import REPO, project  # noqa: F401

sys.path.insert(0, str(REPO / "scripts"))
from app_screenshots import CHROMIUM, PAGES, screenshots, streamlit_server  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/test.sh installs it with apt-get)")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                    found.add(address)
    return found


def test_every_page_in_a_real_browser(project, tmp_path):
    with streamlit_server(project) as url:
        results = screenshots(url, tmp_path / "shots", width=1400, height=2000)
    assert list(results) == [p.name for p in PAGES]
    for name, result in results.items():
        image = Image.open(result["file"])
        assert image.size == (1400, 2000), name
        # a drawn page is not blank: the screenshot has many colours
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50, name
        assert "Page not found" not in result["text"], name
        assert "Traceback" not in result["text"], name
        assert result["seconds"] < 10.0, name
    text = {name: r["text"] for name, r in results.items()}
    assert "Pool images" in text["pool"] and "22" in text["pool"]
    assert "ranks 1 of 22 pool images" in text["image"]
    assert "Not connected to Label Studio" in text["label"]
    assert "Retrain" in text["train"] and "mAP@0.5 (test)" in text["train"]
    assert "Labeled boxes per class" in text["history"]
    assert "Start a local Label Studio" in text["settings"]
    assert "Create a project" in text["projects"]


def test_the_app_binds_to_loopback_by_default(project):
    # no --server.address: the repository's .streamlit/config.toml decides
    with streamlit_server(project, address=None) as url:
        port = int(url.rsplit(":", 1)[1])
        assert httpx.get(url + "/_stcore/health", timeout=5).text.strip() == "ok"
        addresses = _listening_addresses(port)
        assert addresses == {"0100007F"}, addresses  # 127.0.0.1 only, in /proc's byte order
