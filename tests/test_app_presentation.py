"""The app's presentation helpers (``app/presentation.py``): paging and thumbnails."""

from __future__ import annotations

import io
import sys

from almdn import views
from tests.app_support import REPO, project, store  # noqa: F401

sys.path.insert(0, str(REPO / "app"))
from presentation import data_url, page_of, thumbnail  # noqa: E402


def test_page_of(store):
    table = views.pool_table(store)
    rows, pages = page_of(table, 2, 7)
    assert pages == -(-len(table) // 7) and rows["image_id"].tolist() == table["image_id"].iloc[7:14].tolist()
    rows, _ = page_of(table, 99, 7)  # past the end: the last page
    assert rows["image_id"].tolist() == table["image_id"].iloc[(pages - 1) * 7:].tolist()


def test_thumbnails_are_cached_on_disk(store, tmp_path):
    path = store.images("pool")["path"].iloc[0]
    data = thumbnail(path, tmp_path, size=48)
    from PIL import Image

    assert max(Image.open(io.BytesIO(data)).size) == 48
    files = list((tmp_path / "48").glob("*.jpg"))
    assert len(files) == 1 and files[0].read_bytes() == data
    assert thumbnail(path, tmp_path, size=48) == data
    assert data_url(data).startswith("data:image/jpeg;base64,")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert thumbnail(bad, tmp_path) is None and data_url(None) is None
