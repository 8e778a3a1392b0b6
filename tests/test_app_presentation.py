"""The app's presentation helpers (``app/presentation.py``): paging and thumbnails."""

from __future__ import annotations

import io
import sys

from almdn.display import store_tables as views
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


def test_thumbnails_show_the_photo_as_browsers_do(tmp_path):
    from PIL import Image

    from tests.test_records import exif_jpeg

    path = exif_jpeg(tmp_path / "portrait.jpg", size=(200, 100), orientation=6)
    assert Image.open(io.BytesIO(thumbnail(path, None, size=48))).size == (24, 48)


NASTY = ["[click](http://evil.example/x)", "![x](http://evil.example/a.png)", "<img src=x onerror=alert(1)>", "**bold** _em_ `code` ~~s~~ $x$",
         ":red[red] :material/home:", "www.evil.example http://evil.example", "red\x1b[31m\x1b]0;title\x07\x07"]


def test_names_are_shown_as_text_not_markdown():
    from presentation import as_text, html_text, plain

    shown = [as_text(n) for n in NASTY]
    assert shown == [
        r"\[click\](http\://evil.example/x)",
        r"!\[x\](http\://evil.example/a.png)",
        r"\<img src=x onerror=alert(1)\>",
        r"\*\*bold\*\* \_em\_ \`code\` \~\~s\~\~ \$x\$",
        r"\:red\[red\] \:material/home:",
        r"www\.evil.example http\://evil.example",
        "red",
    ]
    # Ordinary sentences and paths are left as they are.
    sentence = "Cannot read image '/tmp/test_x/a_b.png' (file not found); put the file back, then try again."
    assert as_text(sentence) == sentence
    assert html_text('<a href="http://x">cat</a> & dog') == '&lt;a href="http://x"&gt;cat&lt;/a&gt; &amp; dog'
    assert plain("a\x1b[1;31mb\x1b[0m\tc\nd\x00") == "ab\tc\nd"


def test_the_mixture_figure_draws_a_display_sized_image_in_the_stored_frame_with_names_as_text():
    import base64

    import numpy as np
    from PIL import Image

    from figures import class_spread_figure, labels_figure, mixture_figure

    det = {"detection": 0, "box": [100, 200, 900, 1500], "score": 0.9, "class_name": '<a href="http://x">cat</a>',
           "component_boxes": [[100, 200, 900, 1500]], "component_weights": [1.0], "component_sigmas": [[5, 5, 5, 5]],
           "class_weights": [1.0], "class_probs": [[0.1, 0.9]], "mixture_probs": [0.1, 0.9]}
    small = np.zeros((200, 100, 3), dtype=np.uint8)  # a 1000x2000 image decoded for display at 1/10
    fig = mixture_figure(small, [det], 0, frame=(1000, 2000)).to_dict()
    [image] = fig["layout"]["images"]
    assert (image["sizex"], image["sizey"]) == (1000, 2000) and list(fig["layout"]["xaxis"]["range"]) == [0, 1000]
    png = base64.b64decode(image["source"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (100, 200)  # the embedded picture is the small one
    texts = [a["text"] for a in fig["layout"].get("annotations", [])] + fig["layout"]["meta"]["labels_left_out"] + [t for tr in fig["data"] for t in (tr.get("text") or [])]
    assert not any("<a " in t for t in texts) and any("&lt;a href" in t for t in texts)
    spread = class_spread_figure(det, ['<a href="http://x">cat</a>']).to_dict()
    assert list(spread["data"][-1]["x"]) == ["background", '&lt;a href="http://x"&gt;cat&lt;/a&gt;']
    import pandas as pd

    bars = labels_figure(pd.DataFrame({"class_name": ["<b>x</b>"], "boxes": [3]})).to_dict()
    assert list(bars["data"][0]["x"]) == ["&lt;b&gt;x&lt;/b&gt;"]
