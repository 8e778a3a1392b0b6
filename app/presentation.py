"""Purely presentation helpers of the app: paging a table, image thumbnails, the names of the
acquisition methods in words, and names shown as text (:func:`as_text`, :func:`html_text`)."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import re
from pathlib import Path

import pandas as pd

#: ANSI escape sequences (CSI ... final byte, OSC ... BEL/ST) and the other control characters.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: What makes Markdown out of plain text in Streamlit: links and images (``[``, ``]``), HTML and
#: autolinks (``<``, ``>``), emphasis, code, strike-through and formulas (``*``, `````, ``~``,
#: ``$``), the backslash itself; ``_`` at a word's edge (inside a word it is literal); a colon
#: that starts a URL (``://``) and the dot of ``www.`` (GFM autolinks), a colon that starts a
#: Streamlit directive (``:red[``, ``:material/...:``).
_MARKDOWN = re.compile(r"([\\\[\]<>*`~$])|(?<![A-Za-z0-9])(_)|(_)(?![A-Za-z0-9])|(:)(?=//|[A-Za-z_/-]+[:\[])|(?<=www)(\.)")


def plain(text: object) -> str:
    """``text`` without terminal escapes and control characters (newlines and tabs kept)."""
    return _CONTROL.sub("", _ANSI.sub("", str(text)))


def as_text(text: object) -> str:
    """``text`` (a class name, a Label Studio label, a message quoting them) for a Streamlit
    element that renders Markdown (``st.info``, ``st.caption``, ``st.error``...): shown literally,
    so a name such as ``[x](http://...)`` or ``![](http://.../a.png)`` is neither a link nor a
    remote image, and terminal escapes are stripped."""
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), plain(text))


def html_text(text: object) -> str:
    """``text`` for Plotly, whose labels and hovers render a subset of HTML (links among it)."""
    import html

    return html.escape(plain(text), quote=False)


def page_of(table: pd.DataFrame, page: int, per_page: int) -> tuple[pd.DataFrame, int]:
    """Rows of the 1-based ``page`` and the number of pages."""
    pages = max(1, math.ceil(len(table) / per_page))
    page = min(max(1, int(page)), pages)
    return table.iloc[(page - 1) * per_page : page * per_page], pages


def thumbnail(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, size: int = 96) -> bytes | None:
    """A JPEG thumbnail (longer side ``size``) of an image, kept in ``cache_dir``; None for a
    file that cannot be read."""
    from almdn.data.records import decode
    from almdn.errors import DatasetError

    path = Path(path)
    cached = None
    if cache_dir is not None:
        stat_key = hashlib.sha1(f"{path.resolve()}|{size}|oriented".encode()).hexdigest()[:20]
        cached = Path(cache_dir) / str(size) / f"{stat_key}.jpg"
        try:
            if cached.stat().st_mtime >= path.stat().st_mtime:
                return cached.read_bytes()
        except OSError:
            pass
    try:
        # The one decode of the library: EXIF orientation applied (as in the store, training
        # and Label Studio), JPEGs decoded reduced inside the DCT, the pixel limit checked first.
        im = decode(path, max_side=size)
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=80)
    except (DatasetError, OSError, ValueError):
        return None
    data = buffer.getvalue()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    return data


def data_url(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


#: :data:`almdn.acquisition.stored.ACQUISITION_METHODS` in words.
ACQUISITION_LABELS = {
    "almdn": "almdn: max of the four z-scored uncertainties (the paper's)",
    "almdn:sum_all": "almdn: sum of the four z-scored uncertainties",
    "almdn:max_loc": "almdn: box uncertainties only (max of aleatoric, epistemic)",
    "almdn:max_cls": "almdn: class uncertainties only (max of aleatoric, epistemic)",
    "almdn:max_al": "almdn: aleatoric only (max of box, class)",
    "almdn:max_ep": "almdn: epistemic only (max of box, class)",
    "entropy": "entropy: mean class entropy of the detections (Roy et al.)",
    "entropy_weighted": "entropy over every detection down to the low threshold, each weighted by its score (images without a sure detection compete)",
    "random": "random sample of the pool",
    "almdn+kcenter_balanced": "almdn, then diverse and class-balanced: k-center over image embeddings weighted to rare classes, 10% for images with no detection",
    "almdn+kcenter": "almdn, then diverse: k-center over image embeddings among the top 4K",
    "almdn+balance": "almdn, then class-balanced: favours classes rare in the labeled set (top 4K)",
    "almdn+power": "almdn, sampled: in proportion to the score's rank (power sampling, less redundant than the top K)",
    "typiclust": "typical images: the most typical image of each cluster with no labeled image (cold start)",
    "entropy_weighted+balance": "entropy_weighted, then class-balanced: favours classes rare in the labeled set, as the faint detections predict them (top 4K)",
}
