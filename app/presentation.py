"""Purely presentation helpers of the app: paging a table, image thumbnails, the names of the
acquisition methods in words."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from pathlib import Path

import pandas as pd


def page_of(table: pd.DataFrame, page: int, per_page: int) -> tuple[pd.DataFrame, int]:
    """Rows of the 1-based ``page`` and the number of pages."""
    pages = max(1, math.ceil(len(table) / per_page))
    page = min(max(1, int(page)), pages)
    return table.iloc[(page - 1) * per_page : page * per_page], pages


def thumbnail(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, size: int = 96) -> bytes | None:
    """A JPEG thumbnail (longer side ``size``) of an image, kept in ``cache_dir``; None for a
    file that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    cached = None
    if cache_dir is not None:
        stat_key = hashlib.sha1(f"{path.resolve()}|{size}".encode()).hexdigest()[:20]
        cached = Path(cache_dir) / str(size) / f"{stat_key}.jpg"
        try:
            if cached.stat().st_mtime >= path.stat().st_mtime:
                return cached.read_bytes()
        except OSError:
            pass
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced size directly
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
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
    "random": "random sample of the pool",
}
